"""Scores of a phase map against the truth: IoU per phase and mean IoU, over all pixels or
away from the true boundaries."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..exceptions import InvalidInputError

__all__ = ["boundary_band", "iou_per_phase", "mean_iou"]


def boundary_band(truth: Any, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` pixels (8-neighbourhood steps) of a pixel of another phase.

    The band covers both sides of every boundary: a ``width`` of 1 marks each pixel that
    touches (also diagonally) a pixel of another phase.
    """
    truth = np.asarray(truth)
    size = 2 * int(width) + 1
    hi = ndimage.maximum_filter(truth, size=size, mode="nearest")
    lo = ndimage.minimum_filter(truth, size=size, mode="nearest")
    return hi != lo


def iou_per_phase(pred: Any, truth: Any, n_phases: int, mask: Any = None) -> np.ndarray:
    """Intersection over union of every phase (NaN for a phase in neither map).

    Parameters
    ----------
    pred, truth : array_like
        ``(Y, X)`` phase indices.
    n_phases : int
        Number of phases.
    mask : array_like of bool, optional
        Only these pixels count.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise InvalidInputError(f"phase maps differ in shape: {pred.shape} and {truth.shape}.")
    keep = np.ones(truth.shape, bool) if mask is None else np.asarray(mask, bool)
    p, t = pred[keep], truth[keep]
    out = np.full(n_phases, np.nan)
    for k in range(n_phases):
        union = np.count_nonzero((p == k) | (t == k))
        if union:
            out[k] = np.count_nonzero((p == k) & (t == k)) / union
    return out


def mean_iou(pred: Any, truth: Any, *, exclude_boundary: bool = False) -> float:
    """Mean IoU over the phases present in ``truth`` (or predicted), optionally leaving out
    the one-pixel band along the true boundaries (:func:`boundary_band`)."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    n = int(max(truth.max(), pred.max())) + 1
    mask = ~boundary_band(truth) if exclude_boundary else None
    return float(np.nanmean(iou_per_phase(pred, truth, n, mask)))
