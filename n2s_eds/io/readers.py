"""Reading spectrum images and the image recorded on the same scan.

:func:`load` reads any file HyperSpy/RosettaSciIO reads and picks, by
dimensions and signal type (never by position in the returned list), the EDS
spectrum image and the image (HAADF, BSE, SE) recorded on the same scan;
:func:`load_guide` reads a separate guide image file.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import InvalidInputError
from .guide import grid_relation, match_guide
from .signals import describe_signal, image_axes, is_signal, signal_dims

__all__ = ["Acquisition", "load", "load_guide"]

logger = logging.getLogger(__name__)

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


def _signal_type(signal: Any) -> str:
    return str(signal.metadata.get_item("Signal.signal_type", "") or "")


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
    if is_signal(path_or_signal):
        image = path_or_signal
    else:
        signals = _read(Path(path_or_signal), lazy=False, kwargs={})
        images = [s for s in signals if image_axes(s) is not None]
        if not images:
            raise InvalidInputError(
                f"{path_or_signal} holds no 2-D image (found: "
                f"{', '.join(describe_signal(s) for s in signals)}). "
                "Pass the HAADF/BSE/SE image file."
            )
        image = _pick_image(images, eds) or images[0]
    match_guide(image, eds)
    return image


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
        axes = image_axes(img)
        shape = (int(img.data.shape[0]), int(img.data.shape[1]))
        rel = grid_relation(axes, shape, eds)
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
        nav_dim, sig_dim = signal_dims(s)
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
            f"found: {', '.join(describe_signal(s) for s in signals)}. Pass a file with an EDS "
            "spectrum image, or build the signal yourself and set its signal type with "
            "`signal.set_signal_type('EDS_TEM')`."
        )
    if detector is None:
        if len(cubes) > 1:
            raise InvalidInputError(
                f"{path} holds {len(cubes)} spectrum images (one per detector?): "
                f"{', '.join(describe_signal(c) for c in cubes)}. Pass detector=i to choose one, "
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

    images = [s for s in others if image_axes(s) is not None and signal_dims(s)[1] == 2]
    haadf = _pick_image(images, eds)
    logger.info("%s: spectrum image %s", path, describe_signal(eds))
    if haadf is not None:
        logger.info("%s: image of the same scan %s", path, describe_signal(haadf))
    else:
        logger.info("%s: no image on the spectrum image's scan grid", path)
    for s in others:
        if s is not haadf:
            logger.info("%s: left out %s", path, describe_signal(s))
    return Acquisition(eds, haadf)
