"""The energy-window term of the self-supervised loss (``window_loss``), case by case.

``python benchmarks/ablation_window_loss.py CASE WEIGHT:CHANNELS [WEIGHT:CHANNELS ...]``

e.g. ``python benchmarks/ablation_window_loss.py fept_core_shell_tem 0:16 0.25:16 1:16``.
Each ``WEIGHT:CHANNELS`` trains a fresh default ``n2s_eds.Denoiser`` (seed 0) with
``window_loss=WEIGHT, window_channels=CHANNELS`` on the benchmark case and scores its output
with the benchmark's protocol. Prints one Markdown row per setting (cube / maps gain in dB,
worst element-map count ratio, wall seconds of fit + denoise).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")

from n2s_eds import bench  # noqa: E402
from n2s_eds.api import Denoiser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__)
        return 2
    name, specs = argv[0], argv[1:]
    case = bench.build_case(name, 0)
    print(f"`python benchmarks/ablation_window_loss.py {' '.join(argv)}`")
    print()
    print("| case | window_loss | window_channels | cube (dB) | maps (dB) | worst map ratio | s |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        weight, channels = spec.split(":")
        t0 = time.perf_counter()
        den = Denoiser(
            seed=0, progress=False, window_loss=float(weight), window_channels=int(channels)
        ).fit(case.signal)
        out = np.asarray(den.denoise(case.signal).data)[..., case.window.slice]
        sec = time.perf_counter() - t0
        row, _ = bench.score(case, out.astype(np.float32))
        print(
            f"| {name} | {weight} | {channels} | {row['cube_gain_db']:.2f} | "
            f"{row['maps_gain_db']:.2f} | {row['worst_map_count_ratio']:.3f} | {sec:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
