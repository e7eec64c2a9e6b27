"""Classical baselines for 2D elemental images: up-sampling, smoothing, deconvolution, BM3D.

Each function takes one image ``(H, W)`` or a stack ``(n, H, W)`` and returns the same rank,
float32, never modifying its input; with ``scale > 1`` the input is on the coarse grid and
the result on the fine grid, ``scale`` times larger along each axis.

* :func:`upsample`: cubic-spline ("bicubic") or Lanczos-3 interpolation.
* :func:`gaussian`: Gaussian smoothing (after bicubic up-sampling).
* :func:`richardson_lucy`: Richardson-Lucy deconvolution with a known point-spread function,
  such as :func:`~n2s_eds.imaging.ablation.ablation_psf`.
* :func:`bm3d_image`: BM3D (optional ``bm3d`` package, free for non-commercial use only).

Grid alignment matches the area-averaged down-sampling of
:func:`~n2s_eds.imaging.ablation.integrate_dwell`: the centre of coarse pixel ``i`` lies at
the centre of its ``scale x scale`` block, fine coordinate ``i * scale + (scale - 1) / 2``, so
up-sampling shifts nothing.

:data:`BASELINES` maps names to callables with one signature,
``f(images, *, scale, settings, param=None)`` (``settings`` an
:class:`~n2s_eds.imaging.ablation.AblationSettings`, ``param`` the baseline's parameter or
``None`` for its default), so that a benchmark can run every baseline the same way;
:func:`tune_baseline` picks ``param`` on training pairs by mean PSNR and returns a
:class:`TunedBaseline` to call on test images.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baselines import anscombe, inverse_anscombe
from ..exceptions import InvalidInputError
from ..metrics.reference import psnr
from .ablation import AblationSettings
from .validation import as_image_stack, check_scale, restore_shape

__all__ = [
    "BASELINES",
    "PARAM_GRIDS",
    "TunedBaseline",
    "bm3d_image",
    "gaussian",
    "richardson_lucy",
    "tune_baseline",
    "upsample",
]

_LANCZOS_A = 3
#: Smallest side BM3D's block matching takes; smaller images are mirror-padded to it.
BM3D_MIN_SIDE = 16
_BM3D_ADVICE = (
    'bm3d_image needs the optional `bm3d` package: pip install "n2s-eds[bm3d]" (free for '
    "non-commercial use only, see its licence)."
)


def _load_bm3d() -> Any:
    try:
        return importlib.import_module("bm3d")
    except ImportError as exc:
        raise ImportError(_BM3D_ADVICE) from exc


def _non_negative_number(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored about the outer pixel edges (``-1 -> 0``, ``n -> n - 1``)."""
    index = np.mod(index, 2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _lanczos_matrix(n: int, scale: int) -> np.ndarray:
    """The ``(n * scale, n)`` Lanczos-3 interpolation matrix with block-centre alignment."""
    centre = (np.arange(n * scale) + 0.5) / scale - 0.5  # fine pixel centres, coarse units
    base = np.floor(centre).astype(int)
    taps = base[:, None] + np.arange(1 - _LANCZOS_A, _LANCZOS_A + 1)[None, :]
    d = centre[:, None] - taps
    w = np.sinc(d) * np.sinc(d / _LANCZOS_A) * (np.abs(d) < _LANCZOS_A)
    w /= w.sum(axis=1, keepdims=True)
    m = np.zeros((n * scale, n))
    np.add.at(
        m, (np.repeat(np.arange(n * scale), taps.shape[1]), _reflect(taps, n).ravel()), w.ravel()
    )
    return m


def _upsample_stack(stack: np.ndarray, scale: int, method: str) -> np.ndarray:
    if scale == 1:
        return stack.astype(np.float64)
    if method == "bicubic":
        from scipy.ndimage import zoom

        return zoom(
            stack.astype(np.float64), (1, scale, scale), order=3, mode="reflect", grid_mode=True
        )
    my = _lanczos_matrix(stack.shape[-2], scale)
    mx = _lanczos_matrix(stack.shape[-1], scale)
    return np.einsum("ij,njk,lk->nil", my, stack.astype(np.float64), mx)


def upsample(images: Any, scale: int, method: str = "bicubic") -> np.ndarray:
    """Interpolate coarse images onto the fine grid, ``scale`` times finer along each axis.

    ``"bicubic"`` is cubic B-spline interpolation (``scipy.ndimage.zoom``, ``order=3``,
    ``grid_mode=True``); ``"lanczos"`` is a separable Lanczos-3 resampler (windowed sinc over
    six coarse pixels, weights normalised to sum 1). Both use the block-centre alignment of the
    module docstring and mirror the image at its outer pixel edges. ``scale = 1`` returns a
    float32 copy.

    Parameters
    ----------
    images : array_like
        One coarse image ``(h, w)`` or a stack ``(n, h, w)``.
    scale : int
        Up-sampling factor (1, 2, 4, ...).
    method : {"bicubic", "lanczos"}
        Interpolation kernel.

    Returns
    -------
    numpy.ndarray
        float32 ``(h * scale, w * scale)`` or the stack of those.
    """
    if method not in ("bicubic", "lanczos"):
        raise InvalidInputError(f'method must be "bicubic" or "lanczos", got {method!r}.')
    s = check_scale(scale)
    stack, single = as_image_stack(images)
    return restore_shape(_upsample_stack(stack, s, method).astype(np.float32), single)


def gaussian(images: Any, sigma: float, scale: int = 1) -> np.ndarray:
    """Gaussian smoothing, after bicubic up-sampling when ``scale > 1``.

    Parameters
    ----------
    images : array_like
        One image ``(h, w)`` or a stack ``(n, h, w)``.
    sigma : float
        Standard deviation in pixels of the output (fine) grid, >= 0; the edges are mirrored.
    scale : int
        Up-sampling factor applied first (see :func:`upsample`).

    Returns
    -------
    numpy.ndarray
        float32 ``(h * scale, w * scale)`` or the stack of those.
    """
    from scipy.ndimage import gaussian_filter

    sig = _non_negative_number("sigma", sigma)
    s = check_scale(scale)
    stack, single = as_image_stack(images)
    up = _upsample_stack(stack, s, "bicubic")
    out = gaussian_filter(up, sigma=(0.0, sig, sig), mode="reflect") if sig > 0 else up
    return restore_shape(out.astype(np.float32), single)


def _block_kernel(scale: int) -> np.ndarray:
    """The ``scale x scale`` block average as an odd-sided kernel centred on a fine pixel."""
    if scale == 1:
        return np.ones((1, 1))
    k = np.ones(scale + 1 - scale % 2)
    if scale % 2 == 0:
        k[[0, -1]] = 0.5
    k /= k.sum()
    return np.outer(k, k)


def _check_psf(psf: Any, n: int) -> np.ndarray:
    """One normalised PSF per image, ``(n, ky, kx)`` with odd sides."""
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim == 2:
        p = np.broadcast_to(p, (n, *p.shape))
    if p.ndim != 3 or p.shape[0] != n or not np.isfinite(p).all() or (p < 0).any():
        raise InvalidInputError(
            f"psf must be one finite non-negative 2D kernel or one per image ({n}), got an array "
            f"of shape {np.shape(psf)}; ablation_psf gives the one of an acquisition."
        )
    if p.shape[1] % 2 == 0 or p.shape[2] % 2 == 0 or (p.sum(axis=(1, 2)) <= 0).any():
        raise InvalidInputError(
            f"psf needs odd sides (its centre is the origin) and a positive sum, got {p.shape[1:]}."
        )
    return p / p.sum(axis=(1, 2), keepdims=True)


def richardson_lucy(images: Any, psf: Any, iterations: int = 10, scale: int = 1) -> np.ndarray:
    """Richardson-Lucy deconvolution with a known point-spread function.

    Each image is divided by its maximum, deconvolved with
    ``skimage.restoration.richardson_lucy`` (no clipping) and multiplied back; it is mirrored
    by the PSF's half-size on every side first so that the edges are not read as dark. With
    ``scale > 1`` the image is up-sampled bicubic first (negative overshoots set to 0) and
    deconvolved with the fine-grid PSF convolved with the ``scale x scale`` block average.

    Parameters
    ----------
    images : array_like
        Non-negative image ``(h, w)`` or stack ``(n, h, w)``.
    psf : array_like
        Fine-grid PSF ``(ky, kx)`` with odd sides and its origin at the centre, or one per
        image ``(n, ky, kx)``, e.g. :func:`~n2s_eds.imaging.ablation.ablation_psf`;
        normalised here.
    iterations : int
        Number of iterations, >= 0 (0 returns the (up-sampled) input).
    scale : int
        Up-sampling factor.

    Returns
    -------
    numpy.ndarray
        float32 ``(h * scale, w * scale)`` or the stack of those.
    """
    from scipy.signal import convolve2d
    from skimage.restoration import richardson_lucy as skimage_rl

    stack, single = as_image_stack(images)
    if (stack < 0).any():
        raise InvalidInputError(
            "richardson_lucy needs non-negative images (counts or intensities); clip them at 0."
        )
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or iterations < 0
    ):
        raise InvalidInputError(f"iterations must be an integer >= 0, got {iterations!r}.")
    s = check_scale(scale)
    psfs = _check_psf(psf, len(stack))
    up = np.clip(_upsample_stack(stack, s, "bicubic"), 0.0, None)
    out = up.copy()
    for i, (img, p) in enumerate(zip(up, psfs, strict=True)):
        p = convolve2d(p, _block_kernel(s))
        peak = img.max()
        if iterations == 0 or peak <= 0:
            continue
        py, px = p.shape[0] // 2, p.shape[1] // 2
        padded = np.pad(img / peak, ((py, py), (px, px)), mode="symmetric")
        est = skimage_rl(padded, p, num_iter=int(iterations), clip=False)
        out[i] = est[py : py + img.shape[0], px : px + img.shape[1]] * peak
    return restore_shape(out.astype(np.float32), single)


def bm3d_image(images: Any, sigma: float | Sequence[float], scale: int = 1) -> np.ndarray:
    """BM3D denoising of each image (optional ``bm3d`` package), then bicubic up-sampling.

    BM3D assumes white noise, which holds on the acquisition grid only: with ``scale > 1`` the
    image is denoised first and up-sampled after (see :func:`upsample`).

    Parameters
    ----------
    images : array_like
        One image ``(h, w)`` or a stack ``(n, h, w)``.
    sigma : float or sequence of float
        Standard deviation of the noise in the images' units, >= 0; one value or one per
        image (0 leaves an image as it is).
    scale : int
        Up-sampling factor.

    Returns
    -------
    numpy.ndarray
        float32 ``(h * scale, w * scale)`` or the stack of those.

    Raises
    ------
    ImportError
        When ``bm3d`` is not installed, with the command that installs it.
    """
    stack, single = as_image_stack(images)
    s = check_scale(scale)
    sig = np.atleast_1d(np.asarray(sigma, dtype=object))
    if sig.ndim != 1 or sig.size not in (1, len(stack)):
        raise InvalidInputError(
            f"sigma must be one value or one per image ({len(stack)}), got {sig.size}."
        )
    sig = np.broadcast_to([_non_negative_number("sigma", v) for v in sig], (len(stack),))
    bm3d = _load_bm3d()
    out = stack.astype(np.float64)
    h, w = out.shape[1:]
    pad = ((0, max(BM3D_MIN_SIDE - h, 0)), (0, max(BM3D_MIN_SIDE - w, 0)))
    for i, sd in enumerate(sig):
        if sd > 0:  # images under BM3D's block size are mirror-padded, then cropped
            z = np.pad(out[i], pad, mode="symmetric")
            out[i] = np.asarray(bm3d.bm3d(z, sigma_psd=float(sd)), dtype=np.float64)[:h, :w]
    return restore_shape(_upsample_stack(out, s, "bicubic").astype(np.float32), single)


# --------------------------------------------------------------------------------------------
# Uniform interface
# --------------------------------------------------------------------------------------------


def _counts_per_unit(settings: AblationSettings, n: int) -> np.ndarray:
    cpu = np.atleast_1d(np.asarray(settings.counts_per_unit, dtype=np.float64))
    if cpu.size not in (1, n):
        raise InvalidInputError(
            f"settings.counts_per_unit holds {cpu.size} values for {n} images; give one value "
            "or one per image."
        )
    return np.broadcast_to(cpu, (n,))


def _run_bicubic(
    images: Any, *, scale: int, settings: AblationSettings, param: Any = None
) -> np.ndarray:
    return upsample(images, scale, "bicubic")


def _run_lanczos(
    images: Any, *, scale: int, settings: AblationSettings, param: Any = None
) -> np.ndarray:
    return upsample(images, scale, "lanczos")


def _run_gaussian(
    images: Any, *, scale: int, settings: AblationSettings, param: Any = None
) -> np.ndarray:
    return gaussian(images, 1.0 if param is None else param, scale)


def _run_richardson_lucy(
    images: Any, *, scale: int, settings: AblationSettings, param: Any = None
) -> np.ndarray:
    return richardson_lucy(images, settings.psf(), 10 if param is None else param, scale)


def _run_bm3d(
    images: Any, *, scale: int, settings: AblationSettings, param: Any = None
) -> np.ndarray:
    """BM3D on Anscombe-transformed counts (noise sd about 1), back to the images' units."""
    stack, single = as_image_stack(images)
    if (stack < 0).any():
        raise InvalidInputError("the bm3d baseline needs non-negative images; clip them at 0.")
    cpu = _counts_per_unit(settings, len(stack))[:, None, None]
    z = anscombe(stack * cpu)
    den = bm3d_image(z, 1.0 if param is None else param)
    den = np.asarray(den, dtype=np.float64).reshape(stack.shape)
    out = upsample(inverse_anscombe(den) / cpu, scale, "bicubic")
    return restore_shape(out, single)


#: The baselines by name, each ``f(images, *, scale, settings, param=None)``: ``param`` is
#: the Gaussian sigma (fine pixels, default 1), the Richardson-Lucy iterations (default 10,
#: with ``settings.psf()``) or the BM3D sigma on Anscombe-transformed counts (default 1, the
#: Poisson noise; ``settings.counts_per_unit`` converts the images to counts); the
#: interpolations take none.
BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "bicubic": _run_bicubic,
    "lanczos": _run_lanczos,
    "gaussian": _run_gaussian,
    "richardson_lucy": _run_richardson_lucy,
    "bm3d": _run_bm3d,
}

#: The default parameter grids of :func:`tune_baseline` (empty: nothing to tune).
PARAM_GRIDS: dict[str, tuple[Any, ...]] = {
    "bicubic": (),
    "lanczos": (),
    "gaussian": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "richardson_lucy": (1, 2, 5, 10, 20, 40),
    "bm3d": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
}


@dataclass(frozen=True)
class TunedBaseline:
    """A baseline with its parameter chosen by :func:`tune_baseline`.

    Calling it runs ``BASELINES[name](images, scale=scale, settings=settings, param=param)``.

    Attributes
    ----------
    name : str
        The key of :data:`BASELINES`.
    param : object
        The chosen parameter (``None`` for a baseline without one).
    scores : dict
        Mean PSNR in dB on the training pairs of every value tried.
    scale : int
        The up-sampling factor it runs with.
    settings : AblationSettings
        The acquisition settings it runs with.
    """

    name: str
    param: Any
    scores: dict[Any, float]
    scale: int
    settings: AblationSettings

    def __call__(self, images: Any) -> np.ndarray:
        """Run the baseline with the chosen parameter on one image or a stack."""
        run = BASELINES[self.name]
        return run(images, scale=self.scale, settings=self.settings, param=self.param)


def _pairs(clean: Any, degraded: Any, scale: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training pairs as two lists of 2D images (same-size images may come as stacks)."""
    lists = []
    for name, images in (("clean", clean), ("degraded", degraded)):
        if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
            stack, _ = as_image_stack(images, name=name)
            lists.append(list(stack))
        else:
            lists.append([as_image_stack(im, name=name)[0][0] for im in images])
    if len(lists[0]) != len(lists[1]):
        raise InvalidInputError(
            f"{len(lists[0])} clean images for {len(lists[1])} degraded ones; pair them one to one."
        )
    for t, d in zip(*lists, strict=True):
        if t.shape != (d.shape[0] * scale, d.shape[1] * scale):
            raise InvalidInputError(
                f"a clean image {t.shape} does not pair with its degraded image {d.shape} at "
                f"scale {scale}: the clean one must be scale times larger along each axis."
            )
    return lists[0], lists[1]


def tune_baseline(
    name: str,
    clean: Any,
    degraded: Any,
    *,
    scale: int,
    settings: AblationSettings,
    grid: Sequence[Any] | None = None,
) -> TunedBaseline:
    """Choose a baseline's parameter by the mean PSNR on training pairs.

    Every value of ``grid`` is run on the degraded images through :data:`BASELINES` (all at
    once when they share one size, so that per-image settings apply; one at a time
    otherwise) and scored against the clean images with
    :func:`n2s_eds.metrics.reference.psnr` (data range: each clean image's peak-to-peak
    range); the value of highest mean wins, the first on ties.

    Parameters
    ----------
    name : str
        A key of :data:`BASELINES`.
    clean : array_like or sequence of array_like
        Fine-grid truths: a stack ``(n, H, W)``, one image, or a list of images of any sizes.
    degraded : array_like or sequence of array_like
        Their acquisitions, each ``scale`` times smaller along each axis.
    scale : int
        The factor between the two grids.
    settings : AblationSettings
        The acquisition's settings, passed to the baseline.
    grid : sequence or None
        Values to try; ``None`` for :data:`PARAM_GRIDS` ``[name]``. An empty grid scores the
        default (``None``) alone.

    Returns
    -------
    TunedBaseline
        The chosen parameter and the scores; call it on test images.
    """
    if name not in BASELINES:
        raise InvalidInputError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}.")
    s = check_scale(scale)
    truth, deg = _pairs(clean, degraded, s)
    same_size = len({d.shape for d in deg}) == 1
    values = list(PARAM_GRIDS[name] if grid is None else grid) or [None]
    scores: dict[Any, float] = {}
    for value in values:
        run = BASELINES[name]
        if same_size:
            est = list(run(np.stack(deg), scale=s, settings=settings, param=value))
        else:
            est = [run(d, scale=s, settings=settings, param=value) for d in deg]
        scores[value] = float(np.mean([psnr(t, e) for t, e in zip(truth, est, strict=True)]))
    best = max(values, key=lambda v: scores[v])
    return TunedBaseline(name, best, scores, s, settings)
