"""Random patches of in-memory count cubes, and the data module that trains on one file.

Training samples random 3D patches (all channels of the processing window
by default, or a sub-range of channels) from one or more count cubes; the
Bernoulli masks are drawn by the LightningModule, so the data stay plain
counts. Validation uses a fixed, seeded set of patches so that its
masked-voxel loss is comparable from epoch to epoch.

Training patches are seeded too: patch ``k`` of the stream is a function of
``(seed, k)`` alone, and :class:`PatchKeySampler` hands out the keys
``epoch * length + position``, shards them over the ranks of a distributed
run, and, when a run is resumed from a checkpoint saved in the middle of an
epoch, skips the patches that run had already used (:func:`resume_position`).
A resumed run therefore sees the same patches as an uninterrupted one,
whatever the number of DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..io import load, load_guide
from ..options import ProcessingOptions, RuntimeOptions, TrainingOptions
from ..preprocess import channel_width_ev, prepare_cube

__all__ = [
    "TRAIN_STREAM",
    "CubeSample",
    "PatchDataset",
    "PatchKeySampler",
    "CubeDataModule",
]

#: Tag of the training patch stream in the seed (keeps it apart from the
#: validation and test patches, which are seeded by ``(seed, index)``).
TRAIN_STREAM = 0x5452_4E53


class CubeSample:
    """One count cube (E, Y, X) with its optional guide image (Y, X).

    ``target`` (E, Y, X), when given, holds the expected counts the network is
    trained against instead of the counts themselves (the supervised
    reference of the benchmark, for simulated data whose truth is known).
    ``trainable`` (Y, X) booleans, when given, are the pixels whose counts may
    be training targets; the others are held out (they still feed their
    neighbours' estimates) to score the network on data it was not fitted to.
    """

    def __init__(
        self,
        counts: np.ndarray,
        guide: np.ndarray | None = None,
        target: np.ndarray | None = None,
        trainable: np.ndarray | None = None,
    ):
        counts = np.asarray(counts, dtype=np.float32)
        if counts.ndim != 3:
            raise ValueError(f"counts must be a (E, Y, X) cube, got shape {counts.shape}")
        if guide is not None:
            guide = np.asarray(guide, dtype=np.float32)
            if guide.shape != counts.shape[1:]:
                raise ValueError(
                    f"guide shape {guide.shape} does not match the scan {counts.shape[1:]}"
                )
        if target is not None:
            target = np.asarray(target, dtype=np.float32)
            if target.shape != counts.shape:
                raise ValueError(
                    f"target shape {target.shape} does not match the counts {counts.shape}"
                )
        if trainable is not None:
            trainable = np.asarray(trainable, dtype=bool)
            if trainable.shape != counts.shape[1:]:
                raise ValueError(
                    f"trainable shape {trainable.shape} does not match the scan {counts.shape[1:]}"
                )
        self.counts = counts
        self.guide = guide
        self.target = target
        self.trainable = trainable


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
        ``None`` draws fresh patches on every access; an integer makes item
        ``i`` always the same patch (validation, and seeded training).
    stream : int or None
        With a ``seed``: an extra tag mixed into the seed, so that several
        patch streams of one seed differ (:data:`TRAIN_STREAM` for training).
        Any non-negative integer is a valid index then, not only those below
        ``length`` (see :class:`PatchKeySampler`).
    """

    def __init__(
        self,
        samples: Sequence[CubeSample],
        patch_size: int = TrainingOptions.patch_size,
        energy_patch: int | None = None,
        length: int = 1000,
        seed: int | None = None,
        stream: int | None = None,
    ):
        if not samples:
            raise ValueError("PatchDataset needs at least one cube")
        guided = {s.guide is not None for s in samples}
        if len(guided) != 1:
            raise ValueError("either every cube has a guide image or none has")
        if len({s.target is not None for s in samples}) != 1:
            raise ValueError("either every cube has a target or none has")
        if len({s.trainable is not None for s in samples}) != 1:
            raise ValueError("either every cube has trainable pixels set or none has")
        self.samples = list(samples)
        self.patch_size = int(patch_size)
        self.energy_patch = energy_patch
        self.length = int(length)
        self.seed = seed
        self.stream = stream
        self.guided = guided.pop()
        weights = np.array([s.counts.shape[1] * s.counts.shape[2] for s in self.samples], float)
        self._p = weights / weights.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.seed is None:
            rng = np.random.default_rng()
        elif self.stream is None:
            rng = np.random.default_rng([self.seed, index])
        else:
            rng = np.random.default_rng([self.seed, self.stream, index])
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
        item = {
            "counts": torch.from_numpy(np.ascontiguousarray(counts))[None],
            "e0": torch.tensor(e0, dtype=torch.long),  # the patch's first channel
        }
        if sample.guide is not None:
            guide = sample.guide[y0 : y0 + py, x0 : x0 + px]
            item["guide"] = torch.from_numpy(np.ascontiguousarray(guide))[None]
        if sample.target is not None:
            target = sample.target[e0 : e0 + pe, y0 : y0 + py, x0 : x0 + px]
            item["target"] = torch.from_numpy(np.ascontiguousarray(target))[None]
        if sample.trainable is not None:
            keep = sample.trainable[y0 : y0 + py, x0 : x0 + px]
            item["trainable"] = torch.from_numpy(np.ascontiguousarray(keep))[None]
        return item


class PatchKeySampler(DistributedSampler):
    """Keys of a seeded training patch stream, sharded over ranks, resumable.

    In epoch ``e`` the keys are ``e * len(dataset) + i`` for the positions
    ``i`` of this rank's shard (:class:`torch.utils.data.DistributedSampler`
    without shuffling: the keys already map to random patches), so every epoch
    brings new patches and a run's patches depend only on the seed, the epoch
    and the world size. Lightning calls :meth:`set_epoch` at each epoch start
    and leaves a ``DistributedSampler`` in place under a distributed strategy.

    Parameters
    ----------
    dataset : PatchDataset
        A seeded training dataset (``seed`` and ``stream`` set).
    num_replicas, rank : int
        World size and rank of this process (1 and 0 on one device).
    epoch : int
        The epoch the first iteration belongs to.
    skip : int
        Keys of this rank's shard of ``epoch`` to leave out at its start: the
        patches a resumed run had used before its checkpoint. Reset to 0 when
        the epoch changes.
    """

    def __init__(
        self,
        dataset: PatchDataset,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
        skip: int = 0,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.epoch = int(epoch)
        self.skip = max(0, int(skip))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from its first key unless it is the resumed one)."""
        if int(epoch) != self.epoch:
            self.skip = 0
        super().set_epoch(int(epoch))

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * len(self.dataset)
        for position, index in enumerate(super().__iter__()):
            if position >= self.skip:
                yield base + index


def resume_position(trainer: Any, batches_per_epoch: int) -> tuple[int, int]:
    """(epoch, batches already done in it) of a trainer, from its restored step count.

    Every epoch of a :class:`PatchKeySampler` stream has the same number of
    batches (``batches_per_epoch``, cut by ``limit_train_batches`` the way
    Lightning cuts it), so the optimizer steps of the finished epochs are
    known and the rest were done in the current one. A fresh trainer gives
    ``(0, 0)``.
    """
    if trainer is None:
        return 0, 0
    limit = getattr(trainer, "limit_train_batches", 1.0)
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches_per_epoch = min(batches_per_epoch, limit)
    elif isinstance(limit, float):
        batches_per_epoch = int(batches_per_epoch * limit)
    epoch = int(getattr(trainer, "current_epoch", 0) or 0)
    step = int(getattr(trainer, "global_step", 0) or 0)
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulate))
    done = step - epoch * steps_per_epoch
    if done <= 0:
        return epoch, 0
    # a checkpoint saved on the last batch of an epoch resumes at the next one
    finished, done = divmod(done, steps_per_epoch)
    return epoch + finished, min(done * accumulate, batches_per_epoch)


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
        Seed of the patches: the training stream (with :data:`TRAIN_STREAM`;
        see :class:`PatchKeySampler`) and the fixed validation (``seed``) and
        test (``seed + 1``) sets.
    low_kev, high_kev : float
        Processing window (keV) when reading ``path``.
    """

    def __init__(
        self,
        path: str | None = None,
        haadf: str | None = None,
        use_guide: bool = False,
        samples: Sequence[CubeSample] | None = None,
        patch_size: int = TrainingOptions.patch_size,
        energy_patch: int | None = None,
        batch_size: int = TrainingOptions.batch_size,
        train_patches: int = 400,
        val_patches: int = 8,
        num_workers: int = 0,
        seed: int = RuntimeOptions.seed,
        low_kev: float = ProcessingOptions.low_kev,
        high_kev: float | None = ProcessingOptions.high_kev,
    ):
        super().__init__()
        if path is None and samples is None:
            raise ValueError("CubeDataModule needs `path` (a file) or `samples` (cubes)")
        self.save_hyperparameters(ignore=["samples"])
        self._samples = list(samples) if samples is not None else None
        self._channel_ev: float | None = None

    @property
    def samples(self) -> list[CubeSample]:
        """The training cubes, read from ``path`` on first use."""
        if self._samples is None:
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
            self._channel_ev = channel_width_ev(acq.eds)
        return self._samples

    @property
    def channel_ev(self) -> float | None:
        """Channel width (eV) of the cube read from ``path``; ``None`` for given samples."""
        if self.hparams.path is None:
            return None
        _ = self.samples
        return self._channel_ev

    def adapt_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first cube (and guide) as tensors, for ``net.adapt``."""
        s = self.samples[0]
        guide = None if s.guide is None else torch.from_numpy(s.guide)
        return torch.from_numpy(s.counts), guide

    def train_dataloader(self) -> DataLoader:
        """Seeded training patches, sharded over the ranks, resumable mid-epoch.

        The sampler's world size and rank are Lightning's own
        (``trainer.distributed_sampler_kwargs``); on a resumed run it starts at
        the restored epoch and skips the batches done before the checkpoint.
        """
        hp = self.hparams
        ds = PatchDataset(
            self.samples,
            hp.patch_size,
            hp.energy_patch,
            hp.train_patches,
            seed=hp.seed,
            stream=TRAIN_STREAM,
        )
        trainer = self.trainer
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        num_replicas = int(shard.get("num_replicas", 1))
        rank = int(shard.get("rank", 0))
        sampler = PatchKeySampler(ds, num_replicas=num_replicas, rank=rank)
        epoch, done = resume_position(trainer, math.ceil(len(sampler) / hp.batch_size))
        sampler = PatchKeySampler(
            ds, num_replicas=num_replicas, rank=rank, epoch=epoch, skip=done * hp.batch_size
        )
        return DataLoader(
            ds,
            batch_size=hp.batch_size,
            sampler=sampler,
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
