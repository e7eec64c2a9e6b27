"""The Pix2Pix-style encoder: a generator pretrained adversarially on denoising.

A conditional GAN after Pix2Pix (Isola et al., CVPR 2017): the generator is the enhancer's
:class:`~n2s_eds.imaging.networks.SmallUNet` at scale 1, fed the Poisson-degraded image (and
its noise map), and is trained against an L1 term and a patch discriminator that sees the
degraded input beside either the clean image or the generator's output and judges each
overlapping patch as real or generated. The training pairs are the enhancer's
(:class:`~n2s_eds.imaging.training.AblationPairs`), so the two pretrained encoders differ
by their objective only. :class:`~n2s_eds.segment.Segmenter` fine-tunes the generator with
``encoder="pix2pix"``.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..imaging.ablation import AblationSettings
from ..imaging.enhancer import MapEnhancer
from ..imaging.networks import SmallUNet
from ..imaging.training import AblationPairs
from ..training import fit_quietly

__all__ = ["PatchDiscriminator", "Pix2PixModule", "fit_pix2pix"]


class PatchDiscriminator(nn.Module):
    """Judges overlapping patches (receptive field 34 px) of (input, image) pairs.

    Input ``(B, in_channels, H, W)``: the generator's two input channels and one image
    (clean or generated); output ``(B, 1, H/4 - 2, W/4 - 2)`` logits, one per patch.
    """

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int, norm: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride, 1)]
            if norm:
                layers.append(nn.GroupNorm(min(8, c_out), c_out))
            return [*layers, nn.LeakyReLU(0.2)]

        self.body = nn.Sequential(
            *block(in_channels, width, 2, False),
            *block(width, 2 * width, 2, True),
            *block(2 * width, 4 * width, 1, True),
            nn.Conv2d(4 * width, 1, 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Pix2PixModule(L.LightningModule):
    """Generator and patch discriminator, updated in turn (manual optimisation).

    Generator loss: ``l1_weight * |G(x) - y| + BCE(D(x, G(x)), real)``; discriminator loss:
    the mean of ``BCE(D(x, y), real)`` and ``BCE(D(x, G(x)), fake)``. Adam with the
    published settings (learning rate 2e-4, betas 0.5 and 0.999).
    """

    def __init__(self, generator: nn.Module, l1_weight: float = 100.0, lr: float = 2e-4) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator"])
        self.generator = generator
        self.discriminator = PatchDiscriminator()
        self.curve: list[tuple[float, float, float]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        x, y = batch["x"], batch["y"]
        fake = self.generator(x)
        # Discriminator: real pairs against generated ones.
        real_logits = self.discriminator(torch.cat([x, y], dim=1))
        fake_logits = self.discriminator(torch.cat([x, fake.detach()], dim=1))
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        # Generator: fool the discriminator and stay close to the clean image.
        logits = self.discriminator(torch.cat([x, fake], dim=1))
        adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        l1 = F.l1_loss(fake, y)
        loss_g = self.hparams.l1_weight * l1 + adversarial
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.curve.append((float(l1.detach()), float(adversarial.detach()), float(loss_d.detach())))
        self.log("l1", l1.detach(), prog_bar=True, batch_size=len(x))

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return (
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas),
        )


def fit_pix2pix(
    clean_images: list[np.ndarray],
    *,
    weights: list[float] | None = None,
    steps: int = 3000,
    batch_size: int = 8,
    patch: int = 64,
    l1_weight: float = 100.0,
    seed: int = 0,
    device: str = "cpu",
) -> MapEnhancer:
    """Train the Pix2Pix generator on virtual-ablation pairs of ``clean_images``.

    Parameters
    ----------
    clean_images : list of numpy.ndarray
        Clean 2D images, each scaled to [0, 1].
    weights : list of float, optional
        Relative probability of drawing each image.
    steps, batch_size, patch : int
        Optimiser steps (each updates the discriminator, then the generator), pairs per step,
        side of the crops.
    l1_weight : float
        Weight of the L1 term beside the adversarial one (100 as published).
    seed : int
        Seed of the initialisation and of the pairs.
    device : {"cpu", "cuda", "auto"}
        Where to train.

    Returns
    -------
    MapEnhancer
        The generator as a scale-1 ``"unet_small"`` enhancer, its history recording the
        objective; ``save`` writes it like any enhancer.
    """
    data = AblationPairs(clean_images, AblationSettings(), patch=patch, seed=seed, weights=weights)
    torch.manual_seed(seed)
    module = Pix2PixModule(SmallUNet(scale=1), l1_weight=l1_weight)
    t0 = time.perf_counter()
    # Lightning counts the steps of both optimisers.
    fit_quietly(module, DataLoader(data, batch_size=batch_size), 2 * steps, device)
    enh = MapEnhancer("unet_small", 1, steps=steps, batch_size=batch_size, patch=patch, seed=seed)
    enh.net = module.generator.cpu().eval()
    tail = np.asarray(module.curve[-100:], dtype=float)
    history: dict[str, Any] = {
        "objective": "pix2pix",
        "l1_weight": l1_weight,
        "steps": len(module.curve),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "images": len(clean_images),
    }
    if len(tail):
        history.update(
            final_l1=float(tail[:, 0].mean()),
            final_adversarial=float(tail[:, 1].mean()),
            final_discriminator=float(tail[:, 2].mean()),
        )
    enh.history = history
    return enh
