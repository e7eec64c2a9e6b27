"""The LightningDataModule that trains one network on an HDF5 corpus of many cubes.

:class:`CorpusDataModule` reads the corpus description (:func:`read_corpus`),
splits it into training and validation regions (held-out bottom rows and
held-out cubes), serves seeded, resumable batches of
:class:`~n2s_eds.data.corpus_patches.CorpusPatchDataset` and, with
``adapt="per_cube"``, gives the network the adapt state of each batch's cube,
as :meth:`n2s_eds.Denoiser.denoise` adapts it to each cube it denoises.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..exceptions import InvalidInputError
from ..options import RuntimeOptions, TrainingOptions
from .corpus_format import CorpusCube, read_corpus
from .corpus_patches import CorpusPatchDataset, CorpusReader, CorpusRegion
from .patches import TRAIN_STREAM, PatchKeySampler, resume_position

__all__ = ["ADAPT_SIDE", "CorpusDataModule"]

#: Side (pixels) of the central scan region a cube's adapt data come from; the same
#: bound as the training region of a lazy cube in :mod:`n2s_eds.api`.
ADAPT_SIDE = 128
#: Smallest side (pixels) of a cube's block in the pooled adapt mosaic.
_MOSAIC_MIN_SIDE = 8


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
        Corpus file written by :func:`~n2s_eds.data.pack_corpus` (``n2s-eds pack``).
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
        positions, as :class:`~n2s_eds.data.CubeDataModule` does), unless ``val_cubes``.
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
        patch_size: int = TrainingOptions.patch_size,
        energy_patch: int | None = None,
        batch_size: int = TrainingOptions.batch_size,
        train_patches: int = 400,
        val_patches: int = 8,
        val_fraction: float = 0.1,
        val_cubes: list[str] | None = None,
        num_workers: int = 0,
        seed: int = RuntimeOptions.seed,
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
        self._reader = CorpusReader(path)

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
        epoch, done = resume_position(trainer, len(sampler))
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
