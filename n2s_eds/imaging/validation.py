"""Checking 2D images and image stacks before any work: one image (H, W) or a stack (n, H, W).

:func:`as_image_stack` is the one gate every function of :mod:`n2s_eds.imaging` passes its
input through: it returns a float32 ``(n, H, W)`` copy and says whether the input was one
image, or raises :class:`~n2s_eds.exceptions.InvalidInputError` naming what was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["as_image_stack", "check_scale", "restore_shape"]


def as_image_stack(
    images: Any, *, name: str = "images", min_size: int = 2
) -> tuple[np.ndarray, bool]:
    """Return ``images`` as a float32 ``(n, H, W)`` array and whether it was a single image.

    Parameters
    ----------
    images : array_like or sequence of array_like
        One image ``(H, W)``, a stack ``(n, H, W)``, or a list of equally sized images.
    name : str
        What the images are called in error messages.
    min_size : int
        Smallest accepted side, in pixels.

    Returns
    -------
    stack : numpy.ndarray
        float32 ``(n, H, W)``, a new array (the input is never modified).
    single : bool
        True when the input was one ``(H, W)`` image.

    Raises
    ------
    InvalidInputError
        An empty image or stack, a list of images of mixed sizes, other than 2 or 3
        dimensions, a side below ``min_size``, NaN or infinite values, or non-numeric data.
    """
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if len(images) == 0:
            raise InvalidInputError(f"{name}: the list is empty; pass at least one image.")
        shapes = {np.shape(im) for im in images}
        if len(shapes) > 1:
            raise InvalidInputError(
                f"{name}: the images have mixed sizes {sorted(shapes)}; a stack needs one "
                "size. Crop or resample them to a common size, or process them one at a time."
            )
    try:
        arr = np.array(images, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name}: not numeric image data ({err}).") from None
    if arr.ndim not in (2, 3):
        raise InvalidInputError(
            f"{name}: expected one image (H, W) or a stack (n, H, W), got an array of shape "
            f"{arr.shape}."
        )
    if arr.size == 0:
        raise InvalidInputError(f"{name}: the image is empty (shape {arr.shape}).")
    if min(arr.shape[-2:]) < min_size:
        raise InvalidInputError(
            f"{name}: an image of {arr.shape[-2]} x {arr.shape[-1]} pixels is too small; "
            f"each side needs at least {min_size} pixels."
        )
    finite = np.isfinite(arr)
    if not finite.all():
        raise InvalidInputError(
            f"{name}: {int((~finite).sum())} NaN or infinite values; replace them (for example "
            "with the neighbours' median) before processing."
        )
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def check_scale(scale: int, shape: tuple[int, int] | None = None, *, grid: str = "fine") -> int:
    """Check an integer scale factor (1, 2, 4, ...) and, with ``shape``, that it divides it.

    Parameters
    ----------
    scale : int
        The factor between the fine and the coarse grid.
    shape : tuple of int, optional
        ``(H, W)`` of an image on the fine grid that the coarse grid must tile exactly
        (only checked when ``grid == "fine"``).
    grid : {"fine", "coarse"}
        Which grid ``shape`` is on.

    Raises
    ------
    InvalidInputError
        A scale that is not a positive integer, or that does not divide a fine-grid shape.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InvalidInputError(f"scale must be a positive integer (1, 2, 4), got {scale!r}.")
    if shape is not None and grid == "fine" and (shape[0] % scale or shape[1] % scale):
        raise InvalidInputError(
            f"scale {scale} does not divide the image size {shape[0]} x {shape[1]}; crop the "
            f"image to a multiple of {scale} on both sides."
        )
    return int(scale)


def restore_shape(stack: np.ndarray, single: bool) -> np.ndarray:
    """Undo :func:`as_image_stack`'s added axis for a single image."""
    return stack[0] if single else stack
