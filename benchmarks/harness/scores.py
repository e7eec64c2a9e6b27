"""The table's columns and how one denoised cube (or, for maps-only methods, one set of element
maps) of a case is scored."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from n2s_eds.metrics import (
    element_maps,
    map_count_ratios,
    psnr,
    resolved_gain_db,
    score_split,
    spectral_angle,
    ssim,
    umse,
    umse_stderr,
)

from .cases import Case

__all__ = [
    "COLUMNS",
    "QUANT_LINES",
    "QUANT_MIN_PIXELS",
    "full_cube",
    "mse_gain_db",
    "quant_bias",
    "quant_bias_maps",
    "score",
    "score_maps",
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


def _truth_map_scores(case: Case, dm: np.ndarray) -> dict[str, float]:
    """The maps columns against the truth, from the maps ``dm`` of ``case.windows``."""
    tm = element_maps(case.truth, case.windows)
    xm = element_maps(case.raw, case.windows)
    return {
        "maps_gain_db": mse_gain_db(xm, dm, tm),
        "maps_psnr_db": float(
            np.mean([psnr(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "maps_ssim": float(
            np.mean([ssim(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "worst_map_count_ratio": map_count_ratios(dm, xm)[1],
    }


def _truth_scores(case: Case, den: np.ndarray) -> dict[str, float]:
    sl = case.window.slice
    t = case.truth[..., sl]
    x = case.raw[..., sl].astype(np.float64)
    d = den[..., sl].astype(np.float64)
    maps = _truth_map_scores(case, element_maps(den, case.windows))
    return {
        "cube_gain_db": mse_gain_db(x, d, t),
        "maps_gain_db": maps["maps_gain_db"],
        "cube_psnr_db": psnr(t, d, data_range=_ptp(t)),
        "cube_ssim": ssim(t, d, data_range=_ptp(t)),
        "maps_psnr_db": maps["maps_psnr_db"],
        "maps_ssim": maps["maps_ssim"],
        "spectral_angle_deg": spectral_angle(t, d),
        "count_ratio": float(d.sum() / x.sum()),
        "worst_map_count_ratio": maps["worst_map_count_ratio"],
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


def _split_map_scores(case: Case, dm: np.ndarray) -> dict[str, Any]:
    """The maps columns of a split case from the maps ``dm`` of ``case.windows``.

    The same estimate as the maps part of :func:`n2s_eds.metrics.score_split`: the unbiased
    split MSE of the maps against the remainder's maps, its lower bound when unresolved.
    """
    mx = element_maps(case.raw, case.windows)
    mr = element_maps(case.remainder, case.windows)
    m_raw = umse(mx, mr, case.p, scale=case.scale)
    m_den = umse(dm, mr, case.p, scale=case.scale)
    gain, bound = resolved_gain_db(
        m_raw, m_den, umse_stderr(dm, mr, case.p, scale=case.scale, unit_axis=0)
    )
    return {
        "maps_gain_db": gain,
        "maps_gain_is_bound": bound,
        "worst_map_count_ratio": map_count_ratios(dm, mx)[1],
    }


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


def quant_bias_maps(case: Case, maps: np.ndarray) -> list[dict[str, Any]]:
    """Bias of line-intensity ratios in phase regions, denoised against full dose, in %.

    The quantification check: for the ``QUANT_LINES`` strongest metadata lines (by
    full-dose counts), the denoised low-dose maps are compared with the maps (element-map
    windows, no background subtraction) of the full-dose cube (``x + r``; the truth for
    phantoms). Each weaker line is divided by the strongest; the ratio is summed
    over phase regions, one per line: the pixels above the Otsu threshold of that line's
    full-dose map (smoothed with a 1-pixel Gaussian). The bias is
    ``100 (ratio_denoised / ratio_full - 1)``; scale factors between the doses cancel.

    Parameters
    ----------
    case : Case
        A case whose metadata names at least two X-ray lines (``case.has_lines``).
    maps : numpy.ndarray
        The denoised element maps ``(n_maps, Y, X)`` of ``case.windows``.

    Returns
    -------
    list of dict
        ``ratio``, ``region``, ``pixels``, ``ratio_full``, ``ratio_denoised``, ``bias_pct``.
    """
    index = [i for i, w in enumerate(case.windows) if not w.name.startswith("peak_")]
    if len(index) < 2:
        return []
    lines = [case.windows[i] for i in index]
    ref = element_maps(case.reference, lines)
    order = np.argsort(ref.sum(axis=(1, 2)))[::-1][:QUANT_LINES]
    lines = [lines[i] for i in order]
    ref = ref[order]
    dm = np.asarray(maps, dtype=np.float64)[[index[i] for i in order]]
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


def quant_bias(case: Case, den: np.ndarray) -> list[dict[str, Any]]:
    """:func:`quant_bias_maps` of the element maps of a denoised cube (full energy axis)."""
    return quant_bias_maps(case, element_maps(den, case.windows))


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
    _worst_bias(row, quant)
    return row, quant


def _worst_bias(row: dict[str, Any], quant: list[dict[str, Any]]) -> None:
    if quant:
        worst = max(quant, key=lambda q: abs(q["bias_pct"]) if np.isfinite(q["bias_pct"]) else -1)
        row["quant_bias_pct"] = worst["bias_pct"]


def score_maps(case: Case, maps: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The maps columns of a maps-only method: its element maps of ``case.windows``.

    The cube columns (``cube_*``, ``spectral_angle_deg``, ``count_ratio``) are NaN; the maps
    gain, PSNR/SSIM (phantoms), worst map count ratio and quantification bias are computed
    from ``maps`` exactly as :func:`score` computes them from a cube's maps.

    Parameters
    ----------
    case : Case
    maps : numpy.ndarray
        ``(n_maps, Y, X)``, one map per window of ``case.windows``, in that order.

    Returns
    -------
    row : dict
        The table columns (without ``case``, ``method``, ``seconds``, ``cached``).
    quant : list of dict
        The rows of :func:`quant_bias_maps`.
    """
    dm = np.asarray(maps, dtype=np.float64)
    if dm.shape[0] != len(case.windows):
        raise ValueError(f"{dm.shape[0]} maps for {len(case.windows)} element windows")
    row: dict[str, Any] = {c: float("nan") for c in COLUMNS[2:-2]}
    if case.truth is not None:
        row.update(_truth_map_scores(case, dm))
    else:
        row.update(_split_map_scores(case, dm))
    quant = quant_bias_maps(case, dm) if case.has_lines else []
    _worst_bias(row, quant)
    return row, quant
