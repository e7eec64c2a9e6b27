"""The table's columns and how one denoised cube of a case is scored."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from n2s_eds.metrics import (
    element_maps,
    map_count_ratios,
    psnr,
    score_split,
    spectral_angle,
    ssim,
)

from .cases import Case

__all__ = [
    "COLUMNS",
    "QUANT_LINES",
    "QUANT_MIN_PIXELS",
    "full_cube",
    "mse_gain_db",
    "quant_bias",
    "score",
]

#: Lines used for the quantification bias: the strongest ones, by full-dose counts.
QUANT_LINES = 3
#: Smallest phase region (pixels) for the quantification bias.
QUANT_MIN_PIXELS = 16

#: Table columns, in order.
COLUMNS: tuple[str, ...] = (
    "case",
    "method",
    "cube_gain_db",
    "maps_gain_db",
    "cube_psnr_db",
    "cube_ssim",
    "maps_psnr_db",
    "maps_ssim",
    "spectral_angle_deg",
    "count_ratio",
    "worst_map_count_ratio",
    "quant_bias_pct",
    "seconds",
    "cached",
)


def full_cube(case: Case, window_cube: np.ndarray) -> np.ndarray:
    """The denoised window channels put back on the full energy axis of the input."""
    out = np.array(case.raw, dtype=np.float32, copy=True)
    out[..., case.window.slice] = window_cube
    return out


def mse_gain_db(raw: np.ndarray, est: np.ndarray, truth: np.ndarray) -> float:
    m_raw = float(np.mean((raw - truth) ** 2))
    m_est = float(np.mean((est - truth) ** 2))
    if m_raw <= 0:
        return float("nan")
    if m_est <= 0:
        return float("inf")
    return 10.0 * math.log10(m_raw / m_est)


def _ptp(a: np.ndarray) -> float:
    r = float(np.max(a) - np.min(a))
    return r if r > 0 else 1.0


def _truth_scores(case: Case, den: np.ndarray) -> dict[str, float]:
    sl = case.window.slice
    t = case.truth[..., sl]
    x = case.raw[..., sl].astype(np.float64)
    d = den[..., sl].astype(np.float64)
    tm = element_maps(case.truth, case.windows)
    xm = element_maps(case.raw, case.windows)
    dm = element_maps(den, case.windows)
    return {
        "cube_gain_db": mse_gain_db(x, d, t),
        "maps_gain_db": mse_gain_db(xm, dm, tm),
        "cube_psnr_db": psnr(t, d, data_range=_ptp(t)),
        "cube_ssim": ssim(t, d, data_range=_ptp(t)),
        "maps_psnr_db": float(
            np.mean([psnr(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "maps_ssim": float(
            np.mean([ssim(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "spectral_angle_deg": spectral_angle(t, d),
        "count_ratio": float(d.sum() / x.sum()),
        "worst_map_count_ratio": map_count_ratios(dm, xm)[1],
    }


def _split_scores(case: Case, den: np.ndarray) -> dict[str, float]:
    s = score_split(
        case.raw,
        case.remainder,
        den,
        case.p,
        scale=case.scale,
        window=case.window,
        windows=case.windows,
    )
    keys = (
        "cube_gain_db",
        "maps_gain_db",
        "cube_gain_is_bound",
        "maps_gain_is_bound",
        "count_ratio",
        "worst_map_count_ratio",
    )
    return {k: s[k] for k in keys if k in s}


def _regions(ref_maps: np.ndarray) -> list[np.ndarray]:
    """One phase region per map: pixels above the Otsu threshold of the smoothed map."""
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu

    out = []
    for m in ref_maps:
        sm = gaussian_filter(m, 1.0)
        if np.ptp(sm) <= 0:
            out.append(np.zeros(m.shape, bool))
            continue
        out.append(sm > threshold_otsu(sm))
    return out


def quant_bias(case: Case, den: np.ndarray) -> list[dict[str, Any]]:
    """Bias of line-intensity ratios in phase regions, denoised against full dose, in %.

    The quantification check: the ``QUANT_LINES`` strongest
    metadata lines (by full-dose counts) are integrated (element-map windows, no background
    subtraction) in the denoised low-dose cube and in the full-dose cube (``x + r``; the
    truth for phantoms). Each weaker line is divided by the strongest; the ratio is summed
    over phase regions, one per line: the pixels above the Otsu threshold of that line's
    full-dose map (smoothed with a 1-pixel Gaussian). The bias is
    ``100 (ratio_denoised / ratio_full - 1)``; scale factors between the doses cancel.

    Parameters
    ----------
    case : Case
        A case whose metadata names at least two X-ray lines (``case.has_lines``).
    den : numpy.ndarray
        The denoised cube on the full energy axis.

    Returns
    -------
    list of dict
        ``ratio``, ``region``, ``pixels``, ``ratio_full``, ``ratio_denoised``, ``bias_pct``.
    """
    lines = [w for w in case.windows if not w.name.startswith("peak_")]
    if len(lines) < 2:
        return []
    ref = element_maps(case.reference, lines)
    order = np.argsort(ref.sum(axis=(1, 2)))[::-1][:QUANT_LINES]
    lines = [lines[i] for i in order]
    ref = ref[order]
    dm = element_maps(den, lines)
    regions = _regions(ref)
    rows = []
    for i in range(1, len(lines)):
        for j, reg in enumerate(regions):
            n = int(reg.sum())
            if n < QUANT_MIN_PIXELS:
                continue
            r_full = ref[i][reg].sum() / max(ref[0][reg].sum(), 1e-12)
            r_den = dm[i][reg].sum() / max(dm[0][reg].sum(), 1e-12)
            bias = 100.0 * (r_den / r_full - 1.0) if r_full > 0 else float("nan")
            rows.append(
                {
                    "ratio": f"{lines[i].name}/{lines[0].name}",
                    "region": f"{lines[j].name}-rich",
                    "pixels": n,
                    "ratio_full": float(r_full),
                    "ratio_denoised": float(r_den),
                    "bias_pct": float(bias),
                }
            )
    return rows


def score(case: Case, window_cube: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All scores of one denoised cube (processing-window channels) of a case.

    Returns
    -------
    row : dict
        The table columns (without ``case``, ``method``, ``seconds``, ``cached``).
    quant : list of dict
        The rows of :func:`quant_bias`.
    """
    den = full_cube(case, window_cube)
    row: dict[str, Any] = {c: float("nan") for c in COLUMNS[2:-2]}
    row.update(_truth_scores(case, den) if case.truth is not None else _split_scores(case, den))
    quant = quant_bias(case, den) if case.has_lines else []
    if quant:
        worst = max(quant, key=lambda q: abs(q["bias_pct"]) if np.isfinite(q["bias_pct"]) else -1)
        row["quant_bias_pct"] = worst["bias_pct"]
    return row, quant
