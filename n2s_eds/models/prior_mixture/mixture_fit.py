"""The closed-form fit of the fixed mixture that starts the mixing network.

Every candidate is J-invariant, so the mean squared difference between a fixed
mixture of candidates and the counts is, up to a constant, the mixture's error
against the expected counts: the best weights of each energy band on the
simplex solve a small quadratic programme (:meth:`PriorMixture.init_weights`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ...ops import window_matrix, window_sums
from .basis import projection_matrix

__all__ = ["fit_band_mixtures", "mixture_bias", "simplex_least_squares", "window_own_terms"]


def simplex_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin w^T a w - 2 b^T w`` over the probability simplex (``w >= 0``, ``sum w = 1``)."""
    from scipy.optimize import minimize

    n = len(b)
    scale = max(float(np.abs(a).max()), 1e-30)
    a, b = a / scale, b / scale
    res = minimize(
        lambda w: w @ a @ w - 2.0 * b @ w,
        np.full(n, 1.0 / n),
        jac=lambda w: 2.0 * (a @ w) - 2.0 * b,
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}],
        method="SLSQP",
        options={"maxiter": 200, "ftol": 1e-12},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def window_own_terms(
    counts: Tensor,
    keep: Tensor,
    band: tuple[int, int],
    w: int,
    *,
    basis: Tensor,
    channel_scale: Tensor,
    own_window: int,
    low_ops: list,
    ranks: list[int],
    n_candidates: int,
) -> Tensor:
    """Per candidate, what its window sums owe to the own pixel's counts (n_candidates,).

    A low-rank candidate estimates a voxel from its own pixel's other channels
    (the projection of its own spectrum, spatial weight ``a``), so a window sum
    of it is correlated with the counts of the same window: the window error
    measured against the counts is too small by twice that covariance. For
    Poisson counts it is ``a sum_e x_e sum_e' S[e', e] P[e', e]`` (``S``: windows
    holding both channels, ``P`` the projection without the entries the
    candidate leaves out), estimated without bias from the counts ``x`` of the
    ``keep`` pixels. Raw candidates use no other channel: 0.

    Parameters
    ----------
    counts : torch.Tensor
        (E, V) counts of the kept pixels.
    keep : torch.Tensor
        Indices of the kept pixels among the flattened (Y, X) pixels.
    band : (int, int)
        The band's channel range.
    w : int
        Channels per energy window (see :func:`n2s_eds.ops.window_sums`).
    basis, channel_scale : torch.Tensor
        The spectral basis (E, K) and channel scales (E,).
    own_window : int
        Channels on each side that a candidate leaves out of its own pixel.
    low_ops : list
        The low-rank candidates' (spread, diagonal) pairs.
    ranks : list of int
        The rank of each low-rank candidate.
    n_candidates : int
        Number of fine candidates (low-rank and raw).
    """
    lo, hi = band
    n = hi - lo
    omega = window_matrix(n, w)
    smat = omega.T @ omega
    near = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() <= own_window
    xb = counts[lo:hi].to("cpu", torch.float64)  # (n, V) counts of the kept pixels
    per_rank = {}
    for r in sorted(set(ranks)):
        proj = projection_matrix(basis, channel_scale, r, lo, hi).masked_fill(near, 0.0)
        per_rank[r] = xb.T @ (smat * proj).sum(dim=0)  # (V,) per pixel
    out = torch.zeros(n_candidates, dtype=torch.float64)
    for i, ((_, diag), r) in enumerate(zip(low_ops, ranks, strict=True)):
        a = diag.reshape(-1)[keep].to("cpu", torch.float64)
        out[i] = (a * per_rank[r]).sum()
    return out.to(counts.device)


def fit_band_mixtures(
    cands: list[Tensor],
    target: Tensor,
    edges: list[tuple[int, int]],
    window_loss: float,
    window_channels: int,
    own_terms: Callable[[tuple[int, int], int], Tensor],
) -> Tensor:
    """The best fixed mixture of the candidates in each energy band, (G, n) float64.

    Parameters
    ----------
    cands : list of torch.Tensor
        The n candidates' (E, V) float64 estimates of the kept voxels.
    target : torch.Tensor
        The (E, V) float64 counts of the same voxels.
    edges : list of (int, int)
        The G bands' channel ranges.
    window_loss, window_channels : float, int
        Weight of the squared error of the sums over sliding energy windows of
        ``window_channels`` within each band, besides that of single voxels (0: none).
    own_terms : callable
        ``own_terms(band, w)``: what each candidate's window sums owe to the own pixel's
        counts (:func:`window_own_terms`), subtracted so that the window error is the
        error against the expected counts.
    """
    fitted = torch.empty(len(edges), len(cands), dtype=torch.float64)
    for g, (lo, hi) in enumerate(edges):
        f = torch.stack([cd[lo:hi].reshape(-1) for cd in cands])  # (n, V)
        gram, rhs = f @ f.T / f.shape[1], f @ target[lo:hi].reshape(-1) / f.shape[1]
        if window_loss > 0 and hi > lo:  # the candidates' spectra are the columns (E, V)
            sw = [window_sums(cd[lo:hi].T, window_channels) for cd in cands]
            fw = torch.stack([v.reshape(-1) for v in sw])
            tw = window_sums(target[lo:hi].T, window_channels).reshape(-1)
            w = min(int(window_channels), hi - lo)
            own = own_terms((lo, hi), w)
            gram = gram + window_loss * (fw @ fw.T) / (fw.shape[1] * w)
            rhs = rhs + window_loss * (fw @ tw - own) / (fw.shape[1] * w)
        fitted[g] = torch.from_numpy(simplex_least_squares(gram.cpu().numpy(), rhs.cpu().numpy()))
    return fitted


def mixture_bias(fitted: Tensor, max_logit: float) -> Tensor:
    """Head biases (G, n) whose softmax, through the ``max_logit * tanh(. / max_logit)``
    squashing of the mixing network, gives the ``fitted`` weights (each at least 1e-3, so
    that every candidate keeps a gradient)."""
    logits = torch.log(fitted.clamp_min(1e-3))  # every candidate keeps a gradient
    mid = 0.5 * (logits.amax(dim=1, keepdim=True) + logits.amin(dim=1, keepdim=True))
    logits = logits - mid
    limit = 0.95 * max_logit
    return max_logit * torch.atanh(logits.clamp(-limit, limit) / max_logit)
