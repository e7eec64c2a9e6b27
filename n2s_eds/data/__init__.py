"""Training data: patches of count cubes, and the HDF5 corpus of many cubes.

Training samples random 3D patches (all channels of the processing window
by default, or a sub-range of channels) from one or more count cubes; the
Bernoulli masks are drawn by the LightningModule, so the data stay plain
counts. Validation uses a fixed, seeded set of patches so that its
masked-voxel loss is comparable from epoch to epoch. Training patches are
seeded too, and a run resumed from a checkpoint sees the same patches as an
uninterrupted one (:class:`PatchKeySampler`).

Many acquisitions train one network through an HDF5 corpus:
:func:`pack_corpus` writes cubes (counts of the processing window, guide
images, metadata) into one file, and :class:`CorpusDataModule` reads random
patches from it with h5py slicing, never a whole cube, adapting the network to
each batch's own cube as :meth:`n2s_eds.Denoiser.denoise` does at inference.

Modules
-------
patches
    :class:`CubeSample`, :class:`PatchDataset`, :class:`PatchKeySampler` and
    :class:`CubeDataModule` (training on in-memory cubes or one file).
corpus_format
    The corpus file's layout and :func:`read_corpus`.
corpus_pack
    :func:`pack_corpus`: writing a corpus file.
corpus_patches
    :class:`CorpusRegion` and :class:`CorpusPatchDataset`: patches read from a corpus.
corpus_datamodule
    :class:`CorpusDataModule`: training on a corpus.
simulated
    :class:`SimulatedDataModule`: pretraining on simulated acquisitions drawn on the fly.
"""

from __future__ import annotations

from .corpus_datamodule import ADAPT_SIDE, CorpusDataModule
from .corpus_format import (
    CORPUS_FORMAT,
    CORPUS_FORMAT_VERSION,
    CorpusCube,
    CorpusInfo,
    read_corpus,
)
from .corpus_pack import ENERGY_TOLERANCE_CHANNELS, pack_corpus
from .corpus_patches import CorpusPatchDataset, CorpusRegion
from .patches import (
    TRAIN_STREAM,
    CubeDataModule,
    CubeSample,
    PatchDataset,
    PatchKeySampler,
)
from .simulated import SimulatedDataModule, SimulatedPatches

__all__ = [
    "CubeSample",
    "PatchDataset",
    "PatchKeySampler",
    "CubeDataModule",
    "TRAIN_STREAM",
    "CORPUS_FORMAT",
    "CORPUS_FORMAT_VERSION",
    "ENERGY_TOLERANCE_CHANNELS",
    "ADAPT_SIDE",
    "pack_corpus",
    "read_corpus",
    "CorpusInfo",
    "CorpusCube",
    "CorpusRegion",
    "CorpusPatchDataset",
    "CorpusDataModule",
    "SimulatedDataModule",
    "SimulatedPatches",
]
