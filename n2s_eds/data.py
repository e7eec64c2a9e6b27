"""Patch datasets and the LightningDataModule that feeds training.

Training samples random 3D patches (all channels of the processing window
by default, or a sub-range of channels) from one or more count cubes; the
Bernoulli masks are drawn by the LightningModule, so the data stay plain
counts. Validation uses a fixed, seeded set of patches so that its
masked-voxel loss is comparable from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["CubeSample", "PatchDataset", "CubeDataModule"]


class CubeSample:
    """One count cube (E, Y, X) with its optional guide image (Y, X)."""

    def __init__(self, counts: np.ndarray, guide: np.ndarray | None = None):
        counts = np.asarray(counts, dtype=np.float32)
        if counts.ndim != 3:
            raise ValueError(f"counts must be a (E, Y, X) cube, got shape {counts.shape}")
        if guide is not None:
            guide = np.asarray(guide, dtype=np.float32)
            if guide.shape != counts.shape[1:]:
                raise ValueError(
                    f"guide shape {guide.shape} does not match the scan {counts.shape[1:]}"
                )
        self.counts = counts
        self.guide = guide


class PatchDataset(Dataset):
    """Random patches of count cubes.

    Parameters
    ----------
    samples : sequence of CubeSample
        The cubes (all with a guide or all without).
    patch_size : int
        Spatial side of a patch (clipped to the cube size).
    energy_patch : int or None
        Channels per patch; ``None`` takes every channel.
    length : int
        Number of patches per epoch.
    seed : int or None
        ``None`` draws fresh patches on every access (training); an integer
        makes item ``i`` always the same patch (validation).
    """

    def __init__(
        self,
        samples: Sequence[CubeSample],
        patch_size: int = 32,
        energy_patch: int | None = None,
        length: int = 1000,
        seed: int | None = None,
    ):
        if not samples:
            raise ValueError("PatchDataset needs at least one cube")
        guided = {s.guide is not None for s in samples}
        if len(guided) != 1:
            raise ValueError("either every cube has a guide image or none has")
        self.samples = list(samples)
        self.patch_size = int(patch_size)
        self.energy_patch = energy_patch
        self.length = int(length)
        self.seed = seed
        self.guided = guided.pop()
        weights = np.array([s.counts.shape[1] * s.counts.shape[2] for s in self.samples], float)
        self._p = weights / weights.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.seed is None:
            rng = np.random.default_rng()
        else:
            rng = np.random.default_rng([self.seed, index])
        sample = self.samples[int(rng.choice(len(self.samples), p=self._p))]
        e, y, x = sample.counts.shape
        py, px = min(self.patch_size, y), min(self.patch_size, x)
        y0 = int(rng.integers(0, y - py + 1))
        x0 = int(rng.integers(0, x - px + 1))
        if self.energy_patch is None or self.energy_patch >= e:
            e0, pe = 0, e
        else:
            pe = self.energy_patch
            e0 = int(rng.integers(0, e - pe + 1))
        counts = sample.counts[e0 : e0 + pe, y0 : y0 + py, x0 : x0 + px]
        item = {"counts": torch.from_numpy(np.ascontiguousarray(counts))[None]}
        if sample.guide is not None:
            guide = sample.guide[y0 : y0 + py, x0 : x0 + px]
            item["guide"] = torch.from_numpy(np.ascontiguousarray(guide))[None]
        return item


class CubeDataModule(L.LightningDataModule):
    """Training and validation patches from in-memory count cubes or files.

    Either pass ``samples`` (from Python) or ``path`` (from the CLI: any file
    :func:`n2s_eds.load` reads, with an optional separate ``haadf`` file).

    Parameters
    ----------
    path : str or None
        Spectrum-image file to train on.
    haadf : str or None
        Guide image file (when not inside ``path``); ``use_guide=True`` uses
        the image found in ``path`` itself.
    use_guide : bool
        Feed the guide image to the network.
    samples : sequence of CubeSample or None
        Cubes given directly (the Python API).
    patch_size, energy_patch : int, int or None
        Patch shape; see :class:`PatchDataset`.
    batch_size : int
        Patches per step.
    train_patches, val_patches : int
        Patches per training epoch and in the fixed validation set.
    num_workers : int
        DataLoader workers.
    seed : int
        Seed of the validation patches.
    low_kev, high_kev : float
        Processing window (keV) when reading ``path``.
    """

    def __init__(
        self,
        path: str | None = None,
        haadf: str | None = None,
        use_guide: bool = False,
        samples: Sequence[CubeSample] | None = None,
        patch_size: int = 32,
        energy_patch: int | None = None,
        batch_size: int = 4,
        train_patches: int = 400,
        val_patches: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        low_kev: float = 0.2,
        high_kev: float = 20.0,
    ):
        super().__init__()
        if path is None and samples is None:
            raise ValueError("CubeDataModule needs `path` (a file) or `samples` (cubes)")
        self.save_hyperparameters(ignore=["samples"])
        self._samples = list(samples) if samples is not None else None

    @property
    def samples(self) -> list[CubeSample]:
        """The training cubes, read from ``path`` on first use."""
        if self._samples is None:
            from .api import prepare_cube  # local import: api imports data
            from .io import load, load_guide

            acq = load(self.hparams.path)
            guide_signal = None
            if self.hparams.haadf is not None:
                guide_signal = load_guide(self.hparams.haadf, acq.eds)
            elif self.hparams.use_guide:
                guide_signal = acq.haadf
            prepared = prepare_cube(
                acq.eds,
                guide_signal,
                low_kev=self.hparams.low_kev,
                high_kev=self.hparams.high_kev,
                require_guide=self.hparams.use_guide or self.hparams.haadf is not None,
            )
            self._samples = [CubeSample(prepared.cube, prepared.guide)]
        return self._samples

    def adapt_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first cube (and guide) as tensors, for ``net.adapt``."""
        s = self.samples[0]
        guide = None if s.guide is None else torch.from_numpy(s.guide)
        return torch.from_numpy(s.counts), guide

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        ds = PatchDataset(self.samples, hp.patch_size, hp.energy_patch, hp.train_patches)
        return DataLoader(
            ds,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def _fixed_loader(self, seed: int) -> DataLoader:
        hp = self.hparams
        ds = PatchDataset(self.samples, hp.patch_size, hp.energy_patch, hp.val_patches, seed)
        return DataLoader(ds, batch_size=hp.batch_size, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._fixed_loader(self.hparams.seed)

    def test_dataloader(self) -> DataLoader:
        return self._fixed_loader(self.hparams.seed + 1)
