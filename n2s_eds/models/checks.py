"""Shape checks and padding shared by the networks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_input", "pad_to_multiple"]


def check_input(x: Tensor, guide: bool, energy: bool = False) -> None:
    """Check a (B, C, E, Y, X) network input against whether a guide (and the channel
    energies, for a conditioned network) are expected."""
    want = 1 + int(guide) + int(energy)
    if x.ndim != 5 or x.shape[1] != want:
        what = "counts" + (", guide" if guide else "") + (", energy" if energy else "")
        raise ValueError(
            f"expected input shaped (B, {want}, E, Y, X) ({what}), got {tuple(x.shape)}"
        )


def pad_to_multiple(x: Tensor, multiples: tuple[int, int, int]) -> tuple[Tensor, tuple]:
    """Pad the last three axes up to multiples (replicate), return the crop that undoes it."""
    sizes = x.shape[-3:]
    pads = [(-s) % m for s, m in zip(sizes, multiples, strict=True)]
    crop = (slice(None), slice(None), *(slice(0, s) for s in sizes))
    if not any(pads):
        return x, crop
    # F.pad takes the last axis first
    spec = []
    for p in reversed(pads):
        spec += [0, p]
    return F.pad(x, spec, mode="replicate"), crop
