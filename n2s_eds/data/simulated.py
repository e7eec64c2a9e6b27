"""The LightningDataModule that pretrains on simulated acquisitions, drawn on the fly.

:class:`SimulatedDataModule` streams patches of acquisitions from
:func:`~n2s_eds.simulate.corpus.draw_acquisition`: no file is read or written.
Every worker of every rank draws its own acquisitions (their indices never
collide), each acquisition gives a few random patches, and the validation set
is a fixed handful of acquisitions from a stream that training never visits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..exceptions import InvalidInputError
from ..simulate.corpus import Acquisition, CorpusOptions, draw_acquisition

__all__ = ["SIMULATED_VAL_OFFSET", "SimulatedDataModule", "SimulatedPatches"]

#: Added to the seed to give the stream of the validation acquisitions.
SIMULATED_VAL_OFFSET = 1_000_003
#: Word of the patch positions' random stream (beside the seed and the acquisition index).
_PATCH_STREAM = 0x9A7C4
#: Acquisitions per rank and worker that an epoch may draw before the next epoch's start.
_EPOCH_STRIDE = 1 << 32


def _options(corpus: CorpusOptions | dict | None) -> CorpusOptions:
    if corpus is None:
        return CorpusOptions()
    if isinstance(corpus, CorpusOptions):
        return corpus
    if not isinstance(corpus, dict):
        raise InvalidInputError(f"data.corpus must be a mapping of CorpusOptions, got {corpus!r}")
    known = set(CorpusOptions.__dataclass_fields__)
    unknown = sorted(set(corpus) - known)
    if unknown:
        raise InvalidInputError(
            f"data.corpus has unknown options {unknown}; known: {sorted(known)}"
        )
    return CorpusOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in corpus.items()})


def _scale(acq: Acquisition) -> float:
    """Mean counts per voxel of a whole acquisition, at least 1e-6."""
    return max(float(acq.counts.mean(dtype=np.float64)), 1e-6)


def _patch(acq: Acquisition, scale: float, y0: int, x0: int, e0: int, side: int, n_e: int) -> dict:
    """One item: a (1, E, Y, X) window of the counts and truth, with its guide and axis."""
    ys, xs, es = slice(y0, y0 + side), slice(x0, x0 + side), slice(e0, e0 + n_e)
    return {
        "counts": torch.from_numpy(np.ascontiguousarray(acq.counts[None, es, ys, xs])),
        "target": torch.from_numpy(np.ascontiguousarray(acq.truth[None, es, ys, xs])),
        "guide": torch.from_numpy(np.ascontiguousarray(acq.guide[None, ys, xs])),
        "energy": torch.from_numpy(np.ascontiguousarray(acq.energy_kev[es])),
        "bin_ev": torch.tensor(acq.bin_ev, dtype=torch.float32),
        "scale": torch.tensor(scale, dtype=torch.float32),
    }


class SimulatedPatches(IterableDataset):
    """An endless stream of random patches of simulated acquisitions.

    Acquisition ``k`` of this rank and worker has the index
    ``((epoch * 2**32 + k) * world_size + rank) * num_workers + worker_id``
    in the stream ``seed``, so that no two workers or ranks draw the same one;
    ``patches_per_draw`` patches come from each, at positions drawn from
    ``default_rng([seed, index, stream word])``.

    Parameters
    ----------
    seed : int
        Corpus stream.
    options : CorpusOptions
        What the acquisitions are drawn from.
    patch_size : int
        Spatial side of the patches.
    energy_patch : int
        Consecutive bins per patch, at a random start.
    patches_per_draw : int
        Patches taken from each acquisition.
    rank, world_size : int
        This process's rank and the number of ranks.
    epoch : int
        Epoch whose acquisitions are drawn (set by the data loader before each epoch).
    """

    def __init__(
        self,
        seed: int,
        options: CorpusOptions,
        patch_size: int,
        energy_patch: int,
        patches_per_draw: int,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
    ):
        super().__init__()
        self.seed, self.options = int(seed), options
        self.patch_size, self.energy_patch = int(patch_size), int(energy_patch)
        self.patches_per_draw = int(patches_per_draw)
        self.rank, self.world_size, self.epoch = int(rank), int(world_size), int(epoch)

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        side, n_e = self.patch_size, self.energy_patch
        k = self.epoch * _EPOCH_STRIDE
        while True:
            index = (k * self.world_size + self.rank) * n_workers + worker_id
            acq = draw_acquisition(self.seed, index, self.options)
            rng = np.random.default_rng([self.seed, index, _PATCH_STREAM])
            n_bins, height, width = acq.counts.shape
            scale = _scale(acq)
            for _ in range(self.patches_per_draw):
                y0 = int(rng.integers(height - side + 1))
                x0 = int(rng.integers(width - side + 1))
                e0 = int(rng.integers(n_bins - n_e + 1))
                yield _patch(acq, scale, y0, x0, e0, side, n_e)
            k += 1


class _EpochLoader(DataLoader):
    """A DataLoader that tells its dataset the trainer's epoch before every pass."""

    def __init__(self, *args: Any, module: L.LightningDataModule | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._module = module

    def __iter__(self):
        trainer = getattr(self._module, "trainer", None)
        if trainer is not None:
            self.dataset.epoch = int(trainer.current_epoch)
        return super().__iter__()


class SimulatedDataModule(L.LightningDataModule):
    """Training and validation patches of simulated acquisitions, drawn on the fly.

    Every item is a dict of float32 tensors: ``"counts"`` (1, E, Y, X) Poisson
    counts, ``"target"`` (1, E, Y, X) their expectation, ``"guide"`` (1, Y, X)
    the normalised HAADF image (zeros when the acquisition has none),
    ``"energy"`` (E,) bin centres in keV, ``"bin_ev"`` () bin width in eV and
    ``"scale"`` () the mean counts per voxel of the whole acquisition (at least
    1e-6). Batches stack them along a first axis.

    Parameters
    ----------
    seed : int
        Seed of the training stream; validation uses the stream
        ``seed + SIMULATED_VAL_OFFSET``, which training never draws from.
    batch_size : int
        Patches per step.
    patch_size : int
        Spatial side of the patches (at most the corpus shape).
    energy_patch : int or None
        Consecutive bins per patch, at a random start (validation: centred);
        ``None`` takes the number of bins every acquisition is sure to have
        (:meth:`CorpusOptions.min_bins`), which is also the largest value allowed.
    patches_per_draw : int
        Training patches taken from each acquisition.
    val_draws : int
        Validation acquisitions, one centred patch each, the same every epoch.
    num_workers : int
        DataLoader workers for training.
    corpus : CorpusOptions or dict, optional
        Options of the acquisitions; a dict (from YAML) is turned into
        :class:`CorpusOptions`, its lists into tuples.

    Raises
    ------
    InvalidInputError
        For an out-of-range option, an unknown corpus option, or a patch larger
        than the acquisitions.
    """

    def __init__(
        self,
        seed: int = 0,
        batch_size: int = 4,
        patch_size: int = 32,
        energy_patch: int | None = 128,
        patches_per_draw: int = 4,
        val_draws: int = 8,
        num_workers: int = 0,
        corpus: CorpusOptions | dict | None = None,
    ):
        super().__init__()
        options = _options(corpus)
        for field, value, low in (
            ("seed", seed, 0),
            ("batch_size", batch_size, 1),
            ("patch_size", patch_size, 1),
            ("patches_per_draw", patches_per_draw, 1),
            ("val_draws", val_draws, 0),
            ("num_workers", num_workers, 0),
        ):
            if int(value) < low:
                raise InvalidInputError(f"data.{field} must be >= {low}, got {value}")
        if int(patch_size) > min(options.shape):
            raise InvalidInputError(
                f"data.patch_size={patch_size} exceeds the corpus shape {options.shape}"
            )
        most = options.min_bins()
        if energy_patch is not None and not 1 <= int(energy_patch) <= most:
            raise InvalidInputError(
                f"data.energy_patch must lie in [1, {most}] (the bins every acquisition of "
                f"these corpus options has) or be null, got {energy_patch}"
            )
        self.save_hyperparameters(ignore=["corpus"])
        self.hparams["corpus"] = options.as_dict()
        self.options = options
        self.energy_length = most if energy_patch is None else int(energy_patch)
        self._val_items: list[dict] | None = None

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        """Endless seeded training batches; each worker and rank draws its own acquisitions."""
        hp = self.hparams
        rank, world_size = self._shard()
        dataset = SimulatedPatches(
            hp.seed,
            self.options,
            hp.patch_size,
            self.energy_length,
            hp.patches_per_draw,
            rank=rank,
            world_size=world_size,
        )
        return _EpochLoader(
            dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, module=self
        )

    def val_items(self) -> list[dict]:
        """The fixed validation items (drawn once, then kept)."""
        if self._val_items is None:
            hp, side, n_e = self.hparams, self.hparams.patch_size, self.energy_length
            items = []
            for index in range(hp.val_draws):
                acq = draw_acquisition(hp.seed + SIMULATED_VAL_OFFSET, index, self.options)
                n_bins, height, width = acq.counts.shape
                y0, x0, e0 = (height - side) // 2, (width - side) // 2, (n_bins - n_e) // 2
                items.append(_patch(acq, _scale(acq), y0, x0, e0, side, n_e))
            self._val_items = items
        return self._val_items

    def val_dataloader(self) -> DataLoader:
        """The same validation batches every epoch."""
        return DataLoader(self.val_items(), batch_size=self.hparams.batch_size, shuffle=False)
