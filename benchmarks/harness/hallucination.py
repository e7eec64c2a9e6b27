"""Hallucination checks of guided denoising: the guide image must not invent chemistry.

A HAADF image carries thousands of times the signal-to-noise of the X-ray map, so a guided
denoiser can sharpen element maps, but it can also paint HAADF contrast where the X-rays show
no change of composition. ``python benchmarks/run_bench.py --hallucination`` runs three checks
and prints one table (written as ``hallucination.md`` and ``hallucination.csv``):

1. ``thickness_step``: a phantom whose HAADF has a bright square (a thickness step) where the
   X-ray signal is that of the surroundings. In that square, the RMS error of the guided
   element maps against the true maps must not exceed the unguided one by more than 10 %.
2. ``shifted_guide`` / ``other_scan_guide``: the phantom denoised with a guide shifted by
   :data:`SHIFT_PX` pixels, or with the HAADF of a different phantom: the guided PSNR (cube and
   maps, against the truth) must not fall more than 0.5 dB below the unguided one.
3. ``lowcount_correlation``: ``bruker_stem_haadf_lowcount`` (about 6 X-ray counts per pixel;
   particles in the HAADF, no structure visible in the X-rays): the mean Pearson correlation of
   the element maps with the HAADF image, raw and denoised. No pass mark; a guided method whose
   correlation rises far above the unguided one's is copying the guide.

The guided filter (:func:`n2s_eds.baselines.guided_filter`) runs beside the network in every
check, as the classical reference.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from n2s_eds.metrics import element_maps, psnr
from n2s_eds.preprocess import processing_window

from . import cases
from .cases import Case, CaseSkipped, case_windows, require_data
from .methods import METHODS
from .report import csv_value, markdown_table
from .runner import denoise, say
from .scores import full_cube

__all__ = [
    "THICKNESS_DOSE",
    "SHIFT_PX",
    "MAX_REGION_ERROR_RATIO",
    "MAX_GUIDE_LOSS_DB",
    "COLUMNS",
    "check_phantom",
    "truth_case",
    "shifted",
    "correlation",
    "run_checks",
    "write_checks",
]

#: X-ray counts per pixel of the phantoms of the checks (low dose: where guidance matters).
THICKNESS_DOSE: float = 5.0
#: Shift of the misregistered guide, in pixels along both scan axes.
SHIFT_PX: int = 6
#: Check 1: the guided map error in the thickness step over the unguided one, at most.
MAX_REGION_ERROR_RATIO: float = 1.10
#: Check 2: largest PSNR loss (dB) of a guided result with a wrong guide against unguided.
MAX_GUIDE_LOSS_DB: float = 0.5

_GUIDED = ("n2s_guided", "guided_filter")
#: Columns of the table.
COLUMNS = ("check", "method", "metric", "value", "unguided", "ratio_or_diff", "limit", "passed")


def check_phantom(seed: int, thickness_step: bool) -> Any:
    """The phantom of the checks (:data:`THICKNESS_DOSE` counts/px), with or without the step."""
    from n2s_eds.simulate import phantom

    return phantom(
        "tem",
        dose=THICKNESS_DOSE,
        shape=cases.PHANTOM_SHAPE,
        n_channels=cases.PHANTOM_CHANNELS,
        seed=seed,
        haadf_thickness_step=thickness_step,
    )


def truth_case(name: str, ph: Any, guide: Any, description: str) -> Case:
    """A case of a phantom scored against its truth, with the given guide (or ``None``)."""
    window = processing_window(ph.noisy)
    windows, has_lines = case_windows(ph.noisy, window)
    truth = np.asarray(ph.truth.data, dtype=np.float64)
    return Case(
        name,
        ph.noisy,
        window,
        windows,
        reference=truth,
        truth=truth,
        guide=guide,
        has_lines=has_lines,
        description=description,
    )


def shifted(image: Any, shift: int) -> Any:
    """The image moved by ``shift`` pixels along both axes (edge pixels repeated)."""
    out = image.deepcopy()
    data = np.asarray(out.data)
    pad = np.pad(data, ((shift, 0), (shift, 0)), mode="edge")
    out.data = pad[: data.shape[0], : data.shape[1]].copy()
    return out


def _maps(case: Case, window_cube: np.ndarray) -> np.ndarray:
    return element_maps(full_cube(case, window_cube), case.windows)


def _run(
    case: Case, method: str, seed: int, options: dict[str, Any], cache_dir: Path | None
) -> np.ndarray:
    t0 = time.perf_counter()
    cube, _, cached = denoise(case, METHODS[method], seed, options, cache_dir)
    say(
        f"  {case.name:<24} {method:<13} {time.perf_counter() - t0:7.1f} s"
        + ("  (cached)" if cached else "")
    )
    return cube


def _row(
    check: str,
    method: str,
    metric: str,
    value: float,
    unguided: float | None = None,
    relation: float | None = None,
    limit: str = "",
    passed: bool | None = None,
) -> dict[str, Any]:
    return {
        "check": check,
        "method": method,
        "metric": metric,
        "value": value,
        "unguided": float("nan") if unguided is None else unguided,
        "ratio_or_diff": float("nan") if relation is None else relation,
        "limit": limit,
        "passed": "" if passed is None else ("PASS" if passed else "FAIL"),
    }


def _thickness_check(seed: int, options: dict[str, Any], cache_dir: Path | None) -> list[dict]:
    ph = check_phantom(seed, thickness_step=True)
    y0, y1, x0, x1 = (int(v) for v in ph.haadf.metadata.Simulation.thickness_step_region)
    case = truth_case(
        "phantom_thickness_step",
        ph,
        ph.haadf,
        f"phantom, {THICKNESS_DOSE:g} counts/px, HAADF thickness step at y {y0}:{y1}, "
        f"x {x0}:{x1} with no change in the X-rays",
    )
    true_maps = element_maps(case.truth, case.windows)[:, y0:y1, x0:x1]

    def region_error(method: str) -> float:
        maps = _maps(case, _run(case, method, seed, options, cache_dir))[:, y0:y1, x0:x1]
        return float(np.sqrt(np.mean((maps - true_maps) ** 2)))

    ref = region_error("n2s")
    rows = [_row("thickness_step", "n2s", "region map RMS error (counts)", ref)]
    for method in _GUIDED:
        err = region_error(method)
        ratio = err / ref if ref > 0 else float("nan")
        rows.append(
            _row(
                "thickness_step",
                method,
                "region map RMS error (counts)",
                err,
                ref,
                ratio,
                f"ratio <= {MAX_REGION_ERROR_RATIO:.2f}",
                bool(ratio <= MAX_REGION_ERROR_RATIO),
            )
        )
    return rows


def _psnrs(case: Case, window_cube: np.ndarray) -> tuple[float, float]:
    truth_w = case.truth[..., case.window.slice]
    true_maps = element_maps(case.truth, case.windows)
    cube = psnr(truth_w, window_cube)
    maps = psnr(true_maps, _maps(case, window_cube), channel_axis=0)
    return cube, maps


def _wrong_guide_checks(seed: int, options: dict[str, Any], cache_dir: Path | None) -> list[dict]:
    ph = check_phantom(seed, thickness_step=False)
    other = check_phantom(seed + 1, thickness_step=False).haadf
    guides = {
        "shifted_guide": (shifted(ph.haadf, SHIFT_PX), f"guide shifted by {SHIFT_PX} px"),
        "other_scan_guide": (other, "the HAADF of a different phantom"),
    }
    base = truth_case("phantom_wrong_guide", ph, None, "phantom, unguided reference")
    ref_cube, ref_maps = _psnrs(base, _run(base, "n2s", seed, options, cache_dir))
    rows = [
        _row("wrong_guide", "n2s", "cube PSNR (dB)", ref_cube),
        _row("wrong_guide", "n2s", "maps PSNR (dB)", ref_maps),
    ]
    for check, (guide, what) in guides.items():
        case = truth_case(f"phantom_{check}", ph, guide, f"phantom, {what}")
        for method in _GUIDED:
            cube, maps = _psnrs(case, _run(case, method, seed, options, cache_dir))
            for metric, value, ref in (
                ("cube PSNR (dB)", cube, ref_cube),
                ("maps PSNR (dB)", maps, ref_maps),
            ):
                diff = value - ref
                rows.append(
                    _row(
                        check,
                        method,
                        metric,
                        value,
                        ref,
                        diff,
                        f"diff >= -{MAX_GUIDE_LOSS_DB:.1f} dB",
                        bool(diff >= -MAX_GUIDE_LOSS_DB),
                    )
                )
    return rows


def correlation(maps: np.ndarray, image: np.ndarray) -> float:
    g = (image - image.mean()).ravel()
    vals = []
    for m in maps:
        a = (m - m.mean()).ravel()
        den = float(np.sqrt((a * a).sum() * (g * g).sum()))
        if den > 0:
            vals.append(float((a * g).sum()) / den)
    return float(np.mean(vals)) if vals else float("nan")


def _lowcount_check(seed: int, options: dict[str, Any], cache_dir: Path | None) -> list[dict]:
    from n2s_eds.io import load, match_guide

    acq = load(require_data("bruker_stem_haadf_lowcount"))
    if acq.haadf is None:
        raise CaseSkipped("bruker_stem_haadf_lowcount: no HAADF image found in the file")
    signal = acq.eds
    window = processing_window(signal)
    windows, has_lines = case_windows(signal, window)
    counts = np.asarray(signal.data)
    case = Case(
        "bruker_stem_haadf_lowcount",
        signal,
        window,
        windows,
        reference=counts,
        guide=acq.haadf,
        has_lines=has_lines,
        description="real low-count STEM-EDS with HAADF",
    )
    image = match_guide(acq.haadf, signal).astype(np.float64)
    raw = correlation(element_maps(counts, windows), image)
    rows = [_row("lowcount_correlation", "raw", "mean corr(map, HAADF)", raw)]
    ref = None
    for method in ("gaussian1", "n2s", *_GUIDED):
        corr = correlation(_maps(case, _run(case, method, seed, options, cache_dir)), image)
        if method == "n2s":
            ref = corr
        rows.append(
            _row(
                "lowcount_correlation",
                method,
                "mean corr(map, HAADF)",
                corr,
                ref if method in _GUIDED else None,
                (corr - ref) if (method in _GUIDED and ref is not None) else None,
            )
        )
    return rows


def run_checks(
    seed: int = 0, options: dict[str, Any] | None = None, cache_dir: Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the three hallucination checks.

    Parameters
    ----------
    seed : int
        Seed of the phantoms and the networks.
    options : dict, optional
        Run options of the networks (``steps``).
    cache_dir : pathlib.Path or None
        Cache of the network rows (as for :func:`harness.runner.run_bench`).

    Returns
    -------
    (list of dict, list of str)
        The table rows (see the module docstring) and the checks skipped, with the reason.
    """
    options = dict(options or {})
    for method in ("gaussian1", "n2s", *_GUIDED):  # snapshot the code versions first
        METHODS[method].code_version()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for check in (_thickness_check, _wrong_guide_checks, _lowcount_check):
        try:
            rows += check(seed, options, cache_dir)
        except CaseSkipped as exc:
            skipped.append(f"{check.__name__.strip('_')}: {exc}")
            say(f"SKIPPED {check.__name__.strip('_')}: {exc}")
    return rows, skipped


def write_checks(
    rows: list[dict[str, Any]], skipped: list[str], outdir: Path, header: str = ""
) -> dict[str, Path]:
    """Write ``hallucination.md`` (the printed table) and ``hallucination.csv``."""
    outdir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, COLUMNS)
    md = [header, "", table, ""]
    if skipped:
        md += ["Skipped:", "", *[f"- {s}" for s in skipped], ""]
    paths = {"md": outdir / "hallucination.md", "csv": outdir / "hallucination.csv"}
    paths["md"].write_text("\n".join(md).lstrip("\n"))
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([csv_value(row.get(c)) for c in COLUMNS])
    return paths
