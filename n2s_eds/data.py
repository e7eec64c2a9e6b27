"""Patch datasets and the LightningDataModule that feeds training.

Training samples random 3D patches (all channels of the processing window
by default, or a sub-range of channels) from one or more count cubes; the
Bernoulli masks are drawn by the LightningModule, so the data stay plain
counts. Validation uses a fixed, seeded set of patches so that its
masked-voxel loss is comparable from epoch to epoch.

Training patches are seeded too: patch ``k`` of the stream is a function of
``(seed, k)`` alone, and :class:`PatchKeySampler` hands out the keys
``epoch * length + position``, shards them over the ranks of a distributed
run, and, when a run is resumed from a checkpoint saved in the middle of an
epoch, skips the patches that run had already used. A resumed run therefore
sees the same patches as an uninterrupted one, whatever the number of
DataLoader workers.

Many acquisitions train one network through an HDF5 corpus:
:func:`pack_corpus` writes cubes (counts of the processing window, guide
images, metadata) into one file, and :class:`CorpusDataModule` reads random
patches from it with h5py slicing, never a whole cube, adapting the network to
each batch's own cube as :meth:`n2s_eds.Denoiser.denoise` does at inference.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .exceptions import InvalidInputError
from .preprocess import EnergyWindow, channel_width_ev

__all__ = [
    "CubeSample",
    "PatchDataset",
    "PatchKeySampler",
    "CubeDataModule",
    "TRAIN_STREAM",
    "CORPUS_FORMAT",
    "pack_corpus",
    "read_corpus",
    "CorpusInfo",
    "CorpusCube",
    "CorpusRegion",
    "CorpusPatchDataset",
    "CorpusDataModule",
]

_log = logging.getLogger(__name__)

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
        patch_size: int = 32,
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
        item = {"counts": torch.from_numpy(np.ascontiguousarray(counts))[None]}
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


def _resume_position(trainer: Any, batches_per_epoch: int) -> tuple[int, int]:
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
        self._channel_ev: float | None = None

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
        epoch, done = _resume_position(trainer, math.ceil(len(sampler) / hp.batch_size))
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


# --------------------------------------------------------------------------- HDF5 corpus

#: ``format`` attribute of the root group of a corpus file.
CORPUS_FORMAT = "n2s_eds.corpus"
#: Version of the corpus layout written by :func:`pack_corpus`.
CORPUS_FORMAT_VERSION = 1
#: Default largest misalignment, in channels, between the energy channels of two cubes of
#: one corpus anywhere in the window (from their offsets and their channel widths).
ENERGY_TOLERANCE_CHANNELS = 0.25
#: Side (pixels) of the central scan region a cube's adapt data come from; the same
#: bound as the training region of a lazy cube in :mod:`n2s_eds.api`.
ADAPT_SIDE = 128
#: Target size of one HDF5 chunk of counts: every window channel of a square of pixels.
_CHUNK_BYTES = 1 << 20
#: HDF5 raw-data chunk cache of each counts dataset opened for reading.
_READ_CACHE_BYTES = 8 << 20
#: Smallest side (pixels) of a cube's block in the pooled adapt mosaic.
_MOSAIC_MIN_SIDE = 8


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("n2s-eds")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _plain_attr(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain_attr(v) for v in value]
    return value


def _guide_normalisation(guide: np.ndarray) -> tuple[float, float]:
    """(median, spread) with which :func:`n2s_eds.api.normalise_guide` normalises an image."""
    g = np.asarray(guide, dtype=np.float32)
    lo, med, hi = np.percentile(g, [10, 50, 90])
    spread = float(hi - lo)
    if spread <= 0:
        spread = float(g.std()) or 1.0
    return float(med), spread


@dataclass
class _Source:
    """One validated input of :func:`pack_corpus` (no counts read yet)."""

    name: str
    origin: str
    eds: Any
    guide: np.ndarray | None
    window: EnergyWindow
    energies: np.ndarray  # channel energies of the window, keV
    scale_kev: float
    axis_offset_kev: float
    channels: slice | None = None  # the channels stored, on the source's own axis


def _source_parts(source: Any, index: int) -> tuple[Any, Any, str, str]:
    """(eds, guide, origin, default name) of one input of :func:`pack_corpus`."""
    from .io import load

    if isinstance(source, str | os.PathLike):
        path = Path(source)
        acq = load(path, lazy=True)
        return acq.eds, acq.haadf, str(path), path.stem
    if isinstance(source, tuple):
        if len(source) != 2:
            raise InvalidInputError(
                f"source {index}: a tuple must be (spectrum image, guide image or None), got "
                f"{len(source)} items"
            )
        eds, guide = source
    else:
        eds, guide = source, None
    if not hasattr(eds, "axes_manager"):
        raise InvalidInputError(
            f"source {index}: expected a file path, a HyperSpy spectrum image or a "
            f"(spectrum image, guide) pair such as n2s_eds.load() returns, got "
            f"{type(eds).__name__}"
        )
    title = str(eds.metadata.get_item("General.title", "") or "").strip()
    return eds, guide, f"source {index} (signal {title!r})", f"cube{index}"


def _collect_sources(
    sources: Sequence[Any],
    names: Sequence[str] | None,
    low_kev: float,
    high_kev: float | None,
    include_guides: bool,
) -> list[_Source]:
    """Open and check every input of :func:`pack_corpus`; read no counts but for the checks."""
    from .io import check_spectrum_image, match_guide
    from .preprocess import energy_axis_kev, processing_window

    if isinstance(sources, str | os.PathLike) or not isinstance(sources, Sequence):
        raise InvalidInputError(
            "sources must be a list of file paths or spectrum images (one per cube), got "
            f"{type(sources).__name__}"
        )
    if len(sources) == 0:
        raise InvalidInputError("pack_corpus needs at least one source; the list is empty")
    if names is not None and len(names) != len(sources):
        raise InvalidInputError(
            f"names has {len(names)} entries for {len(sources)} sources; give one name per cube"
        )
    out: list[_Source] = []
    seen: dict[str, int] = {}
    for i, source in enumerate(sources):
        eds, guide, origin, default = _source_parts(source, i)
        try:
            check_spectrum_image(eds)
            energies = energy_axis_kev(eds)
            if energies.size < 2:
                raise InvalidInputError("the energy axis has a single channel")
            window = processing_window(eds, low_kev, high_kev)
            guide_arr = match_guide(guide, eds) if (include_guides and guide is not None) else None
        except InvalidInputError as exc:
            raise InvalidInputError(f"{origin}: {exc}") from None
        name = str(names[i]) if names is not None else default
        if not name or "/" in name:
            raise InvalidInputError(f"{origin}: the cube name {name!r} is empty or holds '/'")
        if name in seen:
            if names is not None:
                raise InvalidInputError(f"{origin}: the name {name!r} is given twice")
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        seen.setdefault(name, 0)
        out.append(
            _Source(
                name=name,
                origin=origin,
                eds=eds,
                guide=guide_arr,
                window=window,
                energies=energies[window.slice],
                scale_kev=float(energies[1] - energies[0]),
                axis_offset_kev=float(energies[0]),
            )
        )
    return out


def _common_channels(sources: list[_Source], tolerance: float) -> tuple[float, float, int]:
    """Check that the cubes share one energy grid; set each one's stored channels.

    A cube's channels are matched to the first cube's by a whole number of
    channels; what is left, at the first and at the last channel of its
    window (offset and channel-width differences add up along the window),
    must stay within ``tolerance`` channels.

    Returns
    -------
    tuple
        (energy of the first stored channel in keV, channel width in keV,
        number of stored channels): the channels of the processing window
        common to every cube.
    """
    ref = sources[0]
    scale = ref.scale_kev
    firsts = []
    for s in sources:
        shift = (s.energies[0] - ref.energies[0]) / scale
        offset = shift - round(shift)
        drift = (s.window.n_channels - 1) * (s.scale_kev - scale) / scale
        worst = max(abs(offset), abs(offset + drift))
        if worst > tolerance and abs(drift) > abs(offset):
            raise InvalidInputError(
                f"{s.origin}: its channels are {s.scale_kev * 1e3:.6g} eV wide, those of "
                f"{ref.origin} {scale * 1e3:.6g} eV: across its window they come "
                f"{worst:.2f} channel apart, more than energy_tolerance={tolerance:g}; the "
                "cubes of one corpus must share one energy axis. Pack cubes of each channel "
                "width into their own corpus, or raise energy_tolerance (--energy-tolerance) "
                "for a small calibration difference (counts are not resampled: "
                "interpolating channels would spread one channel's noise over its "
                "neighbours, which the Noise2Self training must not see)."
            )
        if worst > tolerance:
            raise InvalidInputError(
                f"{s.origin}: its energy channels are offset by {offset:+.3f} channel from "
                f"those of {ref.origin} (energy axis offsets {s.axis_offset_kev:.6g} and "
                f"{ref.axis_offset_kev:.6g} keV, {scale * 1e3:.6g} eV channels), more than "
                f"energy_tolerance={tolerance:g}; the cubes of one corpus must share one "
                "energy axis. Check the energy calibration, pack them into separate corpora, "
                "or raise energy_tolerance (--energy-tolerance)."
            )
        firsts.append(int(round(shift)))
    lasts = [f + s.window.n_channels - 1 for f, s in zip(firsts, sources, strict=True)]
    first, last = max(firsts), min(lasts)
    n = last - first + 1
    if n < 2:
        raise InvalidInputError(
            "the processing windows of the cubes share fewer than 2 energy channels ("
            + ", ".join(
                f"{s.origin}: {s.energies[0]:.3f}-{s.energies[-1]:.3f} keV" for s in sources
            )
            + "); pack cubes covering the same energies, or widen low_kev/high_kev"
        )
    narrowed = [s.origin for f, s in zip(firsts, sources, strict=True) if n < s.window.n_channels]
    e0 = float(ref.energies[0] + first * scale)
    if narrowed:
        warnings.warn(
            f"the corpus keeps the {n} channels ({e0:.3f}-{e0 + (n - 1) * scale:.3f} keV) that "
            f"every cube's processing window covers; {', '.join(narrowed)} had more",
            UserWarning,
            stacklevel=3,
        )
    for f, s in zip(firsts, sources, strict=True):
        start = s.window.start + (first - f)
        s.channels = slice(start, start + n)
    return e0, float(scale), n


def _chunk_shape(n_channels: int, itemsize: int, ny: int, nx: int) -> tuple[int, int, int]:
    """Chunks of every channel of a square of pixels, about ``_CHUNK_BYTES`` each."""
    side = int(math.sqrt(_CHUNK_BYTES / max(1, n_channels * itemsize)))
    side = max(4, min(64, side))
    return n_channels, min(side, ny), min(side, nx)


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    """Integer counts keep their type (bool becomes uint8); real values become float32."""
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind in "iu":
        return dtype
    return np.dtype(np.float32)


def _axis_units(axis: Any) -> str:
    return "" if axis.units is None else str(axis.units)


def _write_cube(group: Any, src: _Source, compression: str | None) -> None:
    """Write one cube's counts (E, Y, X), guide image and metadata into ``group``."""
    from .preprocess import beam_energy_kev, instrument_value

    data = src.eds.data
    ny, nx = int(data.shape[0]), int(data.shape[1])
    n = src.channels.stop - src.channels.start
    dtype = _storage_dtype(np.dtype(data.dtype))
    chunks = _chunk_shape(n, dtype.itemsize, ny, nx)
    options: dict[str, Any] = {}
    if compression is not None:
        options = {"compression": compression, "shuffle": True}
        if compression == "gzip":
            options["compression_opts"] = 4
    counts = group.create_dataset(
        "counts", shape=(n, ny, nx), dtype=dtype, chunks=chunks, **options
    )
    counts.attrs["axes"] = "energy, y, x"
    total = 0.0
    rows = chunks[1]
    for y0 in range(0, ny, rows):
        block = data[y0 : y0 + rows, :, src.channels]
        if hasattr(block, "compute"):
            block = block.compute()
        block = np.moveaxis(np.asarray(block), -1, 0).astype(dtype, copy=False)
        counts[:, y0 : y0 + rows, :] = block
        total += float(block.sum(dtype=np.float64))
    eds = src.eds
    md = eds.metadata
    nav = eds.axes_manager.navigation_axes  # (x, y)
    attrs: dict[str, Any] = {
        "name": src.name,
        "source": src.origin,
        "title": str(md.get_item("General.title", "") or ""),
        "signal_class": type(eds).__name__,
        "signal_type": str(md.get_item("Signal.signal_type", "") or ""),
        "energy_offset_kev": float(src.energies[src.channels.start - src.window.start]),
        "energy_scale_kev": src.scale_kev,
        "energy_units": "keV",
        "source_energy_offset_kev": src.axis_offset_kev,
        "source_channels": np.array([src.channels.start, src.channels.stop], np.int64),
        "source_n_channels": int(eds.axes_manager.signal_axes[0].size),
        "window_low_kev": src.window.low_kev,
        "window_high_kev": src.window.high_kev,
        "elements": np.array(list(md.get_item("Sample.elements", []) or []), dtype=object),
        "xray_lines": np.array(list(md.get_item("Sample.xray_lines", []) or []), dtype=object),
        "scan_shape": np.array([ny, nx], np.int64),
        "scan_scale": np.array([nav[1].scale, nav[0].scale], np.float64),
        "scan_offset": np.array([nav[1].offset, nav[0].offset], np.float64),
        "scan_units": np.array([_axis_units(nav[1]), _axis_units(nav[0])], dtype=object),
        "total_counts": total,
        "has_guide": src.guide is not None,
    }
    beam = beam_energy_kev(eds)
    if beam is not None:
        attrs["beam_energy_kev"] = float(beam)
    live = instrument_value(eds, "Detector.EDS.live_time")
    if live is not None:
        attrs["live_time"] = float(live)
    for key, value in attrs.items():
        if isinstance(value, np.ndarray) and value.dtype == object:
            value = np.array([str(v) for v in value], dtype=h5py.string_dtype())
        group.attrs[key] = value
    if src.guide is not None:
        guide = np.asarray(src.guide, dtype=np.float32)
        gds = group.create_dataset("guide", data=guide, chunks=True, **options)
        med, spread = _guide_normalisation(guide)
        gds.attrs["normalise_median"] = med
        gds.attrs["normalise_spread"] = spread


def pack_corpus(
    sources: Sequence[Any],
    path: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    low_kev: float = 0.2,
    high_kev: float | None = 20.0,
    include_guides: bool = True,
    energy_tolerance: float = ENERGY_TOLERANCE_CHANNELS,
    compression: str | None = "gzip",
    overwrite: bool = False,
) -> Path:
    """Pack spectrum images (with guide images and metadata) into one HDF5 corpus.

    Every input is opened and checked before anything is written; the file is
    written under a temporary name beside ``path`` and renamed only when
    complete, so an error never leaves a partial corpus behind.

    Layout::

        /                  attrs: format, format_version, n_cubes, names,
                           energy_offset_kev, energy_scale_kev, energy_units,
                           n_channels, low_kev, high_kev, created_by
        /cubes/0000/counts (E, Y, X) counts of the processing window, chunked
                           (E, c, c): a patch of all channels is a few chunks
        /cubes/0000/guide  (Y, X) float32 guide image on the scan grid, when
                           present; attrs normalise_median, normalise_spread
        /cubes/0000        attrs: name, source, title, signal_class, signal_type,
                           energy_offset_kev, energy_scale_kev, energy_units,
                           source_energy_offset_kev, source_channels,
                           source_n_channels, window_low_kev, window_high_kev,
                           elements, xray_lines, beam_energy_kev, live_time,
                           scan_shape, scan_scale, scan_offset, scan_units,
                           total_counts, has_guide

    Parameters
    ----------
    sources : sequence
        One entry per cube: a file path (read with :func:`n2s_eds.load`, lazily,
        with the image of the same scan as the guide), a spectrum image
        (``exspy.signals.EDSSpectrum``, eager or lazy), or a pair
        ``(spectrum image, guide)`` such as :class:`n2s_eds.Acquisition`, where
        the guide is a ``Signal2D``, a (Y, X) array or ``None``.
    path : str or os.PathLike
        The corpus file to write (conventionally ``.h5``).
    names : sequence of str, optional
        One unique name per cube; default: the file name without extension,
        or the signal's title (made unique with ``-1``, ``-2``...).
    low_kev, high_kev : float
        Processing window in keV (the upper edge is lowered to the beam
        energy). Only these channels are stored: the zero peak stays out.
    include_guides : bool
        Store the guide images (``False``: leave them out).
    energy_tolerance : float
        Largest misalignment, in channels, accepted between a cube's energy
        channels and the first cube's anywhere in the window.
    compression : {"gzip", "lzf", None}
        HDF5 compression of the counts and guides (with the shuffle filter).
    overwrite : bool
        Replace an existing file at ``path``.

    Returns
    -------
    pathlib.Path
        The corpus file.

    Raises
    ------
    InvalidInputError
        An empty list, an unreadable file or a signal that is not a spectrum
        image (naming it), cubes whose energy axes differ (naming the one that
        differs from the first), a guide that does not fit its scan, or an
        existing ``path`` without ``overwrite``.

    Warns
    -----
    UserWarning
        When some cubes' processing windows reach beyond the channels every
        cube covers: the corpus keeps only the common channels.

    Notes
    -----
    The cubes must share one energy axis within the window: their channels,
    matched by a whole number of channels (offsets may differ by whole
    channels), must lie within ``energy_tolerance`` of a channel of the first
    cube's at both ends of the window, so a small calibration difference of
    offset or width passes and another channel width does not. Other axes
    are refused rather than resampled: interpolated counts are neither
    Poisson nor independent between neighbouring channels, and the
    Noise2Self loss relies on both. The root attributes give the first
    cube's energy axis; each cube's attributes give its own.

    Examples
    --------
    >>> from n2s_eds.simulate import phantom
    >>> from n2s_eds.data import pack_corpus
    >>> cubes = [phantom(dose=20, shape=(16, 16), n_channels=128, seed=s) for s in (1, 2)]
    >>> pack_corpus([(c.noisy, c.haadf) for c in cubes], "corpus.h5")  # doctest: +SKIP
    PosixPath('corpus.h5')
    """
    path = Path(path).expanduser()
    if compression not in ("gzip", "lzf", None):
        raise InvalidInputError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give the corpus file's path")
    if path.exists() and not overwrite:
        raise InvalidInputError(
            f"{path} already exists; pass overwrite=True (--overwrite) to replace it, or "
            "choose another file name"
        )
    srcs = _collect_sources(sources, names, low_kev, high_kev, include_guides)
    if not float(energy_tolerance) >= 0:
        raise InvalidInputError(f"energy_tolerance must be >= 0, got {energy_tolerance}")
    e0, scale, n = _common_channels(srcs, float(energy_tolerance))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CORPUS_FORMAT
            f.attrs["format_version"] = CORPUS_FORMAT_VERSION
            f.attrs["created_by"] = f"n2s_eds {_package_version()}"
            f.attrs["n_cubes"] = len(srcs)
            f.attrs["names"] = np.array([s.name for s in srcs], dtype=h5py.string_dtype())
            f.attrs["energy_offset_kev"] = e0
            f.attrs["energy_scale_kev"] = scale
            f.attrs["energy_units"] = "keV"
            f.attrs["n_channels"] = n
            f.attrs["low_kev"] = float(low_kev)
            if high_kev is not None:
                f.attrs["high_kev"] = float(high_kev)
            cubes = f.create_group("cubes")
            for i, src in enumerate(srcs):
                try:
                    _write_cube(cubes.create_group(f"{i:04d}"), src, compression)
                except InvalidInputError:
                    raise
                except Exception as exc:
                    raise InvalidInputError(
                        f"{src.origin}: could not read or write its counts "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a corpus is shared data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _log.info("packed %d cubes (%d channels from %.3f keV) into %s", len(srcs), n, e0, path)
    return path


@dataclass(frozen=True)
class CorpusCube:
    """One cube of a corpus file, as its attributes describe it (no counts read).

    Attributes
    ----------
    index : int
        Position in the corpus.
    group : str
        HDF5 group path (``cubes/0000``).
    name : str
        Unique name of the cube.
    shape : tuple of int
        (E, Y, X) of the stored counts.
    has_guide : bool
        Whether a guide image is stored.
    attrs : dict
        Every attribute of the group, as plain Python values.
    """

    index: int
    group: str
    name: str
    shape: tuple[int, int, int]
    has_guide: bool
    attrs: dict[str, Any]


@dataclass(frozen=True)
class CorpusInfo:
    """What a corpus file holds: its root attributes and its cubes.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    attrs : dict
        Root attributes (energy axis of the stored channels, window, format).
    cubes : tuple of CorpusCube
        The cubes in file order.
    """

    path: Path
    attrs: dict[str, Any]
    cubes: tuple[CorpusCube, ...]

    @property
    def n_channels(self) -> int:
        """Energy channels of every stored cube."""
        return int(self.attrs["n_channels"])

    def find(self, key: str | int) -> CorpusCube:
        """The cube of a name, group name (``0003``) or index."""
        if isinstance(key, int) and not isinstance(key, bool):
            if 0 <= key < len(self.cubes):
                return self.cubes[key]
        else:
            for c in self.cubes:
                if str(key) in (c.name, c.group, c.group.rsplit("/", 1)[-1]):
                    return c
        raise InvalidInputError(
            f"{self.path} holds no cube {key!r}; its cubes are "
            + ", ".join(repr(c.name) for c in self.cubes)
        )


def read_corpus(path: str | os.PathLike) -> CorpusInfo:
    """Read the description of a corpus file written by :func:`pack_corpus`.

    Parameters
    ----------
    path : str or os.PathLike
        The corpus file.

    Returns
    -------
    CorpusInfo

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, a file that is not a corpus, or one
        written by a newer n2s_eds.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"corpus file not found: {path}. Write one with `n2s-eds pack`.")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain_attr(v) for k, v in f.attrs.items()}
            if attrs.get("format") != CORPUS_FORMAT:
                raise InvalidInputError(
                    f"{path} is not an n2s_eds corpus (no format={CORPUS_FORMAT!r} attribute); "
                    "write one with n2s_eds.data.pack_corpus or `n2s-eds pack`"
                )
            if int(attrs.get("format_version", 0)) > CORPUS_FORMAT_VERSION:
                raise InvalidInputError(
                    f"{path} was written by a newer n2s_eds (corpus format "
                    f"{attrs['format_version']}); upgrade n2s_eds to read it"
                )
            cubes = []
            for i, key in enumerate(sorted(f["cubes"].keys())):
                g = f["cubes"][key]
                cattrs = {k: _plain_attr(v) for k, v in g.attrs.items()}
                cubes.append(
                    CorpusCube(
                        index=i,
                        group=g.name.lstrip("/"),
                        name=str(cattrs.get("name", key)),
                        shape=tuple(int(s) for s in g["counts"].shape),
                        has_guide="guide" in g,
                        attrs=cattrs,
                    )
                )
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"could not read the corpus {path}: {type(exc).__name__}: {exc}"
        ) from None
    if not cubes:
        raise InvalidInputError(f"the corpus {path} holds no cube")
    return CorpusInfo(path, attrs, tuple(cubes))


@dataclass(frozen=True)
class CorpusRegion:
    """A rectangle of one corpus cube's scan that patches are drawn from.

    Attributes
    ----------
    cube : int
        Index of the cube in the corpus.
    group : str
        Its HDF5 group path.
    y0, y1, x0, x1 : int
        Rows ``[y0, y1)`` and columns ``[x0, x1)``.
    """

    cube: int
    group: str
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def area(self) -> int:
        """Pixels in the rectangle."""
        return (self.y1 - self.y0) * (self.x1 - self.x0)


class _CorpusReader:
    """Lazily opened, per-process h5py handles on a corpus file (never pickled)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._file: Any = None
        self._pid: int | None = None
        self._handles: dict[str, tuple[Any, Any, float, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def close(self) -> None:
        """Close the file (it reopens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # pragma: no cover - already closed
                pass
        self._file, self._pid, self._handles = None, None, {}

    def handles(self, group: str) -> tuple[Any, Any, float, float]:
        """(counts dataset, guide dataset or None, guide median, guide spread) of a cube."""
        if self._pid != os.getpid():  # first use, or a forked worker: never share a handle
            self._file, self._handles = None, {}
        if self._file is None:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_READ_CACHE_BYTES)
            self._pid = os.getpid()
        h = self._handles.get(group)
        if h is None:
            g = self._file[group]
            guide = g["guide"] if "guide" in g else None
            med = float(guide.attrs["normalise_median"]) if guide is not None else 0.0
            spread = float(guide.attrs["normalise_spread"]) if guide is not None else 1.0
            h = (g["counts"], guide, med, spread)
            self._handles[group] = h
        return h

    def read(
        self, group: str, ys: slice, xs: slice, es: slice | None = None, guide: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 counts (E, Y, X) and normalised guide (Y, X) of a block, by h5py slicing."""
        counts_ds, guide_ds, med, spread = self.handles(group)
        counts = np.asarray(counts_ds[es if es is not None else slice(None), ys, xs], np.float32)
        g = None
        if guide:
            if guide_ds is None:
                raise InvalidInputError(f"{self.path}: cube {group} has no guide image")
            g = (np.asarray(guide_ds[ys, xs], np.float32) - med) / spread
        return counts, g


class CorpusPatchDataset(Dataset):
    """Batches of random patches read from an HDF5 corpus, one cube per batch.

    Item ``k`` is a whole batch: ``batch_size`` patches (all the same shape)
    from one cube, chosen with probability proportional to its region's area,
    read with h5py slicing (a patch touches a few chunks; no cube is ever read
    whole). Use it with ``DataLoader(..., batch_size=None)``. The file is
    opened on first read in each process (DataLoader workers included): h5py
    handles are neither pickled nor shared across a fork.

    Parameters
    ----------
    path : str or os.PathLike
        The corpus file.
    regions : sequence of CorpusRegion
        Where patches may come from.
    patch_size : int
        Spatial side of a patch (clipped to the region).
    energy_patch : int or None
        Channels per patch; ``None`` takes every stored channel.
    batch_size : int
        Patches per item.
    n_patches : int
        Patches per epoch: ``ceil(n_patches / batch_size)`` items (the last
        one smaller when ``stream`` is ``None``).
    seed : int
        Seed of the patches.
    stream : int or None
        ``None``: item ``k`` is seeded by ``(seed, k)`` (validation, test).
        An integer (:data:`TRAIN_STREAM`): by ``(seed, stream, k)``, every item
        full and any non-negative ``k`` valid (keys of :class:`PatchKeySampler`).
    guided : bool
        Also return the normalised guide patches.

    Notes
    -----
    Each item holds ``"counts"`` (B, 1, E, py, px) float32, ``"guide"``
    (B, 1, py, px) when guided, and ``"cube"``, the cube's index (an int),
    which :class:`CorpusDataModule` uses to give the network that cube's
    adapt state.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        regions: Sequence[CorpusRegion],
        *,
        n_channels: int,
        patch_size: int = 32,
        energy_patch: int | None = None,
        batch_size: int = 4,
        n_patches: int = 400,
        seed: int = 0,
        stream: int | None = None,
        guided: bool = False,
    ):
        if not regions:
            raise ValueError("CorpusPatchDataset needs at least one region")
        self.regions = list(regions)
        self.reader = _CorpusReader(path)
        self.n_channels = int(n_channels)
        self.patch_size = int(patch_size)
        self.energy_patch = energy_patch
        self.batch_size = int(batch_size)
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.stream = stream
        self.guided = bool(guided)
        areas = np.array([r.area for r in self.regions], dtype=float)
        self._p = areas / areas.sum()

    def __len__(self) -> int:
        return math.ceil(self.n_patches / self.batch_size)

    def close(self) -> None:
        """Close the corpus file of this process."""
        self.reader.close()

    def __getitem__(self, key: int) -> dict[str, Any]:
        key = int(key)
        if self.stream is None:
            rng = np.random.default_rng([self.seed, key])
            n = min(self.batch_size, self.n_patches - key * self.batch_size)
            if n <= 0:
                raise IndexError(key)
        else:
            rng = np.random.default_rng([self.seed, self.stream, key])
            n = self.batch_size
        region = self.regions[int(rng.choice(len(self.regions), p=self._p))]
        py = min(self.patch_size, region.y1 - region.y0)
        px = min(self.patch_size, region.x1 - region.x0)
        e = self.n_channels
        if self.energy_patch is None or self.energy_patch >= e:
            pe = e
        else:
            pe = int(self.energy_patch)
        counts = np.empty((n, 1, pe, py, px), np.float32)
        guide = np.empty((n, 1, py, px), np.float32) if self.guided else None
        for b in range(n):
            y0 = int(rng.integers(region.y0, region.y1 - py + 1))
            x0 = int(rng.integers(region.x0, region.x1 - px + 1))
            e0 = int(rng.integers(0, e - pe + 1)) if pe < e else 0
            c, g = self.reader.read(
                region.group,
                slice(y0, y0 + py),
                slice(x0, x0 + px),
                slice(e0, e0 + pe),
                guide=self.guided,
            )
            counts[b, 0] = c
            if guide is not None:
                guide[b, 0] = g
        item: dict[str, Any] = {"counts": torch.from_numpy(counts), "cube": region.cube}
        if guide is not None:
            item["guide"] = torch.from_numpy(guide)
        return item


def _net_buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer of a network: its per-cube (adapt) state."""
    return {name: b.detach().clone() for name, b in net.named_buffers()}


def _load_net_buffers(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put buffers saved by :func:`_net_buffers` back (as copies, on the net's device)."""
    for name, value in state.items():
        owner, _, leaf = name.rpartition(".")
        module = net.get_submodule(owner) if owner else net
        setattr(module, leaf, value.clone())


class CorpusDataModule(L.LightningDataModule):
    """Training and validation patches read from an HDF5 corpus of many cubes.

    Patches are read with h5py slicing, a few chunks each: no cube is loaded
    whole, so the corpus may be far larger than memory. Each batch holds
    patches of one cube.

    Parameters
    ----------
    path : str
        Corpus file written by :func:`pack_corpus` (``n2s-eds pack``).
    use_guide : bool
        Feed the guide images to the network (every training cube needs one).
    patch_size : int
        Spatial side of the patches (clipped to each region).
    energy_patch : int or None
        Channels per patch; ``None`` (all) for ``PriorMixture``.
    batch_size : int
        Patches per step.
    train_patches, val_patches : int
        Patches per training epoch and in the fixed validation set.
    val_fraction : float
        The bottom ``ceil(val_fraction * Y)`` rows of every training cube are
        held out: training patches never touch them, validation patches come
        from them. ``0`` holds nothing out (validation then reuses training
        positions, as :class:`CubeDataModule` does), unless ``val_cubes``.
    val_cubes : list of str, optional
        Cubes (names, or group names such as ``"0002"``) held out whole:
        used for validation only.
    num_workers : int
        DataLoader workers (each opens the file itself).
    seed : int
        Seed of the patches: the training stream (:data:`TRAIN_STREAM`, with
        :class:`PatchKeySampler`) and the fixed validation (``seed``) and test
        (``seed + 1``) sets.
    adapt : {"per_cube", "pooled"}
        The network's data-dependent state (``net.adapt``: spectral basis and
        count scale of ``PriorMixture``, count scale of ``ConvAutoencoder3D``).
        ``"per_cube"``: each batch is processed with the state adapted to its
        own cube (from the central ``adapt_side`` square, computed once per
        cube and cached), just as :meth:`n2s_eds.Denoiser.denoise` adapts the
        network to each cube it denoises; training then matches inference.
        ``"pooled"``: one state for all batches, adapted to
        :meth:`adapt_data` (a mosaic of every training cube's centre).
    adapt_side : int
        Side of the central square of a cube its adapt state comes from.
    low_kev, high_kev : float or None
        The corpus's processing window; ``None`` reads it from the file (a
        value that differs from the file's is refused). Recorded so that a
        model file written after ``fit`` applies the same window.

    Raises
    ------
    InvalidInputError
        A missing or invalid corpus, an unknown ``val_cubes`` entry, every cube
        held out, a training cube without a guide when ``use_guide``, a window
        that differs from the corpus's, or an out-of-range option.
    """

    def __init__(
        self,
        path: str,
        use_guide: bool = False,
        patch_size: int = 32,
        energy_patch: int | None = None,
        batch_size: int = 4,
        train_patches: int = 400,
        val_patches: int = 8,
        val_fraction: float = 0.1,
        val_cubes: list[str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
        adapt: str = "per_cube",
        adapt_side: int = ADAPT_SIDE,
        low_kev: float | None = None,
        high_kev: float | None = None,
    ):
        super().__init__()
        if adapt not in ("per_cube", "pooled"):
            raise InvalidInputError(f"data.adapt must be 'per_cube' or 'pooled', got {adapt!r}")
        if not 0.0 <= float(val_fraction) <= 0.5:
            raise InvalidInputError(f"data.val_fraction must lie in [0, 0.5], got {val_fraction}")
        for field, value, low in (
            ("patch_size", patch_size, 1),
            ("batch_size", batch_size, 1),
            ("train_patches", train_patches, 1),
            ("val_patches", val_patches, 0),
            ("num_workers", num_workers, 0),
            ("adapt_side", adapt_side, 4),
        ):
            if int(value) < low:
                raise InvalidInputError(f"data.{field} must be >= {low}, got {value}")
        if energy_patch is not None and int(energy_patch) < 1:
            raise InvalidInputError(f"data.energy_patch must be >= 1 or null, got {energy_patch}")
        self.save_hyperparameters()
        self.info = read_corpus(path)
        root = self.info.attrs
        for field, value in (("low_kev", low_kev), ("high_kev", high_kev)):
            stored = root.get(field)
            if value is not None and (stored is None or abs(float(value) - float(stored)) > 1e-9):
                raise InvalidInputError(
                    f"data.{field}={value} but the corpus {path} was packed with "
                    f"{field}={stored}; set data.init_args.{field}: null (it is then read from "
                    "the corpus; a value may also have been carried over from CubeDataModule's "
                    "defaults when data.class_path was changed on the command line) or pack "
                    "the corpus again with that window"
                )
            self.hparams[field] = None if stored is None else float(stored)
        held = [self.info.find(k) for k in (val_cubes or [])]
        self.val_cube_indices = sorted({c.index for c in held})
        self.train_cubes = [c for c in self.info.cubes if c.index not in self.val_cube_indices]
        if not self.train_cubes:
            raise InvalidInputError(
                "data.val_cubes holds out every cube of the corpus; keep at least one for training"
            )
        if use_guide:
            lacking = [c.name for c in self.info.cubes if not c.has_guide]
            if lacking:
                raise InvalidInputError(
                    f"data.use_guide is true but these cubes of {path} have no guide image: "
                    f"{', '.join(lacking)}; pack them with their HAADF/BSE image, or set "
                    "data.use_guide: false"
                )
        self._states: dict[int, dict[str, torch.Tensor]] = {}
        self._current: int | None = None
        self._datasets: list[CorpusPatchDataset] = []
        self._reader = _CorpusReader(path)

    # ------------------------------------------------------------------ regions
    def _held_rows(self, cube: CorpusCube) -> int:
        frac = float(self.hparams.val_fraction)
        return math.ceil(frac * cube.shape[1]) if frac > 0 else 0

    def regions(self, split: str) -> list[CorpusRegion]:
        """Where the patches of a split come from.

        Parameters
        ----------
        split : {"train", "val"}
            Training: every training cube without its held-out bottom rows.
            Validation: the held-out rows and the held-out cubes (the
            training regions when nothing is held out).

        Returns
        -------
        list of CorpusRegion
        """
        train, val = [], []
        for c in self.info.cubes:
            _, ny, nx = c.shape
            if c.index in self.val_cube_indices:
                val.append(CorpusRegion(c.index, c.group, 0, ny, 0, nx))
                continue
            held = self._held_rows(c)
            train.append(CorpusRegion(c.index, c.group, 0, ny - held, 0, nx))
            if held:
                val.append(CorpusRegion(c.index, c.group, ny - held, ny, 0, nx))
        if split == "train":
            return train
        if split == "val":
            return val or train
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    # ------------------------------------------------------------------ adapt data
    def adapt_cube(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Counts (E, y, x) and guide (y, x) of the central ``adapt_side`` square of a cube.

        Read by h5py slicing; this is what the network adapts to for that cube
        in ``adapt="per_cube"`` mode.
        """
        c = self.info.cubes[int(index)]
        side = int(self.hparams.adapt_side)
        return self._centre(c, side, side)

    def _centre(self, c: CorpusCube, sy: int, sx: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, ny, nx = c.shape
        sy, sx = min(sy, ny), min(sx, nx)
        y0, x0 = (ny - sy) // 2, (nx - sx) // 2
        counts, guide = self._reader.read(
            c.group,
            slice(y0, y0 + sy),
            slice(x0, x0 + sx),
            guide=bool(self.hparams.use_guide),
        )
        return torch.from_numpy(counts), None if guide is None else torch.from_numpy(guide)

    def adapt_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A bounded sample of every training cube, for ``net.adapt``.

        The central square of each training cube (at most ``adapt_side**2``
        pixels in all: sides shrink as ``adapt_side / ceil(sqrt(n))``, down to
        8 pixels, and at most ``(adapt_side / 8)**2`` cubes, evenly spaced, take
        part), all of the same height, side by side along x: one (E, y, X)
        mosaic. Held-out cubes take no part. It is the network's state for
        every batch with ``adapt="pooled"``, and the starting state with
        ``"per_cube"`` (replaced by each batch's own cube state).
        """
        side = int(self.hparams.adapt_side)
        cubes = self.train_cubes
        most = max(1, (side // _MOSAIC_MIN_SIDE) ** 2)
        if len(cubes) > most:
            pick = np.linspace(0, len(cubes) - 1, most).round().astype(int)
            cubes = [cubes[i] for i in sorted(set(pick.tolist()))]
        s = max(_MOSAIC_MIN_SIDE, side // math.ceil(math.sqrt(len(cubes))))
        h = min(s, *(c.shape[1] for c in cubes))
        blocks = [self._centre(c, h, s) for c in cubes]
        counts = torch.cat([b[0] for b in blocks], dim=2)
        guides = [b[1] for b in blocks]
        guide = None if any(g is None for g in guides) else torch.cat(guides, dim=1)
        return counts, guide

    # ------------------------------------------------------------------ per-cube adapt state
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the cube index out of a batch; with ``adapt="per_cube"``, adapt the net to it."""
        if isinstance(batch, dict) and "cube" in batch:
            index = int(batch.pop("cube"))
            if self.hparams.adapt == "per_cube":
                self._use_cube_state(index)
        return batch

    def _use_cube_state(self, index: int) -> None:
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        net = getattr(module, "net", None)
        if module is None or net is None or not hasattr(module, "adapt"):
            return
        state = self._states.get(index)
        if state is None:
            cube, guide = self.adapt_cube(index)
            module.adapt(cube, guide)
            self._states[index] = _net_buffers(net)
        elif self._current != index:
            _load_net_buffers(net, state)
        self._current = index

    # ------------------------------------------------------------------ loaders
    def _dataset(self, split: str, n_patches: int, seed: int, stream: int | None):
        hp = self.hparams
        ds = CorpusPatchDataset(
            self.info.path,
            self.regions(split),
            n_channels=self.info.n_channels,
            patch_size=hp.patch_size,
            energy_patch=hp.energy_patch,
            batch_size=hp.batch_size,
            n_patches=n_patches,
            seed=seed,
            stream=stream,
            guided=bool(hp.use_guide),
        )
        self._datasets.append(ds)
        return ds

    def train_dataloader(self) -> DataLoader:
        """Seeded training batches, sharded over the ranks, resumable mid-epoch.

        One item is one batch (one cube), so the :class:`PatchKeySampler`
        keys are batches here.
        """
        hp = self.hparams
        ds = self._dataset("train", hp.train_patches, hp.seed, TRAIN_STREAM)
        trainer = self.trainer
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        num_replicas = int(shard.get("num_replicas", 1))
        rank = int(shard.get("rank", 0))
        sampler = PatchKeySampler(ds, num_replicas=num_replicas, rank=rank)
        epoch, done = _resume_position(trainer, len(sampler))
        sampler = PatchKeySampler(ds, num_replicas=num_replicas, rank=rank, epoch=epoch, skip=done)
        return DataLoader(
            ds,
            batch_size=None,
            sampler=sampler,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def _fixed_loader(self, seed: int) -> DataLoader:
        ds = self._dataset("val", self.hparams.val_patches, seed, None)
        return DataLoader(ds, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._fixed_loader(self.hparams.seed)

    def test_dataloader(self) -> DataLoader:
        return self._fixed_loader(self.hparams.seed + 1)

    def teardown(self, stage: str) -> None:
        """Close the corpus file handles of this process."""
        for ds in self._datasets:
            ds.close()
        self._datasets = []
        self._reader.close()
