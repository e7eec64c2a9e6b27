"""Random patches of an HDF5 corpus, read by h5py slicing (never a whole cube).

:class:`CorpusRegion` is a rectangle of one cube's scan, :class:`CorpusReader`
holds per-process h5py handles on the file, and :class:`CorpusPatchDataset`
draws seeded batches of patches, one cube per batch, from a set of regions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..exceptions import InvalidInputError

__all__ = ["CorpusRegion", "CorpusPatchDataset"]

#: HDF5 raw-data chunk cache of each counts dataset opened for reading.
_READ_CACHE_BYTES = 8 << 20


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


class CorpusReader:
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
        An integer (:data:`~n2s_eds.data.TRAIN_STREAM`): by ``(seed, stream, k)``, every item
        full and any non-negative ``k`` valid (keys of :class:`~n2s_eds.data.PatchKeySampler`).
    guided : bool
        Also return the normalised guide patches.

    Notes
    -----
    Each item holds ``"counts"`` (B, 1, E, py, px) float32, ``"guide"``
    (B, 1, py, px) when guided, and ``"cube"``, the cube's index (an int),
    which :class:`~n2s_eds.data.CorpusDataModule` uses to give the network that cube's
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
        self.reader = CorpusReader(path)
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
