"""Scores against a known truth (simulations): PSNR, SSIM and the spectral angle.

:func:`psnr` and :func:`ssim` call scikit-image, always with an explicit
``data_range`` (the truth's peak-to-peak range unless given).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["psnr", "ssim", "spectral_angle"]


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
