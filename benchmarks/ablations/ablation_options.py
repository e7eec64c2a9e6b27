"""Fresh default networks with some options changed, scored case by case.

``python benchmarks/ablations/ablation_options.py CASES SPEC [SPEC ...]``

``CASES`` is a comma list of benchmark cases; each ``SPEC`` is a comma list of
``name=value`` options, e.g. ``window_loss=0.25,residual_sigma=8`` (``default`` for none;
``lowrank_sigmas=1:2:4`` gives a tuple, ``guided_filters=1/0.01:4/0.01``
a tuple of pairs; ``guided=1`` passes the case's HAADF as the guide).
Besides the benchmark's cases, ``phantom_shifted_guide`` is the hallucination check's phantom
with its HAADF shifted by :data:`harness.hallucination.SHIFT_PX` pixels (use it with ``guided=1``).
Options of :class:`n2s_eds.Denoiser` are passed to it; any other name is an option of the
default network (``PriorMixture``) and goes into ``model_options``. Each spec trains a fresh
denoiser (seed 0) on each case and scores its output with the benchmark's protocol. Prints one
Markdown row per case and spec: cube / maps gain in dB, worst element-map count ratio, wall
seconds of fit + denoise, and on phantoms the cube / maps PSNR against the truth.
"""

from __future__ import annotations

import inspect
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness import hallucination  # noqa: E402
from harness.cases import Case, build_case  # noqa: E402
from harness.scores import score  # noqa: E402

from n2s_eds.api import Denoiser  # noqa: E402

_DENOISER_OPTIONS = set(inspect.signature(Denoiser).parameters)


def _value(text: str) -> object:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"1:2:4"`` -> (1.0, 2.0, 4.0), ``"1:"`` -> (1.0,),
    ``"1/0.01:2/0.01"`` -> ((1, 0.01), (2, 0.01)) (pairs, e.g. ``guided_filters``), else the text."""
    if "/" in text:
        return tuple(tuple(_value(v) for v in pair.split("/")) for pair in text.split(":") if pair)
    if ":" in text:
        return tuple(float(v) for v in text.split(":") if v)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_spec(spec: str) -> tuple[dict, dict]:
    """``"a=1,b=2"`` -> (Denoiser options, model options); values as int, float, tuple
    (``1:2:4``) or str."""
    options: dict = {}
    model: dict = {}
    if spec == "default":
        return options, model
    for item in spec.split(","):
        name, _, text = item.partition("=")
        (options if name in _DENOISER_OPTIONS else model)[name] = _value(text)
    return options, model


def _case(name: str) -> Case:
    """A benchmark case, or ``phantom_shifted_guide`` (see the module docstring)."""
    if name == "phantom_shifted_guide":
        ph = hallucination.check_phantom(0, thickness_step=False)
        guide = hallucination.shifted(ph.haadf, hallucination.SHIFT_PX)
        return hallucination.truth_case(name, ph, guide, "phantom, shifted guide")
    return build_case(name, 0)


def fit_and_score(case: Case, spec: str) -> tuple[object, dict, float, Denoiser]:
    """Train a fresh denoiser (seed 0) with the options of ``spec`` on ``case``, denoise it and
    score the result: (denoised signal, benchmark row, wall seconds of fit + denoise, the
    denoiser)."""
    options, model = parse_spec(spec)
    guide = case.guide if model.pop("guided", 0) else None
    t0 = time.perf_counter()
    den = Denoiser(seed=0, progress=False, model_options=model or None, **options)
    out = den.fit(case.signal, haadf=guide).denoise(case.signal, haadf=guide)
    sec = time.perf_counter() - t0
    row, _ = score(case, np.asarray(out.data)[..., case.window.slice].astype(np.float32))
    return out, row, sec, den


def run(cases: list[str], specs: list[str], command: str) -> None:
    print(f"`{command}`")
    print()
    print(
        "| case | options | cube (dB) | maps (dB) | worst map ratio | cube / maps PSNR | kept / last step | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in cases:
        case = _case(name)
        for spec in specs:
            _, row, sec, den = fit_and_score(case, spec)
            psnr = (
                f"{row['cube_psnr_db']:.2f} / {row['maps_psnr_db']:.2f}"
                if case.truth is not None
                else "–"
            )
            curve = den.history.get("held_out_curve") or [[None]]
            steps = f"{den.history.get('best_step', '–')} / {curve[-1][0] or '–'}"
            print(
                f"| {name} | {spec} | {row['cube_gain_db']:.2f} | {row['maps_gain_db']:.2f} | "
                f"{row['worst_map_count_ratio']:.3f} | {psnr} | {steps} | {sec:.0f} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__)
        return 2
    run(
        argv[0].split(","),
        argv[1:],
        "python benchmarks/ablations/ablation_options.py " + " ".join(argv),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
