"""Reading and writing spectrum images, pairing the guide image, and input validation.

:func:`load` reads any file HyperSpy/RosettaSciIO reads and picks, by
dimensions and signal type (never by position in the returned list), the EDS
spectrum image and the image (HAADF, BSE, SE) recorded on the same scan.
:func:`check_spectrum_image` refuses, before any expensive work, the input the
denoiser cannot use, with a message saying what was wrong and what to do.
:func:`match_guide` puts a guide image onto the spectrum image's scan grid, and
:func:`save` writes any format HyperSpy writes without ever leaving a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .exceptions import InvalidInputError

__all__ = [
    "Acquisition",
    "result_signal",
    "NonIntegerCountsWarning",
    "load",
    "load_guide",
    "check_spectrum_image",
    "match_guide",
    "save",
]

logger = logging.getLogger(__name__)

#: Length units HyperSpy readers write, as a factor to nanometres.
_LENGTH_TO_NM: dict[str, float] = {
    "pm": 1e-3,
    "Å": 0.1,
    "A": 0.1,
    "nm": 1.0,
    "µm": 1e3,
    "μm": 1e3,
    "um": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}
_UNDEFINED_UNITS = ("", "<undefined>", "none", "undefined")

#: Relative pixel-size difference tolerated between an image and a cube of the same shape.
#: RosettaSciIO's Bruker reader gives the spectrum image the y pixel size on both axes while
#: the image keeps its own x pixel size (7.8 % apart in ``bcf_v2_50x50px.bcf``): both are
#: still the same scan, pixel for pixel.
_SAME_SHAPE_SCALE_TOLERANCE = 0.1

#: Words in an image title that mark the usual guide channels, best first.
_GUIDE_TITLES = ("haadf", "bse", "se", "adf", "bf", "ch")


class Acquisition(NamedTuple):
    """An EDS spectrum image and the image recorded on the same scan.

    Attributes
    ----------
    eds : exspy.signals.EDSSpectrum
        The spectrum image (``EDSTEMSpectrum`` or ``EDSSEMSpectrum``, eager or
        lazy as loaded) with two navigation axes (scan y, x) and one energy
        axis; three navigation axes when frames were kept apart.
    haadf : hyperspy.signals.Signal2D or None
        The HAADF/BSE/SE image of the same scan area, or ``None`` when the
        file holds none.
    """

    eds: Any
    haadf: Any


class NonIntegerCountsWarning(UserWarning):
    """The spectrum image holds non-integer values where X-ray counts are expected."""


# --------------------------------------------------------------------------- helpers


def _is_signal(obj: Any) -> bool:
    from hyperspy.signal import BaseSignal

    return isinstance(obj, BaseSignal)


def _dims(signal: Any) -> tuple[int, int]:
    am = signal.axes_manager
    return am.navigation_dimension, am.signal_dimension


def _signal_type(signal: Any) -> str:
    return str(signal.metadata.get_item("Signal.signal_type", "") or "")


def _describe(signal: Any) -> str:
    title = signal.metadata.get_item("General.title", "") or ""
    return f"{type(signal).__name__} {title!r} {signal.axes_manager._get_dimension_str()}"


def _units(axis: Any) -> str:
    units = axis.units
    text = "" if units is None else str(units).strip()
    return "" if text.lower() in _UNDEFINED_UNITS else text


def _is_lazy(signal: Any) -> bool:
    return bool(getattr(signal, "_lazy", False))


def _scan_shape(eds: Any) -> tuple[int, int]:
    """(Y, X) of a spectrum image's scan, from its first two navigation axes."""
    nav = eds.axes_manager.navigation_axes
    return int(nav[1].size), int(nav[0].size)


def _scan_axes(eds: Any) -> tuple[Any, Any]:
    """(x, y) navigation axes of a spectrum image."""
    nav = eds.axes_manager.navigation_axes
    return nav[0], nav[1]


def _image_axes(image: Any) -> tuple[Any, Any] | None:
    """(x, y) axes of a 2-D image signal, or ``None`` when it is not one."""
    nav_dim, sig_dim = _dims(image)
    am = image.axes_manager
    if sig_dim == 2 and nav_dim == 0:
        return am.signal_axes[0], am.signal_axes[1]
    if nav_dim == 2 and sig_dim == 0:
        return am.navigation_axes[0], am.navigation_axes[1]
    return None


def _reader_parameters(path: Path, kwargs: dict[str, Any]) -> set[str]:
    """Names of the keyword parameters of the RosettaSciIO reader for a file."""
    from rsciio import IO_PLUGINS

    wanted = str(kwargs.get("reader") or kwargs.get("file_format") or path.suffix[1:]).lower()
    for plugin in IO_PLUGINS:
        names = [e.lower() for e in plugin["file_extensions"]] + [plugin["name"].lower()]
        if wanted in names:
            try:
                reader = importlib.import_module(plugin["api"]).file_reader
            except ImportError:
                return set()
            return set(inspect.signature(reader).parameters)
    return set()


# --------------------------------------------------------------------------- guide grid


class _Relation(NamedTuple):
    kind: str  # "same", "resample" or "none"
    note: str


def _extent_text(shape: tuple[int, int], axes: tuple[Any, Any]) -> str:
    (ny, nx), (ax, ay) = shape, axes
    parts = []
    for name, n, a in (("x", nx, ax), ("y", ny, ay)):
        lo = a.offset - a.scale / 2
        hi = a.offset + (n - 0.5) * a.scale
        parts.append(f"{name} {lo:.6g} to {hi:.6g} {_units(a) or 'px'}")
    return ", ".join(parts)


def _grid_relation(
    guide_axes: tuple[Any, Any], guide_shape: tuple[int, int], eds: Any
) -> _Relation:
    """How an image grid relates to a spectrum image's scan grid."""
    scan_shape = _scan_shape(eds)
    same_shape = tuple(guide_shape) == scan_shape
    sizes_g = (guide_shape[1], guide_shape[0])
    sizes_c = (scan_shape[1], scan_shape[0])
    exact = True
    near = True
    covers = True
    for ag, ac, ng, nc in zip(guide_axes, _scan_axes(eds), sizes_g, sizes_c, strict=True):
        ug, uc = _units(ag), _units(ac)
        calibrated_alike = (ug, ag.scale, ag.offset) == (uc, ac.scale, ac.offset)
        if same_shape and (not ug or not uc) and not calibrated_alike:
            # An uncalibrated image of the scan's shape: the shape decides.
            return _Relation("same", "units undefined: taken pixel for pixel")
        if ug == uc:
            fg = fc = 1.0
        elif ug in _LENGTH_TO_NM and uc in _LENGTH_TO_NM:
            fg, fc = _LENGTH_TO_NM[ug], _LENGTH_TO_NM[uc]
        elif same_shape:
            return _Relation(
                "same", f"units {ug or 'undefined'!r} vs {uc or 'undefined'!r} not comparable"
            )
        else:
            return _Relation("none", f"units {ug or 'undefined'!r} vs {uc or 'undefined'!r}")
        sg, og = ag.scale * fg, ag.offset * fg
        sc, oc = ac.scale * fc, ac.offset * fc
        px = abs(sc) if sc else 1.0
        exact &= math.isclose(sg, sc, rel_tol=1e-3) and abs(og - oc) <= 0.01 * px
        near &= abs(sg - sc) <= _SAME_SHAPE_SCALE_TOLERANCE * abs(sc) and abs(og - oc) <= px
        lo_g, hi_g = og - sg / 2, og + (ng - 0.5) * sg
        lo_c, hi_c = oc - sc / 2, oc + (nc - 0.5) * sc
        covers &= abs(lo_g - lo_c) <= 1.01 * px and abs(hi_g - hi_c) <= 1.01 * px
    if same_shape and exact:
        return _Relation("same", "")
    if same_shape and near:
        return _Relation("same", "pixel size or offset differs slightly from the scan's")
    if covers:
        return _Relation("resample", "")
    return _Relation("none", "covers another area")


def _factors(ag: Any, ac: Any) -> tuple[float, float]:
    """Factors bringing a guide axis and a scan axis to one length unit."""
    ug, uc = _units(ag), _units(ac)
    if ug == uc or ug not in _LENGTH_TO_NM or uc not in _LENGTH_TO_NM:
        return 1.0, 1.0
    return _LENGTH_TO_NM[ug], _LENGTH_TO_NM[uc]


def _resample(data: np.ndarray, guide_axes: tuple[Any, Any], eds: Any) -> np.ndarray:
    """Linear interpolation of an image onto the scan's pixel centres.

    A finer image is first averaged over about one scan pixel (box filter) so
    that it is not aliased; the half-sample shift of an even box is undone.
    """
    from scipy import ndimage

    coords, sizes = [], []
    for ag, ac, n in zip(guide_axes, _scan_axes(eds), _scan_shape(eds)[::-1], strict=True):
        fg, fc = _factors(ag, ac)
        centres = (ac.offset + ac.scale * np.arange(n)) * fc
        idx = (centres - ag.offset * fg) / (ag.scale * fg)
        size = max(1, int(round(abs(ac.scale * fc) / abs(ag.scale * fg))))
        if size % 2 == 0:
            idx = idx + 0.5
        coords.append(idx)
        sizes.append(size)
    x_idx, y_idx = coords
    src = np.asarray(data, dtype=np.float64)
    if max(sizes) > 1:
        src = ndimage.uniform_filter(src, size=sizes[::-1], mode="nearest")
    yy, xx = np.meshgrid(y_idx, x_idx, indexing="ij")
    out = ndimage.map_coordinates(src, [yy, xx], order=1, mode="nearest")
    return out.astype(np.float32)


def match_guide(guide: Any, eds: Any) -> np.ndarray:
    """Put a guide image onto a spectrum image's scan grid.

    Parameters
    ----------
    guide : hyperspy.signals.Signal2D or numpy.ndarray
        The HAADF/BSE/SE image. A numpy array must have exactly the scan shape
        (Y, X). A signal is compared on its axes' scale, offset and units: on
        the same grid its data are used as they are; with another pixel size or
        offset but covering the scan's area (within about one scan pixel) it is
        resampled onto the scan grid. A signal whose axes have undefined units
        is accepted when its shape equals the scan shape.
    eds : hyperspy.signals.BaseSignal
        The spectrum image (two navigation axes first).

    Returns
    -------
    numpy.ndarray
        float32 array of shape (Y, X) on the scan grid.

    Raises
    ------
    InvalidInputError
        When the guide is not a 2-D image, does not cover the scan, or holds
        NaN/inf.
    """
    if not _is_signal(eds) or eds.axes_manager.navigation_dimension < 2:
        raise InvalidInputError(
            "match_guide needs the spectrum image (a HyperSpy signal with two navigation "
            "axes) as `eds`; check the order of the arguments."
        )
    scan_shape = _scan_shape(eds)
    if _is_signal(guide):
        axes = _image_axes(guide)
        if axes is None:
            raise InvalidInputError(
                f"the guide image must be a 2-D image (Signal2D), got {_describe(guide)}. "
                "Pass the HAADF/BSE/SE image of the scan, e.g. `signal.T` for a map with "
                "two navigation axes."
            )
        data = guide.data
        if _is_lazy(guide):
            data = data.compute()
        data = np.asarray(data)
        shape = (int(data.shape[0]), int(data.shape[1]))
        rel = _grid_relation(axes, shape, eds)
        if rel.kind == "none":
            raise InvalidInputError(
                f"the guide image ({shape[0]} x {shape[1]} px: "
                f"{_extent_text(shape, axes)}) does not cover the spectrum image's scan "
                f"({scan_shape[0]} x {scan_shape[1]} px: "
                f"{_extent_text(scan_shape, _scan_axes(eds))}); {rel.note}. Pass the image "
                "recorded with this scan, or fix its axes scale/offset/units."
            )
        if rel.kind == "resample":
            logger.info(
                "guide image %s x %s resampled onto the %s x %s scan grid", *shape, *scan_shape
            )
            out = _resample(data, axes, eds)
        else:
            if rel.note.startswith("units"):
                logger.info("guide image on the %s x %s scan: %s", *scan_shape, rel.note)
            elif rel.note:
                logger.warning(
                    "guide image taken pixel for pixel on the %s x %s scan (%s): %s vs %s",
                    *scan_shape,
                    rel.note,
                    _extent_text(shape, axes),
                    _extent_text(scan_shape, _scan_axes(eds)),
                )
            out = data.astype(np.float32)
    else:
        try:
            out = np.asarray(guide, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"the guide must be a Signal2D or a numpy array, got {type(guide).__name__}."
            ) from exc
        if out.shape != scan_shape:
            raise InvalidInputError(
                f"the guide array has shape {out.shape} but the spectrum image's scan is "
                f"{scan_shape} (Y, X). Pass an array of exactly the scan shape, or a Signal2D "
                "with calibrated axes so that it can be resampled."
            )
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(
            f"the guide image holds {int(np.count_nonzero(~np.isfinite(out)))} NaN/inf "
            "pixels. Replace them (e.g. by the neighbouring values) before using it as a guide."
        )
    return np.ascontiguousarray(out)


def load_guide(path_or_signal: Any, eds: Any) -> Any:
    """Load a guide image from a file (or take a signal) and check it against a cube.

    Parameters
    ----------
    path_or_signal : str, pathlib.Path or hyperspy.signals.Signal2D
        An image file HyperSpy reads (if it holds several signals, the image on
        the scan's grid is taken) or an image signal.
    eds : hyperspy.signals.BaseSignal
        The spectrum image the guide belongs to.

    Returns
    -------
    hyperspy.signals.Signal2D
        The image, as loaded; :func:`match_guide` accepts it for ``eds``.

    Raises
    ------
    InvalidInputError
        Missing/unreadable file, no 2-D image in it, or an image that does not
        cover the scan.
    """
    if _is_signal(path_or_signal):
        image = path_or_signal
    else:
        signals = _read(Path(path_or_signal), lazy=False, kwargs={})
        images = [s for s in signals if _image_axes(s) is not None]
        if not images:
            raise InvalidInputError(
                f"{path_or_signal} holds no 2-D image (found: "
                f"{', '.join(_describe(s) for s in signals)}). Pass the HAADF/BSE/SE image file."
            )
        image = _pick_image(images, eds) or images[0]
    match_guide(image, eds)
    return image


# --------------------------------------------------------------------------- load


def _read(path: Path, *, lazy: bool, kwargs: dict[str, Any]) -> list[Any]:
    if not path.exists():
        raise InvalidInputError(f"file not found: {path}. Check the path and the file name.")
    if path.is_dir() and path.suffix.lower() != ".zspy":
        raise InvalidInputError(f"{path} is a folder; pass the path of a file inside it.")
    import hyperspy.api as hs

    try:
        loaded = hs.load(path, lazy=lazy, **kwargs)
    except InvalidInputError:
        raise
    except Exception as exc:  # any reader failure: say which file and why
        raise InvalidInputError(
            f"could not read {path}: {type(exc).__name__}: {exc}. Check that the file is "
            "complete and of a format HyperSpy/RosettaSciIO reads (pass `reader=` to choose "
            "the reader when the extension is unusual)."
        ) from exc
    return list(loaded) if isinstance(loaded, list | tuple) else [loaded]


def _guess_eds_type(signal: Any) -> str:
    md = signal.metadata
    if md.has_item("Acquisition_instrument.SEM"):
        return "EDS_SEM"
    if md.has_item("Acquisition_instrument.TEM"):
        return "EDS_TEM"
    return "EDS_TEM"


def _pick_image(images: list[Any], eds: Any) -> Any | None:
    """The image on the scan's grid (same grid first, then resampleable), or ``None``."""
    same, resample = [], []
    for img in images:
        axes = _image_axes(img)
        shape = (int(img.data.shape[0]), int(img.data.shape[1]))
        rel = _grid_relation(axes, shape, eds)
        if rel.kind == "same":
            same.append(img)
        elif rel.kind == "resample":
            resample.append(img)
    candidates = same or resample
    if not candidates:
        return None

    def rank(img: Any) -> int:
        title = str(img.metadata.get_item("General.title", "")).lower()
        for i, word in enumerate(_GUIDE_TITLES):
            if word in title.split() or title.startswith(word):
                return i
        return len(_GUIDE_TITLES)

    return sorted(candidates, key=rank)[0]


def load(
    path: str | os.PathLike[str],
    *,
    detector: int | None = None,
    sum_frames: bool = True,
    lazy: bool = False,
    **kwargs: Any,
) -> Acquisition:
    """Read an EDS spectrum image and the image of the same scan from a file.

    Parameters
    ----------
    path : str or os.PathLike
        Any file HyperSpy/RosettaSciIO reads (``.bcf``, ``.emd``, ``.hspy``,
        ``.pts``, ``.rpl``...).
    detector : int or None
        ``None`` (default): the detectors of a multi-detector file (Velox
        Super-X) are summed into one cube. ``i``: the file is read with the
        detectors apart and the ``i``-th detector's cube is returned.
    sum_frames : bool
        ``True`` (default): the frames of a multi-frame file are summed.
        ``False``: they are kept apart as a third navigation axis; the cube is
        returned as it is (the denoiser refuses it, see
        :func:`check_spectrum_image`).
    lazy : bool
        Load lazily (dask) instead of into memory.
    **kwargs
        Passed to :func:`hyperspy.api.load`.

    Returns
    -------
    Acquisition
        ``(eds, haadf)``: the spectrum image with axes, units, offsets, class
        and metadata as HyperSpy loads them, and the image on the same scan or
        ``None``.

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, no spectrum image in it, several spectrum
        images and no ``detector`` given, or ``detector`` out of range.
    """
    path = Path(path)
    kwargs = dict(kwargs)
    params = _reader_parameters(path, kwargs)
    if "sum_frames" in params:
        kwargs.setdefault("sum_frames", sum_frames)
    elif not sum_frames:
        logger.info("%s: the reader keeps no frames apart; sum_frames=False has no effect", path)
    if detector is not None:
        if isinstance(detector, bool) or not isinstance(detector, int | np.integer):
            raise InvalidInputError(f"detector must be an int or None, got {detector!r}.")
        if "sum_EDS_detectors" in params:
            kwargs.setdefault("sum_EDS_detectors", False)
    signals = _read(path, lazy=lazy, kwargs=kwargs)

    cubes, others = [], []
    for s in signals:
        nav_dim, sig_dim = _dims(s)
        stype = _signal_type(s)
        if sig_dim == 1 and nav_dim >= 2 and (stype.startswith("EDS") or stype == ""):
            cubes.append(s)
        else:
            others.append(s)
    if any(_signal_type(c).startswith("EDS") for c in cubes):
        untyped = [c for c in cubes if not _signal_type(c).startswith("EDS")]
        cubes = [c for c in cubes if _signal_type(c).startswith("EDS")]
        others.extend(untyped)
    if not cubes:
        raise InvalidInputError(
            f"{path} holds no EDS spectrum image (two navigation axes and one energy axis); "
            f"found: {', '.join(_describe(s) for s in signals)}. Pass a file with an EDS "
            "spectrum image, or build the signal yourself and set its signal type with "
            "`signal.set_signal_type('EDS_TEM')`."
        )
    if detector is None:
        if len(cubes) > 1:
            raise InvalidInputError(
                f"{path} holds {len(cubes)} spectrum images (one per detector?): "
                f"{', '.join(_describe(c) for c in cubes)}. Pass detector=i to choose one, "
                "or leave sum_EDS_detectors at its default to sum the detectors."
            )
        eds = cubes[0]
    else:
        if not 0 <= int(detector) < len(cubes):
            raise InvalidInputError(
                f"detector={detector} is out of range: {path} holds {len(cubes)} detector "
                f"spectrum image(s); choose detector from 0 to {len(cubes) - 1}, or "
                "detector=None to sum them."
            )
        eds = cubes[int(detector)]
        others.extend(c for i, c in enumerate(cubes) if i != int(detector))
    if not _signal_type(eds):
        stype = _guess_eds_type(eds)
        eds.set_signal_type(stype)  # changes the class in place
        logger.info("%s: the spectrum image had no signal type; set to %s", path, stype)

    images = [s for s in others if _image_axes(s) is not None and _dims(s)[1] == 2]
    haadf = _pick_image(images, eds)
    logger.info("%s: spectrum image %s", path, _describe(eds))
    if haadf is not None:
        logger.info("%s: image of the same scan %s", path, _describe(haadf))
    else:
        logger.info("%s: no image on the spectrum image's scan grid", path)
    for s in others:
        if s is not haadf:
            logger.info("%s: left out %s", path, _describe(s))
    return Acquisition(eds, haadf)


# --------------------------------------------------------------------------- validation


def check_spectrum_image(signal: Any, *, strict: bool = False, min_size: int = 10) -> None:
    """Check that a signal is a spectrum image the denoiser can use.

    Cheap checks (type, dimensions, axes) come first; then the values are
    checked: for a lazy signal with dask reductions, chunk by chunk, never
    holding the whole cube in memory.

    Parameters
    ----------
    signal : hyperspy.signals.Signal1D
        The spectrum image: two navigation axes (scan) and one uniform energy axis.
    strict : bool
        Raise instead of warning when the values are not integer counts.
    min_size : int
        Smallest scan side accepted, in pixels.

    Raises
    ------
    InvalidInputError
        Not a HyperSpy signal; a single spectrum, line scan or image instead of
        a spectrum image; more than two navigation axes; non-uniform energy
        axis; a scan smaller than ``min_size``; NaN/inf, negative or all-zero
        values; non-integer values when ``strict``.

    Warns
    -----
    NonIntegerCountsWarning
        Non-integer values where X-ray counts are expected (when not ``strict``).
    """
    if not _is_signal(signal):
        raise InvalidInputError(
            f"expected a HyperSpy signal (e.g. exspy.signals.EDSTEMSpectrum), got "
            f"{type(signal).__name__}. Load the file with n2s_eds.load(path) or wrap the "
            "array: exspy.signals.EDSTEMSpectrum(array) with axes (y, x, energy)."
        )
    nav_dim, sig_dim = _dims(signal)
    desc = _describe(signal)
    if sig_dim != 1:
        raise InvalidInputError(
            f"expected a spectrum image (two navigation axes, one energy signal axis), got "
            f"{desc} with {sig_dim} signal axes. If it is a spectrum image with the axes "
            "swapped, use `signal.as_signal1D(spectral_axis)`; an image cannot be denoised "
            "as a cube."
        )
    if nav_dim == 0:
        raise InvalidInputError(
            f"expected a spectrum image, got a single spectrum ({desc}). The denoiser needs a "
            "scan (two navigation axes): load the spectrum image, not a sum spectrum."
        )
    if nav_dim == 1:
        raise InvalidInputError(
            f"expected a spectrum image with two navigation axes (scan y, x), got one "
            f"navigation axis ({desc}): a line scan cannot be denoised as a cube. Pass the "
            "2-D spectrum image."
        )
    if nav_dim > 2:
        extra = signal.axes_manager.navigation_axes[2:]
        names = ", ".join(f"{a.name!r} ({a.size})" for a in extra)
        raise InvalidInputError(
            f"the spectrum image has {nav_dim} navigation axes ({desc}); the extra axis "
            f"{names} (frames or detectors) must go first. Sum over it "
            f"(`signal.sum({extra[0].name!r})`), select one frame "
            "(`signal.inav[..., i]`), or load the file with sum_frames=True (the default of "
            "n2s_eds.load)."
        )
    axis = signal.axes_manager.signal_axes[0]
    if not getattr(axis, "is_uniform", True):
        raise InvalidInputError(
            "the energy axis is not uniform; n2s_eds needs equally spaced channels. Rebin "
            "the spectrum image onto a uniform axis first (e.g. signal.interpolate_on_axis)."
        )
    ny, nx = _scan_shape(signal)
    if ny < min_size or nx < min_size:
        raise InvalidInputError(
            f"the scan is {ny} x {nx} pixels, smaller than {min_size} pixels on a side. "
            f"Scans of at least {min_size} x {min_size} pixels are padded and accepted: "
            "acquire or pass a larger scan."
        )
    dtype = np.dtype(signal.data.dtype)
    if dtype.kind not in "biuf":
        raise InvalidInputError(
            f"the spectrum image holds {dtype} values; expected real X-ray counts "
            "(integer or float). Convert with `signal.change_dtype('float32')` if the values "
            "are real counts."
        )
    _check_values(signal.data, dtype, lazy=_is_lazy(signal), strict=strict)


def _check_values(data: Any, dtype: np.dtype, *, lazy: bool, strict: bool) -> None:
    is_float = dtype.kind == "f"
    signed = dtype.kind in "if"
    if lazy:
        import dask
        import dask.array as da

        arr = da.asarray(data)
        checks: dict[str, Any] = {"nonzero": (arr != 0).any()}
        if is_float:
            checks["bad"] = (~da.isfinite(arr)).sum()
            finite = da.where(da.isfinite(arr), arr, 0)
            checks["fraction"] = (da.abs(finite - da.rint(finite)) > 1e-4).any()
        if signed:
            checks["negative"] = (arr < 0).sum()
        results = dict(zip(checks, dask.compute(*checks.values()), strict=True))
    else:
        arr = np.asarray(data)
        results = {}
        if is_float:
            finite_mask = np.isfinite(arr)
            results["bad"] = arr.size - int(np.count_nonzero(finite_mask))
        if signed:
            results["negative"] = int(np.count_nonzero(arr < 0))
        results["nonzero"] = bool(np.any(arr != 0))
        if is_float:
            with np.errstate(invalid="ignore"):
                frac = np.abs(arr - np.rint(arr)) > 1e-4
            results["fraction"] = bool(np.any(frac & finite_mask))
    if int(results.get("bad", 0)):
        raise InvalidInputError(
            f"the spectrum image holds {int(results['bad'])} NaN/inf values. Replace them "
            "(e.g. `signal.data = numpy.nan_to_num(signal.data)`) or crop them away before "
            "denoising."
        )
    if int(results.get("negative", 0)):
        raise InvalidInputError(
            f"the spectrum image holds {int(results['negative'])} negative values; X-ray "
            "counts cannot be negative. Pass the raw counts, not background-subtracted or "
            "otherwise processed data."
        )
    if not bool(results["nonzero"]):
        raise InvalidInputError(
            "the spectrum image is all zeros: there is nothing to denoise. Check that the "
            "right signal was loaded (e.g. the right detector)."
        )
    if bool(results.get("fraction", False)):
        message = (
            "the spectrum image holds non-integer values where X-ray counts are expected; "
            "the noise model assumes raw counts. Pass the raw counts (not normalised or "
            "already filtered data)"
        )
        if strict:
            raise InvalidInputError(message + ", or use strict=False to go on anyway.")
        warnings.warn(message + ".", NonIntegerCountsWarning, stacklevel=3)


# --------------------------------------------------------------------------- save


def save(
    signal: Any, path: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
) -> Path:
    """Write a signal to any format HyperSpy writes, atomically.

    The file is written into a temporary folder beside the target, under the
    target's own name (so HyperSpy picks the writer from the extension and any
    side files keep their references), and moved onto the target with
    :func:`os.replace` only when complete: a crash never leaves a half-written
    output, and the temporary folder is removed on failure.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        The signal to write.
    path : str or os.PathLike
        Target file; without an extension ``.hspy`` is used, as HyperSpy does.
    overwrite : bool
        Replace an existing file. When ``False`` an existing target is refused
        before anything is written.
    **kwargs
        Passed to :meth:`hyperspy.signal.BaseSignal.save` (e.g. ``file_format``,
        ``compression``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InvalidInputError
        Not a HyperSpy signal, or the target exists and ``overwrite`` is ``False``.
    """
    if not _is_signal(signal):
        raise InvalidInputError(
            f"save writes HyperSpy signals, got {type(signal).__name__}; wrap arrays in a "
            "signal first."
        )
    target = Path(path).expanduser().resolve()
    if target.suffix == "" and "file_format" not in kwargs:
        target = target.with_suffix(".hspy")
    if target.exists() and not overwrite:
        raise InvalidInputError(
            f"{target} already exists; pass overwrite=True to replace it, or choose another name."
        )
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        signal.save(tmpdir / target.name, overwrite=True, **kwargs)
        produced = sorted(tmpdir.iterdir())
        if not produced:
            raise OSError(f"the writer produced no file for {target}")
        main = tmpdir / target.name
        if not main.exists():  # the writer chose the extension (file_format, no suffix)
            main = next((p for p in produced if p.stem == target.stem), produced[0])
        final = folder / main.name
        clashes = [folder / p.name for p in produced if (folder / p.name).exists()]
        if clashes and not overwrite:
            raise InvalidInputError(
                f"{', '.join(map(str, clashes))} already exist(s); pass overwrite=True to "
                "replace, or choose another name."
            )
        # Side files first, the main file last: once it appears, the output is complete.
        for item in [p for p in produced if p != main] + [main]:
            dest = folder / item.name
            if dest.is_dir() and not dest.is_symlink():
                old = tmpdir / f".old-{item.name}"
                os.replace(dest, old)
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with contextlib.suppress(Exception):
        signal.tmp_parameters.set_item("folder", final.parent)
        signal.tmp_parameters.set_item("filename", final.stem)
        signal.tmp_parameters.set_item("extension", final.suffix)
    logger.info("saved %s", final)
    return final


def result_signal(
    signal: Any, data: np.ndarray, method: str, parameters: dict[str, Any], label: str
) -> Any:
    """A new signal like ``signal`` holding ``data``, as a HyperSpy method returns one.

    Same class, axes and metadata (a deep copy); the title gets ``label`` as
    a suffix and ``metadata.Signal.Denoising`` records ``method`` and
    ``parameters``. A lazy input gives a lazy result. The input is not modified.
    """
    if getattr(signal, "_lazy", False) and not hasattr(data, "dask"):
        import dask.array as da

        data = da.from_array(data, chunks=signal.data.chunksize)
    out = signal._deepcopy_with_new_data(data)
    title = signal.metadata.get_item("General.title", default="") or ""
    out.metadata.set_item("General.title", f"{title} ({label})".strip())
    out.metadata.set_item("Signal.Denoising.method", method)
    out.metadata.set_item("Signal.Denoising.parameters", dict(parameters))
    return out
