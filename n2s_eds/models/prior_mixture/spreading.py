"""Energy bands and the spreading of counts by the candidates' spatial operators.

A candidate is a spatial operator given as a ``(spread, diagonal)`` pair:
``spread`` maps (B, C, Y, X) planes to (B, C, Y, X) planes (a Gaussian
splat or a guided filter, rows and columns summing to 1), and ``diagonal``
(B or 1, Y, X) is each pixel's weight on itself, which the mixture takes out
again so that no estimate depends on its own voxel's count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .filters import smooth2d, smoothing_diagonal

__all__ = [
    "band_edges",
    "band_of_channel",
    "band_spectra",
    "gaussian_operator",
    "own_weight",
    "spread_abundances",
]


def band_edges(e: int, n_bands: int) -> list[tuple[int, int]]:
    """Channel ranges [start, stop) of ``n_bands`` contiguous energy bands of equal width
    of an E-channel cube."""
    cuts = [round(i * e / n_bands) for i in range(n_bands + 1)]
    return [(cuts[i], max(cuts[i + 1], cuts[i])) for i in range(n_bands)]


def band_of_channel(e: int, n_bands: int, device) -> Tensor:
    """(E,) index of the band of each channel (see :func:`band_edges`)."""
    idx = torch.empty(e, dtype=torch.long, device=device)
    for g, (a, b) in enumerate(band_edges(e, n_bands)):
        idx[a:b] = g
    return idx


def gaussian_operator(hw: tuple[int, int], sigma: float, device, dtype) -> tuple:
    """The (spread, diagonal (1, Y, X)) pair of a Gaussian splat of width ``sigma`` px."""
    diag = smoothing_diagonal(hw, sigma, device, dtype)[None]
    return (lambda p: smooth2d(p, sigma, transpose=True)), diag


def spread_abundances(
    z: Tensor, w: Tensor, ops: list, n_bands: int, ranks: list[int] | None = None
) -> Tensor:
    """Per band, the abundances (B, K, Y, X) spread by ``ops`` with the weights
    ``w[:, g, i]`` of candidate ``i`` (on its first ``ranks[i]`` components when
    given): (B, G, K, Y, X)."""
    k = z.shape[1]
    ranks = [k] * len(ops) if ranks is None else ranks
    zsum = []
    for g in range(n_bands):
        acc = torch.zeros_like(z)
        for i, ((spread, _), r) in enumerate(zip(ops, ranks, strict=True)):
            part = spread(w[:, g, i : i + 1] * z[:, :r])
            acc = acc + (part if r == k else F.pad(part, (0, 0, 0, 0, 0, k - r)))
        zsum.append(acc)
    return torch.stack(zsum, dim=1)


def band_spectra(vd: Tensor, zsum: Tensor, edges: list[tuple[int, int]]) -> Tensor:
    """Spectra (B, E, Y, X) of per-band abundances (B, G, K, Y, X), each band (``edges``)
    from its own abundances, with the (E, K) spectra ``vd`` of the components (band by
    band: no (B, E, K, Y, X) intermediate)."""
    parts = [
        torch.einsum("ek,bkyx->beyx", vd[lo:hi], zsum[:, g]) for g, (lo, hi) in enumerate(edges)
    ]
    return torch.cat(parts, dim=1)


def own_weight(w: Tensor, ops: list) -> Tensor:
    """Each pixel's weight on itself, (B, G, Y, X), of candidates ``ops`` mixed by ``w``
    (B, G, n, Y, X)."""
    if not ops:
        return torch.zeros_like(w[:, :, 0])
    hw = w.shape[-2:]
    diag = torch.stack([d.expand(w.shape[0], *hw) for _, d in ops], dim=1)
    return torch.einsum("bgcyx,bcyx->bgyx", w, diag)
