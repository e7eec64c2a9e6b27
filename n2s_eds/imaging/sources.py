"""Clean 2D images for training and testing the image enhancer, with a fixed train/test split.

Categories (:data:`CATEGORIES`): ``"simulated maps"``, noise-free element maps of the TEM and
SEM phantoms (:func:`~n2s_eds.simulate.phantom_maps`, layouts ``"core_shell"`` and
``"particles"``; ``"boundary"`` is the same for every seed) and, for more variety (particles,
core-shell, grains, layers, gradients), of the expected counts of corpus acquisitions
(:func:`~n2s_eds.simulate.draw_acquisition`, stream :data:`CORPUS_SEED`, no scan artefacts):
per element, the expected counts within +-1 detector FWHM of whichever of its alpha lines (Ka,
La, Ma) inside the energy bins and below the beam energy holds the most counts; ``"electron
images"``, HAADF and SEM images of the real acquisitions; ``"element maps"``, counts of the
real acquisitions in the windows of :func:`~n2s_eds.metrics.element_windows` (+-1 FWHM around
the lines of ``metadata.Sample.xray_lines`` or :data:`ELEMENT_LINES`, else the 6 strongest
peaks). Maps include the background under the lines.

A real image is kept only when near noise-free: its *structure-to-noise ratio*
``sqrt(max(var(x) - s^2, 0)) / s`` (spatial spread of the noise-free content over the noise
standard deviation ``s``) is at least :data:`MIN_SNR`. For count maps ``s^2`` is the mean
count (Poisson), which must also reach :data:`MIN_MEAN_COUNTS`; a map that fails is summed over
2 x 2, 3 x 3 or 4 x 4 pixel blocks, the smallest that passes (named ``":bin2"`` etc.). For
electron images ``s`` comes from the median absolute deviation of the residual of a
4-neighbour mean. Images with a side below :data:`MIN_SIDE` are left out; a simulated map whose
range is below :data:`MIN_CONTRAST` times its largest absolute value counts as constant.
Every image is float32, normalised to [0, 1] by its own minimum and maximum, with its sides
trimmed (bottom, right) to multiples of 4 for the x2 and x4 super-resolution.

The split is fixed and by source: training and test images never share a phantom seed, a corpus
index or a real acquisition, across all categories (:func:`split_manifest`). Simulated maps:
seeds :data:`TRAIN_SEEDS` against :data:`TEST_SEEDS`. Real data: the 30 x 30 high-count rock
scan and the Bruker 50 x 50 Al/Ag scan are the test acquisitions (:data:`TEST_ACQUISITIONS`),
all others train. The test electron images are the 64 x 64 tiles, every 32 pixels, of that
file's 1100 x 825 SEM overview averaged over 2 x 2 pixels (half the noise); its 50 x 50 SEM
image is not used, it repeats a part of the overview pixel for pixel. The test element maps are
the 24 x 24 crops, every 4 pixels, of the test maps (the rock's, trimmed to 28 x 28). Tiles and
crops are kept when they pass :data:`MIN_SNR`; they overlap, so they are not independent.
Absent real files are skipped (:func:`available` says which); data are read once per process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..datasets import REAL_FILES, data_path
from ..exceptions import InvalidInputError
from ..preprocess import detector_fwhm_kev

__all__ = [
    "CATEGORIES", "CORPUS_SEED", "ELEMENT_LINES", "MIN_CONTRAST", "MIN_MEAN_COUNTS", "MIN_SIDE",
    "MIN_SNR", "TEST_ACQUISITIONS", "TEST_SEEDS", "TRAIN_SEEDS", "CleanImage", "available",
    "crops", "electron_images", "element_maps", "imaging_dataset", "simulated_maps",
    "split_manifest",
]  # fmt: skip

Split = Literal["train", "test"]

#: The image categories, as used in :attr:`CleanImage.category`.
CATEGORIES: tuple[str, ...] = ("simulated maps", "electron images", "element maps")
#: Smallest structure-to-noise ratio of a kept real image, tile or crop.
MIN_SNR = 8.0
#: Smallest mean count per pixel of a kept element map.
MIN_MEAN_COUNTS = 50.0
#: Smallest relative range (max - min) / max|x| of a kept simulated map.
MIN_CONTRAST = 0.05
#: Smallest side (pixels) of a kept image.
MIN_SIDE = 16
#: Phantom seeds and corpus indices of the training and the test simulated maps.
TRAIN_SEEDS: tuple[int, ...] = tuple(range(32))
TEST_SEEDS: tuple[int, ...] = tuple(range(1000, 1004))
#: Corpus stream (``seed`` of :func:`~n2s_eds.simulate.draw_acquisition`) of simulated maps.
CORPUS_SEED = 7
#: Side of the simulated maps.
SIM_SIZE = 64
#: Real acquisitions on the test side; every other real acquisition is for training.
TEST_ACQUISITIONS: tuple[str, ...] = ("bruker_sem_30x30_highcount", "bruker_sem_50x50")
#: X-ray lines of the element maps of files whose metadata names none.
ELEMENT_LINES = {"sio2_particles_stem_haadf": ("O_Ka", "Si_Ka", "Cu_Ka")}

#: Real acquisitions with electron images, and with element maps, by split.
_ELECTRON = {
    "train": ("sio2_particles_stem_haadf", "bruker_stem_haadf_lowcount", "eels_cuzn_si_haadf",
              "velox_20frames", "velox_4detectors"),
    "test": ("bruker_sem_50x50",),
}  # fmt: skip
_ELEMENT = {
    "train": ("sio2_particles_stem_haadf", "fept_core_shell_tem", "velox_20frames",
              "velox_4detectors", "bruker_stem_haadf_lowcount"),
    "test": TEST_ACQUISITIONS,
}  # fmt: skip
#: Test crops: (side, stride) per real category; the overview is averaged over 2 x 2 first.
_TEST_CROPS = {"electron images": (64, 32), "element maps": (24, 4)}
_OVERVIEW_BIN = 2
#: Scan rows left out at the top (the first rows of the FePt scan hold fewer counts).
_SKIP_ROWS = {"fept_core_shell_tem": 4}
_MAX_BIN = 4
#: Largest difference between two normalised maps of one simulation counted as the same map.
_SAME = 0.02


@dataclass(frozen=True, eq=False)
class CleanImage:
    """A clean 2D image, normalised to [0, 1], and where it comes from.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(H, W)``, read-only, ``(x - offset) / scale`` of the original values ``x``
        (so its minimum is 0 and its maximum 1); H and W are multiples of 4.
    category : str
        One of :data:`CATEGORIES`.
    source : str
        The unit of the split: ``"phantom:tem:core_shell:seed=12"``,
        ``"corpus:seed=7:index=12"`` or a real acquisition (``"bruker_sem_50x50"``).
    name : str
        Unique: source, map or image, binning, crop (``"<source>:Fe_Ka:bin2:crop(0,4)"``).
    scale, offset : float
        Original values (counts, detector units) are ``image * scale + offset``.
    noise : float
        Estimated noise standard deviation, in units of ``image``; 0 for simulated maps.
    """

    image: np.ndarray
    category: str
    source: str
    name: str
    scale: float
    offset: float
    noise: float = 0.0

    def original(self) -> np.ndarray:
        """The values before normalisation, float64 ``image * scale + offset``."""
        return self.image.astype(np.float64) * self.scale + self.offset

    @property
    def snr(self) -> float:
        """Structure-to-noise ratio ``sqrt(max(var - noise^2, 0)) / noise`` (inf if no noise)."""
        if self.noise <= 0:
            return float("inf")
        return float(np.sqrt(max(float(self.image.var()) - self.noise**2, 0.0)) / self.noise)


def _trim4(values: np.ndarray) -> np.ndarray:
    return values[: values.shape[0] // 4 * 4, : values.shape[1] // 4 * 4]


def _make(
    values: np.ndarray, category: str, source: str, name: str, noise: float = 0.0
) -> CleanImage | None:
    """Normalise ``values`` (trimmed to multiples of 4); ``None`` if constant. ``noise``: raw."""
    x = _trim4(np.asarray(values, dtype=np.float64))
    lo, hi = (float(x.min()), float(x.max())) if min(x.shape) >= 4 else (0.0, 0.0)
    if not hi > lo:
        return None
    image = np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    image.setflags(write=False)
    return CleanImage(image, category, source, name, hi - lo, lo, noise / (hi - lo))


def crops(image: CleanImage, size: int, stride: int | None = None) -> list[CleanImage]:
    """Square crops of an image, each normalised again to [0, 1] by its own minimum and maximum.

    Parameters
    ----------
    image : CleanImage
        The image to cut.
    size : int
        Side of the crops, a positive multiple of 4, at most the image's shorter side.
    stride : int, optional
        Step between crops in pixels (``size`` when ``None``: crops that do not overlap).

    Returns
    -------
    list of CleanImage
        Crops at ``(y, x)`` = every ``stride`` pixels from the top left corner, row by row,
        named ``"<name>:crop(y,x)"``, with the parent's category and source; the noise is the
        parent's, rescaled. Constant crops are left out.

    Raises
    ------
    InvalidInputError
        A size that is not a positive multiple of 4 or exceeds the image, or a stride < 1.
    """
    height, width = image.image.shape
    if isinstance(size, bool) or int(size) != size or size < 4 or size % 4:
        raise InvalidInputError(f"size must be a positive multiple of 4, got {size!r}.")
    if size > min(height, width):
        raise InvalidInputError(f"size {size} exceeds the {height} x {width} image {image.name}.")
    step = size if stride is None else int(stride)
    if step < 1:
        raise InvalidInputError(f"stride must be at least 1, got {stride!r}.")
    raw, noise = image.original(), image.noise * image.scale
    made = (
        _make(raw[y : y + size, x : x + size], image.category, image.source,
              f"{image.name}:crop({y},{x})", noise)
        for y in range(0, height - size + 1, step)
        for x in range(0, width - size + 1, step)
    )  # fmt: skip
    return [im for im in made if im is not None]


def _corpus_maps(index: int, size: int) -> list[tuple[str, np.ndarray]]:
    """(line name, map) of the expected counts of a corpus acquisition, one per element."""
    from ..simulate import CorpusOptions, draw_acquisition
    from ..simulate.physics import element_data

    acq = draw_acquisition(CORPUS_SEED, index, CorpusOptions(shape=(size, size), artefacts=0.0))
    energies = acq.energy_kev.astype(np.float64)
    mean_spectrum = acq.truth.mean(axis=(1, 2), dtype=np.float64)
    beam, resolution = float(acq.info["beam_kev"]), float(acq.info["resolution_ev"])
    out, used = [], set()
    for element in acq.info["elements"]:
        best = None
        for line, energy, weight in element_data(element)[2]:
            half = float(detector_fwhm_kev(energy, resolution))
            inside = energies[0] + half <= energy <= min(energies[-1] - half, beam)
            if weight < 1.0 or not inside:
                continue
            lo, hi = np.searchsorted(energies, [energy - half, energy + half])
            total = float(mean_spectrum[lo:hi].sum())
            if hi > lo and (best is None or total > best[0]):
                best = (total, line, int(lo), int(hi))
        if best is not None and best[2:] not in used:
            used.add(best[2:])
            out.append((f"{element}_{best[1]}", acq.truth[best[2] : best[3]].sum(axis=0)))
    return out


def _sim_sources(seed: int) -> list[str]:
    """The phantom and corpus sources of one seed (the last one is the corpus)."""
    kinds = [(k, lay) for k in ("tem", "sem") for lay in ("core_shell", "particles")]
    return [f"phantom:{k}:{lay}:seed={seed}" for k, lay in kinds] + [
        f"corpus:seed={CORPUS_SEED}:index={seed}"
    ]


@cache
def _simulated(seed: int, size: int) -> tuple[CleanImage, ...]:
    from ..simulate import phantom_maps

    out = []
    for source in _sim_sources(seed):
        if source.startswith("corpus"):
            maps = dict(_corpus_maps(seed, size))
        else:
            kind, layout = source.split(":")[1:3]
            maps = phantom_maps(kind, (size, size), seed=seed, layout=layout)[0]
        out += [(source, f"{source}:{el}", np.asarray(m, np.float64)) for el, m in maps.items()]
    kept: list[CleanImage] = []
    for src, name, m in out:
        constant = np.ptp(m) < MIN_CONTRAST * np.abs(m).max() or not np.abs(m).max() > 0
        made = None if constant else _make(m, "simulated maps", src, name)
        # Maps that repeat a kept one (elements of the same phases) are left out.
        if made is not None and all(
            np.abs(made.image - k.image).max() >= _SAME for k in kept if k.source == src
        ):
            kept.append(made)
    return tuple(kept)


def simulated_maps(seeds: Iterable[int], size: int = SIM_SIZE) -> list[CleanImage]:
    """Noise-free element maps of phantoms and corpus acquisitions.

    For each seed: the element maps of the TEM and SEM phantoms with layouts ``"core_shell"``
    and ``"particles"`` (:func:`~n2s_eds.simulate.phantom_maps` with that seed), and the
    element maps of the expected counts of corpus acquisition ``index=seed`` of stream
    :data:`CORPUS_SEED` (see the module description). Maps that are (near) constant
    (:data:`MIN_CONTRAST`) are left out, and so is a map that repeats one kept from the same
    simulation (after normalisation, no pixel differs by 0.02 or more).

    Parameters
    ----------
    seeds : iterable of int
        Phantom seeds, also used as corpus indices (non-negative).
    size : int
        Side of the square maps, a multiple of 4 of at least :data:`MIN_SIDE`.

    Returns
    -------
    list of CleanImage
        Category ``"simulated maps"``, sources ``"phantom:<kind>:<layout>:seed=<s>"`` and
        ``"corpus:seed=<CORPUS_SEED>:index=<s>"``, in seed order.
    """
    if isinstance(size, bool) or int(size) != size or size < MIN_SIDE or size % 4:
        raise InvalidInputError(f"size must be a multiple of 4, >= {MIN_SIDE}; got {size!r}.")
    return [im for seed in seeds for im in _simulated(int(seed), int(size))]


def _paths(acquisition: str, electron: bool = False) -> Path:
    """The file of an acquisition's spectrum image, or (``electron``) of its electron image."""
    image = f"{acquisition}_image"
    if image in REAL_FILES and (electron or acquisition not in REAL_FILES):
        return data_path(image)
    return data_path(acquisition)


def available() -> dict[str, bool]:
    """Which real acquisitions used here are present.

    Returns
    -------
    dict of str to bool
        For every real acquisition of the split, whether its files exist (in
        :func:`~n2s_eds.datasets.data_dir`).
    """
    names = dict.fromkeys(_ELECTRON["train"] + _ELEMENT["train"] + TEST_ACQUISITIONS)
    return {n: _paths(n).exists() and _paths(n, electron=True).exists() for n in names}


@cache
def _load(acquisition: str) -> Any:
    from ..io import load

    return load(_paths(acquisition))


def _noise_std(image: np.ndarray) -> float:
    """Noise standard deviation of an image, from the residual of the 4-neighbour mean."""
    x = np.asarray(image, dtype=np.float64)
    r = x[1:-1, 1:-1] - (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]) / 4.0
    # White noise of std s gives a residual of std s * sqrt(1 + 4/16).
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return (mad if mad > 0 else float(r.std())) / np.sqrt(1.25)


def _block_sum(values: np.ndarray, factor: int) -> np.ndarray:
    h, w = values.shape[0] // factor * factor, values.shape[1] // factor * factor
    return values[:h, :w].reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))


@cache
def _electron(acquisition: str) -> tuple[CleanImage, ...]:
    """The electron image of a real acquisition, if present and near noise-free."""
    import hyperspy.api as hs

    path = _paths(acquisition, electron=True)
    if not path.exists():
        return ()
    if acquisition in ("sio2_particles_stem_haadf", "eels_cuzn_si_haadf"):
        name, data = "HAADF", hs.load(path).data
    elif acquisition == "bruker_sem_50x50":
        # The largest image is the overview; the 50 x 50 SEM image repeats a part of it.
        overview = max((s.data for s in hs.load(path) if s.axes_manager.signal_dimension == 2),
                       key=np.size).astype(np.float64)  # fmt: skip
        name = f"overview:mean{_OVERVIEW_BIN}"
        data = _block_sum(overview, _OVERVIEW_BIN) / _OVERVIEW_BIN**2
    else:
        haadf = _load(acquisition).haadf
        if haadf is None:
            return ()
        name = str(haadf.metadata.get_item("General.title", "image")).replace(" ", "_")
        data = haadf.data
    data = np.asarray(data, dtype=np.float64)
    made = _make(data, "electron images", acquisition, f"{acquisition}:{name}", _noise_std(data))
    keep = made is not None and min(made.image.shape) >= MIN_SIDE and made.snr >= MIN_SNR
    return (made,) if keep else ()


def electron_images(acquisitions: Sequence[str] | None = None) -> list[CleanImage]:
    """The near noise-free electron images (HAADF, SEM) of real acquisitions, whole.

    Parameters
    ----------
    acquisitions : sequence of str, optional
        Short names (:data:`~n2s_eds.datasets.REAL_FILES` keys, without the ``_image`` suffix);
        all those of the split when ``None``. Absent files are skipped.

    Returns
    -------
    list of CleanImage
        Category ``"electron images"``: each image trimmed to multiples of 4, kept when it
        passes :data:`MIN_SNR` and :data:`MIN_SIDE`. The Bruker 50 x 50 file gives its
        overview averaged over 2 x 2 pixels (``"bruker_sem_50x50:overview:mean2"``).
    """
    names = _ELECTRON["train"] + _ELECTRON["test"] if acquisitions is None else acquisitions
    return [im for name in names for im in _electron(name)]


def _map_snr(counts: np.ndarray) -> float:
    mean = float(counts.mean())
    return float(np.sqrt(max(float(counts.var()) - mean, 0.0) / mean)) if mean > 0 else 0.0


def _count_map(acquisition: str, name: str, counts: np.ndarray) -> CleanImage | None:
    """The map summed over the smallest pixel block that makes it near noise-free."""
    for factor in range(1, _MAX_BIN + 1):
        binned = _trim4(_block_sum(counts, factor))
        if min(binned.shape) < MIN_SIDE:
            return None
        if binned.mean() >= MIN_MEAN_COUNTS and _map_snr(binned) >= MIN_SNR:
            label = f"{acquisition}:{name}" + (f":bin{factor}" if factor > 1 else "")
            return _make(binned, "element maps", acquisition, label, np.sqrt(binned.mean()))
    return None


@cache
def _elements(acquisition: str) -> tuple[CleanImage, ...]:
    from ..metrics import element_maps as window_sums
    from ..metrics import element_windows

    if not _paths(acquisition).exists():
        return ()
    signal = _load(acquisition).eds
    windows = element_windows(signal, lines=ELEMENT_LINES.get(acquisition), n_peaks=6)
    maps = window_sums(np.asarray(signal.data), windows)[:, _SKIP_ROWS.get(acquisition, 0) :]
    made = (_count_map(acquisition, w.name, m) for w, m in zip(windows, maps, strict=True))
    return tuple(im for im in made if im is not None)


def element_maps(acquisitions: Sequence[str] | None = None) -> list[CleanImage]:
    """The near noise-free element maps of real acquisitions, whole.

    Parameters
    ----------
    acquisitions : sequence of str, optional
        Short names (:data:`~n2s_eds.datasets.REAL_FILES` keys); all those of the split when
        ``None``. Absent files are skipped.

    Returns
    -------
    list of CleanImage
        Category ``"element maps"``: the window counts of each line (or peak), summed over
        the smallest pixel block (1 to 4) that passes :data:`MIN_MEAN_COUNTS` and
        :data:`MIN_SNR`, trimmed to multiples of 4; maps that never pass at a side of
        :data:`MIN_SIDE` or more are left out.
    """
    names = _ELEMENT["train"] + _ELEMENT["test"] if acquisitions is None else acquisitions
    return [im for name in names for im in _elements(name)]


@cache
def _dataset(split: Split, category: str) -> tuple[CleanImage, ...]:
    if category == "simulated maps":
        return tuple(simulated_maps(TRAIN_SEEDS if split == "train" else TEST_SEEDS))
    electron = category == "electron images"
    images = electron_images(_ELECTRON[split]) if electron else element_maps(_ELEMENT[split])
    if split == "train":
        return tuple(images)
    size, stride = _TEST_CROPS[category]
    cut = [c for im in images if min(im.image.shape) >= size for c in crops(im, size, stride)]
    if category == "element maps":  # Poisson: a crop's noise variance is its mean count
        cut = [replace(c, noise=float(np.sqrt(c.original().mean())) / c.scale) for c in cut]
    return tuple(c for c in cut if c.snr >= MIN_SNR)


def imaging_dataset(split: Split, categories: Sequence[str] = CATEGORIES) -> list[CleanImage]:
    """The clean training or test images of the enhancer (see the module description).

    Parameters
    ----------
    split : {"train", "test"}
        Which side of the fixed split (:func:`split_manifest`).
    categories : sequence of str
        Categories to include, from :data:`CATEGORIES`.

    Returns
    -------
    list of CleanImage
        By category in the order given. Training: simulated maps and whole real images.
        Test: simulated maps, and tiles and crops of the real images that pass
        :data:`MIN_SNR`. Real files that are absent are skipped.

    Raises
    ------
    InvalidInputError
        An unknown split or category.
    """
    if split not in ("train", "test"):
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}.")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise InvalidInputError(f"unknown categories {unknown}; choose from {CATEGORIES}.")
    return [im for category in categories for im in _dataset(split, category)]


def split_manifest() -> dict[str, dict[str, list[str]]]:
    """The fixed train/test split by source, as data.

    Returns
    -------
    dict
        ``{category: {"train": [sources], "test": [sources]}}`` for each of
        :data:`CATEGORIES`: the sources (:attr:`CleanImage.source`) assigned to each side. A
        real acquisition may give no image (none passes the thresholds, or the file is
        absent). No source is on both sides, in any category.
    """
    return {
        "simulated maps": {
            side: [src for s in seeds for src in _sim_sources(s)]
            for side, seeds in (("train", TRAIN_SEEDS), ("test", TEST_SEEDS))
        },
        "electron images": {side: list(_ELECTRON[side]) for side in ("train", "test")},
        "element maps": {side: list(_ELEMENT[side]) for side in ("train", "test")},
    }
