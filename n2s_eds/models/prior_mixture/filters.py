"""Linear spatial and energy filters of the prior mixture.

Every filter here is a linear operator with half-sample symmetric (reflect)
borders: for a symmetric kernel its matrix is symmetric and its rows and
columns sum to 1, so gathering (filtering) and spreading (splatting) both keep
the total counts, and its diagonal (each pixel's weight on itself) is known,
which is what makes the candidates J-invariant.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GuidedFilter",
    "box_matrix",
    "energy_smooth",
    "gaussian_kernel1d",
    "kernel_matrix",
    "neighbour_mean",
    "reflect",
    "smooth2d",
    "smoothing_diagonal",
    "smoothing_matrix",
]


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """Normalised 1D Gaussian kernel truncated at 3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def reflect(idx: Tensor, n: int) -> Tensor:
    """Mirror indices into [0, n) about the image edges (half-sample symmetric).

    The edge pixel is repeated (-1 -> 0, n -> n - 1). With this boundary a
    symmetric kernel gives an operator whose rows *and* columns sum to 1, so
    gathering and spreading both keep the total counts near the borders.
    """
    period = 2 * n
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def kernel_matrix(n: int, k: Tensor) -> Tensor:
    """(n, n) operator of a symmetric 1D kernel with half-sample symmetric borders.

    The matrix is symmetric and its rows and columns sum to 1.
    """
    r = k.numel() // 2
    rows = torch.arange(n)[:, None].expand(n, 2 * r + 1)
    cols = reflect(rows + torch.arange(-r, r + 1)[None, :], n)
    mat = torch.zeros(n, n, dtype=torch.float64)
    mat.scatter_add_(1, cols, k[None, :].expand(n, -1).clone())
    return mat


@functools.lru_cache(maxsize=64)
def smoothing_matrix(n: int, sigma: float) -> Tensor:
    """(n, n) float64 Gaussian smoothing of width ``sigma`` (cached; do not modify it)."""
    return kernel_matrix(n, gaussian_kernel1d(sigma, dtype=torch.float64))


@functools.lru_cache(maxsize=64)
def box_matrix(n: int, radius: int) -> Tensor:
    """(n, n) mean over ``2 radius + 1`` pixels, half-sample symmetric borders (cached)."""
    return kernel_matrix(
        n, torch.full((2 * radius + 1,), 1.0 / (2 * radius + 1), dtype=torch.float64)
    )


def smooth2d(planes: Tensor, sigma: float, transpose: bool = False) -> Tensor:
    """Separable Gaussian smoothing of (..., Y, X) planes with reflect borders.

    Implemented as two small dense matrix products (fast on CPU for the
    tile sizes used here, and exact at the borders). Each output pixel is a
    weighted mean of input pixels (rows of the operator sum to 1). With
    ``transpose=True`` the adjoint is applied instead: each input pixel
    spreads its value over its neighbours with weights summing to 1, so the
    total over the image is conserved exactly ("splatting").
    """
    if sigma <= 0:
        return planes
    y, x = planes.shape[-2:]
    sy = smoothing_matrix(y, float(sigma)).to(planes.device, planes.dtype)
    sx = smoothing_matrix(x, float(sigma)).to(planes.device, planes.dtype)
    if transpose:
        return torch.matmul(sy.T, torch.matmul(planes, sx))
    return torch.matmul(sy, torch.matmul(planes, sx.T))


def smoothing_diagonal(shape: tuple[int, int], sigma: float, device=None, dtype=torch.float32):
    """(Y, X) weight of each pixel on itself in :func:`smooth2d` (borders included)."""
    if sigma <= 0:
        return torch.ones(shape, device=device, dtype=dtype)
    dy = torch.diagonal(smoothing_matrix(shape[0], float(sigma)))
    dx = torch.diagonal(smoothing_matrix(shape[1], float(sigma)))
    return torch.outer(dy, dx).to(device, dtype)


def neighbour_mean(c: Tensor) -> Tensor:
    """Mean of the spatial neighbours (sigma-1 Gaussian, centre excluded), per channel."""
    d = smoothing_diagonal(c.shape[-2:], 1.0, c.device, c.dtype)
    return (smooth2d(c, 1.0) - d * c) / (1.0 - d)


def energy_smooth(d: Tensor, k: Tensor) -> Tensor:
    """``C d`` for (B, E, Y, X) ``d``: the symmetric kernel ``k`` along energy, half-sample
    symmetric ends (the operator of :func:`kernel_matrix`, rows and columns summing to 1)."""
    b, e, y, x = d.shape
    r = k.numel() // 2
    if r >= e:  # more than one reflection: the dense operator
        mat = kernel_matrix(e, k).to(d.device, d.dtype)
        return torch.einsum("ef,bfyx->beyx", mat, d)
    rows = d.permute(0, 2, 3, 1).reshape(-1, 1, e)
    padded = torch.cat([rows[..., :r].flip(-1), rows, rows[..., -r:].flip(-1)], dim=-1)
    out = F.conv1d(padded, k.to(d.device, d.dtype).view(1, 1, -1))
    return out.reshape(b, y, x, e).permute(0, 3, 1, 2)


class GuidedFilter:
    """The guided filter (He, Sun & Tang, 2013) of (B, C, Y, X) planes as a linear operator.

    For a fixed guide image the filter is linear in the filtered planes. With box means
    that are symmetric and doubly stochastic (half-sample symmetric borders), its operator
    ``W`` is symmetric with rows and columns summing to 1: filtering (gathering) equals
    spreading (splatting), and the total counts of every plane are kept exactly. Its
    entries can be negative (edges of the guide sharpen), and :attr:`diagonal` is each
    pixel's weight on itself, ``W_ii``, used to make the estimate J-invariant.

    Parameters
    ----------
    guide : torch.Tensor
        (B, 1, Y, X) guide image (robustly normalised).
    radius : int
        Window radius in pixels.
    eps : float
        Ridge penalty, in units of the guide's squared spread.
    """

    def __init__(self, guide: Tensor, radius: int, eps: float):
        y, x = guide.shape[-2:]
        self.by = box_matrix(y, int(radius)).to(guide.device, guide.dtype)
        self.bx = box_matrix(x, int(radius)).to(guide.device, guide.dtype)
        self.guide = guide
        self.mean_g = self._box(guide)
        self.inv = 1.0 / (self._box(guide * guide) - self.mean_g**2 + float(eps))
        sq_y, sq_x = self.by * self.by, self.bx * self.bx

        def box_sq(a: Tensor) -> Tensor:
            return torch.matmul(sq_y, torch.matmul(a, sq_x))

        g = guide
        # W_ii = sum_k B_ik^2 (1 + (g_i - mu_k)^2 / (var_k + eps))
        self.diagonal = (
            box_sq(torch.ones_like(g))
            + g * g * box_sq(self.inv)
            - 2.0 * g * box_sq(self.mean_g * self.inv)
            + box_sq(self.mean_g**2 * self.inv)
        )[:, 0]

    def _box(self, a: Tensor) -> Tensor:
        return torch.matmul(self.by, torch.matmul(a, self.bx))

    def __call__(self, planes: Tensor) -> Tensor:
        """Filter (B, C, Y, X) planes with the guide of the same batch element."""
        mean_p = self._box(planes)
        a = (self._box(self.guide * planes) - self.mean_g * mean_p) * self.inv
        b = mean_p - a * self.mean_g
        return self._box(a) * self.guide + self._box(b)
