"""The element-map stage (:mod:`n2s_eds.refine`): its candidates and features, one at a time.

``python benchmarks/ablations/ablation_map_refinement.py --cached-before TIME [CASE ...]``
``python benchmarks/ablations/ablation_map_refinement.py --compute [CASE ...]``

The stage runs after the network, so it is measured on the network's cubes without it: for
each case and row (``n2s``, ``n2s_guided``) the newest cube of the benchmark's cache written
before ``TIME`` (ISO, e.g. ``2026-12-05T21:30``: rows of a version without the stage), or,
with ``--compute``, a fresh ``Denoiser(refine_maps=False)`` run, seed 0. Each variant refines the raw maps with
:func:`n2s_eds.refine.refine_maps`, rescales the cube with :func:`n2s_eds.refine.apply_maps`
and is scored by the benchmark (cube and maps gains, worst quantification bias). Variants:

* ``none``: the network's cube as it is;
* ``wide``: feature distances h in (0.5, 0.8, 1.2, 2, 3), radii 3-9, the maps as features;
* ``narrow``: h in (0.3, 0.5, 0.8, 1.2), radii 3-7;
* ``wide+peaks`` / ``narrow9+peaks``: as ``wide`` / with h in (0.3, ..., 1.2) and radii 3-9,
  the maps of the 8 strongest peaks of the sum spectrum added to the features;
* ``default``: ``narrow9+peaks`` with, for each map, the pixel's own counts outside its window
  as a further feature: what ``refine_maps=True`` runs (:func:`n2s_eds.refine.refine_cube`).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness.cases import CASES, build_case  # noqa: E402
from harness.scores import score  # noqa: E402

from n2s_eds import Denoiser  # noqa: E402
from n2s_eds.metrics import element_maps, element_windows  # noqa: E402
from n2s_eds.refine import (  # noqa: E402
    FEATURE_PEAKS,
    H_GRID,
    RADII,
    apply_maps,
    refine_cube,
    refine_maps,
)

VARIANTS = {
    "none": None,
    "wide": {"h_grid": (0.5, 0.8, 1.2, 2.0, 3.0), "radii": (3, 5, 7, 9), "peaks": False},
    "narrow": {"h_grid": (0.3, 0.5, 0.8, 1.2), "radii": (3, 5, 7), "peaks": False},
    "wide+peaks": {"h_grid": (0.5, 0.8, 1.2, 2.0, 3.0), "radii": (3, 5, 7, 9), "peaks": True},
    "narrow9+peaks": {"h_grid": H_GRID, "radii": RADII, "peaks": True},
    "default": {"h_grid": H_GRID, "radii": RADII, "peaks": True, "own": True},
}


def network_cube(
    case, method: str, cache_dir: str, compute: bool, before: float
) -> np.ndarray | None:
    """The network's window cube without the map stage."""
    if compute:
        guide = case.guide if method == "n2s_guided" else None
        den = Denoiser(seed=0, progress=False, refine_maps=False)
        out = den.fit(case.signal, guide).denoise(case.signal, guide)
        return np.asarray(out.data)[..., case.window.slice]
    files = sorted(glob.glob(f"{cache_dir}/{case.name}__{method}__*.npz"), key=os.path.getmtime)
    for path in reversed(files):
        if os.path.getmtime(path) < before:
            with np.load(path) as f:
                return np.asarray(f["window"])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--cache-dir", default="benchmarks/cache")
    ap.add_argument("--compute", action="store_true", help="train the networks afresh")
    ap.add_argument("--cached-before", default=None, help="ISO time: use cached cubes older")
    args = ap.parse_args(argv)
    if not args.compute and args.cached_before is None:
        ap.error("give --cached-before TIME or --compute")
    before = 0.0 if args.compute else datetime.fromisoformat(args.cached_before).timestamp()
    print("| case | row | variant | cube_gain_db | maps_gain_db | quant_bias_pct |")
    print("|---|---|---|---|---|---|")
    for name in args.cases:
        case = build_case(name, 0)
        y = element_maps(case.raw, case.windows)
        peak_windows = element_windows(
            case.signal, case.window, source="peaks", n_peaks=FEATURE_PEAKS
        )
        peaks = element_maps(case.raw, peak_windows)
        for method in ("n2s", "n2s_guided"):
            if method == "n2s_guided" and case.guide is None:
                continue
            cube = network_cube(case, method, args.cache_dir, args.compute, before)
            if cube is None:
                print(f"| {name} | {method} | no cached cube | | | |")
                continue
            guide = np.asarray(case.guide.data) if method == "n2s_guided" else None
            for label, v in VARIANTS.items():
                full = np.array(case.raw, np.float32)
                full[..., case.window.slice] = cube
                if v is not None and v.get("own"):  # exactly the package's stage
                    raw = np.asarray(case.raw)
                    refine_cube(
                        raw, full, case.windows, peak_windows, guide, channels=case.window.slice
                    )
                elif v is not None:
                    ref = refine_maps(
                        y,
                        guide,
                        feature_maps=peaks if v["peaks"] else None,
                        h_grid=v["h_grid"],
                        radii=v["radii"],
                    )
                    apply_maps(full, [w.slice for w in case.windows], ref.maps)
                row, _ = score(case, full[..., case.window.slice])
                print(
                    f"| {name} | {method} | {label} | {row['cube_gain_db']:.2f} | "
                    f"{row['maps_gain_db']:.2f} | {row['quant_bias_pct']:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
