"""Self-supervised scores: splitting counts into two independent parts and the split MSE.

The measured counts are split into two statistically independent parts: a
*binomial split* (``x ~ Binomial(N, p)``, ``r = N - x``, :func:`binomial_split`)
or a *frame split* (odd against even frames of one scan, :func:`frame_split`).
The denoiser sees ``x`` only; the remainder ``r``, rescaled by ``s`` so that
``E[s r] = E[x]`` (:func:`split_scale`), gives an unbiased estimate of the mean
squared error of the denoised ``x`` against its (unknown) expected counts
(:func:`umse`, with its standard error :func:`umse_stderr`) and of the gain in
dB over the raw ``x`` (:func:`split_gain_db`, :func:`resolved_gain_db`).
:func:`score_split` gathers every split score of one denoised split, with the
count conservation ratios (:func:`count_ratio`, :func:`map_count_ratios`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..preprocess import EnergyWindow
from .windows import ElementWindow, element_maps

__all__ = [
    "binomial_split",
    "frame_split",
    "split_scale",
    "umse",
    "umse_stderr",
    "resolved_gain_db",
    "split_gain_db",
    "count_ratio",
    "map_count_ratios",
    "score_split",
]


def _check_counts(counts: Any) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise InvalidInputError(f"counts must be numeric, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidInputError(
                "counts must be whole numbers (raw detector counts); splitting scaled, "
                "background-subtracted or already denoised data gives meaningless scores."
            )
    if arr.size and arr.min() < 0:
        raise InvalidInputError("counts must be non-negative.")
    return arr


def binomial_split(
    counts: Any, p: float, seed: int | np.random.Generator | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split counts into two independent parts by binomial thinning.

    For Poisson counts ``N`` with mean ``lam``, ``x ~ Binomial(N, p)`` and ``r = N - x`` are
    independent Poisson counts with means ``p lam`` and ``(1 - p) lam``.

    Parameters
    ----------
    counts : array_like
        Non-negative whole counts, any shape.
    p : float
        Fraction kept in ``x``, ``0 < p < 1``.
    seed : int, numpy.random.Generator or None
        Random seed or generator.

    Returns
    -------
    x, r : numpy.ndarray
        int64 arrays shaped like ``counts``; ``x + r == counts``.
    """
    if not 0.0 < float(p) < 1.0:
        raise InvalidInputError(f"p must lie strictly between 0 and 1, got {p}.")
    n = _check_counts(counts).astype(np.int64)
    rng = np.random.default_rng(seed)
    x = rng.binomial(n, float(p)).astype(np.int64)
    return x, n - x


def frame_split(frames: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a stack of frames of one scan into two independent sums.

    ``x`` sums the frames ``0, 2, 4, ...`` (the 1st, 3rd, ... frames) and ``r`` the frames
    ``1, 3, 5, ...``. The matching scale for :func:`umse` is ``n_x / n_r``: 1 for an even
    number of frames.

    Parameters
    ----------
    frames : array_like
        Counts with a frame axis, e.g. ``(Y, X, E, frame)`` or ``(frame, Y, X, E)``.
    axis : int
        The frame axis.

    Returns
    -------
    x, r : numpy.ndarray
        int64 sums without the frame axis.
    scale : float
        ``n_x / n_r``.
    """
    arr = _check_counts(frames)
    n = arr.shape[axis]
    if n < 2:
        raise InvalidInputError(f"need at least 2 frames on axis {axis}, got {n}.")
    arr = np.moveaxis(arr, axis, 0).astype(np.int64)
    x = arr[0::2].sum(axis=0)
    r = arr[1::2].sum(axis=0)
    return x, r, len(range(0, n, 2)) / len(range(1, n, 2))


def split_scale(p: float | None = None, scale: float | None = None) -> float:
    """The scale ``s`` with ``E[s r] = E[x]``: ``p / (1 - p)`` for a binomial split.

    Exactly one of ``p`` (binomial split) and ``scale`` (given directly, e.g. from
    :func:`frame_split`) must be given.
    """
    if (p is None) == (scale is None):
        raise InvalidInputError("give exactly one of p (binomial split) and scale.")
    if scale is not None:
        if not float(scale) > 0:
            raise InvalidInputError(f"scale must be positive, got {scale}.")
        return float(scale)
    if not 0.0 < float(p) < 1.0:
        raise InvalidInputError(f"p must lie strictly between 0 and 1, got {p}.")
    return float(p) / (1.0 - float(p))


def umse(
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
) -> float:
    """Unbiased estimate of the MSE of a denoised split against its expected counts.

    With ``s = p / (1 - p)`` (or ``scale``),
    ``mean((d - s r)^2) - mean(s^2 r)`` has expectation ``mean((d - E[x])^2)`` when ``d``
    depends on ``x`` only and ``r`` is Poisson and independent of ``x``: the MSE in the units
    (scale) of ``x``.

    Parameters
    ----------
    denoised : array_like
        The estimate ``d`` of ``E[x]`` (or ``x`` itself, for the raw score).
    remainder : array_like
        The independent remainder ``r``, same shape.
    p : float or None
        Binomial split fraction.
    scale : float or None
        The scale ``s`` directly (frame splits).

    Returns
    -------
    float
        The estimate; it can be negative by chance when the true MSE is tiny.
    """
    s = split_scale(p, scale)
    d = np.asarray(denoised, dtype=np.float64)
    r = np.asarray(remainder, dtype=np.float64)
    if d.shape != r.shape:
        raise InvalidInputError(f"denoised {d.shape} and remainder {r.shape} differ in shape.")
    return float(np.mean((d - s * r) ** 2) - s * s * np.mean(r))


def umse_stderr(
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
    unit_axis: int = -1,
) -> float:
    """Standard error of :func:`umse`, from its spread across pixels.

    The per-voxel terms ``(d - s r)^2 - s^2 r`` are summed over ``unit_axis`` (the energy
    axis of a cube, the map axis of stacked maps), so that each pixel is one unit; pixels
    are treated as independent. The estimate cannot resolve an MSE much smaller than this
    error: such a gain is reported as a lower bound (see :func:`score_split`).

    Parameters
    ----------
    denoised, remainder : array_like
        As for :func:`umse`.
    p, scale : float or None
        As for :func:`umse`.
    unit_axis : int
        The axis summed within a pixel.

    Returns
    -------
    float
        The standard error, in the units of :func:`umse`.
    """
    s = split_scale(p, scale)
    d = np.asarray(denoised, dtype=np.float64)
    r = np.asarray(remainder, dtype=np.float64)
    if d.shape != r.shape:
        raise InvalidInputError(f"denoised {d.shape} and remainder {r.shape} differ in shape.")
    terms = (d - s * r) ** 2 - s * s * r
    per_unit = np.moveaxis(terms, unit_axis, -1).reshape(-1, terms.shape[unit_axis])
    per_pixel = per_unit.mean(axis=1)
    n = per_pixel.size
    if n < 2:
        return float("nan")
    return float(per_pixel.std(ddof=1) / np.sqrt(n))


def resolved_gain_db(u_raw: float, u_den: float, stderr: float) -> tuple[float, bool]:
    """A split gain in dB, or its lower bound when the denoised MSE is below resolution.

    Parameters
    ----------
    u_raw, u_den : float
        :func:`umse` of the raw split and of the denoised split.
    stderr : float
        :func:`umse_stderr` of the denoised split.

    Returns
    -------
    (float, bool)
        ``10 log10(u_raw / u_den)`` and ``False`` when ``u_den`` exceeds twice its standard
        error; otherwise the gain at the upper confidence limit of the MSE,
        ``10 log10(u_raw / (max(u_den, 0) + 2 stderr))``, and ``True``: the true gain is at
        least that (at about 97.5 % confidence). ``nan`` when ``u_raw <= 0``.
    """
    if not u_raw > 0:
        return float("nan"), False
    if np.isfinite(stderr) and u_den <= 2.0 * stderr:
        upper = max(u_den, 0.0) + 2.0 * stderr
        return float(10.0 * np.log10(u_raw / upper)), True
    if u_den <= 0:
        return float("inf"), False
    return float(10.0 * np.log10(u_raw / u_den)), False


def split_gain_db(
    raw: Any,
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
) -> float:
    """Gain in dB of a denoised split over the raw split: ``10 log10(umse(raw) / umse(d))``.

    Returns ``inf`` when the denoised estimate is ``<= 0`` and ``nan`` when the raw one is.
    """
    u_raw = umse(raw, remainder, p, scale=scale)
    u_den = umse(denoised, remainder, p, scale=scale)
    if u_raw <= 0:
        return float("nan")
    if u_den <= 0:
        return float("inf")
    return float(10.0 * np.log10(u_raw / u_den))


# --------------------------------------------------------------------------------------------
# Count conservation
# --------------------------------------------------------------------------------------------


def count_ratio(denoised: Any, raw: Any) -> float:
    """Total counts of the denoised data over those of the raw data (1 = conserved)."""
    total = float(np.sum(raw, dtype=np.float64))
    if total == 0:
        return float("nan")
    return float(np.sum(denoised, dtype=np.float64)) / total


def map_count_ratios(denoised_maps: Any, raw_maps: Any) -> tuple[np.ndarray, float]:
    """Per-map count ratios of stacked maps ``(n_maps, Y, X)`` and the one farthest from 1."""
    d = np.asarray(denoised_maps, dtype=np.float64)
    r = np.asarray(raw_maps, dtype=np.float64)
    axes = tuple(range(1, r.ndim))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = d.sum(axis=axes) / r.sum(axis=axes)
    worst = float(ratios[np.nanargmax(np.abs(ratios - 1.0))]) if ratios.size else float("nan")
    return ratios, worst


# --------------------------------------------------------------------------------------------
# The split score of a denoiser
# --------------------------------------------------------------------------------------------


def score_split(
    raw: Any,
    remainder: Any,
    denoised: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
    window: EnergyWindow | None = None,
    windows: Sequence[ElementWindow] | None = None,
) -> dict[str, float]:
    """All split scores of one denoised split, inside the processing window.

    Parameters
    ----------
    raw, remainder, denoised : array_like
        The split ``x`` given to the denoiser, the remainder ``r`` and the denoised ``x``,
        ``(Y, X, E)`` on the full energy axis (or already cut to ``window`` when it is
        ``None``).
    p, scale : float or None
        The split fraction or the scale ``s`` (exactly one).
    window : EnergyWindow or None
        Processing window (see :func:`processing_window`); ``None`` uses all channels.
    windows : sequence of ElementWindow or None
        Element windows (see :func:`element_windows`); without them, no map scores.

    Returns
    -------
    dict
        ``umse_raw``, ``umse_denoised``, ``cube_gain_db``, ``count_ratio`` and, with
        ``windows``, ``maps_gain_db``, ``worst_map_count_ratio``.
    """
    x = np.asarray(raw)
    r = np.asarray(remainder)
    d = np.asarray(denoised)
    if not x.shape == r.shape == d.shape:
        raise InvalidInputError(
            f"raw {x.shape}, remainder {r.shape} and denoised {d.shape} must have one shape."
        )
    sl = window.slice if window is not None else slice(None)
    xw, rw, dw = x[..., sl], r[..., sl], d[..., sl]
    u_raw, u_den = umse(xw, rw, p, scale=scale), umse(dw, rw, p, scale=scale)
    gain, bound = resolved_gain_db(u_raw, u_den, umse_stderr(dw, rw, p, scale=scale))
    out: dict[str, Any] = {
        "umse_raw": u_raw,
        "umse_denoised": u_den,
        "cube_gain_db": gain,
        "cube_gain_is_bound": bound,
        "count_ratio": count_ratio(dw, xw),
    }
    if windows:
        if window is not None:
            bad = [w.name for w in windows if w.start < window.start or w.stop > window.stop]
            if bad:
                raise InvalidInputError(f"element windows {bad} reach outside the window.")
        mx, mr, md = element_maps(x, windows), element_maps(r, windows), element_maps(d, windows)
        m_raw, m_den = umse(mx, mr, p, scale=scale), umse(md, mr, p, scale=scale)
        out["maps_gain_db"], out["maps_gain_is_bound"] = resolved_gain_db(
            m_raw, m_den, umse_stderr(md, mr, p, scale=scale, unit_axis=0)
        )
        out["worst_map_count_ratio"] = map_count_ratios(md, mx)[1]
    return out
