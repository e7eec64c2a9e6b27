"""Speed of the default denoiser beside the classical baselines, in one run.

``python benchmarks/speed.py [--output benchmarks/results] [--skip-bm3d] [--steps 50,100,200,300]``

Measures, on ``fept_core_shell_tem`` thinned to p = 0.1 (the benchmark's cube, 64 x 64 x ~1000):

* the wall time of every baseline (Gaussian, PCA, PCA + Gaussian, guided-free BM3D / BM4D) and
  of the default ``n2s_eds.denoise`` (training + inference), with their ratios;
* training throughput (voxels of training patches per second), inference throughput (voxels of
  the cube per second, the 3 x 3 blind grid included);
* time to quality: the split gain (cube and maps, dB) after 50 ... 300 training steps, each a
  fresh run with every step trained (``holdout=0``), against its wall time;

and on a simulated 128 x 128 x 2048 cube: the default ``denoise`` (training + inference) and the
inference alone. It prints one Markdown table per part and writes them to ``speed.md`` with the
command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness

from harness.cases import build_case  # noqa: E402
from harness.scores import score  # noqa: E402

from n2s_eds import baselines  # noqa: E402
from n2s_eds.api import Denoiser  # noqa: E402


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    data = out.data
    if hasattr(data, "compute"):
        data = data.compute()
    return np.asarray(data), time.perf_counter() - t0


def _machine() -> str:
    import torch

    cpus = os.cpu_count()
    return (
        f"{platform.machine()}, {cpus} CPU cores visible, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), no GPU used"
    )


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--skip-bm3d", action="store_true", help="leave out BM3D (slowest)")
    parser.add_argument("--steps", default="50,100,200,300", help="time-to-quality steps")
    parser.add_argument("--big-side", type=int, default=128, help="side of the big cube")
    args = parser.parse_args(argv)
    steps_list = [int(s) for s in args.steps.split(",") if s]
    out_md = [
        "# Speed of n2s_eds beside the baselines",
        "",
        f"`python benchmarks/speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" on {_machine()}.",
        "",
    ]

    case = build_case("fept_core_shell_tem", 0)
    cube_vox = int(np.prod(case.raw[..., case.window.slice].shape))
    print(f"fept p=0.1: {case.raw.shape}, {cube_vox} voxels in the window", flush=True)

    def scored(data: np.ndarray) -> dict:
        row, _ = score(case, data[..., case.window.slice].astype(np.float32))
        return {"cube_gain_db": row["cube_gain_db"], "maps_gain_db": row["maps_gain_db"]}

    # -- baselines and the default, same run
    methods = [
        ("gaussian1", lambda s: baselines.gaussian(s, 1.0)),
        ("gaussian2", lambda s: baselines.gaussian(s, 2.0)),
        ("pca", baselines.pca),
        ("pca_gaussian", baselines.pca_gaussian),
        ("bm4d", baselines.bm4d),
    ]
    if not args.skip_bm3d:
        methods.append(("bm3d", baselines.bm3d))
    rows = []
    for name, fn in methods:
        data, sec = _timed(fn, case.signal)
        rows.append({"method": name, "seconds": sec, **scored(data)})
        print(f"  {name:<13} {sec:8.1f} s", flush=True)
    den = Denoiser(seed=0, progress=False)
    t0 = time.perf_counter()
    den.fit(case.signal)
    train_s = time.perf_counter() - t0
    data, infer_s = _timed(den.denoise, case.signal)
    total = train_s + infer_s
    rows.append(
        {
            "method": "n2s (default)",
            "seconds": total,
            **scored(data),
            "train_s": train_s,
            "infer_s": infer_s,
        }
    )
    print(f"  n2s           {total:8.1f} s (train {train_s:.1f}, inference {infer_s:.1f})")
    by = {r["method"]: r["seconds"] for r in rows}
    for r in rows:
        r["x_pca"] = r["seconds"] / by["pca"]
        r["x_bm4d"] = r["seconds"] / by["bm4d"]
    opts = den.options
    trained = len(den.history.get("loss_curve") or [])  # held-out stopping may end it early
    patch_vox = trained * opts["batch_size"] * opts["patch_size"] ** 2 * case.window.n_channels
    out_md += [
        "## fept_core_shell_tem, p = 0.1: every method in the same run",
        "",
        _table(rows, ["method", "seconds", "x_pca", "x_bm4d", "cube_gain_db", "maps_gain_db"]),
        "",
        f"Default n2s: training {train_s:.1f} s for {trained} steps (of at most {opts['steps']}; "
        f"held-out stopping kept the weights of step {den.history.get('best_step')}) of "
        f"{opts['batch_size']} x {opts['patch_size']}^2 x {case.window.n_channels} voxels = "
        f"{patch_vox / train_s:.3g} training voxels/s (adaptation, fitted start and held-out "
        "scores included); inference "
        f"{infer_s:.1f} s = {cube_vox / infer_s:.3g} voxels/s (3 x 3 blind grid, rank "
        "selection and clipping included).",
        "",
    ]

    # -- time to quality
    ttq = []
    for k in steps_list:
        d = Denoiser(steps=k, seed=0, progress=False, holdout=0.0)  # every step trained
        data, sec = _timed(lambda s, d=d: d.fit(s).denoise(s), case.signal)
        ttq.append({"steps": k, "seconds": sec, **scored(data)})
        print(f"  steps {k:4d}: {sec:7.1f} s  {ttq[-1]}", flush=True)
    out_md += [
        "## Time to quality (fept, p = 0.1; each row a fresh run of k steps, every step "
        "trained: `holdout=0`)",
        "",
        _table(ttq, ["steps", "seconds", "cube_gain_db", "maps_gain_db"]),
        "",
    ]

    # -- a 128 x 128 x 2048 cube
    from n2s_eds.simulate import phantom

    side = args.big_side
    ph = phantom("tem", dose=20, shape=(side, side), n_channels=2048, seed=1)
    d = Denoiser(seed=0, progress=False)
    t0 = time.perf_counter()
    d.fit(ph.noisy)
    big_train = time.perf_counter() - t0
    _, big_infer = _timed(d.denoise, ph.noisy)
    big = [
        {
            "cube": f"{side} x {side} x 2048 phantom",
            "train_s": big_train,
            "inference_s": big_infer,
            "total_s": big_train + big_infer,
            "inference_voxels_per_s": side * side * 2048 / big_infer,
        }
    ]
    print(f"  big cube: train {big_train:.1f} s, inference {big_infer:.1f} s", flush=True)
    out_md += [
        "## A 128 x 128 x 2048 cube (targets: total within 600 s, inference within 30 s)",
        "",
        _table(big, ["cube", "train_s", "inference_s", "total_s", "inference_voxels_per_s"]),
        "",
    ]
    text = "\n".join(out_md)
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "speed.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
