"""Invented structure: edges and texture in an estimate that its clean image lacks.

For the target "the enhanced image adds no edge or texture that the clean image lacks":

* :func:`edge_and_texture_excess`: texture inside the truth's flat regions, and edges where
  the truth has none;
* :func:`edge_straightness`: whether a straight edge stays straight (rms deviation, in pixels,
  of the per-row 50 % crossings from a fitted line, :func:`edge_positions`), with the test
  image :func:`straight_edge_image`.

These names are also importable from :mod:`n2s_eds.imaging.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..exceptions import InvalidInputError
from .validation import as_image_stack

__all__ = [
    "StructureExcess",
    "checked_image",
    "edge_and_texture_excess",
    "edge_positions",
    "edge_straightness",
    "straight_edge_image",
]


def checked_image(x: Any, name: str, min_size: int = 7) -> np.ndarray:
    """One checked 2D image as float64 (:func:`as_image_stack` does the checks)."""
    stack, single = as_image_stack(x, name=name, min_size=min_size)
    if not single:
        raise InvalidInputError(f"{name}: expected one 2D image (H, W), got shape {stack.shape}.")
    return np.array(x, dtype=np.float64)


@dataclass(frozen=True)
class StructureExcess:
    """Structure in an estimate that its clean image lacks (see :func:`edge_and_texture_excess`).

    Attributes
    ----------
    flat_std : float
        Standard deviation of the estimate inside each connected flat region of the truth,
        averaged with the regions' pixel counts as weights, over the truth's range (NaN
        without flat pixels).
    flat_gradient : float
        Mean gradient magnitude of the estimate over the flat pixels, over the truth's range.
    invented_edge_fraction : float
        Fraction of the checked pixels (away from the truth's edges) where the estimate's
        gradient magnitude exceeds ``threshold``.
    threshold : float
        The gradient threshold, in image units per pixel.
    n_flat, n_checked : int
        Number of flat pixels, and of pixels checked for invented edges.
    """

    flat_std: float
    flat_gradient: float
    invented_edge_fraction: float
    threshold: float
    n_flat: int
    n_checked: int


def _gradient(a: np.ndarray) -> np.ndarray:
    """Gradient magnitude with central differences (a step of height h gives h / 2)."""
    return np.hypot(*np.gradient(a))


def _mask(m: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(m, dtype=bool)
    if arr.shape != shape:
        raise InvalidInputError(f"{name} has shape {arr.shape}, the images {shape}.")
    return arr


def edge_and_texture_excess(
    estimate: Any,
    truth: Any,
    *,
    flat_mask: Any = None,
    edge_mask: Any = None,
    threshold: float = 0.1,
    margin: int = 1,
    flat_tol: float = 1e-3,
) -> StructureExcess:
    """Measure texture and edges in an estimate where its clean image is flat.

    Parameters
    ----------
    estimate, truth : array_like
        2D images of the same shape.
    flat_mask : array_like of bool, optional
        Where the truth is flat. By default: pixels whose 3 x 3 neighbourhood in the truth
        varies by at most ``flat_tol`` times the truth's range.
    edge_mask : array_like of bool, optional
        The truth's edges, left out of the invented-edge count (used as given). By default:
        pixels where the truth's gradient magnitude exceeds the threshold, grown by
        ``margin`` pixels so that an edge blurred by the estimate does not count.
    threshold : float
        The gradient threshold as a fraction of the truth's range (its edge contrast).
        Gradients are central differences, so a full-contrast step reaches 0.5.
    margin : int
        Pixels added around the default edge mask.
    flat_tol : float
        Tolerance of the default flat mask, relative to the truth's range.

    Returns
    -------
    StructureExcess
        All zero for ``estimate = truth``.
    """
    t = checked_image(truth, "truth", min_size=3)
    e = checked_image(estimate, "estimate", min_size=3)
    if e.shape != t.shape:
        raise InvalidInputError(f"estimate {e.shape} and truth {t.shape} differ in shape.")
    rng = float(t.max() - t.min()) or 1.0
    thr = threshold * rng
    if flat_mask is None:
        local = ndimage.maximum_filter(t, 3, mode="nearest") - ndimage.minimum_filter(
            t, 3, mode="nearest"
        )
        flat = local <= flat_tol * rng
    else:
        flat = _mask(flat_mask, t.shape, "flat_mask")
    if edge_mask is None:
        edges = _gradient(t) > thr
        if margin > 0 and edges.any():
            edges = ndimage.binary_dilation(edges, iterations=int(margin))
    else:
        edges = _mask(edge_mask, t.shape, "edge_mask")
    ge = _gradient(e)
    n_flat = int(flat.sum())
    flat_std = flat_grad = float("nan")
    if n_flat:
        labels, _ = ndimage.label(flat)
        lab = labels[flat]
        count = np.bincount(lab)
        mean = np.bincount(lab, e[flat]) / np.maximum(count, 1)
        var = np.bincount(lab, (e[flat] - mean[lab]) ** 2) / np.maximum(count, 1)
        flat_std = float(np.sum(count * np.sqrt(var)) / n_flat / rng)
        flat_grad = float(ge[flat].mean() / rng)
    checked = ~edges
    n_checked = int(checked.sum())
    invented = float(np.mean(ge[checked] > thr)) if n_checked else float("nan")
    return StructureExcess(flat_std, flat_grad, invented, thr, n_flat, n_checked)


def straight_edge_image(
    shape: tuple[int, int],
    angle_deg: float = 0.0,
    low: float = 0.0,
    high: float = 1.0,
    *,
    position: float | None = None,
) -> np.ndarray:
    """A test image: two flat regions, ``low`` left and ``high`` right, across a straight edge.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``.
    angle_deg : float
        Tilt of the edge from vertical, in degrees, within (-60, 60); positive moves the edge
        to the right going down the rows.
    low, high : float
        The two levels.
    position : float, optional
        Column of the edge in the middle row; the image's centre by default.

    Returns
    -------
    numpy.ndarray
        float64 ``(H, W)``. Across the edge the value ramps linearly over one pixel of
        distance from the edge line, so the 50 % crossing of row ``y`` lies at
        ``position + (y - (H - 1) / 2) * tan(angle)``.
    """
    h, w = (int(s) for s in shape)
    if h < 2 or w < 2 or abs(angle_deg) >= 60:
        raise InvalidInputError(
            f"straight_edge_image: needs H, W >= 2 and |angle| < 60 degrees, got {shape}, "
            f"{angle_deg}."
        )
    a = np.deg2rad(angle_deg)
    x0 = (w - 1) / 2 if position is None else float(position)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    d = (x - x0 - (y - (h - 1) / 2) * np.tan(a)) * np.cos(a)
    return low + (high - low) * np.clip(0.5 + d, 0.0, 1.0)


def edge_positions(image: Any, *, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column of the 50 % crossing of a vertical or tilted step edge in each row.

    Parameters
    ----------
    image : array_like
        A 2D image with one step edge running from top to bottom.
    level : float, optional
        The crossing level. By default the midpoint of the two levels: the means of the
        pixels below and above the midpoint of the 1st and 99th percentiles.

    Returns
    -------
    rows, columns : numpy.ndarray
        The rows with a crossing and the sub-pixel column (linear interpolation) of the
        crossing in each. The edge's direction (rising or falling) is taken from the left and
        right quarters of the image; where a row crosses the level several times in that
        direction, the steepest crossing is taken.
    """
    a = checked_image(image, "image", min_size=2)
    if level is None:
        mid = float(np.mean(np.percentile(a, [1, 99])))
        below, above = a[a < mid], a[a >= mid]
        level = mid if below.size == 0 else (float(below.mean()) + float(above.mean())) / 2
    q4 = max(1, a.shape[1] // 4)
    sign = 1.0 if a[:, -q4:].mean() >= a[:, :q4].mean() else -1.0
    q = sign * (a - level)
    rows, cols = [], []
    for y, r in enumerate(q):
        i = np.flatnonzero((r[:-1] < 0) & (r[1:] >= 0))
        if i.size:
            k = i[np.argmax(r[i + 1] - r[i])]
            rows.append(y)
            cols.append(k + -r[k] / (r[k + 1] - r[k]))
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.float64)


def edge_straightness(image: Any, *, level: float | None = None) -> float:
    """Root-mean-square deviation, in pixels, of an edge from a straight line.

    The per-row 50 % crossings (:func:`edge_positions`) are fitted with a straight line
    ``column = a * row + b`` (least squares); the result is the rms of the residuals. A
    straight edge, vertical or tilted (:func:`straight_edge_image`), gives about 0: below
    0.07 pixels, the error of interpolating linearly across its sampled one-pixel ramp.

    Raises
    ------
    InvalidInputError
        Fewer than 3 rows cross the level.
    """
    rows, cols = edge_positions(image, level=level)
    if rows.size < 3:
        raise InvalidInputError(
            f"edge_straightness: only {rows.size} rows cross the edge level; the image needs "
            "one step edge from top to bottom."
        )
    coef = np.polyfit(rows, cols, 1)
    return float(np.sqrt(np.mean((cols - np.polyval(coef, rows)) ** 2)))
