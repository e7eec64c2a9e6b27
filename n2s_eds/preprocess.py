"""From a spectrum image to the (E, Y, X) float32 cube the network sees, and back.

Everything here is plain numpy and exactly invertible: the energy window only
selects channels (the others are returned unchanged by the API), and the dose
scale is a single number recorded with the model. Energy binning, set in eV so
that it means the same on 5, 10 or 20 eV channels, sums channels into bins for
the network; :func:`unbin_energy` maps binned counts back onto the input's
channels, keeping every pixel's counts in every bin.
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
    "channel_width_ev",
    "EnergyBinning",
    "energy_binning",
    "bin_energy",
    "unbin_energy",
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


def _check_energy_length(cube: np.ndarray, n: int, what: str) -> None:
    if cube.ndim != 3 or cube.shape[0] != n:
        raise ValueError(f"{what} must be a (E, Y, X) cube with E = {n}, got shape {cube.shape}")


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
    _check_energy_length(cube, binning.n_channels, "cube")
    cube = np.asarray(cube)
    if binning.factor == 1:
        return np.ascontiguousarray(cube, dtype=np.float32)
    # summed in float32 straight from the input's dtype: no float copy of the whole cube
    return np.ascontiguousarray(np.add.reduceat(cube, binning.starts, axis=0, dtype=np.float32))


#: Channels per slab in :func:`unbin_energy` (bounds its temporary memory).
_UNBIN_SLAB = 128


def _box_sum_(out: np.ndarray, radius: int) -> np.ndarray:
    """Sum every (E, Y, X) plane over a (2r+1)^2 pixel box, in place, truncated at the edges.

    Separable sums of shifted slices: exact for integer counts (no cumulative
    sums that lose precision on large cubes).
    """
    if radius <= 0:
        return out
    for axis in (1, 2):
        src = out.copy()
        n = src.shape[axis]
        for d in range(1, radius + 1):
            if d >= n:
                break
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            out[tuple(lo)] += src[tuple(hi)]
            out[tuple(hi)] += src[tuple(lo)]
    return out


def unbin_energy(
    binned: np.ndarray,
    raw: np.ndarray,
    binning: EnergyBinning,
    *,
    profile: np.ndarray | None = None,
    radius: int = 2,
    prior_counts: float = 1.0,
) -> np.ndarray:
    """Spread binned (denoised) counts back onto the input's channels.

    Every bin's counts of a pixel are shared among the bin's channels in
    proportion to weights that sum to exactly 1 over the bin, so every
    pixel keeps its counts in every bin (``bin_energy(result) == binned`` up
    to float rounding). The weight of channel ``c`` in bin ``b`` is

    ``w[c] = (N[c] + a * q[c]) / (N[b] + a)``

    where ``N`` are the raw counts summed over the ``(2 radius + 1)^2``
    pixels around the pixel (``N[b]`` their bin total), ``q[c] =
    profile[c] / profile[b]`` is the within-bin shape of the global
    ``profile`` (uniform where the profile has no counts in the bin), and
    ``a = prior_counts``.

    This is the posterior mean of the within-bin fractions under a multinomial
    model of the neighbourhood's counts with a Dirichlet prior centred on the
    global shape: given ``N[b]``, ``N[c] / N[b]`` is an unbiased estimate of
    the neighbourhood's within-bin shape, and the prior only matters where the
    neighbourhood holds few counts in the bin (no counts: the global shape).
    The weights are linear in the counts, so binning 5 eV or 20 eV channels of
    the same measurement gives results that agree once summed to the coarser
    axis.

    Parameters
    ----------
    binned : numpy.ndarray
        (n_bins, Y, X) counts per bin, e.g. the network's output.
    raw : numpy.ndarray
        (E, Y, X) raw counts of the window, E = ``binning.n_channels``; the
        within-bin profile comes from them.
    binning : EnergyBinning
        The bins used to make ``binned``.
    profile : numpy.ndarray, optional
        (E,) global spectrum setting the prior within-bin shape; by default
        the sum of ``raw`` over all its pixels. Pass the same profile to
        every chunk of a cube processed in pieces.
    radius : int
        Half side of the pixel neighbourhood whose raw counts set the shape.
    prior_counts : float
        Weight of the global shape, in pseudo-counts per bin (whatever the
        bin's number of channels, so that it means the same on every energy
        axis); 0 uses the neighbourhood's counts alone (uniform where it has
        none).

    Returns
    -------
    numpy.ndarray
        float32 (E, Y, X) counts on the input's channels.
    """
    _check_energy_length(raw, binning.n_channels, "raw")
    _check_energy_length(binned, binning.n_bins, "binned")
    if binned.shape[1:] != raw.shape[1:]:
        raise ValueError(f"binned {binned.shape} and raw {raw.shape} differ in scan shape")
    binned = np.asarray(binned, dtype=np.float32)
    if binning.factor == 1:
        return binned.copy()
    idx = binning.bin_of_channel
    sizes = np.bincount(idx).astype(np.float64)
    if profile is None:
        profile = np.asarray(raw, dtype=np.float64).sum(axis=(1, 2))
    profile = np.clip(np.asarray(profile, dtype=np.float64).reshape(-1), 0.0, None)
    if profile.shape[0] != binning.n_channels:
        raise ValueError(f"profile must have {binning.n_channels} channels, got {profile.shape[0]}")
    pb = np.add.reduceat(profile, binning.starts)
    q = np.where(pb[idx] > 0, profile / np.where(pb > 0, pb, 1.0)[idx], 1.0 / sizes[idx])
    prior = (float(prior_counts) * q).astype(np.float32)
    share = (1.0 / sizes[idx]).astype(np.float32)
    out = np.empty(raw.shape, dtype=np.float32)
    # slabs of whole bins, about _UNBIN_SLAB channels: temporaries stay a slab, not a cube
    per_slab = max(1, _UNBIN_SLAB // binning.factor) * binning.factor
    for c0 in range(0, binning.n_channels, per_slab):
        c1 = min(c0 + per_slab, binning.n_channels)
        b0 = c0 // binning.factor
        rel = idx[c0:c1] - b0
        num = np.clip(np.asarray(raw[c0:c1]), 0.0, None, dtype=np.float32)
        _box_sum_(num, int(radius))  # the neighbourhood's counts N[c]
        num += prior[c0:c1, None, None]
        den = np.add.reduceat(num, np.arange(0, c1 - c0, binning.factor), axis=0)
        # a bin where both the neighbourhood and the prior are empty: share equally
        empty = den <= 0
        if np.any(empty):
            num = np.where(empty[rel], share[c0:c1, None, None], num)
            den = np.where(empty, 1.0, den)
        num *= (binned[b0 : b0 + den.shape[0]] / den)[rel]
        out[c0:c1] = num
    return out
