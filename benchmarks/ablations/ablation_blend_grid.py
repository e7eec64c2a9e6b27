"""How much a fixed blend with the own counts could give: ``f + beta C (x - f)``.

``python benchmarks/ablations/ablation_blend_grid.py CASES``

For each case (comma list), a default denoiser without the blend (``blend_ev=0``, seed 0)
gives the J-invariant estimate ``f``; ``C`` is a Gaussian along energy of 30, 60 or 120 eV
(standard deviation). Every pair of width and fixed share ``beta`` (the same in every band) is
scored with the benchmark's protocol, and so is the plain mix ``f + beta (x - f)`` ("raw").
It measures the room the fitted blend (``PriorMixture.fit_blend``) has, not the blend itself.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness.cases import build_case  # noqa: E402
from harness.scores import score  # noqa: E402

from n2s_eds.api import Denoiser  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    print(f"`python benchmarks/ablations/ablation_blend_grid.py {argv[0]}`")
    for name in argv[0].split(","):
        case = build_case(name, 0)
        den = Denoiser(seed=0, progress=False, model_options={"blend_ev": 0.0})
        out = np.asarray(den.fit(case.signal).denoise(case.signal).data, dtype=np.float64)
        x = np.asarray(case.signal.data, dtype=np.float64)
        f, xw = out[..., case.window.slice], x[..., case.window.slice]
        ch_ev = case.signal.axes_manager.signal_axes[0].scale * 1000
        print(f"\n{name} (channel {ch_ev:.1f} eV)\n")
        print("| C (eV) | beta | cube (dB) | maps (dB) | worst map ratio |")
        print("|---|---|---|---|---|")
        rows = [("raw", b, f + b * (xw - f)) for b in (0.02, 0.05, 0.1)]
        for sig_ev in (30, 60, 120):
            r = gaussian_filter1d(xw - f, sig_ev / ch_ev, axis=-1, mode="reflect")
            rows += [(sig_ev, b, f + b * r) for b in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)]
        for width, beta, cube in rows:
            row, _ = score(case, cube.astype(np.float32))
            print(
                f"| {width} | {beta:.2f} | {row['cube_gain_db']:.2f} | {row['maps_gain_db']:.2f} "
                f"| {row['worst_map_count_ratio']:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
