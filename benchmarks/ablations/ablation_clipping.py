"""How the non-negativity step of ``n2s_eds.denoise`` changes the benchmark scores.

``python benchmarks/ablations/ablation_clipping.py [--case fept_core_shell_tem] [--seed 0]``

One default network is trained on the case (``clip_negative=False``); its output is then made
non-negative in several ways and each result is scored with the benchmark's protocol:

* none: the raw network output (negative values kept);
* zero: negative values set to 0, nothing else;
* per pixel: negatives set to 0 and the added mass taken from the same pixel's positive
  channels in proportion to their values (an older clipping of the package:
  ``clip_keeping_counts(..., iterations=0)``);
* local, radius r: the added mass paid back by the same channel's positive voxels within r
  pixels, 4 rounds, the rest settled per pixel (the default is r = 2).

It prints a Markdown table (cube / maps gain, window and worst-map count ratios, seconds of the
step).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness.cases import build_case  # noqa: E402
from harness.scores import score  # noqa: E402

from n2s_eds.api import Denoiser  # noqa: E402
from n2s_eds.postprocess import clip_keeping_counts  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="fept_core_shell_tem")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    case = build_case(args.case, args.seed)
    den = Denoiser(seed=args.seed, progress=False, clip_negative=False).fit(case.signal)
    out = np.asarray(den.denoise(case.signal).data)[..., case.window.slice]
    base = np.ascontiguousarray(np.moveaxis(out.astype(np.float32), -1, 0))  # (E, Y, X)
    variants = [
        ("none", lambda d: d),
        ("zero", lambda d: np.clip(d, 0, None)),
        ("per pixel", lambda d: clip_keeping_counts(d, iterations=0)),
        *[
            (f"local, radius {r}", lambda d, r=r: clip_keeping_counts(d, radius=r))
            for r in (1, 2, 3)
        ],
    ]
    lines = [
        f"`python benchmarks/ablations/ablation_clipping.py {' '.join(argv or sys.argv[1:])}`: "
        f"{args.case}, seed {args.seed}, one default network (negative fraction of its output: "
        f"{float((base < 0).mean()):.3f})",
        "",
        "| clipping | cube (dB) | maps (dB) | count ratio (window) | worst map ratio | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, fn in variants:
        t0 = time.perf_counter()
        d = fn(base.copy())
        sec = time.perf_counter() - t0
        row, _ = score(case, np.moveaxis(d, 0, -1))
        lines.append(
            f"| {name} | {row['cube_gain_db']:.2f} | {row['maps_gain_db']:.2f} | "
            f"{row['count_ratio']:.3f} | {row['worst_map_count_ratio']:.3f} | {sec:.2f} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
