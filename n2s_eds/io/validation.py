"""Checking, before any expensive work, that a signal is a spectrum image the denoiser can use.

:func:`check_spectrum_image` refuses the input the denoiser cannot use, with
a message saying what was wrong and what to do; non-integer counts give a
:class:`NonIntegerCountsWarning` (an error when ``strict``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from .signals import describe_signal, is_lazy, is_signal, scan_shape_of, signal_dims

__all__ = ["NonIntegerCountsWarning", "check_spectrum_image"]


class NonIntegerCountsWarning(UserWarning):
    """The spectrum image holds non-integer values where X-ray counts are expected."""


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
    if not is_signal(signal):
        raise InvalidInputError(
            f"expected a HyperSpy signal (e.g. exspy.signals.EDSTEMSpectrum), got "
            f"{type(signal).__name__}. Load the file with n2s_eds.load(path) or wrap the "
            "array: exspy.signals.EDSTEMSpectrum(array) with axes (y, x, energy)."
        )
    nav_dim, sig_dim = signal_dims(signal)
    desc = describe_signal(signal)
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
    ny, nx = scan_shape_of(signal)
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
    _check_values(signal.data, dtype, lazy=is_lazy(signal), strict=strict)


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
