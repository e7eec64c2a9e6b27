"""Corpus transfer: one network trained on many cubes, applied to a cube it never saw.

A corpus of simulated TEM phantoms (several seeds, so several particle layouts, both phantom
layouts and three doses) is packed into one HDF5 file with :func:`n2s_eds.data.pack_corpus`;
one ``PriorMixture`` network is trained on it through :class:`n2s_eds.data.CorpusDataModule`
(the Trainer set up as :meth:`n2s_eds.Denoiser.fit` sets it up, the same steps, patches,
batch and learning rate), wrapped into a :class:`n2s_eds.Denoiser` and applied to held-out
phantoms (another seed, never in the corpus). Each held-out cube is also denoised by the same
model configuration trained on that cube alone (``Denoiser.fit``), and by the untrained
network (0 steps: uniform mixing weights) for reference. Every score is against the exact
expected counts of the phantom: gains are ``10 log10(MSE(raw) / MSE(denoised))`` over the
processing window (cube) and over the element maps (+-1 FWHM around each X-ray line).

Run from the repository root::

    python benchmarks/corpus_transfer.py                # writes benchmarks/results/corpus_transfer.md
    python benchmarks/corpus_transfer.py --steps 20 --test-doses 20 --pooled --output /tmp/x.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from n2s_eds import Denoiser
from n2s_eds.cli import denoiser_from_module
from n2s_eds.data import CorpusDataModule, pack_corpus, read_corpus
from n2s_eds.metrics import element_maps, element_windows, psnr
from n2s_eds.preprocess import processing_window
from n2s_eds.simulate import phantom

ROOT = Path(__file__).resolve().parent
#: Phantom size: 64 x 64 pixels as in the benchmark (``benchmarks/harness/cases.py``), but 512
#: channels of 40 eV (0-20.4 keV) instead of 1024 of 20 eV, which halves the cost of a training
#: step on a busy CPU.
SHAPE = (64, 64)
N_CHANNELS = 512
CHANNEL_EV = 40.0
#: The corpus: (seed, dose in counts/px, layout). The held-out cubes use seed 0.
CORPUS = (
    (1, 5.0, "core_shell"),
    (2, 20.0, "core_shell"),
    (3, 100.0, "core_shell"),
    (4, 5.0, "particles"),
    (5, 20.0, "particles"),
    (6, 100.0, "particles"),
)
TEST_SEED = 0


def _phantom(dose: float, seed: int, layout: str = "core_shell") -> Any:
    return phantom(
        "tem",
        dose=dose,
        shape=SHAPE,
        n_channels=N_CHANNELS,
        channel_width_ev=CHANNEL_EV,
        seed=seed,
        layout=layout,
    )


def _mse_gain_db(raw: np.ndarray, est: np.ndarray, truth: np.ndarray) -> float:
    m_raw = float(np.mean((raw - truth) ** 2))
    m_est = float(np.mean((est - truth) ** 2))
    return 10.0 * math.log10(m_raw / m_est) if m_est > 0 else float("inf")


def scores(noisy: Any, truth: Any, denoised: np.ndarray) -> dict[str, float]:
    """Gains and PSNR of a denoised (Y, X, E) cube against the phantom's expected counts.

    Parameters
    ----------
    noisy, truth : exspy.signals.EDSTEMSpectrum
        The phantom's counts and expected counts.
    denoised : numpy.ndarray
        The denoised data, (Y, X, E) on the full energy axis.

    Returns
    -------
    dict
        ``cube_gain_db``, ``cube_psnr_db``, ``maps_gain_db``, ``count_ratio``.
    """
    sl = processing_window(noisy).slice
    t = np.asarray(truth.data, np.float64)
    x = np.asarray(noisy.data, np.float64)
    d = np.asarray(denoised, np.float64)
    windows = element_windows(noisy, processing_window(noisy))
    tm, xm, dm = (element_maps(a, windows) for a in (t, x, d))
    tw = t[..., sl]
    return {
        "cube_gain_db": _mse_gain_db(x[..., sl], d[..., sl], tw),
        "cube_psnr_db": psnr(tw, d[..., sl], data_range=float(tw.max() - tw.min())),
        "maps_gain_db": _mse_gain_db(xm, dm, tm),
        "count_ratio": float(d[..., sl].sum() / x[..., sl].sum()),
    }


def fit_on_corpus(path: Path, *, steps: int, seed: int, adapt: str) -> Denoiser:
    """Train the default network on a corpus as ``Denoiser.fit`` trains it on one cube.

    Parameters
    ----------
    path : pathlib.Path
        The corpus file.
    steps : int
        Training steps.
    seed : int
        Seed of the weights, patches and masks.
    adapt : {"per_cube", "pooled"}
        :class:`~n2s_eds.data.CorpusDataModule` ``adapt`` mode.

    Returns
    -------
    n2s_eds.Denoiser
        The trained network with the options of a default ``Denoiser``.
    """
    ref = Denoiser(seed=seed, progress=False, steps=steps, device="cpu")
    opts = ref.options
    L.seed_everything(seed, workers=True, verbose=False)
    module = ref._new_module(guided=False)
    dm = CorpusDataModule(
        str(path),
        patch_size=opts["patch_size"],
        energy_patch=opts["energy_patch"],
        batch_size=opts["batch_size"],
        train_patches=steps * opts["batch_size"],
        val_fraction=0.0,  # no validation here, as in Denoiser.fit: train on every position
        seed=seed,
        adapt=adapt,
    )
    t0 = time.perf_counter()
    ref._train(module, dm, steps)
    return denoiser_from_module(
        module,
        dm,
        steps=steps,
        seed=seed,
        lr=opts["lr"],
        train_seconds=round(time.perf_counter() - t0, 3),
    )


def _row(test: str, method: str, trained_on: str, s: dict[str, float], **extra: Any) -> dict:
    return {"test cube": test, "method": method, "trained on": trained_on, **s, **extra}


def _fmt(v: Any, column: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        digits = {"count_ratio": 3, "train_s": 1, "denoise_s": 1}.get(column, 2)
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = (
    "test cube",
    "method",
    "trained on",
    "cube_gain_db",
    "maps_gain_db",
    "cube_psnr_db",
    "count_ratio",
    "train_s",
    "denoise_s",
)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), c) for c in COLUMNS) + " |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    """Build the corpus, train, denoise the held-out cubes, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument(
        "--test-doses",
        default="5,20",
        help="doses (counts/px) of the held-out seed-0 core-shell phantoms (default 5,20)",
    )
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="also train with adapt='pooled' (one more training run)",
    )
    parser.add_argument(
        "--corpus-dose",
        type=float,
        default=None,
        help="give every corpus cube this dose (counts/px) instead of 5, 20 and 100",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training (default 0)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="append this run as a new section to --output instead of replacing it",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "results" / "corpus_transfer.md",
        help="Markdown file to write (default benchmarks/results/corpus_transfer.md)",
    )
    parser.add_argument("--note", default="", help="a line added under the machine description")
    ns = parser.parse_args(argv)
    command = "python benchmarks/corpus_transfer.py" + (
        " " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    t_all = time.perf_counter()
    doses = [float(d) for d in ns.test_doses.split(",") if d.strip()]
    spec = CORPUS
    if ns.corpus_dose is not None:
        spec = tuple((s, float(ns.corpus_dose), lay) for s, _, lay in CORPUS)

    with tempfile.TemporaryDirectory(prefix="n2s_corpus_") as tmp:
        corpus_path = Path(tmp) / "corpus.h5"
        t0 = time.perf_counter()
        cubes = [_phantom(d, s, lay).noisy for s, d, lay in spec]
        names = [f"seed{s}_dose{d:g}_{lay}" for s, d, lay in spec]
        pack_corpus(cubes, corpus_path, names=names)
        pack_s = time.perf_counter() - t0
        info = read_corpus(corpus_path)
        size_mib = corpus_path.stat().st_size / 2**20
        print(f"corpus: {len(info.cubes)} cubes, {size_mib:.1f} MiB, packed in {pack_s:.1f} s")

        models: dict[str, Denoiser] = {}
        modes = ["per_cube"] + (["pooled"] if ns.pooled else [])
        for mode in modes:
            print(f"training on the corpus (adapt={mode}), {ns.steps} steps ...", flush=True)
            models[mode] = fit_on_corpus(corpus_path, steps=ns.steps, seed=ns.seed, adapt=mode)
            print(f"  {models[mode].history['train_seconds']:.0f} s", flush=True)

        rows: list[dict[str, Any]] = []
        for dose in doses:
            test = _phantom(dose, TEST_SEED)
            label = f"seed{TEST_SEED}_dose{dose:g}_core_shell"
            raw = scores(test.noisy, test.truth, np.asarray(test.noisy.data))
            rows.append(_row(label, "raw", "–", raw))

            untrained = Denoiser(steps=0, seed=ns.seed, progress=False, device="cpu")
            untrained.fit(test.noisy)
            t0 = time.perf_counter()
            out = untrained.denoise(test.noisy)
            rows.append(
                _row(
                    label,
                    "untrained (0 steps)",
                    "–",
                    scores(test.noisy, test.truth, out.data),
                    train_s=0.0,
                    denoise_s=time.perf_counter() - t0,
                )
            )

            print(f"training on {label} alone, {ns.steps} steps ...", flush=True)
            single = Denoiser(steps=ns.steps, seed=ns.seed, progress=False, device="cpu")
            single.fit(test.noisy)
            t0 = time.perf_counter()
            out = single.denoise(test.noisy)
            rows.append(
                _row(
                    label,
                    "single cube (Denoiser.fit)",
                    "this cube",
                    scores(test.noisy, test.truth, out.data),
                    train_s=single.history["train_seconds"],
                    denoise_s=time.perf_counter() - t0,
                )
            )
            for mode, den in models.items():
                t0 = time.perf_counter()
                out = den.denoise(test.noisy)
                rows.append(
                    _row(
                        label,
                        f"corpus, adapt={mode}",
                        f"{len(info.cubes)} other cubes",
                        scores(test.noisy, test.truth, out.data),
                        train_s=den.history["train_seconds"],
                        denoise_s=time.perf_counter() - t0,
                    )
                )
            print(markdown([r for r in rows if r["test cube"] == label]), flush=True)

    total = time.perf_counter() - t_all
    table = markdown(rows)
    diffs = []
    for dose in doses:
        label = f"seed{TEST_SEED}_dose{dose:g}_core_shell"
        by = {r["method"]: r for r in rows if r["test cube"] == label}
        single = by["single cube (Denoiser.fit)"]
        for mode in models:
            c = by[f"corpus, adapt={mode}"]
            diffs.append(
                f"- {label}, corpus (adapt={mode}) minus single cube: cube gain "
                f"{c['cube_gain_db'] - single['cube_gain_db']:+.2f} dB, maps gain "
                f"{c['maps_gain_db'] - single['maps_gain_db']:+.2f} dB"
            )
    corpus_lines = "\n".join(
        f"| {n} | {s} | {d:g} | {lay} |" for n, (s, d, lay) in zip(names, spec, strict=True)
    )
    machine = (
        f"{os.cpu_count()} CPU cores ({_cpu_name()}), no GPU; Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}"
    )
    if ns.append:
        title = (
            f"## Corpus of dose-{ns.corpus_dose:g} cubes only"
            if ns.corpus_dose is not None
            else "## Another run"
        )
    else:
        title = "# Corpus transfer: trained on many cubes, applied to an unseen one"
    text = f"""{title}

`{command}`

Machine: {machine}. {ns.note}
Total run time {total:.0f} s (corpus packed in {pack_s:.1f} s, {size_mib:.1f} MiB gzip).

Corpus (`n2s_eds.data.pack_corpus`, simulated TEM phantoms {SHAPE[0]} x {SHAPE[1]} px,
{N_CHANNELS} channels of {CHANNEL_EV:g} eV, {info.n_channels} channels in the 0.2-20 keV window):

| cube | seed | dose (counts/px) | layout |
|---|---|---|---|
{corpus_lines}

Held-out test cubes: core-shell phantoms of seed {TEST_SEED} (another particle layout, never in
the corpus). Every model is the default `PriorMixture` trained for {ns.steps} steps (patches
32 x 32 x all channels, batch 4, Adam 1e-3, whole-spectrum masks), seed {ns.seed}.
`corpus, adapt=per_cube`: each training batch uses its own cube's spectral basis (as
`Denoiser.denoise` does on the cube it denoises); `adapt=pooled`: one basis from a mosaic of
every corpus cube's centre during training. At inference every model re-adapts its spectral
basis to the cube it denoises. Gains: `10 log10(MSE(raw) / MSE(denoised))` against the exact
expected counts, over the 0.2-20 keV window (cube) and over the element maps (+-1 FWHM around
each X-ray line); PSNR over the window with the truth's range.

{table}

{chr(10).join(diffs)}
"""
    print()
    print(text)
    ns.output.parent.mkdir(parents=True, exist_ok=True)
    if ns.append and ns.output.exists():
        text = ns.output.read_text().rstrip("\n") + "\n\n" + text
    ns.output.write_text(text)
    print(f"written to {ns.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
