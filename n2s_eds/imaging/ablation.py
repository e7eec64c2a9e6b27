"""Virtual laser-ablation (LA-ICP-MS) acquisition of 2D elemental images.

The imaging model of van Elteren, Šelih & Šala (J. Anal. At. Spectrom. 34, 1919, 2019) in five
steps: :func:`laser_sampling` (Gaussian spot, shot spacing), :func:`flicker_noise`
(pulse-to-pulse fluctuation), :func:`washout` (causal exponential along the scan),
:func:`integrate_dwell` (area integration onto the output grid, in expected counts) and
:func:`poisson_counts` (counting noise, back in the input's units). :func:`virtual_ablation`
runs all five, :func:`ablation_expectation` the noise-free steps, and :func:`ablation_psf`
gives the point-spread function of steps 1 and 3 on the fine grid (for deconvolution). The
defaults and their sources are in :class:`AblationSettings`; :data:`CLINKER_SETTINGS`
describes the LA-ICP-MS clinker acquisition (area 1).

Conventions: one image ``(H, W)`` or a stack ``(n, H, W)`` of the isotopes of one acquisition;
the laser scans each line along x (axis -1, left to right), line after line along y. Pixel
sizes are in µm as ``(y, x)``, times in seconds; all outputs are float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from .validation import as_image_stack, check_scale, restore_shape

__all__ = [
    "AblationSettings",
    "CLINKER_ISOTOPES",
    "CLINKER_SETTINGS",
    "ablation_expectation",
    "ablation_psf",
    "flicker_noise",
    "integrate_dwell",
    "laser_sampling",
    "poisson_counts",
    "virtual_ablation",
    "washout",
]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_WASHOUT_TAIL = 1e-4  # the PSF keeps the washout tail down to this fraction

Seed = int | Sequence[int] | np.random.Generator | None
Pixel = float | tuple[float, float]
PerImage = float | tuple[float, ...]


@dataclass(frozen=True)
class AblationSettings:
    """Parameters of a virtual laser-ablation acquisition: the keywords of
    :func:`virtual_ablation` (``virtual_ablation(x, **vars(settings))``).

    The defaults describe the acquisition of a clean image normalised to [0, 1] whose pixel
    is the fine grid; they give a clearly degraded but recognisable image.

    Attributes
    ----------
    pixel_um : float or (float, float)
        Fine-grid pixel size in µm, ``(y, x)`` or one value for both. Default 1 µm (the length
        unit; only its ratio to ``spot_um`` matters).
    spot_um : float
        Full width at half maximum of the Gaussian spot profile, in µm. Default 3 µm, three
        fine pixels (published LA-ICP-MS imaging uses spots of about 1-10 µm).
    overlap : float
        Fraction in [0, 1) by which consecutive shots overlap along the scan line; the shot
        spacing is ``spot_um * (1 - overlap)``. Default 0.5 (assumed): a 1.5-pixel box along x.
    flicker : float
        Relative standard deviation of the pulse-to-pulse fluctuation. Default 0.05 (assumed,
        a few per cent being typical of shot-to-shot stability).
    washout_s : float
        Time constant of the exponential washout, in s. Default 0.02 s, of the order of the
        tens of ms single-pulse responses of low-dispersion ablation cells.
    dwell_s : float or tuple of float
        Time the scan spends on one fine-grid pixel along x, in s (one value, or one per
        image). Default 0.02 s: a washout tail of about one pixel.
    counts_per_unit : float or tuple of float
        Expected counts of an output pixel per unit of the input (one value, or one per image).
        Default 30: a pixel of value 1 expects 30 counts, like the brightest points of the
        clinker trace isotopes (99.9th percentiles: Ti47 25, V51 29, Zn66 44, Mn55 84 counts).
    """

    pixel_um: Pixel = 1.0
    spot_um: float = 3.0
    overlap: float = 0.5
    flicker: float = 0.05
    washout_s: float = 0.02
    dwell_s: PerImage = 0.02
    counts_per_unit: PerImage = 30.0

    def psf(self, size: int | tuple[int, int] | None = None) -> np.ndarray:
        """The point-spread function of these settings, see :func:`ablation_psf`."""
        return ablation_psf(
            self.pixel_um, self.spot_um, self.overlap, self.washout_s, self.dwell_s, size=size
        )

    def acquire(self, image: Any, *, scale: int = 1, seed: Seed = 0) -> np.ndarray:
        """One noisy acquisition of ``image``, see :func:`virtual_ablation`."""
        return virtual_ablation(image, **vars(self), scale=scale, seed=seed)


#: Isotopes of the clinker acquisition, in the order of its image stack.
CLINKER_ISOTOPES = (
    "Na23", "Mg24", "Al27", "K39", "Ti47", "V51", "Cr52", "Mn55", "Zn66", "Rb87", "Ba137",
)  # fmt: skip

#: The LA-ICP-MS clinker acquisition (area 1: 50 lines of 700 points, 11 isotopes in cps).
#:
#: * ``pixel_um``: line spacing 7.0 µm (measured on an SEM image) and point spacing 0.5792 µm,
#:   from the processing settings published with the data (kleinerELM/LA-ICP-MS); the ``.xl``
#:   headers record neither.
#: * ``spot_um``, ``overlap``, ``flicker``, ``washout_s``: not recorded; assumed: a spot as
#:   wide as the line spacing (adjacent lines touch), one shot per recorded point (13.4 Hz at
#:   0.5792 µm / 0.0744 s = 7.8 µm/s), 5 % flicker, and 0.2 s, typical of a conventional (not
#:   low-dispersion) ablation cell, which the slow scan suggests.
#: * ``dwell_s``: the time per point of the ``time_s`` axis (0.0744 s on average).
#: * ``counts_per_unit``: counts per cps, i.e. each isotope's dwell: 5, 3, 3, 5 ms (Na23,
#:   Mg24, Al27, K39), 7 ms for the others. The ``.xl`` headers hold only the isotope names;
#:   the dwell follows from the count quantisation, the smallest cps step being 1/dwell (200,
#:   333.3, 142.9 cps). K39 and Cr52 never reach zero; their steps (about 203 cps near 2.8e5
#:   cps, 142.9 cps) fit 5 and 7 ms after the detector's dead-time correction. The dwells add
#:   up to 65 ms of the 74.4 ms sweep.
CLINKER_SETTINGS = AblationSettings(
    pixel_um=(7.0, 0.5792),
    spot_um=7.0,
    overlap=1.0 - 0.5792 / 7.0,
    flicker=0.05,
    washout_s=0.2,
    dwell_s=0.0744,
    counts_per_unit=(0.005, 0.003, 0.003, 0.005) + (0.007,) * 7,
)

_D = AblationSettings()


def _number(name: str, value: Any, *, strict: bool = True, below_one: bool = False) -> float:
    """A finite number > 0 (``strict``) or >= 0, below 1 with ``below_one``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0) or (below_one and v >= 1):
        need = "in [0, 1)" if below_one else f"{'>' if strict else '>='} 0"
        raise InvalidInputError(f"{name} must be a finite number {need}, got {value!r}.")
    return v


def _pixel(pixel_um: Any) -> tuple[float, float]:
    arr = np.atleast_1d(np.asarray(pixel_um, dtype=object))
    if arr.ndim != 1 or arr.size not in (1, 2):
        raise InvalidInputError(f"pixel_um must be one size or a (y, x) pair, got {pixel_um!r}.")
    return (_number("pixel_um", arr[0]), _number("pixel_um", arr[-1]))


def _per_image(name: str, value: Any, n: int | None = None) -> np.ndarray:
    """Positive values, one or one per image, as an array of ``n`` (or as given)."""
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    n = arr.size if n is None else n
    if arr.ndim != 1 or arr.size not in (1, n):
        raise InvalidInputError(
            f"{name} must be one value or one per image ({n}), got {arr.size} values."
        )
    return np.broadcast_to(np.array([_number(name, v) for v in arr]), (n,)).copy()


def _check(n: int, pixel_um: Any, spot_um: Any, overlap: Any, washout_s: Any, dwell_s: Any) -> None:
    """Check the sampling and washout parameters for a stack of ``n`` images."""
    _sampling_kernels(pixel_um, spot_um, overlap)
    _number("washout_s", washout_s, strict=False)
    _per_image("dwell_s", dwell_s, n)


def _non_negative(stack: np.ndarray, name: str) -> None:
    if (stack < 0).any():
        raise InvalidInputError(
            f"{name}: {int((stack < 0).sum())} negative values; an ablation model needs "
            "non-negative concentrations or intensities (clip or offset the image first)."
        )


def _gauss_kernel(sigma_px: float) -> np.ndarray:
    """A Gaussian integrated over each pixel, to +-4 sigma (odd length, centred)."""
    from scipy.special import erf

    r = max(int(np.ceil(4.0 * sigma_px)), 1)
    k = np.diff(0.5 * erf((np.arange(-r, r + 2) - 0.5) / (np.sqrt(2.0) * sigma_px)))
    return k / k.sum()


def _box_kernel(width_px: float) -> np.ndarray:
    """A centred box ``width_px`` pixels wide, integrated over each pixel."""
    if width_px <= 1.0:
        return np.ones(1)
    k = np.arange(-np.ceil(width_px / 2 - 0.5), np.ceil(width_px / 2 - 0.5) + 1)
    w = np.clip(np.minimum(k + 0.5, width_px / 2) - np.maximum(k - 0.5, -width_px / 2), 0, None)
    return w / w.sum()


def _washout_kernel(tau_px: float) -> np.ndarray:
    """The causal washout response, zero left of the centre, cut at ``_WASHOUT_TAIL``."""
    if tau_px <= 0.0:
        return np.ones(1)
    a = np.exp(-1.0 / tau_px)
    n = max(int(np.ceil(tau_px * np.log(1.0 / _WASHOUT_TAIL))), 1)
    k = np.concatenate([np.zeros(n), (1.0 - a) * a ** np.arange(n + 1)])
    return k / k.sum()


def _sampling_kernels(pixel_um: Any, spot_um: Any, overlap: Any) -> tuple[np.ndarray, np.ndarray]:
    (py, px), spot = _pixel(pixel_um), _number("spot_um", spot_um)
    sigma = spot / FWHM_PER_SIGMA
    box = _box_kernel(spot * (1.0 - _number("overlap", overlap, strict=False, below_one=True)) / px)
    return _gauss_kernel(sigma / py), np.convolve(_gauss_kernel(sigma / px), box)


def laser_sampling(
    images: Any,
    *,
    pixel_um: Pixel = _D.pixel_um,
    spot_um: float = _D.spot_um,
    overlap: float = _D.overlap,
) -> np.ndarray:
    """Step 1: the material ablated by the laser at each pixel.

    The spot profile is a Gaussian of full width at half maximum ``spot_um`` (the usual model
    of a homogenised excimer beam imaged onto the sample), integrated over each pixel. The
    laser fires at positions ``spot_um * (1 - overlap)`` apart along x; as the shot positions
    are unknown relative to the pixels, the expected sampling is the spot convolved with a box
    of that width along x (the motion term of the scan). The edges are mirrored, so the total
    is kept up to edge effects. Returns float32 of the shape of ``images``.

    Parameters
    ----------
    images : array_like
        One image ``(H, W)`` or a stack ``(n, H, W)``, non-negative.
    pixel_um, spot_um, overlap
        See :class:`AblationSettings`.
    """
    from scipy.ndimage import convolve1d

    stack, single = as_image_stack(images)
    _non_negative(stack, "images")
    ky, kx = _sampling_kernels(pixel_um, spot_um, overlap)
    out = convolve1d(stack.astype(np.float64), ky, axis=-2, mode="reflect")
    out = convolve1d(out, kx, axis=-1, mode="reflect")
    return restore_shape(out.astype(np.float32), single)


def flicker_noise(images: Any, *, flicker: float = _D.flicker, seed: Seed = 0) -> np.ndarray:
    """Step 2: multiplicative pulse-to-pulse fluctuation of the ablated mass.

    One log-normal factor per pixel, of mean 1 and relative standard deviation ``flicker``
    (non-negative by construction). The images of a stack are the isotopes of one acquisition,
    ablated by the same pulses: they all get the **same** factor at a pixel. Returns float32
    of the shape of ``images``.

    Parameters
    ----------
    images : array_like
        One image ``(H, W)`` or a stack ``(n, H, W)``.
    flicker : float
        Relative standard deviation, >= 0 (0 returns a copy).
    seed : int, numpy.random.Generator or None
        Random seed or generator.
    """
    stack, single = as_image_stack(images)
    f = _number("flicker", flicker, strict=False)
    if f == 0.0:
        return restore_shape(stack, single)
    s2 = np.log1p(f * f)
    field = np.exp(
        np.random.default_rng(seed).normal(-0.5 * s2, np.sqrt(s2), size=stack.shape[-2:])
    )
    return restore_shape((stack * field).astype(np.float32), single)


def washout(
    images: Any, *, washout_s: float = _D.washout_s, dwell_s: PerImage = _D.dwell_s
) -> np.ndarray:
    """Step 3: aerosol washout, a causal exponential response along the scan direction x.

    The material ablated at a pixel reaches the detector spread over that pixel and the
    following ones of its line: pixel ``k >= 0`` to the right receives
    ``exp(-k t / tau) - exp(-(k + 1) t / tau)`` of it (``t = dwell_s``, ``tau = washout_s``).
    These fractions add up to 1, so the total is kept except for the tail leaving the right
    edge; the line is taken to continue to the left with its first value. Returns float32 of
    the shape of ``images``.

    Parameters
    ----------
    images : array_like
        One image ``(H, W)`` or a stack ``(n, H, W)``.
    washout_s, dwell_s
        See :class:`AblationSettings`; ``washout_s = 0`` returns a copy.
    """
    from scipy.signal import lfilter

    stack, single = as_image_stack(images)
    tau = _number("washout_s", washout_s, strict=False)
    dwell = _per_image("dwell_s", dwell_s, len(stack))
    out = stack.astype(np.float64)
    for i, t in enumerate(dwell if tau > 0 else ()):
        a = np.exp(-t / tau)
        out[i] = lfilter([1.0 - a], [1.0, -a], out[i], axis=-1, zi=a * out[i][:, :1])[0]
    return restore_shape(out.astype(np.float32), single)


def integrate_dwell(
    images: Any, *, counts_per_unit: PerImage = _D.counts_per_unit, scale: int = 1
) -> np.ndarray:
    """Step 4: integration onto the output grid, in expected counts.

    Each ``scale x scale`` block of the fine grid is averaged into one output pixel (the
    block's centre is the pixel's centre); the block means times ``counts_per_unit`` are the
    expected counts of the output pixels, returned as float32 ``(H / scale, W / scale)`` or
    the stack of those.

    Parameters
    ----------
    images : array_like
        One image ``(H, W)`` or a stack ``(n, H, W)`` on the fine grid.
    counts_per_unit
        See :class:`AblationSettings`.
    scale : int
        Fine pixels per output pixel along each axis; must divide ``H`` and ``W``.
    """
    stack, single = as_image_stack(images)
    s = check_scale(scale, stack.shape[-2:])
    cpu = _per_image("counts_per_unit", counts_per_unit, len(stack))
    n, h, w = stack.shape
    blocks = stack.astype(np.float64).reshape(n, h // s, s, w // s, s).mean(axis=(2, 4))
    return restore_shape((blocks * cpu[:, None, None]).astype(np.float32), single)


def poisson_counts(
    counts: Any, *, counts_per_unit: PerImage = _D.counts_per_unit, seed: Seed = 0
) -> np.ndarray:
    """Step 5: Poisson counting noise, returned in the input's units.

    Returns float32 ``Poisson(counts) / counts_per_unit`` of the shape of ``counts``, whose
    variance is ``mean / counts_per_unit`` in the input's units.

    Parameters
    ----------
    counts : array_like
        Expected counts (non-negative), one image ``(H, W)`` or a stack ``(n, H, W)``.
    counts_per_unit
        The factor of :func:`integrate_dwell`, one value or one per image.
    seed : int, numpy.random.Generator or None
        Random seed or generator.
    """
    stack, single = as_image_stack(counts, name="counts", min_size=1)
    _non_negative(stack, "counts")
    cpu = _per_image("counts_per_unit", counts_per_unit, len(stack))
    drawn = np.random.default_rng(seed).poisson(stack.astype(np.float64))
    return restore_shape((drawn / cpu[:, None, None]).astype(np.float32), single)


def virtual_ablation(
    image: Any,
    *,
    pixel_um: Pixel = _D.pixel_um,
    spot_um: float = _D.spot_um,
    overlap: float = _D.overlap,
    flicker: float = _D.flicker,
    washout_s: float = _D.washout_s,
    dwell_s: PerImage = _D.dwell_s,
    counts_per_unit: PerImage = _D.counts_per_unit,
    scale: int = 1,
    seed: Seed = 0,
) -> np.ndarray:
    """A virtual LA-ICP-MS acquisition of a clean image: the five steps in order.

    :func:`laser_sampling`, :func:`flicker_noise`, :func:`washout`, :func:`integrate_dwell`
    and :func:`poisson_counts`; :meth:`AblationSettings.acquire` calls it with settings.

    Parameters
    ----------
    image : array_like
        Clean non-negative image ``(H, W)``, or stack ``(n, H, W)`` of the isotopes of one
        acquisition (same pulses: same flicker), on the fine grid.
    pixel_um, spot_um, overlap, flicker, washout_s, dwell_s, counts_per_unit
        See :class:`AblationSettings` (defaults and their sources); ``dwell_s`` and
        ``counts_per_unit`` may hold one value per image of a stack.
    scale : int
        Output grid coarser by this factor along each axis; must divide both sides.
    seed : int, sequence of int, numpy.random.Generator or None
        Seed of the flicker and Poisson draws; the same seed gives the same result.

    Returns
    -------
    numpy.ndarray
        float32 in the input's units, ``(H / scale, W / scale)`` or the stack of those,
        whose expectation is :func:`ablation_expectation` of the same image.

    Raises
    ------
    InvalidInputError
        Before any work: an empty, NaN, negative or wrongly shaped image, a scale that does
        not divide it, a parameter out of range (see :class:`AblationSettings`), or per-image
        values whose number differs from the stack's.
    """
    stack, single = as_image_stack(image, name="image")
    _non_negative(stack, "image")
    check_scale(scale, stack.shape[-2:])
    _check(len(stack), pixel_um, spot_um, overlap, washout_s, dwell_s)
    _number("flicker", flicker, strict=False)
    _per_image("counts_per_unit", counts_per_unit, len(stack))
    flicker_rng, poisson_rng = np.random.default_rng(seed).spawn(2)

    x = laser_sampling(stack, pixel_um=pixel_um, spot_um=spot_um, overlap=overlap)
    x = flicker_noise(x, flicker=flicker, seed=flicker_rng)
    x = washout(x, washout_s=washout_s, dwell_s=dwell_s)
    x = integrate_dwell(x, counts_per_unit=counts_per_unit, scale=scale)
    x = poisson_counts(x, counts_per_unit=counts_per_unit, seed=poisson_rng)
    return restore_shape(x, single)


def ablation_expectation(
    image: Any,
    *,
    pixel_um: Pixel = _D.pixel_um,
    spot_um: float = _D.spot_um,
    overlap: float = _D.overlap,
    washout_s: float = _D.washout_s,
    dwell_s: PerImage = _D.dwell_s,
    scale: int = 1,
) -> np.ndarray:
    """The expectation of :func:`virtual_ablation`: the image sampled by the laser, washed
    out and area-averaged onto the output grid, without flicker or counting noise.

    The parameters are those of :func:`virtual_ablation`; the result is float32 in the
    input's units, on the output grid.
    """
    stack, single = as_image_stack(image, name="image")
    _non_negative(stack, "image")
    check_scale(scale, stack.shape[-2:])
    _check(len(stack), pixel_um, spot_um, overlap, washout_s, dwell_s)
    x = laser_sampling(stack, pixel_um=pixel_um, spot_um=spot_um, overlap=overlap)
    x = washout(x, washout_s=washout_s, dwell_s=dwell_s)
    return restore_shape(integrate_dwell(x, counts_per_unit=1.0, scale=scale), single)


def ablation_psf(
    pixel_um: Pixel,
    spot_um: float,
    overlap: float,
    washout_s: float,
    dwell_s: PerImage,
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """The point-spread function of laser sampling and washout on the fine grid.

    The Gaussian spot and shot-spacing box of :func:`laser_sampling` convolved with the causal
    washout of :func:`washout` (cut where its tail falls below 1e-4 of the total). The centre
    pixel ``(ky // 2, kx // 2)`` is the origin and the washout lies right of it, so
    ``scipy.signal.fftconvolve(image, psf, mode="same")`` reproduces steps 1 and 3 away from
    the edges.

    Parameters
    ----------
    pixel_um, spot_um, overlap, washout_s
        See :class:`AblationSettings`.
    dwell_s : float or tuple of float
        Time per pixel along x; a tuple gives one PSF per value.
    size : int, (int, int) or None
        Odd side(s) ``(ky, kx)``: the kernel is cropped or zero-padded around its centre and
        normalised again; ``None`` for a size that holds the whole kernel.

    Returns
    -------
    numpy.ndarray
        float64 ``(ky, kx)`` summing to 1, or ``(len(dwell_s), ky, kx)`` for a tuple.
    """
    ky, kx = _sampling_kernels(pixel_um, spot_um, overlap)
    tau = _number("washout_s", washout_s, strict=False)
    kernels = [np.convolve(kx, _washout_kernel(tau / t)) for t in _per_image("dwell_s", dwell_s)]
    shape = (len(ky), max(len(k) for k in kernels))
    if size is not None:
        sides = np.atleast_1d(np.asarray(size))
        if sides.size not in (1, 2) or any(int(v) != v or v < 1 or v % 2 == 0 for v in sides):
            raise InvalidInputError(f"size must be one or two odd positive integers, got {size!r}.")
        shape = (int(sides[0]), int(sides[-1]))
    psfs = np.stack([_fit(np.outer(ky, k), shape) for k in kernels])
    return psfs[0] if np.ndim(dwell_s) == 0 else psfs


def _fit(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or zero-pad an odd-sided kernel around its centre to ``shape``; sum 1."""
    dy, dx = (shape[0] - kernel.shape[0]) // 2, (shape[1] - kernel.shape[1]) // 2
    k = kernel[
        max(-dy, 0) : kernel.shape[0] - max(-dy, 0), max(-dx, 0) : kernel.shape[1] - max(-dx, 0)
    ]
    k = np.pad(k, ((max(dy, 0),) * 2, (max(dx, 0),) * 2))
    return k / k.sum()
