"""Shared numerical operations: box sums over scan pixels and sliding energy-window sums.

Imported by the models, the losses and the pre/post-processing, so that none of
them imports another for a kernel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_sum_", "window_matrix", "window_sums"]


def box_sum_(out: np.ndarray, radius: int) -> np.ndarray:
    """Sum every (E, Y, X) plane over a (2r+1)^2 pixel box, in place, truncated at the edges.

    Separable sums of shifted slices: exact for integer counts (no cumulative
    sums that lose precision on large cubes).
    """
    if radius <= 0:
        return out
    for axis in (1, 2):
        src = out.copy()
        n = src.shape[axis]
        for d in range(1, radius + 1):
            if d >= n:
                break
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            out[tuple(lo)] += src[tuple(hi)]
            out[tuple(hi)] += src[tuple(lo)]
    return out


def window_sums(rows: Tensor, window_channels: int) -> Tensor:
    """Sums of (N, E) spectra over sliding energy windows of ``window_channels``
    (half overlapping; one window of all channels when the spectra are shorter):
    (N, n_windows). What the window loss of :class:`n2s_eds.module.N2SModule` scores."""
    w = min(int(window_channels), rows.shape[1])
    return F.avg_pool1d(rows[:, None], w, stride=max(1, w // 2))[:, 0] * w


def window_matrix(n: int, w: int) -> Tensor:
    """(n_windows, n) float64 indicators of the sliding energy windows of ``w`` channels
    that :func:`window_sums` sums over (stride half a window)."""
    starts = torch.arange(0, n - w + 1, max(1, w // 2))
    omega = torch.zeros(len(starts), n, dtype=torch.float64)
    for i, s0 in enumerate(starts.tolist()):
        omega[i, s0 : s0 + w] = 1.0
    return omega
