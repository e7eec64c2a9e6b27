"""Reconstruction losses computed on the hidden voxels only.

Each loss takes the prediction, the original (unmasked) counts and the
explicit boolean mask, and is normalised by the number of hidden voxels, so
its scale does not depend on the masking rate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "masked_mse",
    "masked_poisson_nll",
    "MaskedMSELoss",
    "MaskedPoissonNLLLoss",
]


def _check(pred: Tensor, target: Tensor, mask: Tensor) -> None:
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(
            "prediction, target and mask must share one shape, got "
            f"{tuple(pred.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the hidden voxels.

    Parameters
    ----------
    pred, target : torch.Tensor
        Predicted expected counts and observed counts, same shape.
    mask : torch.Tensor
        Boolean mask, ``True`` where the voxel was hidden from the network.

    Returns
    -------
    torch.Tensor
        Scalar: sum of squared errors on hidden voxels / number of hidden voxels.
    """
    _check(pred, target, mask)
    n = mask.sum().clamp_min(1)
    diff = torch.where(mask, pred - target, torch.zeros_like(pred))
    return diff.pow(2).sum() / n


def masked_poisson_nll(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Poisson negative log-likelihood over the hidden voxels.

    ``rate - target * log(rate)`` (the ``log(target!)`` constant dropped),
    with the rate clamped to ``eps`` from below so that it stays positive.

    Parameters
    ----------
    pred : torch.Tensor
        Predicted expected counts (the Poisson rate).
    target : torch.Tensor
        Observed counts.
    mask : torch.Tensor
        Boolean mask, ``True`` where hidden.
    eps : float
        Smallest rate.

    Returns
    -------
    torch.Tensor
        Scalar normalised by the number of hidden voxels.
    """
    _check(pred, target, mask)
    n = mask.sum().clamp_min(1)
    rate = pred.clamp_min(eps)
    nll = rate - target * torch.log(rate)
    return torch.where(mask, nll, torch.zeros_like(nll)).sum() / n


class MaskedMSELoss(nn.Module):
    """Module form of :func:`masked_mse`."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return masked_mse(pred, target, mask)


class MaskedPoissonNLLLoss(nn.Module):
    """Module form of :func:`masked_poisson_nll`."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return masked_poisson_nll(pred, target, mask, self.eps)
