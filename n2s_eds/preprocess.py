"""From a spectrum image to the (E, Y, X) float32 cube the network sees.

Validation of the signal and its guide image, the energy window (channels
outside it are returned unchanged by the API), the robust normalisation of the
guide, and energy binning set in eV, so that it means the same on 5, 10 or
20 eV channels. :mod:`n2s_eds.postprocess` holds the way back
(:func:`~n2s_eds.postprocess.unbin_energy` keeps every pixel's counts in every bin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import InvalidInputError
from .io import check_spectrum_image, match_guide

__all__ = [
    "DEFAULT_LOW_KEV",
    "DEFAULT_HIGH_KEV",
    "EnergyWindow",
    "energy_axis_kev",
    "beam_energy_kev",
    "energy_window",
    "signal_to_cube",
    "cube_to_data",
    "detector_fwhm_kev",
    "processing_window",
    "channel_width_ev",
    "EnergyBinning",
    "energy_binning",
    "bin_energy",
    "check_energy_length",
    "guide_normalisation",
    "normalise_guide",
    "PreparedCube",
    "LAZY_TRAIN_SIDE",
    "central_region",
    "check_signal_and_guide",
    "prepare_cube",
    "prepare_training_cube",
]

#: Lower edge of the processing window: the detector zero/strobe peak lies below.
DEFAULT_LOW_KEV = 0.2
#: Upper edge of the processing window when the beam energy is higher.
DEFAULT_HIGH_KEV = 20.0


def energy_axis_kev(signal: Any) -> np.ndarray:
    """Channel centres of a signal's energy (signal) axis, in keV.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        A signal whose last signal axis is the energy axis.

    Returns
    -------
    numpy.ndarray
        1-D array of channel energies in keV.
    """
    axis = signal.axes_manager.signal_axes[0]
    if not getattr(axis, "is_uniform", True):
        raise InvalidInputError(
            "the energy axis is not uniform; n2s_eds needs equally spaced channels. "
            "Rebin the spectrum image onto a uniform axis first "
            "(e.g. signal.interpolate_on_axis)."
        )
    values = np.asarray(axis.axis, dtype=np.float64)
    units = str(axis.units or "").strip()
    if units == "eV":
        values = values / 1000.0
    elif units not in ("keV", "", "<undefined>"):
        raise InvalidInputError(
            f"the energy axis has units {units!r}; expected 'keV' or 'eV'. "
            "Set signal.axes_manager.signal_axes[0].units to the right energy unit."
        )
    return values


def instrument_value(signal: Any, item: str) -> float | None:
    """A positive number under ``Acquisition_instrument.TEM|SEM.<item>``, or ``None``."""
    md = signal.metadata
    for mic in ("TEM", "SEM"):
        key = f"Acquisition_instrument.{mic}.{item}"
        if md.has_item(key):
            try:
                value = float(md.get_item(key))
            except (TypeError, ValueError):
                continue
            if value > 0:
                return value
    return None


def beam_energy_kev(signal: Any) -> float | None:
    """Beam energy in keV from a signal's metadata, or ``None`` when absent."""
    return instrument_value(signal, "beam_energy")


@dataclass(frozen=True)
class EnergyWindow:
    """A processing window on an energy axis.

    Attributes
    ----------
    low_kev, high_kev : float
        Edges of the window in keV (inclusive).
    start, stop : int
        The matching channel slice ``[start, stop)`` on the axis it was made for.
    """

    low_kev: float
    high_kev: float
    start: int
    stop: int

    @property
    def slice(self) -> slice:
        """The channel slice."""
        return slice(self.start, self.stop)

    @property
    def n_channels(self) -> int:
        """Number of channels inside the window."""
        return self.stop - self.start


def energy_window(
    energies_kev: np.ndarray,
    low_kev: float = DEFAULT_LOW_KEV,
    high_kev: float | None = DEFAULT_HIGH_KEV,
    beam_energy: float | None = None,
) -> EnergyWindow:
    """Select the channels that carry sample signal.

    Parameters
    ----------
    energies_kev : numpy.ndarray
        Channel energies in keV.
    low_kev : float
        Lower edge; channels below (the zero/strobe peak) are left out.
    high_kev : float or None
        Upper edge; ``None`` means no limit other than the beam energy.
    beam_energy : float or None
        Beam energy in keV; channels above it carry no sample signal.

    Returns
    -------
    EnergyWindow
    """
    hi = np.inf if high_kev is None else float(high_kev)
    if beam_energy is not None:
        hi = min(hi, float(beam_energy))
    inside = np.flatnonzero((energies_kev >= low_kev) & (energies_kev <= hi))
    if inside.size == 0:
        raise InvalidInputError(
            f"no channel of the energy axis ({energies_kev[0]:.3f} to {energies_kev[-1]:.3f} keV)"
            f" lies in the processing window {low_kev:.3f}-{hi:.3f} keV. Check the energy axis "
            "offset, scale and units, or pass another window."
        )
    start, stop = int(inside[0]), int(inside[-1]) + 1
    return EnergyWindow(float(low_kev), float(hi), start, stop)


def signal_to_cube(data: np.ndarray, window: EnergyWindow | None = None) -> np.ndarray:
    """(Y, X, E) HyperSpy data to a contiguous float32 (E, Y, X) cube.

    Parameters
    ----------
    data : numpy.ndarray
        Spectrum image data in HyperSpy's order (navigation y, x; energy last).
    window : EnergyWindow or None
        Channels to keep; all when ``None``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (E, Y, X).
    """
    if window is not None:
        data = data[..., window.slice]
    # one copy: the cast and the reordering together
    return np.ascontiguousarray(np.moveaxis(np.asarray(data), -1, 0), dtype=np.float32)


def cube_to_data(cube: np.ndarray, like: np.ndarray, window: EnergyWindow | None) -> np.ndarray:
    """Put a denoised (E, Y, X) cube back into (Y, X, E) data shaped like ``like``.

    Channels outside ``window`` are copied unchanged from ``like``.
    """
    out = np.array(like, dtype=np.float32, copy=True)
    inner = np.moveaxis(cube, 0, -1)
    if window is None:
        out[...] = inner
    else:
        out[..., window.slice] = inner
    return out


def detector_fwhm_kev(energy_kev: float | np.ndarray, fwhm_mn_ka_ev: float = 130.0) -> np.ndarray:
    """Detector resolution (FWHM, keV) at an energy, from the usual law.

    FWHM^2 grows linearly with energy (Fiori & Newbury):
    FWHM(E)^2 = FWHM(Mn Ka)^2 + 2.5 eV * (E - E(Mn Ka)), energies in eV.

    Parameters
    ----------
    energy_kev : float or numpy.ndarray
        Energy in keV.
    fwhm_mn_ka_ev : float
        Resolution at Mn Ka (5.8987 keV) in eV.
    """
    e_ev = np.asarray(energy_kev, dtype=np.float64) * 1000.0
    fwhm2 = fwhm_mn_ka_ev**2 + 2.5 * (e_ev - 5898.7)
    return np.sqrt(np.maximum(fwhm2, 1.0)) / 1000.0


def processing_window(
    signal: Any,
    low_kev: float = DEFAULT_LOW_KEV,
    high_kev: float | None = DEFAULT_HIGH_KEV,
) -> EnergyWindow:
    """The processing energy window of a spectrum image.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        The spectrum image (its energy axis and beam energy are read).
    low_kev, high_kev : float
        Window edges in keV; the upper edge is lowered to the beam energy when that is lower.

    Returns
    -------
    EnergyWindow
    """
    return energy_window(energy_axis_kev(signal), low_kev, high_kev, beam_energy_kev(signal))


# --------------------------------------------------------------------------- energy binning


def channel_width_ev(signal: Any) -> float:
    """Width of one channel of a spectrum image's energy axis, in eV.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        The spectrum image (uniform energy axis in keV or eV).

    Returns
    -------
    float
        The channel width (axis scale) in eV, positive.
    """
    energies = energy_axis_kev(signal)
    if energies.size < 2:
        raise InvalidInputError(
            "the energy axis has a single channel; a spectrum image needs many channels."
        )
    width = abs(float(energies[1] - energies[0])) * 1000.0
    if not np.isfinite(width) or width <= 0:
        raise InvalidInputError(
            f"the energy axis has channel width {width} eV; set a positive axis scale "
            "(signal.axes_manager.signal_axes[0].scale)."
        )
    return width


@dataclass(frozen=True)
class EnergyBinning:
    """Consecutive channels of a processing window summed into bins.

    Bins start at the window's first channel and hold ``factor`` channels
    each; the last bin holds the remaining ``n_channels % factor`` channels
    when the window does not divide evenly.

    Attributes
    ----------
    factor : int
        Channels per bin (1: no binning).
    n_channels : int
        Channels in the window (the unbinned cube's energy length).
    channel_ev : float
        Width of one input channel in eV.
    """

    factor: int
    n_channels: int
    channel_ev: float

    @property
    def n_bins(self) -> int:
        """Number of bins (the binned cube's energy length)."""
        return -(-self.n_channels // self.factor)

    @property
    def width_ev(self) -> float:
        """Width of a full bin in eV."""
        return self.factor * self.channel_ev

    @property
    def starts(self) -> np.ndarray:
        """First channel of every bin, relative to the window start."""
        return np.arange(0, self.n_channels, self.factor)

    @property
    def bin_of_channel(self) -> np.ndarray:
        """Bin index of every channel of the window."""
        return np.arange(self.n_channels) // self.factor


def energy_binning(n_channels: int, channel_ev: float, bin_ev: float | None) -> EnergyBinning:
    """Bins of about ``bin_ev`` eV on an axis with ``channel_ev`` eV channels.

    A bin holds ``max(1, round(bin_ev / channel_ev))`` whole channels, so its
    width is the multiple of the channel width nearest to ``bin_ev``: 40 eV
    bins are 8 channels of 5 eV, 4 of 10 eV or 2 of 20 eV, covering the same
    energies whatever the instrument's channel width.

    Parameters
    ----------
    n_channels : int
        Channels in the processing window.
    channel_ev : float
        Width of one channel in eV.
    bin_ev : float or None
        Wanted bin width in eV; ``None`` gives bins of one channel.

    Returns
    -------
    EnergyBinning

    Raises
    ------
    InvalidInputError
        When ``bin_ev`` is not a positive finite number.
    """
    if bin_ev is None:
        factor = 1
    else:
        value = float(bin_ev)
        if not np.isfinite(value) or value <= 0:
            raise InvalidInputError(
                f"bin_ev must be a positive bin width in eV (e.g. 40), or None for no "
                f"binning; got {bin_ev!r}."
            )
        factor = max(1, int(round(value / float(channel_ev))))
    return EnergyBinning(min(factor, max(int(n_channels), 1)), int(n_channels), float(channel_ev))


def check_energy_length(cube: np.ndarray, n: int, what: str) -> None:
    if cube.ndim != 3 or cube.shape[0] != n:
        raise ValueError(f"{what} must be a (E, Y, X) cube with E = {n}, got shape {cube.shape}")


def bin_energies(signal: Any, window: EnergyWindow, binning: EnergyBinning) -> np.ndarray:
    """Mean energy (keV) of the channels of every bin of a signal's processing window.

    Returns
    -------
    numpy.ndarray
        float32 (n_bins,), what a conditioned network is told of its input's channels.
    """
    energies = energy_axis_kev(signal)[window.slice]
    sizes = np.diff(np.append(binning.starts, binning.n_channels))
    return (np.add.reduceat(energies, binning.starts) / sizes).astype(np.float32)


def bin_energy(cube: np.ndarray, binning: EnergyBinning) -> np.ndarray:
    """Sum the channels of a (E, Y, X) cube into energy bins.

    Parameters
    ----------
    cube : numpy.ndarray
        Counts, (E, Y, X), E = ``binning.n_channels``, any real dtype (a
        strided view such as ``numpy.moveaxis(data, -1, 0)`` is fine).
    binning : EnergyBinning
        The bins.

    Returns
    -------
    numpy.ndarray
        C-contiguous float32 (n_bins, Y, X): each pixel's counts in each bin
        (exact sums for integer counts below 2**24).
    """
    check_energy_length(cube, binning.n_channels, "cube")
    cube = np.asarray(cube)
    if binning.factor == 1:
        return np.ascontiguousarray(cube, dtype=np.float32)
    # summed in float32 straight from the input's dtype: no float copy of the whole cube
    return np.ascontiguousarray(np.add.reduceat(cube, binning.starts, axis=0, dtype=np.float32))


def guide_normalisation(guide: np.ndarray) -> tuple[float, float]:
    """(median, spread) with which :func:`normalise_guide` normalises an image.

    The spread is the 10-90 % percentile range, or the standard deviation (1
    for a flat image) when that range is zero.
    """
    g = np.asarray(guide, dtype=np.float32)
    lo, med, hi = np.percentile(g, [10, 50, 90])
    spread = float(hi - lo)
    if spread <= 0:
        spread = float(g.std()) or 1.0
    return float(med), spread


def normalise_guide(guide: np.ndarray) -> np.ndarray:
    """Robustly normalise a guide image: (g - median) / (10-90 % percentile spread), float32."""
    g = np.asarray(guide, dtype=np.float32)
    med, spread = guide_normalisation(g)
    return ((g.astype(np.float64) - med) / spread).astype(np.float32)


#: Largest scan region (pixels per side) used for training on a lazy cube.
LAZY_TRAIN_SIDE = 128


@dataclass
class PreparedCube:
    """A spectrum image ready for the network.

    Attributes
    ----------
    cube : numpy.ndarray
        float32 counts (E, Y, X) inside the processing window.
    guide : numpy.ndarray or None
        Normalised guide image (Y, X) on the scan grid.
    window : EnergyWindow
        The processing window on the signal's energy axis.
    """

    cube: np.ndarray
    guide: np.ndarray | None
    window: EnergyWindow


def central_region(ny: int, nx: int) -> tuple[slice, slice]:
    """The central scan region, at most :data:`LAZY_TRAIN_SIDE` pixels a side, of a lazy cube."""
    sy, sx = min(ny, LAZY_TRAIN_SIDE), min(nx, LAZY_TRAIN_SIDE)
    y0, x0 = (ny - sy) // 2, (nx - sx) // 2
    return slice(y0, y0 + sy), slice(x0, x0 + sx)


def check_signal_and_guide(
    signal: Any, haadf: Any, *, strict: bool, require_guide: bool
) -> np.ndarray | None:
    """Validate a spectrum image and its guide; the guide on the scan grid (or ``None``).

    Raises
    ------
    InvalidInputError
        For a signal that is not a spectrum image of counts, a guide of another
        scan, or no guide when ``require_guide``.
    """
    check_spectrum_image(signal, strict=strict)
    if require_guide and haadf is None:
        raise InvalidInputError(
            "this model was trained with a guide image (HAADF); pass it as `haadf=`, "
            "or train a model without one"
        )
    return None if haadf is None else match_guide(haadf, signal)


def prepare_cube(
    signal: Any,
    haadf: Any = None,
    *,
    low_kev: float = DEFAULT_LOW_KEV,
    high_kev: float | None = DEFAULT_HIGH_KEV,
    require_guide: bool = False,
    strict: bool = False,
) -> PreparedCube:
    """Validate a spectrum image (and guide) and turn it into a count cube.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image (eager; a lazy one is computed).
    haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
        Guide image of the same scan.
    low_kev, high_kev : float
        Processing window in keV (the upper edge is lowered to the beam energy).
    require_guide : bool
        Raise when no guide is given.
    strict : bool
        Non-integer counts raise instead of warning.

    Returns
    -------
    PreparedCube
    """
    guide = check_signal_and_guide(signal, haadf, strict=strict, require_guide=require_guide)
    window = processing_window(signal, low_kev, high_kev)
    data = signal.data
    if hasattr(data, "compute"):
        data = data[..., window.slice].compute()
        cube = signal_to_cube(data)
    else:
        cube = signal_to_cube(data, window)
    return PreparedCube(cube, None if guide is None else normalise_guide(guide), window)


def prepare_training_cube(
    signal: Any,
    haadf: Any = None,
    *,
    low_kev: float = DEFAULT_LOW_KEV,
    high_kev: float | None = DEFAULT_HIGH_KEV,
    strict: bool = False,
) -> PreparedCube:
    """The cube a network is trained on: the whole scan of an eager signal, or the
    :func:`central_region` of a lazy one (validated cheaply, read once)."""
    if not getattr(signal, "_lazy", False):
        return prepare_cube(signal, haadf, low_kev=low_kev, high_kev=high_kev, strict=strict)
    guide = check_signal_and_guide(signal, haadf, strict=strict, require_guide=False)
    window = processing_window(signal, low_kev, high_kev)
    ys, xs = central_region(*signal.data.shape[:2])
    block = signal.data[ys, xs, window.slice].compute()
    g = None if guide is None else normalise_guide(guide)[ys, xs]
    return PreparedCube(signal_to_cube(block), g, window)
