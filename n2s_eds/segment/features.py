"""The segmenter's and the clustering's input channels, taken from a signal.

A spectrum image gives one map per element: the counts in the windows of its X-ray lines
(exspy's :meth:`~exspy.signals.EDSSpectrum.get_lines_intensity`, lines summed per element),
the quantity a phase is told apart by. A 2D image (HAADF, TEM, SEM; a ``Signal2D``) is one
channel; a stack of images of one scan (a ``Signal2D`` with one navigation axis, such as
laser-ablation isotope maps) gives one channel per image. A guide image of the scan (HAADF / Z-contrast) is put on the scan grid
(:func:`n2s_eds.io.guide.match_guide`) and added as one more channel.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import InvalidInputError
from ..io.guide import match_guide
from ..io.signals import describe_signal, is_signal, scan_shape_of, signal_dims
from ..io.validation import NonIntegerCountsWarning, check_spectrum_image

__all__ = [
    "ScanChannels",
    "scan_channels",
    "element_maps",
    "is_image",
    "is_image_stack",
    "spectrum_image_shape",
]

#: Metadata items that may name the images of a stack, one name per image.
_STACK_NAMES = ("Acquisition_instrument.LA_ICP_MS.isotopes", "Sample.elements")


class ScanChannels(NamedTuple):
    """Input channels of a scan.

    Attributes
    ----------
    names : tuple of str
        One name per channel: element symbols, ``"image"`` or ``"guide"``.
    data : numpy.ndarray
        float32 ``(C, Y, X)``.
    counts : tuple of bool
        Per channel, whether it holds integer counts (Poisson data, which training thins
        binomially); otherwise it is an intensity image.
    """

    names: tuple[str, ...]
    data: np.ndarray
    counts: tuple[bool, ...]


def is_image(signal: Any) -> bool:
    """Whether ``signal`` is a single 2D image (two signal axes, no navigation axes)."""
    return is_signal(signal) and signal_dims(signal) == (0, 2)


def is_image_stack(signal: Any) -> bool:
    """Whether ``signal`` is a stack of 2D images of one scan (one navigation axis)."""
    return is_signal(signal) and signal_dims(signal) == (1, 2)


def spectrum_image_shape(signal: Any) -> tuple[int, int]:
    """The ``(Y, X)`` scan shape of a spectrum image (two navigation axes, one energy axis).

    Raises
    ------
    InvalidInputError
        For anything else.
    """
    if not is_signal(signal) or signal_dims(signal) != (2, 1):
        what = describe_signal(signal) if is_signal(signal) else type(signal).__name__
        raise InvalidInputError(
            f"expected a spectrum image (two scan axes and an energy axis, e.g. "
            f"EDSTEMSpectrum), got {what}."
        )
    return scan_shape_of(signal)


def _stack_names(signal: Any, n: int) -> tuple[str, ...]:
    for item in _STACK_NAMES:
        names = signal.metadata.get_item(item)
        if names is not None and len(names) == n:
            return tuple(str(v) for v in names)
    return tuple(f"image {i}" for i in range(n))


def _integer_valued(a: np.ndarray) -> bool:
    return bool(np.all(a >= 0) and np.all(np.abs(a - np.round(a)) < 1e-4))


def element_maps(signal: Any) -> tuple[tuple[str, ...], np.ndarray]:
    """Per element, the (Y, X) counts in the integration windows of its X-ray lines.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        A spectrum image whose metadata name the elements (``signal.set_elements``) or
        the lines (``signal.set_lines``).

    Returns
    -------
    elements : tuple of str
        The element symbols, sorted.
    maps : numpy.ndarray
        float32 ``(n_elements, Y, X)``: each element's lines summed.

    Raises
    ------
    InvalidInputError
        Not a spectrum image, or no elements or lines in its metadata.
    """
    with warnings.catch_warnings():  # denoised (non-integer) cubes are welcome here
        warnings.simplefilter("ignore", NonIntegerCountsWarning)
        check_spectrum_image(signal, min_size=2)
    if not hasattr(signal, "get_lines_intensity"):
        raise InvalidInputError(
            f"{describe_signal(signal)} is not an EDS signal: convert it with "
            "signal.set_signal_type('EDS_TEM') (or 'EDS_SEM') and name its elements."
        )
    meta = signal.metadata
    if not meta.has_item("Sample.elements") and not meta.has_item("Sample.xray_lines"):
        raise InvalidInputError(
            "the spectrum image names no elements: the phases are told apart by their "
            "element maps. Call signal.set_elements(['Fe', 'O', ...]) (and optionally "
            "signal.set_lines) first."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        intensities = signal.get_lines_intensity()
    maps: dict[str, np.ndarray] = {}
    for image in intensities:
        line = image.metadata.Sample.xray_lines[0]
        element = line.split("_")[0]
        data = np.asarray(image.data, dtype=np.float32)
        if hasattr(data, "compute"):
            data = np.asarray(data.compute(), dtype=np.float32)
        maps[element] = maps.get(element, 0.0) + data
    names = tuple(sorted(maps))
    return names, np.stack([maps[n] for n in names]).astype(np.float32)


def scan_channels(signal: Any, haadf: Any = None) -> ScanChannels:
    """The channels of ``signal`` (and its guide image) the segmenter and clustering use.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum or hyperspy.signals.Signal2D
        A spectrum image with named elements (one channel per element), one 2D image, or
        a stack of images of one scan (one navigation axis: one channel per image, named
        by ``metadata.Acquisition_instrument.LA_ICP_MS.isotopes`` or
        ``metadata.Sample.elements`` when they list one name per image).
    haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
        An image of the same scan, added as the channel ``"guide"``.

    Returns
    -------
    ScanChannels

    Raises
    ------
    InvalidInputError
        Anything but a spectrum image or a single 2D image; a spectrum image without
        elements; a guide that does not fit the scan.
    """
    if is_image(signal) or is_image_stack(signal):
        raw = signal.data.compute() if hasattr(signal.data, "compute") else signal.data
        data = np.asarray(raw, dtype=np.float32)
        if not np.isfinite(data).all():
            raise InvalidInputError(
                f"{describe_signal(signal)} holds NaN or infinite values; replace them first."
            )
        if min(data.shape[-2:]) < 8:
            raise InvalidInputError(
                f"{describe_signal(signal)}: the scan needs at least 8 pixels a side."
            )
        if is_image(signal):
            names, maps = ("image",), data[None]
        else:
            names, maps = _stack_names(signal, len(data)), data
    elif is_signal(signal) and signal_dims(signal) == (2, 1):
        names, maps = element_maps(signal)
    else:
        what = describe_signal(signal) if is_signal(signal) else type(signal).__name__
        raise InvalidInputError(
            f"expected a spectrum image (two scan axes and an energy axis, e.g. "
            f"EDSTEMSpectrum), one 2D image (Signal2D) or a stack of images of one scan "
            f"(Signal2D with one navigation axis), got {what}."
        )
    counts = [_integer_valued(m) for m in maps]
    if haadf is not None:
        if not is_signal(signal) or signal_dims(signal)[1] == 2:
            guide = np.asarray(getattr(haadf, "data", haadf), dtype=np.float32)
            if guide.shape != maps.shape[1:]:
                raise InvalidInputError(
                    f"the guide image's shape {guide.shape} differs from the image's "
                    f"{maps.shape[1:]}; pass an image of the same scan."
                )
        else:
            guide = match_guide(haadf, signal)
        if not np.isfinite(guide).all():
            raise InvalidInputError("the guide image holds NaN or infinite values.")
        names, maps = (*names, "guide"), np.concatenate([maps, guide[None]])
        counts.append(False)
    return ScanChannels(tuple(names), np.ascontiguousarray(maps), tuple(counts))
