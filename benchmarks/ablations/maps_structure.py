"""How much of a split case's element-map structure sits at the pixel scale.

``python benchmarks/ablations/maps_structure.py CASE``

For a count-split case of the benchmark, scores simple estimates of the element maps (the
maps of the input counts smoothed spatially with a Gaussian of 0.5, 0.7 and 1 px, and the
"composition" estimate: the pixel's own counts outside the map's window times the smoothed
ratio of the map to them) with the benchmark's unbiased split MSE against the remainder, per
map and pooled over the maps (the benchmark's maps gain). Also prints, per map, how the map's
fine-scale residual (map minus its 2 px smoothing) correlates with that of the pixel's other
counts: structure shared across channels that smoothing removes but the own spectrum keeps.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness.cases import build_case  # noqa: E402

from n2s_eds import metrics  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    case = build_case(argv[0], 0)
    if case.remainder is None or case.p is None:
        print(f"{argv[0]} is not a binomial split case")
        return 2
    x = case.raw.astype(np.float64)
    mx = metrics.element_maps(x, case.windows)
    mr = metrics.element_maps(case.remainder, case.windows)
    total = x[..., case.window.slice].sum(-1)

    def umse(d: np.ndarray) -> np.ndarray:
        """The benchmark's split MSE of each map."""
        return np.array([metrics.umse(dk, rk, case.p) for dk, rk in zip(d, mr, strict=True)])

    base = umse(mx)
    names = [w.name for w in case.windows]
    print(f"`python benchmarks/ablations/maps_structure.py {argv[0]}`\n")
    print(f"| estimate | {' | '.join(names)} | pooled |")
    print("|---|" + "---|" * (len(names) + 1))

    def row(label: str, d: np.ndarray) -> None:
        u = umse(d)
        gains = " | ".join(f"{10 * np.log10(b / v):.2f}" for b, v in zip(base, u, strict=True))
        print(f"| {label} | {gains} | {10 * np.log10(base.sum() / u.sum()):.2f} |")

    for sigma in (0.5, 0.7, 1.0):
        row(f"Gaussian {sigma} px", np.stack([gaussian_filter(m, sigma) for m in mx]))
    for sigma in (1.0, 2.0):
        comp = []
        for m in mx:
            other = total - m
            ratio = gaussian_filter(m, sigma) / np.maximum(gaussian_filter(other, sigma), 1e-9)
            comp.append(ratio * other)
        row(f"own other counts x ratio smoothed {sigma} px", np.stack(comp))
    print(
        f"\nmean counts per pixel: total {total.mean():.1f}; maps "
        + ", ".join(f"{n} {m.mean():.2f}" for n, m in zip(names, mx, strict=True))
    )
    corr = []
    for n, m in zip(names, mx, strict=True):
        other = total - m
        a, b = m - gaussian_filter(m, 2), other - gaussian_filter(other, 2)
        corr.append(f"{n} {np.corrcoef(a.ravel(), b.ravel())[0, 1]:.2f}")
    print(
        "\ncorrelation of the 2 px residuals, map vs the pixel's other counts: " + ", ".join(corr)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
