"""Quality scores for denoised EDS spectrum images.

Two families of scores live here:

* **Self-supervised scores** for real data with no ground truth. The measured counts are split
  into two statistically independent parts: a *binomial split* (``x ~ Binomial(N, p)``,
  ``r = N - x``) or a *frame split* (odd against even frames of one scan). The denoiser sees
  ``x`` only; the remainder ``r``, rescaled by ``s`` so that ``E[s r] = E[x]``, gives an
  unbiased estimate of the mean squared error of the denoised ``x`` against its (unknown)
  expected counts (:func:`umse`) and of the gain in dB over the raw ``x``
  (:func:`split_gain_db`).
* **Scores against a known truth** (simulations): :func:`psnr`, :func:`ssim` (scikit-image,
  always with an explicit ``data_range``) and :func:`spectral_angle`.

Array convention: every cube is a numpy array in HyperSpy's order, navigation first and energy
last, ``(Y, X, E)`` (a line scan ``(X, E)`` works too); element maps are stacked as
``(n_maps, Y, X)``. Energy windows (:class:`~n2s_eds.preprocess.EnergyWindow`,
:class:`ElementWindow`) index channels of the full energy axis of the signal they were made
for. All split scores are computed inside the processing energy window (by default 0.2 keV up
to the lower of the beam energy and 20 keV, :func:`processing_window`), so that the detector
zero peak and the empty channels above the beam energy do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .exceptions import InvalidInputError
from .preprocess import (
    EnergyWindow,
    detector_fwhm_kev,
    energy_axis_kev,
    instrument_value,
    processing_window,
)

__all__ = [
    "ElementWindow",
    "processing_window",
    "binomial_split",
    "frame_split",
    "split_scale",
    "umse",
    "split_gain_db",
    "umse_stderr",
    "resolved_gain_db",
    "element_windows",
    "element_maps",
    "count_ratio",
    "map_count_ratios",
    "score_split",
    "psnr",
    "ssim",
    "spectral_angle",
]

#: Detector resolution at Mn Ka (eV) assumed when the metadata does not give one.
DEFAULT_FWHM_MN_KA_EV = 130.0


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


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
        data = np.asarray(signal.data)
        nav = tuple(range(data.ndim - 1))
        spectrum = data[..., window.slice].sum(axis=nav, dtype=np.float64)
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


# --------------------------------------------------------------------------------------------
# Splits and the unbiased split MSE
# --------------------------------------------------------------------------------------------


def _check_counts(counts: Any) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise InvalidInputError(f"counts must be numeric, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidInputError(
                "counts must be whole numbers (raw detector counts); splitting scaled, "
                "background-subtracted or already denoised data gives meaningless scores."
            )
    if arr.size and arr.min() < 0:
        raise InvalidInputError("counts must be non-negative.")
    return arr


def binomial_split(
    counts: Any, p: float, seed: int | np.random.Generator | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split counts into two independent parts by binomial thinning.

    For Poisson counts ``N`` with mean ``lam``, ``x ~ Binomial(N, p)`` and ``r = N - x`` are
    independent Poisson counts with means ``p lam`` and ``(1 - p) lam``.

    Parameters
    ----------
    counts : array_like
        Non-negative whole counts, any shape.
    p : float
        Fraction kept in ``x``, ``0 < p < 1``.
    seed : int, numpy.random.Generator or None
        Random seed or generator.

    Returns
    -------
    x, r : numpy.ndarray
        int64 arrays shaped like ``counts``; ``x + r == counts``.
    """
    if not 0.0 < float(p) < 1.0:
        raise InvalidInputError(f"p must lie strictly between 0 and 1, got {p}.")
    n = _check_counts(counts).astype(np.int64)
    rng = np.random.default_rng(seed)
    x = rng.binomial(n, float(p)).astype(np.int64)
    return x, n - x


def frame_split(frames: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a stack of frames of one scan into two independent sums.

    ``x`` sums the frames ``0, 2, 4, ...`` (the 1st, 3rd, ... frames) and ``r`` the frames
    ``1, 3, 5, ...``. The matching scale for :func:`umse` is ``n_x / n_r``: 1 for an even
    number of frames.

    Parameters
    ----------
    frames : array_like
        Counts with a frame axis, e.g. ``(Y, X, E, frame)`` or ``(frame, Y, X, E)``.
    axis : int
        The frame axis.

    Returns
    -------
    x, r : numpy.ndarray
        int64 sums without the frame axis.
    scale : float
        ``n_x / n_r``.
    """
    arr = _check_counts(frames)
    n = arr.shape[axis]
    if n < 2:
        raise InvalidInputError(f"need at least 2 frames on axis {axis}, got {n}.")
    arr = np.moveaxis(arr, axis, 0).astype(np.int64)
    x = arr[0::2].sum(axis=0)
    r = arr[1::2].sum(axis=0)
    return x, r, len(range(0, n, 2)) / len(range(1, n, 2))


def split_scale(p: float | None = None, scale: float | None = None) -> float:
    """The scale ``s`` with ``E[s r] = E[x]``: ``p / (1 - p)`` for a binomial split.

    Exactly one of ``p`` (binomial split) and ``scale`` (given directly, e.g. from
    :func:`frame_split`) must be given.
    """
    if (p is None) == (scale is None):
        raise InvalidInputError("give exactly one of p (binomial split) and scale.")
    if scale is not None:
        if not float(scale) > 0:
            raise InvalidInputError(f"scale must be positive, got {scale}.")
        return float(scale)
    if not 0.0 < float(p) < 1.0:
        raise InvalidInputError(f"p must lie strictly between 0 and 1, got {p}.")
    return float(p) / (1.0 - float(p))


def umse(
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
) -> float:
    """Unbiased estimate of the MSE of a denoised split against its expected counts.

    With ``s = p / (1 - p)`` (or ``scale``),
    ``mean((d - s r)^2) - mean(s^2 r)`` has expectation ``mean((d - E[x])^2)`` when ``d``
    depends on ``x`` only and ``r`` is Poisson and independent of ``x``: the MSE in the units
    (scale) of ``x``.

    Parameters
    ----------
    denoised : array_like
        The estimate ``d`` of ``E[x]`` (or ``x`` itself, for the raw score).
    remainder : array_like
        The independent remainder ``r``, same shape.
    p : float or None
        Binomial split fraction.
    scale : float or None
        The scale ``s`` directly (frame splits).

    Returns
    -------
    float
        The estimate; it can be negative by chance when the true MSE is tiny.
    """
    s = split_scale(p, scale)
    d = np.asarray(denoised, dtype=np.float64)
    r = np.asarray(remainder, dtype=np.float64)
    if d.shape != r.shape:
        raise InvalidInputError(f"denoised {d.shape} and remainder {r.shape} differ in shape.")
    return float(np.mean((d - s * r) ** 2) - s * s * np.mean(r))


def umse_stderr(
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
    unit_axis: int = -1,
) -> float:
    """Standard error of :func:`umse`, from its spread across pixels.

    The per-voxel terms ``(d - s r)^2 - s^2 r`` are summed over ``unit_axis`` (the energy
    axis of a cube, the map axis of stacked maps), so that each pixel is one unit; pixels
    are treated as independent. The estimate cannot resolve an MSE much smaller than this
    error: such a gain is reported as a lower bound (see :func:`score_split`).

    Parameters
    ----------
    denoised, remainder : array_like
        As for :func:`umse`.
    p, scale : float or None
        As for :func:`umse`.
    unit_axis : int
        The axis summed within a pixel.

    Returns
    -------
    float
        The standard error, in the units of :func:`umse`.
    """
    s = split_scale(p, scale)
    d = np.asarray(denoised, dtype=np.float64)
    r = np.asarray(remainder, dtype=np.float64)
    if d.shape != r.shape:
        raise InvalidInputError(f"denoised {d.shape} and remainder {r.shape} differ in shape.")
    terms = (d - s * r) ** 2 - s * s * r
    per_unit = np.moveaxis(terms, unit_axis, -1).reshape(-1, terms.shape[unit_axis])
    per_pixel = per_unit.mean(axis=1)
    n = per_pixel.size
    if n < 2:
        return float("nan")
    return float(per_pixel.std(ddof=1) / np.sqrt(n))


def resolved_gain_db(u_raw: float, u_den: float, stderr: float) -> tuple[float, bool]:
    """A split gain in dB, or its lower bound when the denoised MSE is below resolution.

    Parameters
    ----------
    u_raw, u_den : float
        :func:`umse` of the raw split and of the denoised split.
    stderr : float
        :func:`umse_stderr` of the denoised split.

    Returns
    -------
    (float, bool)
        ``10 log10(u_raw / u_den)`` and ``False`` when ``u_den`` exceeds twice its standard
        error; otherwise the gain at the upper confidence limit of the MSE,
        ``10 log10(u_raw / (max(u_den, 0) + 2 stderr))``, and ``True``: the true gain is at
        least that (at about 97.5 % confidence). ``nan`` when ``u_raw <= 0``.
    """
    if not u_raw > 0:
        return float("nan"), False
    if np.isfinite(stderr) and u_den <= 2.0 * stderr:
        upper = max(u_den, 0.0) + 2.0 * stderr
        return float(10.0 * np.log10(u_raw / upper)), True
    if u_den <= 0:
        return float("inf"), False
    return float(10.0 * np.log10(u_raw / u_den)), False


def split_gain_db(
    raw: Any,
    denoised: Any,
    remainder: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
) -> float:
    """Gain in dB of a denoised split over the raw split: ``10 log10(umse(raw) / umse(d))``.

    Returns ``inf`` when the denoised estimate is ``<= 0`` and ``nan`` when the raw one is.
    """
    u_raw = umse(raw, remainder, p, scale=scale)
    u_den = umse(denoised, remainder, p, scale=scale)
    if u_raw <= 0:
        return float("nan")
    if u_den <= 0:
        return float("inf")
    return float(10.0 * np.log10(u_raw / u_den))


# --------------------------------------------------------------------------------------------
# Count conservation
# --------------------------------------------------------------------------------------------


def count_ratio(denoised: Any, raw: Any) -> float:
    """Total counts of the denoised data over those of the raw data (1 = conserved)."""
    total = float(np.sum(raw, dtype=np.float64))
    if total == 0:
        return float("nan")
    return float(np.sum(denoised, dtype=np.float64)) / total


def map_count_ratios(denoised_maps: Any, raw_maps: Any) -> tuple[np.ndarray, float]:
    """Per-map count ratios of stacked maps ``(n_maps, Y, X)`` and the one farthest from 1."""
    d = np.asarray(denoised_maps, dtype=np.float64)
    r = np.asarray(raw_maps, dtype=np.float64)
    axes = tuple(range(1, r.ndim))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = d.sum(axis=axes) / r.sum(axis=axes)
    worst = float(ratios[np.nanargmax(np.abs(ratios - 1.0))]) if ratios.size else float("nan")
    return ratios, worst


# --------------------------------------------------------------------------------------------
# The split score of a denoiser
# --------------------------------------------------------------------------------------------


def score_split(
    raw: Any,
    remainder: Any,
    denoised: Any,
    p: float | None = None,
    *,
    scale: float | None = None,
    window: EnergyWindow | None = None,
    windows: Sequence[ElementWindow] | None = None,
) -> dict[str, float]:
    """All split scores of one denoised split, inside the processing window.

    Parameters
    ----------
    raw, remainder, denoised : array_like
        The split ``x`` given to the denoiser, the remainder ``r`` and the denoised ``x``,
        ``(Y, X, E)`` on the full energy axis (or already cut to ``window`` when it is
        ``None``).
    p, scale : float or None
        The split fraction or the scale ``s`` (exactly one).
    window : EnergyWindow or None
        Processing window (see :func:`processing_window`); ``None`` uses all channels.
    windows : sequence of ElementWindow or None
        Element windows (see :func:`element_windows`); without them, no map scores.

    Returns
    -------
    dict
        ``umse_raw``, ``umse_denoised``, ``cube_gain_db``, ``count_ratio`` and, with
        ``windows``, ``maps_gain_db``, ``worst_map_count_ratio``.
    """
    x = np.asarray(raw)
    r = np.asarray(remainder)
    d = np.asarray(denoised)
    if not x.shape == r.shape == d.shape:
        raise InvalidInputError(
            f"raw {x.shape}, remainder {r.shape} and denoised {d.shape} must have one shape."
        )
    sl = window.slice if window is not None else slice(None)
    xw, rw, dw = x[..., sl], r[..., sl], d[..., sl]
    u_raw, u_den = umse(xw, rw, p, scale=scale), umse(dw, rw, p, scale=scale)
    gain, bound = resolved_gain_db(u_raw, u_den, umse_stderr(dw, rw, p, scale=scale))
    out: dict[str, Any] = {
        "umse_raw": u_raw,
        "umse_denoised": u_den,
        "cube_gain_db": gain,
        "cube_gain_is_bound": bound,
        "count_ratio": count_ratio(dw, xw),
    }
    if windows:
        if window is not None:
            bad = [w.name for w in windows if w.start < window.start or w.stop > window.stop]
            if bad:
                raise InvalidInputError(f"element windows {bad} reach outside the window.")
        mx, mr, md = element_maps(x, windows), element_maps(r, windows), element_maps(d, windows)
        m_raw, m_den = umse(mx, mr, p, scale=scale), umse(md, mr, p, scale=scale)
        out["maps_gain_db"], out["maps_gain_is_bound"] = resolved_gain_db(
            m_raw, m_den, umse_stderr(md, mr, p, scale=scale, unit_axis=0)
        )
        out["worst_map_count_ratio"] = map_count_ratios(md, mx)[1]
    return out


# --------------------------------------------------------------------------------------------
# Scores against a known truth
# --------------------------------------------------------------------------------------------


def _pair(truth: Any, est: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth, dtype=np.float64)
    e = np.asarray(est, dtype=np.float64)
    if t.shape != e.shape:
        raise InvalidInputError(f"truth {t.shape} and estimate {e.shape} differ in shape.")
    return t, e


def _range(t: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    rng = float(t.max() - t.min())
    return rng if rng > 0 else 1.0


def psnr(
    truth: Any, est: Any, data_range: float | None = None, *, channel_axis: int | None = None
) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image), with an explicit data range.

    Parameters
    ----------
    truth, est : array_like
        Same shape: a cube ``(Y, X, E)``, a map or stacked maps ``(n_maps, Y, X)``.
    data_range : float or None
        Peak-to-peak range; ``truth.max() - truth.min()`` when ``None`` (over the whole
        array, or per channel with ``channel_axis``).
    channel_axis : int or None
        When given, the PSNR of each channel (e.g. each element map, ``channel_axis=0``) is
        computed separately and averaged.
    """
    from skimage.metrics import peak_signal_noise_ratio

    t, e = _pair(truth, est)
    with np.errstate(divide="ignore"):  # a perfect estimate scores inf
        if channel_axis is None:
            return float(peak_signal_noise_ratio(t, e, data_range=_range(t, data_range)))
        t, e = np.moveaxis(t, channel_axis, 0), np.moveaxis(e, channel_axis, 0)
        vals = [
            peak_signal_noise_ratio(ti, ei, data_range=_range(ti, data_range))
            for ti, ei in zip(t, e, strict=True)
        ]
    return float(np.mean(vals))


def ssim(
    truth: Any, est: Any, data_range: float | None = None, *, channel_axis: int | None = None
) -> float:
    """Structural similarity (scikit-image), with an explicit data range.

    Without ``channel_axis`` the SSIM is computed over all dimensions at once: a cube
    ``(Y, X, E)`` gets a 3-D SSIM with a 7-voxel uniform window (each dimension must be at
    least 7 long). With ``channel_axis`` the SSIM of each channel (e.g. element maps,
    ``channel_axis=0``, or energy channels, ``channel_axis=-1``) is computed with its own
    data range (unless ``data_range`` is given) and the values are averaged.

    Parameters
    ----------
    truth, est : array_like
        Same shape.
    data_range : float or None
        Peak-to-peak range; ``truth.max() - truth.min()`` (whole array or per channel).
    channel_axis : int or None
        Axis of independent channels.
    """
    from skimage.metrics import structural_similarity

    t, e = _pair(truth, est)
    if channel_axis is None:
        if min(t.shape) < 7:
            raise InvalidInputError(
                f"SSIM needs every dimension >= 7, got {t.shape}; pass channel_axis to score "
                "channel by channel."
            )
        return float(structural_similarity(t, e, data_range=_range(t, data_range)))
    t, e = np.moveaxis(t, channel_axis, 0), np.moveaxis(e, channel_axis, 0)
    vals = [
        structural_similarity(ti, ei, data_range=_range(ti, data_range))
        for ti, ei in zip(t, e, strict=True)
    ]
    return float(np.mean(vals))


def spectral_angle(truth: Any, est: Any) -> float:
    """Mean angle in degrees between the per-pixel spectra (last axis) of two cubes.

    Pixels whose true spectrum is all zero are left out; an all-zero estimate of a non-zero
    spectrum counts as 90 degrees.
    """
    t, e = _pair(truth, est)
    t = t.reshape(-1, t.shape[-1])
    e = e.reshape(-1, e.shape[-1])
    nt = np.linalg.norm(t, axis=1)
    ne = np.linalg.norm(e, axis=1)
    keep = nt > 0
    if not np.any(keep):
        raise InvalidInputError("every true spectrum is zero; the spectral angle is undefined.")
    dot = np.einsum("ij,ij->i", t[keep], e[keep])
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(ne[keep] > 0, dot / (nt[keep] * ne[keep]), 0.0)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())
