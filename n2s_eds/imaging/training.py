"""Training the enhancer: virtual-ablation pairs drawn on the fly, and the LightningModule.

:class:`AblationPairs` is an endless stream of (degraded, clean) pairs: a random crop of a
random clean image, a random flip and quarter turn, degraded by
:func:`~n2s_eds.imaging.ablation.virtual_ablation` with settings drawn around the given ones
(dose over a decade, spot size, flicker and washout varied), so that one network serves
images of any dose. :func:`network_input` turns a degraded image into the network's two input
channels (the image over its robust scale, and a map of its noise level); the clean target is divided
by the same scale. :class:`EnhancerModule` wires network, loss and optimiser.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import lightning as L
import numpy as np
import torch
from scipy import ndimage
from skimage.restoration import estimate_sigma
from torch import nn
from torch.utils.data import IterableDataset, get_worker_info

from ..exceptions import InvalidInputError
from .ablation import AblationSettings, virtual_ablation
from .losses import EnhancerLoss, LossWeights

__all__ = [
    "robust_scale",
    "noise_level",
    "network_input",
    "AblationPairs",
    "EnhancerModule",
]

#: Seed stream of the training pairs (beside the run's seed).
PAIRS_STREAM = 0xAB1A


def robust_scale(images: np.ndarray) -> np.ndarray:
    """Per image of a ``(n, H, W)`` stack: the 99.5th percentile of its Gaussian-smoothed
    (sigma 1 px) values, so that one hot pixel does not set it; at least 1e-6 of its max."""
    out = np.empty(len(images), dtype=np.float32)
    for i, im in enumerate(images):
        sm = ndimage.gaussian_filter(im.astype(np.float32), 1.0, mode="reflect")
        out[i] = max(float(np.percentile(sm, 99.5)), 1e-6 * float(np.abs(im).max()), 1e-12)
    return out


def noise_level(normalised: np.ndarray) -> np.ndarray:
    """Per image of a normalised ``(n, H, W)`` stack: the noise standard deviation estimated
    by :func:`skimage.restoration.estimate_sigma` (median absolute wavelet coefficient)."""
    return np.array([float(estimate_sigma(im)) for im in normalised], dtype=np.float32)


def network_input(images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The network's ``(n, 2, h, w)`` input of a ``(n, h, w)`` stack, and the scales used.

    Channel 0 is the image divided by :func:`robust_scale`. Channel 1 is the estimated
    noise standard deviation of every pixel: counting noise grows as the square root of the
    signal, so the image's :func:`noise_level` is spread over the pixels as
    ``sigma * sqrt(local mean / image mean)`` (local mean: Gaussian, sigma 2 px).
    """
    scale = robust_scale(images)
    norm = images / scale[:, None, None]
    sigma = noise_level(norm)
    local = np.stack([ndimage.gaussian_filter(im, 2.0, mode="reflect") for im in norm])
    mean = np.maximum(norm.mean(axis=(1, 2)), 1e-6)[:, None, None]
    noise = sigma[:, None, None] * np.sqrt(np.clip(local, 0.0, None) / mean)
    x = np.stack([norm, noise], axis=1)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), scale


def vary_settings(settings: AblationSettings, rng: np.random.Generator) -> AblationSettings:
    """``settings`` with the dose drawn log-uniformly over x0.25 to x4, the spot size over
    x0.75 to x1.33, flicker over 0 to x2 and the washout over 0 to x2 of the given values.
    Per-image values (``dwell_s``, ``counts_per_unit`` of a stack) enter by their geometric
    mean: a training pair is one image."""
    dose = float(np.exp(np.mean(np.log(np.atleast_1d(settings.counts_per_unit)))))
    dwell = float(np.exp(np.mean(np.log(np.atleast_1d(settings.dwell_s)))))
    return dataclasses.replace(
        settings,
        counts_per_unit=dose * math.exp(rng.uniform(-1.386, 1.386)),
        dwell_s=dwell,
        spot_um=float(settings.spot_um) * math.exp(rng.uniform(-0.288, 0.288)),
        flicker=float(settings.flicker) * rng.uniform(0.0, 2.0),
        washout_s=float(settings.washout_s) * rng.uniform(0.0, 2.0),
    )


class AblationPairs(IterableDataset):
    """Endless (degraded, clean) training pairs from clean images; see the module docstring.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Clean 2D images (any sizes; smaller than ``patch`` ones are reflect-padded).
    settings : AblationSettings
        The acquisition the pairs are drawn around.
    scale : int
        Fine-to-coarse factor; the degraded crop is ``patch // scale`` pixels wide.
    patch : int
        Side of the clean crop, a multiple of ``scale``.
    seed : int
        Seed of the stream (each DataLoader worker draws its own).
    vary : bool
        Draw the settings around ``settings`` (:func:`vary_settings`); else use them as given.
    weights : sequence of float, optional
        Relative probability of drawing each image (default: equal), e.g. to give each
        category of a training set the same share whatever its number of images.

    Yields
    ------
    dict
        ``"x"``: ``(2, p/s, p/s)`` network input; ``"y"``: ``(1, p, p)`` clean target over the
        same robust scale.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        settings: AblationSettings,
        *,
        scale: int = 1,
        patch: int = 64,
        seed: int = 0,
        vary: bool = True,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.images = [np.asarray(im, dtype=np.float32) for im in images]
        self.settings = settings
        self.scale = int(scale)
        self.patch = int(patch)
        self.seed = int(seed)
        self.vary = vary
        p = np.ones(len(self.images)) if weights is None else np.asarray(weights, float)
        if p.shape != (len(self.images),) or not np.all(p >= 0) or p.sum() <= 0:
            raise InvalidInputError(
                f"weights: one non-negative value per image ({len(self.images)}), not all "
                f"zero; got shape {p.shape}."
            )
        self.p = p / p.sum()

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        """A random crop (reflect-padded when the image is smaller), flipped and turned."""
        im = self.images[rng.choice(len(self.images), p=self.p)]
        p = self.patch
        pad = [(0, max(p - s, 0)) for s in im.shape]
        if any(b for _, b in pad):
            im = np.pad(im, pad, mode="reflect" if min(im.shape) > p // 2 else "symmetric")
        y0 = rng.integers(im.shape[0] - p + 1)
        x0 = rng.integers(im.shape[1] - p + 1)
        c = im[y0 : y0 + p, x0 : x0 + p]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        return np.rot90(c, int(rng.integers(4))).copy()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, PAIRS_STREAM, worker])
        while True:
            clean = self.crop(rng)
            s = vary_settings(self.settings, rng) if self.vary else self.settings
            degraded = virtual_ablation(
                clean, **dataclasses.asdict(s), scale=self.scale, seed=int(rng.integers(2**31))
            )
            x, scl = network_input(degraded[None])
            y = torch.from_numpy(clean[None] / scl[0])
            yield {"x": x[0], "y": y.float()}


class EnhancerModule(L.LightningModule):
    """Wires an injected enhancer network to :class:`~n2s_eds.imaging.losses.EnhancerLoss`
    and Adam with a cosine learning-rate decay over ``max_steps``."""

    def __init__(
        self,
        net: nn.Module,
        loss: LossWeights | None = None,
        lr: float = 1e-3,
        max_steps: int = 2000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = EnhancerLoss(loss)
        self.curve: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["x"]), batch["y"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["x"]))
        self.curve.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(int(self.hparams.max_steps), 1), eta_min=self.hparams.lr * 0.02
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
