"""Element windows and element maps: counts summed around each X-ray line.

:func:`element_windows` places an integration window of +-1 detector FWHM
around each X-ray line inside the processing window (from the metadata, or
given), or around the strongest peaks of the sum spectrum when there is no
line; :func:`element_maps` sums a cube's counts in each window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidInputError
from ..preprocess import (
    EnergyWindow,
    detector_fwhm_kev,
    energy_axis_kev,
    instrument_value,
    processing_window,
)

__all__ = ["DEFAULT_FWHM_MN_KA_EV", "ElementWindow", "element_windows", "element_maps"]

#: Detector resolution at Mn Ka (eV) assumed when the metadata does not give one.
DEFAULT_FWHM_MN_KA_EV = 130.0


@dataclass(frozen=True)
class ElementWindow:
    """An integration window around one X-ray line (or one peak of the sum spectrum).

    Attributes
    ----------
    name : str
        The X-ray line (``"Fe_Ka"``) or, for a peak found in the sum spectrum,
        ``"peak_6.40keV"``.
    energy_kev : float
        Line (or peak) energy in keV.
    start, stop : int
        Channel slice ``[start, stop)`` on the full energy axis of the signal it was made for.
    """

    name: str
    energy_kev: float
    start: int
    stop: int

    @property
    def slice(self) -> slice:
        """The channel slice."""
        return slice(self.start, self.stop)


def _fwhm_mn_ka_ev(signal: Any) -> float:
    value = instrument_value(signal, "Detector.EDS.energy_resolution_MnKa")
    return DEFAULT_FWHM_MN_KA_EV if value is None else value


def _xray_line_energy_kev(line: str) -> float:
    from exspy.material import elements

    try:
        element, family = line.split("_", 1)
        return float(elements[element]["Atomic_properties"]["Xray_lines"][family]["energy (keV)"])
    except (ValueError, KeyError, AttributeError):
        raise InvalidInputError(
            f"unknown X-ray line {line!r}; use names such as 'Fe_Ka' or 'Pt_La' as in "
            "metadata.Sample.xray_lines."
        ) from None


def _metadata_lines(signal: Any) -> list[str]:
    md = signal.metadata
    if not md.has_item("Sample.xray_lines"):
        return []
    lines = md.get_item("Sample.xray_lines")
    if isinstance(lines, str):
        return [lines]
    return [str(line) for line in np.asarray(lines).ravel()]


def _channel_range(
    energies: np.ndarray, lo: float, hi: float, window: EnergyWindow
) -> tuple[int, int]:
    start = int(np.searchsorted(energies, lo, side="left"))
    stop = int(np.searchsorted(energies, hi, side="right"))
    return max(start, window.start), min(stop, window.stop)


def _strongest_peaks(
    spectrum: np.ndarray,
    energies: np.ndarray,
    fwhm_mn_ka_ev: float,
    n_peaks: int,
) -> list[float]:
    """Energies of the ``n_peaks`` most prominent, well separated peaks of a sum spectrum."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    scale = float(energies[1] - energies[0]) if energies.size > 1 else 1.0
    fwhm_ch = max(float(np.median(detector_fwhm_kev(energies, fwhm_mn_ka_ev))) / scale, 1.0)
    # Smoothing at the detector resolution; the prominence of a peak is its height above the
    # local background (the higher of the two minima around it), so the bremsstrahlung hump
    # does not count as a peak.
    signal = gaussian_filter1d(spectrum.astype(np.float64), fwhm_ch / 2.355, mode="nearest")
    idx, props = find_peaks(signal, prominence=0.0)
    order = np.argsort(props["prominences"])[::-1]
    chosen: list[float] = []
    for i in order:
        e = float(energies[idx[i]])
        sep = 2.0 * float(detector_fwhm_kev(e, fwhm_mn_ka_ev))
        if all(abs(e - c) >= sep for c in chosen):
            chosen.append(e)
        if len(chosen) == n_peaks:
            break
    return sorted(chosen)


def element_windows(
    signal: Any,
    window: EnergyWindow | None = None,
    *,
    lines: Sequence[str] | None = None,
    source: Literal["auto", "lines", "peaks"] = "auto",
    n_peaks: int = 4,
    half_width_kev: float | None = None,
) -> list[ElementWindow]:
    """Integration windows for element maps.

    Each window spans +-1 FWHM of the detector resolution at the line energy
    (:func:`~n2s_eds.preprocess.detector_fwhm_kev`, with the resolution at Mn Ka from
    ``metadata.Acquisition_instrument.*.Detector.EDS.energy_resolution_MnKa``, 130 eV when
    absent) around each X-ray line that falls inside the processing window. The lines are
    ``lines`` or those named in ``metadata.Sample.xray_lines``, their energies from exspy's
    element database. When there are none (or ``source="peaks"``), the windows are centred
    on the ``n_peaks`` most prominent peaks of the background-subtracted, smoothed sum
    spectrum inside the window (smoothed at the detector resolution, ranked by
    prominence, i.e. height above the local background), at least 2 FWHM apart.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        The spectrum image; its energy axis, metadata and (for peaks) sum spectrum are read.
    window : EnergyWindow or None
        Processing window; :func:`processing_window` of ``signal`` when ``None``.
    lines : sequence of str or None
        X-ray lines (``"Fe_Ka"``); ``None`` reads them from the metadata.
    source : {"auto", "lines", "peaks"}
        ``"auto"``: lines if any, else peaks. ``"lines"``: lines only (error if none inside
        the window). ``"peaks"``: the strongest peaks of the sum spectrum, ignoring lines.
    n_peaks : int
        Number of peaks used when the windows come from the sum spectrum.
    half_width_kev : float or None
        Fixed half width in keV instead of 1 FWHM (e.g. 0.09).

    Returns
    -------
    list of ElementWindow
        Sorted by energy; channel ranges are clipped to the processing window.
    """
    if source not in ("auto", "lines", "peaks"):
        raise InvalidInputError(f"source must be 'auto', 'lines' or 'peaks', got {source!r}")
    energies = energy_axis_kev(signal)
    if window is None:
        window = processing_window(signal)
    fwhm_mn = _fwhm_mn_ka_ev(signal)
    centres: list[tuple[str, float]] = []
    if source != "peaks":
        names = list(lines) if lines is not None else _metadata_lines(signal)
        for name in names:
            e = _xray_line_energy_kev(name)
            if window.low_kev <= e <= window.high_kev:
                centres.append((name, e))
        if not centres and source == "lines":
            raise InvalidInputError(
                "no X-ray line of metadata.Sample.xray_lines (or `lines`) lies inside the "
                f"processing window {window.low_kev:.2f}-{window.high_kev:.2f} keV; add lines "
                "with signal.add_lines() or use source='peaks'."
            )
    if not centres:
        data = signal.data  # numpy or dask: only the sum spectrum is computed
        nav = tuple(range(data.ndim - 1))
        spectrum = data[..., window.slice].sum(axis=nav, dtype=np.float64)
        spectrum = np.asarray(spectrum.compute() if hasattr(spectrum, "compute") else spectrum)
        peaks = _strongest_peaks(spectrum, energies[window.slice], fwhm_mn, n_peaks)
        if not peaks:
            raise InvalidInputError("no peak found in the sum spectrum inside the window.")
        centres = [(f"peak_{e:.2f}keV", e) for e in peaks]
    out = []
    for name, e in sorted(centres, key=lambda c: c[1]):
        half = float(detector_fwhm_kev(e, fwhm_mn)) if half_width_kev is None else half_width_kev
        start, stop = _channel_range(energies, e - half, e + half, window)
        if stop > start:
            out.append(ElementWindow(name, float(e), start, stop))
    return out


def element_maps(data: np.ndarray, windows: Sequence[ElementWindow]) -> np.ndarray:
    """Sum the counts of a cube in each element window.

    Parameters
    ----------
    data : numpy.ndarray
        Cube ``(Y, X, E)`` on the full energy axis the windows were made for.
    windows : sequence of ElementWindow

    Returns
    -------
    numpy.ndarray
        float64 maps ``(n_maps, Y, X)``.
    """
    data = np.asarray(data)
    if not windows:
        raise InvalidInputError("no element window given; see element_windows().")
    return np.stack([data[..., w.slice].sum(axis=-1, dtype=np.float64) for w in windows])
