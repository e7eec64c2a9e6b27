"""Phase-mixing scores against a known truth: edge sharpness and leakage into absent pixels.

A denoiser that averages neighbouring pixels mixes the spectra of neighbouring phases: a step
in an element map widens, and an element leaks into pixels where it is absent. Two scores
measure this on a simulated truth (e.g. ``phantom(layout="boundary")``, whose element maps
all have a straight step edge, with :func:`n2s_eds.simulate.phantom_maps` giving where each
element is absent):

* :func:`edge_width`: the 10-90 % width, in pixels, of a step edge, on the profile across a
  straight boundary (:func:`edge_profile`);
* :func:`absent_leakage`: the excess of a denoised element map over the truth's own map in the
  pixels where the element is absent, as a fraction of the element's mean map where it is
  present. Target for a good denoiser: below 2 %.

:func:`line_presence` turns the element maps of a phantom into the presence masks of a list of
element windows (:func:`~n2s_eds.metrics.element_windows`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["edge_profile", "edge_width", "absent_leakage", "line_presence"]


def edge_profile(image: Any, axis: int = -1) -> np.ndarray:
    """Mean profile of a map across a straight, axis-aligned boundary.

    Parameters
    ----------
    image : array_like
        A map ``(Y, X)``, or a profile (1-D, returned as float64).
    axis : int
        The axis across the boundary: ``-1`` (default) for a vertical boundary (the profile
        runs along x; the map is averaged over the rows), ``0`` for a horizontal one.

    Returns
    -------
    numpy.ndarray
        float64 profile along ``axis``.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise InvalidInputError(f"expected a map (Y, X) or a profile, got shape {a.shape}")
    return a.mean(axis=1 - (axis % 2))


def _crossings(q: np.ndarray, level: float) -> np.ndarray:
    """Indices i where the rising profile q passes the level between samples i and i + 1."""
    return np.flatnonzero((q[:-1] < level) & (q[1:] >= level))


def edge_width(
    profile_or_map: Any,
    *,
    axis: int = -1,
    plateau: int | None = None,
    position: float | None = None,
    low: float = 0.1,
    high: float = 0.9,
    method: str = "interp",
) -> float:
    """10-90 % width of a step edge, in pixels, with sub-pixel linear interpolation.

    Convention: a map is first averaged along the boundary (:func:`edge_profile`). The two
    levels of the step are the means of the first and last ``plateau`` samples of the profile;
    the profile is rescaled to run from 0 (first level) to 1 (last level), whatever the
    direction of the step. The edge is where the rescaled profile passes 0.5 (the crossing
    nearest to ``position`` when given, else the one with the largest rise between two
    samples). From there the profile is followed outwards to the first sample at or below
    ``low`` on one side and at or above ``high`` on the other; each crossing position is
    linearly interpolated between the two samples around it (sample ``i`` at coordinate
    ``i``), and the width is their distance.

    ``method="erf"`` instead fits ``a + b Phi((x - x0) / s)`` (a Gaussian-blurred step, ``Phi``
    the normal CDF) to the whole profile by least squares and returns the 10-90 % width of the
    fitted step, ``s (Phi^-1(high) - Phi^-1(low)) = 2.563 s``: far less sensitive to noise in
    the profile, but it assumes a symmetric, Gaussian-like edge.

    What to expect: a step sampled at pixel centres from a Gaussian-blurred step of standard
    deviation ``s`` gives ``2 * 1.2816 s = 2.563 s`` (within a few % for ``s`` >= 2 px, 6 % at
    1 px). An ideal, unblurred step is the resolution floor of the interpolation: 0.8 px when
    the boundary lies on a pixel edge (the truth of ``phantom(layout="boundary")`` with even
    X), up to 1.6 px when it halves a pixel; the fit gives about 0 for it.

    Parameters
    ----------
    profile_or_map : array_like
        Profile across the boundary (1-D) or map (Y, X).
    axis : int
        For a map, the axis across the boundary (see :func:`edge_profile`).
    plateau : int or None
        Samples averaged at each end for the two levels; default a quarter of the profile.
    position : float or None
        Expected position of the edge (sample coordinate), to pick among several 0.5 crossings.
    low, high : float
        The two levels (fractions of the step), 0.1 and 0.9 for the 10-90 % width.
    method : {"interp", "erf"}
        Linear interpolation of the crossings (default) or the fit of a blurred step.

    Returns
    -------
    float
        The width in pixels; NaN when the profile has no step (equal end levels) or does not
        reach ``low`` and ``high`` on the two sides of its edge.
    """
    p = edge_profile(profile_or_map, axis)
    n = p.size
    if n < 4:
        raise InvalidInputError(f"a profile of at least 4 samples is needed, got {n}")
    if method not in ("interp", "erf"):
        raise InvalidInputError(f"method must be 'interp' or 'erf', got {method!r}")
    if not 0.0 < low < 0.5 < high < 1.0:
        raise InvalidInputError(f"need 0 < low < 0.5 < high < 1, got low={low}, high={high}")
    k = max(1, n // 4) if plateau is None else int(plateau)
    if not 1 <= k <= n // 2:
        raise InvalidInputError(f"plateau={plateau!r} must be between 1 and half the profile")
    start, stop = float(p[:k].mean()), float(p[-k:].mean())
    step = stop - start
    if not np.isfinite(step) or step == 0.0:
        return float("nan")
    q = (p - start) / step
    centres = _crossings(q, 0.5)
    if method == "erf":
        guess = float(np.median(centres) + 0.5) if centres.size else (n - 1) / 2.0
        return _erf_width(p, start, step, guess if position is None else position, low, high)
    if centres.size == 0:
        return float("nan")
    if position is not None:
        i0 = int(centres[np.argmin(np.abs(centres + 0.5 - position))])
    else:
        i0 = int(centres[np.argmax(q[centres + 1] - q[centres])])
    j = i0
    while j >= 0 and q[j] > low:
        j -= 1
    m = i0 + 1
    while m < n and q[m] < high:
        m += 1
    if j < 0 or m >= n:
        return float("nan")
    x_low = j + (low - q[j]) / (q[j + 1] - q[j])
    x_high = m - 1 + (high - q[m - 1]) / (q[m] - q[m - 1])
    return float(x_high - x_low)


def _erf_width(
    p: np.ndarray, start: float, step: float, x0: float, low: float, high: float
) -> float:
    """low-high width of the least-squares fit of a + b Phi((x - x0) / s) to a profile."""
    from scipy.optimize import OptimizeWarning, curve_fit
    from scipy.special import ndtr, ndtri

    def model(x: np.ndarray, a: float, b: float, c: float, s: float) -> np.ndarray:
        return a + b * ndtr((x - c) / max(abs(s), 1e-3))

    x = np.arange(p.size, dtype=np.float64)
    try:
        with warnings.catch_warnings():  # a sharp step leaves s undetermined: not an error
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(model, x, p, p0=(start, step, x0, 1.0), maxfev=5000)
    except (RuntimeError, ValueError):
        return float("nan")
    s = abs(float(popt[3])) if abs(float(popt[3])) > 1e-3 else 0.0
    return float(s * (ndtri(high) - ndtri(low)))


def _as_stack(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidInputError(f"{name} must be maps (n_maps, Y, X) or one map (Y, X)")
    return arr


def absent_leakage(
    denoised_maps: Any,
    truth_maps: Any,
    presence: Any,
    *,
    margin: int = 0,
) -> np.ndarray:
    """Excess of each denoised element map where the element is absent, as a fraction.

    For map ``k``, with ``A`` the pixels where the element is absent (``presence[k]`` false,
    or 0 for element masses) and ``P`` those where it is present::

        leakage[k] = (mean(denoised[k][A]) - mean(truth[k][A])) / mean(truth[k][P])

    The truth maps are the same line windows summed on the expected counts
    (:func:`~n2s_eds.metrics.element_maps` of the truth cube), so the background and the tails
    of overlapping lines in the window cancel and only what the denoiser added counts; an
    unbiased estimate (the raw counts) has expectation 0. Averaging over a phase boundary
    makes it positive (the element is carried into the absent side); a negative value means
    the denoiser removed counts there. A good denoiser stays below 0.02 (2 %).

    The score depends on the geometry: a blur of ``s`` px across a straight boundary moves
    about ``0.4 s`` columns' worth of the step into the absent side, so the leakage over an
    absent region ``W`` columns wide is about ``0.4 s / W`` of the step (use ``margin`` to
    score only away from the boundary). On one noisy realisation it also carries the noise
    of the mean over the absent pixels, ``sqrt(mean(truth[A]) / n_A) / mean(truth[P])`` for
    the raw counts.

    Parameters
    ----------
    denoised_maps : array_like
        Element maps ``(n_maps, Y, X)`` (or one map) of the denoised cube.
    truth_maps : array_like
        The same maps of the expected counts.
    presence : array_like
        Where each element is present, same shape: booleans (phase masks) or the truth
        element masses (present where > 0); see :func:`line_presence`.
    margin : int
        Leave out absent pixels within ``margin`` pixels (a square neighbourhood) of a present
        pixel, to score the leakage away from the boundary only. 0: every absent pixel.

    Returns
    -------
    numpy.ndarray
        float64 ``(n_maps,)`` fractions (not %); NaN for a map whose element is present
        everywhere or nowhere (or has no absent pixel left after ``margin``).
    """
    d = _as_stack(denoised_maps, "denoised_maps").astype(np.float64)
    t = _as_stack(truth_maps, "truth_maps").astype(np.float64)
    present = _as_stack(presence, "presence") > 0
    if not d.shape == t.shape == present.shape:
        raise InvalidInputError(
            f"shapes differ: denoised {d.shape}, truth {t.shape}, presence {present.shape}"
        )
    if int(margin) < 0:
        raise InvalidInputError(f"margin={margin!r} must be >= 0")
    out = np.full(d.shape[0], np.nan)
    for k in range(d.shape[0]):
        absent = ~present[k]
        if margin > 0 and present[k].any():
            from scipy.ndimage import binary_dilation

            near = binary_dilation(present[k], np.ones((3, 3), bool), iterations=int(margin))
            absent &= ~near
        if not absent.any() or not present[k].any():
            continue
        reference = float(t[k][present[k]].mean())
        if reference > 0:
            out[k] = (d[k][absent].mean() - t[k][absent].mean()) / reference
    return out


def line_presence(
    windows: Sequence[Any], element_masses: Mapping[str, Any], shape: tuple[int, ...] = ()
) -> np.ndarray:
    """Presence mask of the element of each window, from the truth element maps.

    Parameters
    ----------
    windows : sequence of ElementWindow or str
        Windows (or line names such as ``"Fe_Ka"``); the element is the part before ``_``.
    element_masses : mapping of str to array_like
        Per element, its truth map (e.g. ``phantom_maps(...)[0]``): present where > 0.
    shape : tuple of int
        Map shape ``(Y, X)`` for windows whose element is not in ``element_masses`` (a
        ``peak_...`` window, for instance): they are marked present everywhere, so that
        :func:`absent_leakage` gives NaN for them. Default: the shape of the given maps.

    Returns
    -------
    numpy.ndarray
        bool ``(n_windows, Y, X)``.
    """
    if not shape:
        if not element_masses:
            raise InvalidInputError("no element map given and no shape")
        shape = np.shape(next(iter(element_masses.values())))
    out = []
    for w in windows:
        name = w if isinstance(w, str) else w.name
        element = name.split("_", 1)[0]
        if element in element_masses:
            out.append(np.asarray(element_masses[element]) > 0)
        else:
            out.append(np.ones(shape, bool))
    return np.stack(out)
