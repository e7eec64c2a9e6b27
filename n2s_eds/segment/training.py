"""Fine-tuning on sparse labels: the training batches and the LightningModule.

:class:`SparseLabelBatches` is an endless stream of batches cut from the one labelled scan.
Each batch starts from a new noise realisation of the scan, so that the network cannot learn
the counting noise of the few labelled pixels by heart: count channels are thinned
binomially (every count kept with one probability drawn in [0.5, 1], which gives Poisson
counts of a lower dose), intensity channels get Gaussian noise of up to 0.7 times their
estimated noise level. The channels then pass through
:func:`~n2s_eds.imaging.training.network_input`, and random crops holding labelled pixels
are cut, flipped and turned. Crops, rather than the whole scan, keep the network from
placing phases by their distance to the scan's border.

:class:`SegmenterModule` wires the network to the cross-entropy on the labelled pixels only
(label smoothing 0.1) and AdamW, with a smaller learning rate for the trunk than for the head.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from ..imaging.training import network_input, noise_level, robust_scale
from .labels import UNLABELLED

__all__ = ["SparseLabelBatches", "SegmenterModule", "scan_input"]

#: Seed stream of the training batches (beside the run's seed).
BATCH_STREAM = 0x5E6


def scan_input(channels: np.ndarray) -> torch.Tensor:
    """The network's ``(1, C, 2, Y, X)`` input of a ``(C, Y, X)`` channel stack."""
    return network_input(np.asarray(channels, dtype=np.float32))[0][None]


def _noise_sigmas(channels: np.ndarray, counts: tuple[bool, ...]) -> list[float | None]:
    """Per intensity channel its estimated noise standard deviation (in its units); ``None``
    for count channels, which are thinned instead."""
    out: list[float | None] = []
    for image, is_counts in zip(channels, counts, strict=True):
        if is_counts:
            out.append(None)
        else:
            scale = robust_scale(image[None])[0]
            out.append(float(noise_level(image[None] / scale)[0] * scale))
    return out


def _augment_noise(
    channels: np.ndarray, sigmas: list[float | None], rng: np.random.Generator
) -> np.ndarray:
    out = np.empty_like(channels)
    keep = rng.uniform(0.5, 1.0)
    for i, (image, sigma) in enumerate(zip(channels, sigmas, strict=True)):
        if sigma is None:
            out[i] = rng.binomial(np.round(image).astype(np.int64), keep) / keep
        else:
            out[i] = image + rng.normal(0.0, 0.7 * rng.random() * sigma, image.shape)
    return out.astype(np.float32)


class SparseLabelBatches(IterableDataset):
    """Endless training batches from one scan and its sparse labels.

    Parameters
    ----------
    channels : numpy.ndarray
        ``(C, Y, X)`` input channels.
    counts : tuple of bool
        Per channel, whether it holds counts (thinned) or intensities (noise added).
    labels : numpy.ndarray
        ``(Y, X)`` int64, ``-1`` unlabelled.
    batch_size : int
        Crops per batch.
    patch : int
        Side of the crops (the scan's side when smaller).
    seed : int
        Seed of the stream.

    Yields
    ------
    dict
        ``"x"``: ``(B, C, 2, p, p)``; ``"y"``: ``(B, p, p)`` int64 labels.
    """

    def __init__(
        self,
        channels: np.ndarray,
        counts: tuple[bool, ...],
        labels: np.ndarray,
        *,
        batch_size: int = 4,
        patch: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.channels = np.asarray(channels, dtype=np.float32)
        self.counts = tuple(counts)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.patch = (min(int(patch), self.labels.shape[0]), min(int(patch), self.labels.shape[1]))
        self.seed = int(seed)
        self.sigmas = _noise_sigmas(self.channels, self.counts)  # fixed: estimated once
        # Crop corners whose crop holds at least one labelled pixel (a summed-area table).
        ph, pw = self.patch
        table = np.pad((self.labels != UNLABELLED).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        inside = table[ph:, pw:] - table[:-ph, pw:] - table[ph:, :-pw] + table[:-ph, :-pw]
        self.corners = np.argwhere(inside > 0)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, BATCH_STREAM])
        labels = torch.from_numpy(self.labels)
        ph, pw = self.patch
        while True:
            x = scan_input(_augment_noise(self.channels, self.sigmas, rng))[0]
            xs, ys = [], []
            for _ in range(self.batch_size):
                y0, x0 = self.corners[rng.integers(len(self.corners))]
                xc = x[..., y0 : y0 + ph, x0 : x0 + pw]
                yc = labels[y0 : y0 + ph, x0 : x0 + pw]
                turns = int(rng.integers(4)) if ph == pw else 2 * int(rng.integers(2))
                xc, yc = torch.rot90(xc, turns, (-2, -1)), torch.rot90(yc, turns, (-2, -1))
                if rng.random() < 0.5:
                    xc, yc = xc.flip(-1), yc.flip(-1)
                xs.append(xc)
                ys.append(yc)
            yield {"x": torch.stack(xs).contiguous(), "y": torch.stack(ys).contiguous()}


class SegmenterModule(L.LightningModule):
    """Cross-entropy on the labelled pixels, AdamW (trunk at ``trunk_lr``, head at ``lr``).

    Parameters
    ----------
    net : torch.nn.Module
        A :class:`~n2s_eds.segment.networks.SegmentationNet`.
    lr, trunk_lr : float
        Learning rates of the head and of the trunk.
    weight_decay : float
        AdamW's decoupled weight decay.
    label_smoothing : float
        Of the cross-entropy.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        trunk_lr: float = 1e-4,
        weight_decay: float = 1e-2,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.curve: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["x"])
        loss = F.cross_entropy(
            logits,
            batch["y"],
            ignore_index=UNLABELLED,
            label_smoothing=self.hparams.label_smoothing,
        )
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["x"]))
        self.curve.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        groups = [
            {"params": self.net.trunk.parameters(), "lr": hp.trunk_lr},
            {"params": self.net.head.parameters(), "lr": hp.lr},
        ]
        return torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
