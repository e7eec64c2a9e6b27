"""Classical denoisers for EDS spectrum images, to compare the network against.

Every function takes a HyperSpy/exspy spectrum image and returns a **new** signal of the same
class, with the same axes and metadata, float32 data, a title suffix and the method recorded in
``metadata.Signal.Denoising``; the input is never modified. Only the channels of the processing
energy window (0.2 keV up to the lower of the beam energy and 20 keV, see
:func:`n2s_eds.preprocess.processing_window`) are denoised; the zero peak and the channels above
the beam energy are returned unchanged.

* :func:`gaussian`: spatial Gaussian smoothing of each energy channel.
* :func:`pca`: HyperSpy's Poisson-normalised SVD, truncated at the scree-plot elbow.
* :func:`pca_gaussian`: :func:`pca` followed by :func:`gaussian`.
* :func:`guided_filter`: the guided filter (He, Sun & Tang, 2013) of each energy channel, steered
  by the HAADF/BSE image of the scan: the classical counterpart of guided (pansharpened)
  denoising.
* :func:`bm3d`, :func:`bm4d`: BM3D per energy channel or BM4D on the whole cube, on
  Anscombe-transformed counts with the closed-form unbiased inverse (optional extra,
  non-commercial licence).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .exceptions import InvalidInputError
from .io import match_guide, result_signal
from .preprocess import EnergyWindow, normalise_guide, processing_window

__all__ = [
    "gaussian",
    "pca",
    "pca_gaussian",
    "guided_filter",
    "bm3d",
    "bm4d",
    "anscombe",
    "inverse_anscombe",
]

_EXTRA_MESSAGE = (
    'the {name} baseline needs the optional `{name}` package: pip install "n2s-eds[bm3d]". '
    "Note that bm3d and bm4d are free for non-commercial use only (see their licence)."
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_signal(signal: Any) -> None:
    axes = getattr(signal, "axes_manager", None)
    if axes is None or axes.signal_dimension != 1:
        raise InvalidInputError(
            "expected a HyperSpy/exspy spectrum image (one signal axis: energy), got "
            f"{type(signal).__name__}. Load it with hyperspy.api.load and pick the EDS cube."
        )
    if axes.navigation_dimension < 1:
        raise InvalidInputError(
            "expected a spectrum image with navigation axes (Y, X), got a single spectrum."
        )


def _window_data(signal: Any) -> tuple[np.ndarray, EnergyWindow]:
    """All data as float32 numpy (computed when lazy) and the processing window."""
    _check_signal(signal)
    window = processing_window(signal)
    data = signal.data
    if hasattr(data, "compute"):
        data = data.compute()
    return np.array(data, dtype=np.float32, copy=True), window


def _gaussian_array(data: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sig = (float(sigma),) * (data.ndim - 1) + (0.0,)
    return gaussian_filter(data, sigma=sig, mode="reflect")


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise InvalidInputError(f"sigma must be a non-negative number of pixels, got {sigma}.")
    return sigma


def _pca_array(
    signal: Any, data: np.ndarray, window: EnergyWindow, n_components: int | None
) -> tuple[np.ndarray, int]:
    """PCA model of the window channels of ``data`` and the number of components used."""
    sub = signal.isig[window.start : window.stop]
    sub = sub._deepcopy_with_new_data(np.asarray(data[..., window.slice], dtype=np.float64))
    if getattr(sub, "_lazy", False):
        sub.compute(show_progressbar=False)
    if np.any(sub.data < 0):
        raise InvalidInputError(
            "PCA with Poisson noise normalisation needs non-negative counts; the window "
            "holds negative values."
        )
    sub.decomposition(
        normalize_poissonian_noise=True, algorithm="SVD", print_info=False, copy=False
    )
    if n_components is None:
        k = int(sub.estimate_elbow_position()) + 1
    else:
        k = int(n_components)
        if k < 1:
            raise InvalidInputError(f"n_components must be >= 1, got {n_components}.")
    model = sub.get_decomposition_model(k)
    return np.asarray(model.data, dtype=np.float32), k


def anscombe(counts: np.ndarray) -> np.ndarray:
    """Anscombe transform ``2 sqrt(x + 3/8)``: Poisson counts to unit-variance noise."""
    return 2.0 * np.sqrt(np.asarray(counts, dtype=np.float64) + 0.375)


def inverse_anscombe(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse Anscombe transform.

    Makitalo & Foi (IEEE TIP 20, 2011; 22, 2013):
    ``d^2/4 + sqrt(3/2)/(4 d) - 11/(8 d^2) + 5 sqrt(3/2)/(8 d^3) - 1/8``, which is 0 at
    ``d = 2 sqrt(3/8)`` (the transform of 0); values below that map to 0.
    """
    d = np.asarray(d, dtype=np.float64)
    a = np.sqrt(1.5)
    safe = np.maximum(d, 2.0 * np.sqrt(0.375))
    out = 0.25 * safe**2 + 0.25 * a / safe - 11.0 / 8.0 / safe**2 + 0.625 * a / safe**3 - 0.125
    return np.where(d > 2.0 * np.sqrt(0.375), np.maximum(out, 0.0), 0.0)


def _import_extra(name: str) -> Any:
    try:
        import importlib

        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(_EXTRA_MESSAGE.format(name=name)) from exc


# --------------------------------------------------------------------------------------------
# Public baselines
# --------------------------------------------------------------------------------------------


def gaussian(signal: Any, sigma: float = 1.0) -> Any:
    """Spatial Gaussian smoothing of each energy channel.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image (eager or lazy); not modified.
    sigma : float
        Standard deviation in pixels along each navigation axis (0 along energy); the image
        edges are reflected.

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new signal of the same class, float32.
    """
    sigma = _check_sigma(sigma)
    data, window = _window_data(signal)
    data[..., window.slice] = _gaussian_array(data[..., window.slice], sigma)
    params = {"sigma": sigma, "window_kev": [window.low_kev, window.high_kev]}
    return result_signal(signal, data, "gaussian", params, f"Gaussian sigma={sigma:g}")


def pca(signal: Any, n_components: int | None = None) -> Any:
    """Low-rank model from HyperSpy's Poisson-normalised PCA.

    The processing-window channels are decomposed with
    ``decomposition(normalize_poissonian_noise=True, algorithm="SVD")`` on a copy, and
    rebuilt with ``get_decomposition_model(k)``, ``k`` being one more than the scree-plot
    elbow index of ``estimate_elbow_position()`` (the number of components before the elbow,
    as HyperSpy counts them) unless ``n_components`` is given.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image of non-negative counts; not modified.
    n_components : int or None
        Number of components; ``None`` for the elbow.

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new float32 signal; ``metadata.Signal.Denoising.parameters.n_components`` holds
        the ``k`` used.
    """
    data, window = _window_data(signal)
    model, k = _pca_array(signal, data, window, n_components)
    data[..., window.slice] = model
    params = {"n_components": k, "elbow": n_components is None}
    params["window_kev"] = [window.low_kev, window.high_kev]
    return result_signal(signal, data, "pca", params, f"PCA k={k}")


def pca_gaussian(signal: Any, n_components: int | None = None, sigma: float = 1.0) -> Any:
    """:func:`pca` followed by :func:`gaussian` smoothing of its model.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image of non-negative counts; not modified.
    n_components : int or None
        Number of PCA components; ``None`` for the scree-plot elbow.
    sigma : float
        Gaussian standard deviation in pixels.

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new float32 signal.
    """
    sigma = _check_sigma(sigma)
    data, window = _window_data(signal)
    model, k = _pca_array(signal, data, window, n_components)
    data[..., window.slice] = _gaussian_array(model, sigma)
    params = {"n_components": k, "elbow": n_components is None, "sigma": sigma}
    params["window_kev"] = [window.low_kev, window.high_kev]
    return result_signal(signal, data, "pca_gaussian", params, f"PCA k={k} + Gaussian {sigma:g}")


def _guided_filter_array(
    data: np.ndarray, guide: np.ndarray, radius: int, eps: float
) -> np.ndarray:
    """Guided filter of every channel of ``data`` (Y, X, E) by the 2-D ``guide`` (Y, X)."""
    from scipy.ndimage import uniform_filter

    size = 2 * radius + 1

    def box(a: np.ndarray) -> np.ndarray:
        sizes = (size, size) + (1,) * (a.ndim - 2)
        return uniform_filter(a, size=sizes, mode="reflect")

    g = guide.astype(np.float64)
    mean_g = box(g)
    var_g = box(g * g) - mean_g**2
    out = np.empty_like(data)
    # energy in blocks: the filter is linear in the data for a fixed guide, channel by channel
    for start in range(0, data.shape[-1], 256):
        p = data[..., start : start + 256].astype(np.float64)
        mean_p = box(p)
        cov = box(p * g[..., None]) - mean_g[..., None] * mean_p
        a = cov / (var_g[..., None] + eps)
        b = mean_p - a * mean_g[..., None]
        out[..., start : start + 256] = box(a) * g[..., None] + box(b)
    return out


def guided_filter(signal: Any, guide: Any, radius: int = 2, eps: float = 0.01) -> Any:
    """Guided filter of each energy channel, steered by the scan's HAADF/BSE image.

    Each channel ``p`` is modelled in every ``(2 radius + 1)``-pixel square window as a linear
    function ``a g + b`` of the guide ``g``, fitted by ridge regression (penalty ``eps``), and
    the window fits are averaged (He, Sun & Tang, IEEE TPAMI 35, 1397, 2013). The filter is
    linear in the counts for a fixed guide, so filtering every channel and then summing an
    element window equals filtering the element map. With a large ``eps`` it becomes a box
    filter; with a small one it copies guide edges into the channels.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image (eager or lazy); not modified.
    guide : hyperspy.signals.Signal2D or numpy.ndarray
        The HAADF/BSE image of the same scan (checked and resampled as by
        :func:`n2s_eds.io.match_guide`); it is robustly normalised (median 0, 10-90 %
        percentile spread 1), so ``eps`` is in units of that spread squared.
    radius : int
        Window radius in pixels (at least 1).
    eps : float
        Ridge penalty (positive).

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new signal of the same class, float32.
    """
    if int(radius) != radius or radius < 1:
        raise InvalidInputError(f"radius must be an integer >= 1 pixel, got {radius!r}.")
    if not float(eps) > 0:
        raise InvalidInputError(f"eps must be positive, got {eps!r}.")
    _check_signal(signal)
    g = normalise_guide(match_guide(guide, signal))
    data, window = _window_data(signal)
    data[..., window.slice] = _guided_filter_array(data[..., window.slice], g, int(radius), eps)
    params = {
        "radius": int(radius),
        "eps": float(eps),
        "window_kev": [window.low_kev, window.high_kev],
    }
    return result_signal(
        signal, data, "guided_filter", params, f"guided filter r={int(radius)} eps={eps:g}"
    )


def _anscombe_denoise(
    signal: Any,
    name: str,
    run: Callable[[Any, np.ndarray, float], np.ndarray],
    sigma: float,
) -> Any:
    _check_signal(signal)
    if signal.axes_manager.navigation_dimension != 2:
        raise InvalidInputError(f"{name} needs a spectrum image with two navigation axes (Y, X).")
    module = _import_extra(name)
    sigma = float(sigma)
    if not sigma > 0:
        raise InvalidInputError(f"sigma must be positive, got {sigma}.")
    data, window = _window_data(signal)
    if np.any(data[..., window.slice] < 0):
        raise InvalidInputError(f"{name} on Anscombe-transformed data needs counts >= 0.")
    t0 = time.perf_counter()
    z = anscombe(data[..., window.slice])
    data[..., window.slice] = inverse_anscombe(run(module, z, sigma)).astype(np.float32)
    params = {
        "sigma_anscombe": sigma,
        "variance_stabilisation": "anscombe, closed-form unbiased inverse",
        "seconds": round(time.perf_counter() - t0, 3),
        "window_kev": [window.low_kev, window.high_kev],
    }
    return result_signal(signal, data, name, params, f"{name.upper()} Anscombe")


def bm3d(signal: Any, sigma: float = 1.0) -> Any:
    """BM3D on each energy channel of the Anscombe-transformed counts.

    Each channel image of the processing window is transformed with ``2 sqrt(x + 3/8)``,
    denoised by the ``bm3d`` package with noise standard deviation ``sigma`` (1 for Poisson
    counts) and transformed back with the closed-form unbiased inverse Anscombe
    (:func:`inverse_anscombe`). Slow: minutes for a 64 x 64 x 1000 cube.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image of counts with two navigation axes; not modified.
    sigma : float
        Noise standard deviation in the Anscombe domain.

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new float32 signal.

    Raises
    ------
    ImportError
        When the optional ``bm3d`` package (non-commercial licence) is not installed.
    """

    def run(module: Any, z: np.ndarray, s: float) -> np.ndarray:
        out = np.empty_like(z)
        for c in range(z.shape[-1]):
            out[..., c] = module.bm3d(np.ascontiguousarray(z[..., c]), sigma_psd=s)
        return out

    return _anscombe_denoise(signal, "bm3d", run, sigma)


def _in_energy_slabs(
    z: np.ndarray,
    denoise: Callable[[np.ndarray], np.ndarray],
    max_voxels: int,
    overlap: int = 32,
) -> np.ndarray:
    """Apply ``denoise`` to overlapping energy slabs of ``z`` of at most ``max_voxels``.

    The slabs overlap by ``overlap`` channels and are blended with linear ramps, so no seam
    is left. A cube that fits is passed whole, so the result is then exactly ``denoise(z)``.
    """
    ny, nx, ne = z.shape
    length = max(4 * overlap, int(max_voxels) // max(ny * nx, 1))
    if length >= ne:
        return np.asarray(denoise(z)).reshape(z.shape)
    starts = list(range(0, ne - length, length - overlap)) + [ne - length]
    ramp = np.linspace(0.0, 1.0, overlap + 2)[1:-1]
    out = np.zeros(z.shape, np.float64)
    weight = np.zeros(ne, np.float64)
    for start in starts:
        stop = start + length
        piece = np.asarray(denoise(np.ascontiguousarray(z[..., start:stop])))
        w = np.ones(length)
        if start > 0:
            w[:overlap] = ramp
        if stop < ne:
            w[-overlap:] = ramp[::-1]
        out[..., start:stop] += piece.reshape(ny, nx, length) * w
        weight[start:stop] += w
    return (out / weight).astype(z.dtype, copy=False)


def bm4d(signal: Any, sigma: float = 1.0, max_voxels: int = 2**23) -> Any:
    """BM4D on the whole Anscombe-transformed cube.

    The processing-window cube ``(Y, X, E)`` is transformed with ``2 sqrt(x + 3/8)``,
    denoised by the ``bm4d`` package with noise standard deviation ``sigma`` and
    transformed back with the closed-form unbiased inverse Anscombe
    (:func:`inverse_anscombe`). Slow: minutes for a 64 x 64 x 1000 cube.

    The ``bm4d`` package needs roughly 1 kB of memory per voxel (a 128 x 128 x 1980 cube
    did not fit in 24 GiB), so a cube of more than ``max_voxels`` voxels is denoised in
    energy slabs of that size that overlap by 32 channels and are blended linearly.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image of counts with two navigation axes; not modified.
    sigma : float
        Noise standard deviation in the Anscombe domain.
    max_voxels : int
        Largest block handed to ``bm4d`` at once (default 2**23, about 8 GB).

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new float32 signal.

    Raises
    ------
    ImportError
        When the optional ``bm4d`` package (non-commercial licence) is not installed.
    """

    if int(max_voxels) < 1:
        raise InvalidInputError(f"max_voxels must be positive, got {max_voxels}.")

    def run(module: Any, z: np.ndarray, s: float) -> np.ndarray:
        def one(block: np.ndarray) -> np.ndarray:
            return np.asarray(module.bm4d(np.ascontiguousarray(block), sigma_psd=s))

        return _in_energy_slabs(z, one, max_voxels)

    return _anscombe_denoise(signal, "bm4d", run, sigma)
