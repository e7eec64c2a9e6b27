"""Bernoulli masks for Noise2Self training.

A masker hides a random subset of voxels of the count channel and replaces
them by a value that does not depend on the hidden voxel. It returns the
masked input together with an explicit boolean mask: with EDS data most
voxels hold 0 counts, so a mask inferred from changed values would silently
drop every masked zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["bernoulli_mask", "replace_masked", "BernoulliMasker"]

_MODES = ("voxel", "spectrum")
_REPLACEMENTS = ("zero", "local_mean", "neighbor")


def bernoulli_mask(
    shape: tuple[int, ...],
    rate: float,
    mode: str = "voxel",
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw a Bernoulli mask for a (B, 1, E, Y, X) count tensor.

    Parameters
    ----------
    shape : tuple of int
        Shape ``(B, 1, E, Y, X)`` of the count tensor.
    rate : float
        Probability that a voxel (``mode="voxel"``) or a whole spectrum
        (``mode="spectrum"``) is hidden, in (0, 1).
    mode : {"voxel", "spectrum"}
        ``"voxel"`` hides single voxels (the network may use the same pixel's
        other channels); ``"spectrum"`` hides all channels of a pixel.
    generator : torch.Generator, optional
        Source of randomness, for reproducible masks.
    device : torch.device or str, optional
        Device of the returned mask.

    Returns
    -------
    torch.Tensor
        Boolean tensor of ``shape``; ``True`` where hidden. At least one voxel
        is hidden.
    """
    if len(shape) != 5:
        raise ValueError(f"expected a (B, 1, E, Y, X) shape, got {tuple(shape)}")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"mask rate must lie in (0, 1), got {rate}")
    if mode not in _MODES:
        raise ValueError(f"mask mode must be one of {_MODES}, got {mode!r}")
    b, c, e, y, x = shape
    draw_shape = (b, c, e, y, x) if mode == "voxel" else (b, c, 1, y, x)
    u = torch.rand(draw_shape, generator=generator, device=device)
    mask = u < rate
    if not bool(mask.any()):
        mask.view(-1)[int(torch.argmin(u))] = True
    if mode == "spectrum":
        mask = mask.expand(b, c, e, y, x).contiguous()
    return mask


def replace_masked(
    counts: Tensor,
    mask: Tensor,
    replacement: str = "local_mean",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace hidden voxels by a value that does not depend on them.

    Parameters
    ----------
    counts : torch.Tensor
        (B, 1, E, Y, X) counts.
    mask : torch.Tensor
        Boolean mask of the same shape.
    replacement : {"zero", "local_mean", "neighbor"}
        ``"zero"``; ``"local_mean"``: mean of the 8 spatial neighbours in the
        same channel (the centre excluded); ``"neighbor"``: the value of one
        random spatial neighbour in the same channel.

    Returns
    -------
    torch.Tensor
        A new tensor; ``counts`` is not modified.
    """
    if replacement not in _REPLACEMENTS:
        raise ValueError(f"replacement must be one of {_REPLACEMENTS}, got {replacement!r}")
    if replacement == "zero":
        fill = torch.zeros_like(counts)
    else:
        y, x = counts.shape[-2:]
        padded = F.pad(counts, (1, 1, 1, 1, 0, 0), mode="replicate")
        offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
        shifted = [padded[..., 1 + dy : 1 + dy + y, 1 + dx : 1 + dx + x] for dy, dx in offsets]
        if replacement == "local_mean":
            fill = shifted[0].clone()
            for view in shifted[1:]:
                fill += view
            fill /= len(shifted)
        else:
            choice = torch.randint(
                len(offsets), counts.shape, generator=generator, device=counts.device
            )
            fill = torch.zeros_like(counts)
            for k, view in enumerate(shifted):
                fill = torch.where(choice == k, view, fill)
    return torch.where(mask, fill, counts)


class BernoulliMasker(nn.Module):
    """Hide a random subset of voxels and say which.

    Parameters
    ----------
    rate : float
        Fraction of voxels (or spectra) hidden per call.
    mode : {"voxel", "spectrum"}
        What one Bernoulli draw hides; see :func:`bernoulli_mask`.
    replacement : {"zero", "local_mean", "neighbor"}
        What a hidden voxel is replaced by; see :func:`replace_masked`.

    Examples
    --------
    >>> masker = BernoulliMasker(rate=0.05)
    >>> masked, mask = masker(torch.ones(1, 1, 8, 6, 6))
    >>> mask.dtype
    torch.bool
    """

    def __init__(self, rate: float = 0.05, mode: str = "voxel", replacement: str = "local_mean"):
        super().__init__()
        if not 0.0 < rate < 1.0:
            raise ValueError(f"masker rate must lie in (0, 1), got {rate}")
        if mode not in _MODES:
            raise ValueError(f"masker mode must be one of {_MODES}, got {mode!r}")
        if replacement not in _REPLACEMENTS:
            raise ValueError(f"replacement must be one of {_REPLACEMENTS}, got {replacement!r}")
        self.rate = float(rate)
        self.mode = mode
        self.replacement = replacement

    def forward(
        self, counts: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(masked_counts, mask)`` for (B, 1, E, Y, X) counts."""
        if counts.ndim != 5 or counts.shape[1] != 1:
            raise ValueError(
                f"masker expects counts shaped (B, 1, E, Y, X), got {tuple(counts.shape)}"
            )
        mask = bernoulli_mask(
            tuple(counts.shape), self.rate, self.mode, generator=generator, device=counts.device
        )
        return replace_masked(counts, mask, self.replacement, generator=generator), mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}, mode={self.mode!r}, replacement={self.replacement!r}"
