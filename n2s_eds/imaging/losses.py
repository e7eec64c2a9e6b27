"""The enhancer's training loss: least absolute deviations + SSIM + perceptual + Gram terms.

The perceptual and Gram (style) terms compare features of a frozen feature network. The
published method takes them from an ImageNet-trained network, which cannot be downloaded
here; :class:`FilterBankFeatures` is a fixed, untrained filter bank instead: derivatives of
a Gaussian (first and second order) and a Laplacian of Gaussian, rectified, at three octaves
(the image average-pooled by 1, 2 and 4). It responds to edges, lines, corners and blobs at
the scales a blurred, noisy map loses, needs no weights, and is the same on every machine.
Whether the two terms help is measured in ``benchmarks/ablations.md`` ("Elemental images").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ssim_map", "FilterBankFeatures", "gram", "EnhancerLoss", "LossWeights"]


def _gaussian_window(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of ``(B, 1, H, W)`` tensors (Gaussian window, sigma 1.5, radius 3)."""
    g = _gaussian_window(1.5, 3).to(x)
    kx, ky = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, (3, 3, 3, 3), mode="reflect")
        return F.conv2d(F.conv2d(t, kx), ky)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


class FilterBankFeatures(nn.Module):
    """A frozen feature network of Gaussian-derivative filters at three octaves.

    Six filters (d/dx, d/dy, d2/dx2, d2/dy2, d2/dxdy of a Gaussian with sigma 1 px, and its
    Laplacian), rectified; applied to the image average-pooled by 1, 2 and 4. Returns one
    ``(B, 6, h, w)`` tensor per octave.
    """

    def __init__(self, octaves: int = 3, sigma: float = 1.0) -> None:
        super().__init__()
        r = int(np.ceil(3 * sigma))
        x = np.arange(-r, r + 1, dtype=np.float64)
        xx, yy = np.meshgrid(x, x)
        g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        g /= g.sum()
        s2 = sigma**2
        kernels = [
            -xx / s2 * g,
            -yy / s2 * g,
            (xx**2 / s2 - 1) / s2 * g,
            (yy**2 / s2 - 1) / s2 * g,
            xx * yy / s2**2 * g,
            ((xx**2 + yy**2) / s2 - 2) / s2 * g,
        ]
        bank = np.stack([k - k.mean() for k in kernels])[:, None]
        self.register_buffer("bank", torch.tensor(bank, dtype=torch.float32))
        self.octaves = octaves
        self.radius = r

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in range(self.octaves):
            if level:
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            xp = F.pad(x, (self.radius,) * 4, mode="replicate")
            feats.append(F.conv2d(xp, self.bank).abs())
        return feats


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(B, C, C)`` of features ``(B, C, h, w)``, divided by the pixels."""
    b, c, h, w = f.shape
    v = f.reshape(b, c, h * w)
    return v @ v.transpose(1, 2) / (h * w)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms of :class:`EnhancerLoss`.

    Attributes
    ----------
    l1 : float
        Least absolute deviations (per pixel).
    ssim : float
        ``1 - SSIM``.
    perceptual : float
        L1 between the filter-bank features.
    gram : float
        L1 between the features' Gram matrices (style).
    """

    l1: float = 1.0
    ssim: float = 0.5
    perceptual: float = 0.5
    gram: float = 5.0


class EnhancerLoss(nn.Module):
    """``l1 * |x - y| + ssim * (1 - SSIM) + perceptual * |F(x) - F(y)| + gram * |G(x) - G(y)|``.

    Inputs are ``(B, 1, H, W)`` normalised images (the target's range about 1).
    """

    def __init__(self, weights: LossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.features = FilterBankFeatures()
        for p in self.features.parameters():
            p.requires_grad_(False)

    def terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four unweighted terms."""
        out = {"l1": (x - y).abs().mean(), "ssim": 1 - ssim_map(x, y).mean()}
        fx, fy = self.features(x), self.features(y)
        out["perceptual"] = sum((a - b).abs().mean() for a, b in zip(fx, fy, strict=True))
        out["gram"] = sum((gram(a) - gram(b)).abs().mean() for a, b in zip(fx, fy, strict=True))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.terms(x, y)
        w = self.weights
        return (
            w.l1 * t["l1"]
            + w.ssim * t["ssim"]
            + w.perceptual * t["perceptual"]
            + (w.gram * t["gram"])
        )
