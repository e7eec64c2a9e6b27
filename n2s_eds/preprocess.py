"""From a spectrum image to the (E, Y, X) float32 cube the network sees, and back.

Everything here is plain numpy and exactly invertible: the energy window only
selects channels (the others are returned unchanged by the API), and the dose
scale is a single number recorded with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import InvalidInputError

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
    return np.ascontiguousarray(np.moveaxis(np.asarray(data, dtype=np.float32), -1, 0))


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
