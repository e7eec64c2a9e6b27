"""The low-rank spectral basis of the prior mixture and the choice of its rank.

The basis holds the cube's Poisson-normalised principal spectra (as HyperSpy's
``decomposition(normalize_poissonian_noise=True)``), its first vector along
the mean spectrum so that a projection keeps each pixel's total counts. It is
data computed per cube (:meth:`PriorMixture.adapt`), not a learned weight.
Spectra are projected in normalised space: ``basis`` is (E, K) orthonormal and
``channel_scale`` (E,) the square root of the channel means.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .filters import smooth2d, smoothing_diagonal

__all__ = [
    "EXACT_GRAM_MAX",
    "cross_fitted_rank_errors",
    "fit_basis",
    "leading_left_vectors",
    "own_projection",
    "projection_matrix",
    "rank_diagonals",
]

#: Largest side of the Gram matrix whose eigenvectors give the spectral basis exactly;
#: bigger problems use a randomised SVD with many power iterations.
EXACT_GRAM_MAX = 4096


def leading_left_vectors(m: Tensor, k: int) -> Tensor:
    """The ``k`` leading left singular vectors of an (E, N) matrix, as (E, k).

    Computed exactly, in float64, from the eigenvectors of the smaller Gram matrix
    (``m m^T`` or ``m^T m``): a randomised SVD misses much of the signal subspace of
    these noise-dominated matrices. Only matrices whose both sides exceed
    :data:`EXACT_GRAM_MAX` use one (``torch.svd_lowrank``, 16 power iterations,
    2 k + 16 columns, a fixed seed).
    """
    e, n = m.shape
    k = max(1, min(int(k), e, n))
    if min(e, n) > EXACT_GRAM_MAX:
        with torch.random.fork_rng(devices=[]):  # deterministic, global RNG untouched
            torch.manual_seed(0)
            u, _, _ = torch.svd_lowrank(m, q=min(2 * k + 16, e, n), niter=16)
        return u[:, :k]
    md = m.to(torch.float64)
    try:
        if e <= n:
            _, vec = torch.linalg.eigh(md @ md.T)
            u = vec[:, -k:].flip(1)
        else:
            val, vec = torch.linalg.eigh(md.T @ md)
            w = vec[:, -k:].flip(1)
            sv = torch.sqrt(val[-k:].flip(0).clamp_min(1e-30))
            u = (md @ w) / sv
    except torch.linalg.LinAlgError:
        # LAPACK's eigh can fail on Gram matrices with many repeated (zero) eigenvalues,
        # e.g. a cube with empty channels; the SVD of the matrix itself does not
        u = torch.linalg.svd(md, full_matrices=False)[0][:, :k]
    return u.to(m.dtype)


def fit_basis(flat: Tensor, k: int, max_pixels: int, channel_scale: Tensor) -> Tensor:
    """(E, k) orthonormal principal spectra of Poisson-normalised (E, N) counts.

    The first vector is the mean spectrum's direction, so that projecting
    a pixel's spectrum on the basis keeps its total counts exactly. At most
    ``max_pixels`` pixels (a regular subsample) enter the decomposition.
    """
    step = max(1, math.ceil(flat.shape[1] / max_pixels))
    sub = flat[:, ::step]
    a = sub.mean(dim=0) + 1e-3 * sub.mean().clamp_min(1e-6)  # pixel means (> 0)
    norm = sub / channel_scale[:, None] / torch.sqrt(a)[None, :]
    u = leading_left_vectors(norm, k)
    mean_dir = channel_scale / channel_scale.norm()
    basis, _ = torch.linalg.qr(torch.cat([mean_dir[:, None], u[:, : k - 1]], dim=1))
    return (basis * torch.sign(basis[:1, :1])).contiguous()


def cross_fitted_rank_errors(
    cube: Tensor, channel_scale: Tensor, k_cap: int, max_pixels: int
) -> list[float]:
    """Mean squared self-supervised error of the sigma = 1 candidate at ranks 1..``k_cap``.

    A basis is fitted on each half of a pixel checkerboard and scored on the
    other half: a basis scored on the pixels it was fitted to would reward
    fitting noise (its noise components "remember" the counts they are scored
    on). The error of each voxel uses no count of that voxel (J-invariant).

    Parameters
    ----------
    cube : torch.Tensor
        Counts, (E, Y, X), float32.
    channel_scale : torch.Tensor
        (E,) square roots of the channel means (see :func:`fit_basis`).
    k_cap : int
        Largest rank scored.
    max_pixels : int
        At most this many pixels enter each basis fit.
    """
    e, y, x = cube.shape
    flat = cube.reshape(e, y * x)
    parity = ((torch.arange(y)[:, None] + torch.arange(x)[None, :]) % 2 == 0).reshape(-1)
    d1 = smoothing_diagonal((y, x), 1.0).reshape(1, -1)
    sm = smooth2d(cube, 1.0).reshape(e, -1)
    fill = (sm - d1 * flat) / (1.0 - d1)  # neighbour mean: J-invariant
    sq_err = torch.zeros(k_cap, dtype=torch.float64)
    for fit_on in (parity, ~parity):
        v = fit_basis(flat[:, fit_on], k_cap, max_pixels, channel_scale)
        test = ~fit_on
        z = v.T @ (sm[:, test] / channel_scale[:, None])
        target = flat[:, test]
        own = d1[:, test] * (fill[:, test] - target)
        recon = torch.zeros_like(target)
        diag = torch.zeros(e, 1)
        for k in range(k_cap):
            recon += torch.outer(v[:, k] * channel_scale, z[k])
            diag += (v[:, k] ** 2)[:, None]
            est = recon + diag * own
            sq_err[k] += float(((est - target) ** 2).sum())
    return (sq_err / flat.numel()).tolist()


def projection_matrix(
    basis: Tensor, channel_scale: Tensor, r: int | None = None, lo: int = 0, hi: int | None = None
) -> Tensor:
    """``P[e', e]`` (float64, CPU) for channels ``lo:hi``: the weight of count ``e`` in a
    pixel's spectrum projected (in counts) on the first ``r`` basis vectors (all by
    default), at channel ``e'``."""
    v = basis.to("cpu", torch.float64)[lo:hi, :r]
    sc = channel_scale.to("cpu", torch.float64)[lo:hi]
    return sc[:, None] * (v @ v.T) / sc[None, :]


def rank_diagonals(basis: Tensor, ranks: list[int]) -> dict[int, Tensor]:
    """Rank -> (E,) own-channel weight of the projection on the first ``rank`` vectors."""
    sq = basis**2
    return {r: sq[:, :r].sum(dim=1) for r in sorted(set(ranks))}


def own_projection(
    basis: Tensor, channel_scale: Tensor, r: int, d: Tensor, own_window: int
) -> Tensor:
    """``B d`` for (B, E, Y, X) ``d``: ``B`` keeps the weights of the projection on the
    first ``r`` basis vectors (in counts) between channels at most ``own_window``
    apart, i.e. what a pixel's own counts near each channel give its estimate there
    (with ``own_window=0``, the projection's own-channel weight times ``d``)."""
    v = basis[:, :r]
    sc = channel_scale
    e = v.shape[0]
    out = (v * v).sum(dim=1).view(1, e, 1, 1) * d
    for delta in range(1, min(own_window, e - 1) + 1):
        near = (v[:-delta] * v[delta:]).sum(dim=1)  # (E - delta,): P[e, e + delta] sc-free
        up = (sc[:-delta] / sc[delta:] * near).view(1, -1, 1, 1)  # P[e, e + delta]
        down = (sc[delta:] / sc[:-delta] * near).view(1, -1, 1, 1)  # P[e + delta, e]
        out[:, :-delta] += up * d[:, delta:]
        out[:, delta:] += down * d[:, :-delta]
    return out
