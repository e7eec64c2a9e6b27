"""Phase labels: checking them, reading and writing label images, drawing sparse labels,
and the phase-map signal every method returns (:func:`phase_signal`).

A label array is ``(Y, X)`` integers: ``k >= 0`` marks a pixel of phase ``k`` and ``-1`` an
unlabelled pixel. In label image files (PNG, TIFF) ``0`` is unlabelled and ``k`` is phase
``k - 1``, so that an image painted on black marks only what was painted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..io.writers import atomic_file

__all__ = [
    "UNLABELLED",
    "check_labels",
    "integer_map",
    "read_labels",
    "write_labels",
    "sample_labels",
    "scan_axes",
    "phase_signal",
]

#: The value of an unlabelled pixel in a label array.
UNLABELLED = -1
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def integer_map(values: Any, shape: tuple[int, int], what: str, hint: str) -> np.ndarray:
    """``values`` as a new int64 ``(Y, X)`` array, checked to have the scan's ``shape`` and
    to hold integers (floats of integer value pass); ``what`` and ``hint`` word the errors.

    Raises
    ------
    InvalidInputError
        Another shape, or values that are not integers.
    """
    arr = np.asarray(values)
    if arr.shape != tuple(shape):
        raise InvalidInputError(
            f"{what} have shape {arr.shape} but the scan is {tuple(shape)} (Y, X); {hint} "
            "on the scan's own grid."
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
            raise InvalidInputError(f"{what} must be integers ({hint}).")
    elif arr.dtype.kind not in "iub":
        raise InvalidInputError(f"{what} must be integers, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def check_labels(
    labels: Any, shape: tuple[int, int], phase_names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, int]:
    """Check sparse labels against a scan and return them as int64 with the phase count.

    Parameters
    ----------
    labels : array_like
        ``(Y, X)`` integers, ``-1`` for unlabelled pixels.
    shape : tuple of int
        The scan's ``(Y, X)``.
    phase_names : tuple of str, optional
        The names of the phases; their number is then the phase count, else the largest
        label plus one.

    Returns
    -------
    labels : numpy.ndarray
        A new int64 array.
    n_phases : int

    Raises
    ------
    InvalidInputError
        Another shape, non-integer values, values below -1 or beyond the phase names, fewer
        than two phases, or a phase without any labelled pixel.
    """
    arr = integer_map(labels, shape, "labels", "-1 for unlabelled pixels; draw them")
    if arr.min() < UNLABELLED:
        raise InvalidInputError(
            f"labels hold {int(arr.min())}; use -1 for unlabelled pixels and 0, 1, ... for "
            "the phases."
        )
    n_phases = len(phase_names) if phase_names is not None else int(arr.max()) + 1
    if arr.max() >= n_phases:
        raise InvalidInputError(
            f"labels reach phase {int(arr.max())} but only {n_phases} phase names were given."
        )
    if n_phases < 2:
        raise InvalidInputError(
            "the labels name a single phase; segmentation needs at least two phases with "
            "labelled pixels."
        )
    counts = np.bincount(arr[arr >= 0], minlength=n_phases)
    missing = [int(k) for k in np.flatnonzero(counts == 0)]
    if missing:
        which = [phase_names[k] for k in missing] if phase_names is not None else missing
        raise InvalidInputError(
            f"no pixel is labelled for phase(s) {which}; label at least one pixel of every "
            "phase (or renumber the phases without gaps)."
        )
    return arr, n_phases


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label file into a ``(Y, X)`` array with ``-1`` for unlabelled pixels.

    PNG and TIFF images hold ``0`` for unlabelled and ``k`` for phase ``k - 1`` (one
    channel: greyscale or a palette's indices); they come back as int64. A ``.npy`` file
    holds the array itself, returned with its own dtype for :func:`check_labels` to check.

    Raises
    ------
    InvalidInputError
        A missing file, another format, or an image with colour channels.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"label file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False))  # checked by check_labels
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"label file {str(path)!r} cannot be read: {err}") from None
    if suffix not in _IMAGE_SUFFIXES:
        raise InvalidInputError(
            f"label file {str(path)!r}: expected .png, .tif, .tiff or .npy, got {suffix!r}."
        )
    from skimage.io import imread

    try:
        image = np.asarray(imread(path))
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"label file {str(path)!r} cannot be read: {err}") from None
    if image.ndim != 2:
        raise InvalidInputError(
            f"label image {str(path)!r} has shape {image.shape}; it must hold one channel "
            "(greyscale or palette indices), 0 for unlabelled and k for phase k - 1."
        )
    return image.astype(np.int64) - 1


def _image_dtype(arr: np.ndarray) -> type:
    return np.uint8 if arr.max() < 255 else np.uint16


def write_labels(path: str | os.PathLike, labels: Any) -> Path:
    """Write labels (``-1`` unlabelled) as a PNG/TIFF label image (``0`` unlabelled, ``k``
    for phase ``k - 1``) or a ``.npy`` array, atomically. Returns the path."""
    path = Path(path)
    arr = np.asarray(labels).astype(np.int64)
    suffix = path.suffix.lower()
    if suffix not in (*_IMAGE_SUFFIXES, ".npy"):
        raise InvalidInputError(f"{str(path)!r}: write labels as .png, .tif, .tiff or .npy.")
    if arr.ndim != 2 or arr.min() < UNLABELLED or arr.max() > 65534:
        raise InvalidInputError("labels must be a (Y, X) array of -1 and 0 ... 65534.")
    with atomic_file(path, suffix=suffix) as tmp:
        if suffix == ".npy":
            np.save(tmp, arr)
        elif suffix == ".png":
            from skimage.io import imsave

            imsave(tmp, (arr + 1).astype(_image_dtype(arr)), check_contrast=False)
        else:
            import tifffile

            # greyscale said explicitly: a first axis of 3 or 4 rows is otherwise taken for
            # colour samples
            tifffile.imwrite(tmp, (arr + 1).astype(_image_dtype(arr)), photometric="minisblack")
    return path


def sample_labels(
    truth: Any, fraction: float, *, seed: int = 0, min_per_phase: int = 3
) -> np.ndarray:
    """Sparse labels drawn from a full label image, stratified by phase.

    Every phase present gets ``max(min_per_phase, round(fraction * n_k))`` pixels (all of
    them when it has fewer), drawn at random without replacement; the rest is ``-1``.

    Parameters
    ----------
    truth : array_like
        ``(Y, X)`` full labels (``0 ... K - 1``).
    fraction : float
        Fraction of the pixels to label, in (0, 1].
    seed : int
        Seed of the draw.
    min_per_phase : int
        Fewest labelled pixels per phase.

    Returns
    -------
    numpy.ndarray
        int64 ``(Y, X)``.
    """
    truth = np.asarray(truth).astype(np.int64)
    if not 0.0 < fraction <= 1.0:
        raise InvalidInputError(f"fraction must be in (0, 1], got {fraction!r}.")
    rng = np.random.default_rng(seed)
    out = np.full(truth.shape, UNLABELLED, dtype=np.int64)
    flat = truth.ravel()
    for k in np.unique(flat[flat >= 0]):
        idx = np.flatnonzero(flat == k)
        m = min(len(idx), max(int(min_per_phase), int(round(fraction * len(idx)))))
        out.ravel()[rng.choice(idx, m, replace=False)] = k
    return out


def scan_axes(signal: Any) -> list[dict[str, Any]]:
    """(y, x) axis dictionaries of a scan: a spectrum image's navigation axes or an image's
    signal axes."""
    am = signal.axes_manager
    axes = am.signal_axes if am.signal_dimension == 2 else am.navigation_axes
    x, y = axes[0], axes[1]
    return [
        {"name": a.name, "size": a.size, "scale": a.scale, "offset": a.offset, "units": a.units}
        for a in (y, x)
    ]


def phase_signal(
    signal: Any,
    phases: np.ndarray,
    phase_names: Any,
    provenance: dict[str, Any],
    *,
    how: str | None = None,
) -> Any:
    """A ``Signal2D`` of int64 phase indices on ``signal``'s scan axes, titled "Phases of
    <title> (<how>)", with the phase names and ``provenance`` in ``metadata.Segmentation``."""
    from hyperspy.signals import Signal2D

    out = Signal2D(np.asarray(phases).astype(np.int64), axes=scan_axes(signal))
    title = signal.metadata.get_item("General.title", "") or "scan"
    out.metadata.General.title = f"Phases of {title}" + (f" ({how})" if how else "")
    out.metadata.Signal.quantity = "Phase index"
    out.metadata.set_item("Segmentation", {**provenance, "phase_names": list(phase_names)})
    return out
