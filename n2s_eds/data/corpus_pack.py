"""Packing spectrum images into one HDF5 corpus file (:func:`pack_corpus`).

Every input is opened and checked first (:func:`n2s_eds.io.check_spectrum_image`,
:func:`n2s_eds.io.match_guide`, a common energy axis); then the counts of the
processing window are copied block by block into chunked HDF5 datasets of a
temporary file, which replaces the target only when complete. The layout is
described in :mod:`n2s_eds.data.corpus_format`.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..exceptions import InvalidInputError
from ..io import check_spectrum_image, load, match_guide
from ..io.writers import atomic_file
from ..preprocess import (
    EnergyWindow,
    beam_energy_kev,
    energy_axis_kev,
    guide_normalisation,
    instrument_value,
    processing_window,
)
from .corpus_format import CORPUS_FORMAT, CORPUS_FORMAT_VERSION

__all__ = ["ENERGY_TOLERANCE_CHANNELS", "pack_corpus"]

_log = logging.getLogger(__name__)

#: Default largest misalignment, in channels, between the energy channels of two cubes of
#: one corpus anywhere in the window (from their offsets and their channel widths).
ENERGY_TOLERANCE_CHANNELS = 0.25
#: Target size of one HDF5 chunk of counts: every window channel of a square of pixels.
_CHUNK_BYTES = 1 << 20


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("n2s-eds")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


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
        med, spread = guide_normalisation(guide)
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

    The layout is described in :mod:`n2s_eds.data.corpus_format`; each cube's
    attributes are its name, source, title, signal class and type, energy axis
    (kept and source channels, processing window), elements, X-ray lines, beam
    energy, live time, scan shape, scale, offset and units, total counts and
    whether it has a guide.

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
    with atomic_file(path) as tmp:
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
    _log.info("packed %d cubes (%d channels from %.3f keV) into %s", len(srcs), n, e0, path)
    return path
