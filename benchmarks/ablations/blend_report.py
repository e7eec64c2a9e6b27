"""Scores of the default denoiser with what its energy blend fitted, case by case.

``python benchmarks/ablations/blend_report.py CASES [guided|plain] [STEPS]``

``CASES`` is a comma list of benchmark cases. ``guided`` passes the case's HAADF as the
guide; ``STEPS`` overrides the training steps (``0``: the fitted start only). Prints one
Markdown row per case (cube / maps gain in dB with the benchmark's protocol, worst element-map
count ratio, wall seconds of fit + denoise) and the blend's report from the output's metadata
(``Signal.Denoising.parameters.energy_blend``: shares per band, the estimated gains of the
J-invariant estimate and of the blend, and which risks were below resolution).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from ablation_options import fit_and_score  # noqa: E402
from harness.cases import build_case  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    guided = len(argv) > 1 and argv[1] == "guided"
    spec = ",".join(
        (["guided=1"] if guided else []) + ([f"steps={int(argv[2])}"] if len(argv) > 2 else [])
    )
    print(f"`python benchmarks/ablations/blend_report.py {' '.join(argv)}`\n")
    print("| case | guide | cube (dB) | maps (dB) | worst map ratio | s |")
    print("|---|---|---|---|---|---|")
    for name in argv[0].split(","):
        out, row, sec, _ = fit_and_score(build_case(name, 0), spec or "default")
        report = out.metadata.Signal.Denoising.parameters.energy_blend
        print(
            f"| {name} | {'yes' if guided else 'no'} | {row['cube_gain_db']:.2f} | "
            f"{row['maps_gain_db']:.2f} | {row['worst_map_count_ratio']:.3f} | {sec:.0f} |"
        )
        print(f"\n    blend: {report}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
