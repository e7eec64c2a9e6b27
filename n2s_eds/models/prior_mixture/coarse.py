"""The coarse energy path of the prior mixture (``coarse_ev > 0``).

It replaces what the fine estimate holds at the scale of an X-ray peak (a
Gaussian ``C`` of ``coarse_ev`` along energy) by what the coarse candidates
hold there, ``est + C (b - est)``, keeping every voxel's estimate independent
of its own count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .filters import gaussian_kernel1d, kernel_matrix
from .spreading import band_spectra, own_weight, spread_abundances

__all__ = ["coarse_operators", "coarse_path"]


def coarse_operators(
    e: int,
    band: Tensor,
    n_bands: int,
    sigma_channels: float,
    proj: Tensor,
    device,
    dtype,
) -> tuple[Tensor, Tensor]:
    """The coarse path's energy filter ``C`` (E, E) and its own-count weights ``Q`` (G, E).

    ``C`` is a Gaussian of ``sigma_channels`` channels along energy with half-sample
    symmetric ends, so its rows and columns sum to 1 (each pixel's total is kept).

    ``Q[g, e]`` is the weight, in the coarse filter's output at voxel ``e`` of a pixel,
    of that voxel's own count reaching the fine estimate of the same pixel's other
    channels of band ``g`` through the projection ``proj`` (``P[e', e]``, float64, see
    :func:`~.basis.projection_matrix`) on the spectral basis, per unit of the pixel's
    weight on its own abundances. ``band`` is the (E,) band of each channel.
    """
    kernel = gaussian_kernel1d(sigma_channels, dtype=torch.float64)
    cmat = kernel_matrix(e, kernel)
    m = cmat * proj.T  # m[e, e'] = C[e, e'] P[e', e]
    m.fill_diagonal_(0.0)
    onehot = torch.nn.functional.one_hot(band.cpu(), n_bands).to(torch.float64)
    q = (m @ onehot).T.contiguous()  # (G, E)
    return cmat.to(device, dtype), q.to(device, dtype)


def coarse_path(
    c: Tensor,
    z: Tensor,
    est: Tensor,
    w: Tensor,
    ops: list,
    n_lowrank: int,
    band: Tensor,
    gamma: Tensor,
    fill: Tensor,
    cmat: Tensor,
    q: Tensor,
    basis: Tensor,
    channel_scale: Tensor,
    edges: list[tuple[int, int]],
    pixels: Tensor | None = None,
) -> Tensor:
    """Replace the coarse energy content of ``est`` by that of the coarse mixture ``b``.

    ``est + C (b - est)``: ``C`` (``cmat``) smooths along energy with a Gaussian of
    ``coarse_ev`` (about a peak's width, what element maps integrate); ``b`` spreads each
    pixel's raw counts (``coarse_sigmas``, guided filters) and low-rank spectra
    (``coarse_lowrank_sigmas``) with the coarse-path weights; the fine structure comes
    from ``est``. The own count of every voxel is taken out of the result as in
    :meth:`PriorMixture.mix` (J-invariance), including what ``C`` brings back of it
    through the projection of the pixel's own spectrum (``q``, see
    :func:`coarse_operators`).

    Parameters
    ----------
    c, z, est, fill : torch.Tensor
        Counts (B, E, Y, X), abundances (B, K, Y, X), the fine estimate (B, E, Y, X)
        and the neighbours' mean (B, E, Y, X).
    w : torch.Tensor
        (B, G, n_coarse, Y, X) weights of the coarse candidates.
    ops : list
        The coarse candidates' (spread, diagonal) pairs, low-rank ones first.
    n_lowrank : int
        How many of ``ops`` spread low-rank spectra (``coarse_lowrank_sigmas``).
    band : torch.Tensor
        (E,) band of each channel.
    gamma : torch.Tensor
        (B, G, Y, X) each pixel's weight on its own abundances in ``est``.
    basis, channel_scale : torch.Tensor
        The spectral basis (E, K) and channel scales (E,).
    edges : list of (int, int)
        The bands' channel ranges.
    pixels : torch.Tensor, optional
        Boolean (Y, X): only these pixels' estimates are computed.
    """
    e = c.shape[1]
    n_bands = w.shape[1]
    n_cl = n_lowrank
    low_ops, raw_ops = ops[:n_cl], ops[n_cl:]
    wb = w[:, band]  # (B, E, n_coarse, Y, X)
    b = torch.zeros_like(c)
    for j, (spread, _) in enumerate(raw_ops):
        b = b + spread(wb[:, :, n_cl + j] * c)
    cdiag = torch.diagonal(cmat).view(1, e, 1, 1)
    own = cdiag * own_weight(w[:, :, n_cl:], raw_ops)[:, band]
    delta = -gamma  # per band: weight of the own abundances, through Q
    if n_cl:
        # low-rank candidates of the coarse path: spread abundances, band by band
        vd = basis * channel_scale[:, None]
        b = b + band_spectra(vd, spread_abundances(z, w, low_ops, n_bands), edges)
        own_low = own_weight(w[:, :, :n_cl], low_ops)  # (B, G, Y, X)
        diag_p = (basis**2).sum(dim=1).view(1, e, 1, 1)
        own = own + cdiag * diag_p * own_low[:, band]
        delta = delta + own_low
    beta = -torch.einsum("bgyx,ge->beyx", delta, q)
    own = own - beta
    if pixels is None:
        smoothed = torch.matmul(cmat, (b - est).flatten(2)).view_as(est)
        return est + smoothed + own * (fill - c)
    # only these pixels' estimates are wanted (blind_forward): filter just them
    out = est.clone()
    d = (b - est)[:, :, pixels]  # (B, E, N)
    out[:, :, pixels] += torch.matmul(cmat, d) + (own * (fill - c))[:, :, pixels]
    return out
