"""From the network's cube back to the signal: count-keeping clipping and un-binning.

:func:`clip_keeping_counts` makes expected counts non-negative without changing any
channel's total near each voxel; :func:`unbin_energy` spreads binned counts back onto
the input's channels, keeping every pixel's counts in every bin (the inverse of
:func:`n2s_eds.preprocess.bin_energy`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from torch import nn

from .ops import box_sum_
from .preprocess import EnergyBinning, EnergyWindow, check_energy_length
from .serialization import package_version

__all__ = [
    "CLIP_RADIUS_PX",
    "CLIP_ITERATIONS",
    "UNBIN_RADIUS",
    "clip_keeping_counts",
    "clip_reach",
    "summed_spectrum",
    "unbin_energy",
    "provenance",
]

#: Pixels around a negative voxel that pay back what clipping adds to it (same channel).
CLIP_RADIUS_PX = 2
#: Rounds of that local payback before the rest is settled within each pixel.
CLIP_ITERATIONS = 4


def clip_keeping_counts(
    cube: np.ndarray, radius: int = CLIP_RADIUS_PX, iterations: int = CLIP_ITERATIONS
) -> np.ndarray:
    """Make expected counts non-negative, moving counts only within a channel and a few pixels.

    A low-rank estimate dips below 0 in channels with little signal; setting
    those values to 0 alone would add counts exactly where an element is
    absent (a positive bias of the weak element maps). Instead, the mass that
    clipping adds to a voxel is taken from the positive voxels of the same
    energy channel within ``radius`` pixels, in proportion to their values.
    This is repeated ``iterations`` times (values it drives below 0 are treated
    the same way); the little that is left is then taken from the same pixel's
    positive channels in proportion to their values. Every step keeps the
    total counts; an output voxel depends on inputs at most
    :func:`clip_reach` pixels away, so a cube cut into blocks with that margin
    gives the same result. Works in place on a (E, Y, X) cube.
    """
    radius = int(radius)
    work = cube.astype(np.float64)
    for _ in range(int(iterations)):
        neg = work < 0
        if not neg.any():
            break
        pos = np.where(neg, 0.0, work)
        near = box_sum_(pos.copy(), radius)
        payable = neg & (near > 0)
        share = np.divide(-work, near, out=np.zeros_like(work), where=payable)
        work = np.where(payable | ~neg, pos - pos * box_sum_(share, radius), work)
    total = work.sum(axis=0)
    pos = np.clip(work, 0.0, None)
    pos_sum = pos.sum(axis=0)
    scale = np.where(pos_sum > 0, np.clip(total, 0.0, None) / np.where(pos_sum > 0, pos_sum, 1), 0)
    cube[...] = pos * scale[None]
    return cube


def clip_reach(radius: int = CLIP_RADIUS_PX, iterations: int = CLIP_ITERATIONS) -> int:
    """Pixels of context :func:`clip_keeping_counts` uses around each output pixel."""
    return 2 * int(radius) * int(iterations)  # each round: the payers' and the debtors' windows


#: Half side (pixels) of the neighbourhood whose raw counts share binned counts among channels.
UNBIN_RADIUS = 2


def summed_spectrum(cube: np.ndarray, axis: int = 0) -> np.ndarray:
    """The summed spectrum (float64) of a cube whose energy axis is ``axis``."""
    other = tuple(i for i in range(cube.ndim) if i != axis)
    return np.asarray(cube).sum(axis=other, dtype=np.float64)


#: Channels per slab in :func:`unbin_energy` (bounds its temporary memory).
UNBIN_SLAB = 128


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
    check_energy_length(raw, binning.n_channels, "raw")
    check_energy_length(binned, binning.n_bins, "binned")
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
    # slabs of whole bins, about UNBIN_SLAB channels: temporaries stay a slab, not a cube
    per_slab = max(1, UNBIN_SLAB // binning.factor) * binning.factor
    for c0 in range(0, binning.n_channels, per_slab):
        c1 = min(c0 + per_slab, binning.n_channels)
        b0 = c0 // binning.factor
        rel = idx[c0:c1] - b0
        num = np.clip(np.asarray(raw[c0:c1]), 0.0, None, dtype=np.float32)
        box_sum_(num, int(radius))  # the neighbourhood's counts N[c]
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


def provenance(
    net: nn.Module,
    *,
    model: str,
    model_options: dict[str, Any],
    guided: bool,
    seed: int,
    options: dict[str, Any],
    history: dict[str, Any],
    window: EnergyWindow,
    binning: EnergyBinning,
    seconds: float,
) -> dict[str, Any]:
    """What a denoised signal records in ``metadata.Signal.Denoising.parameters``.

    The package and version, the network and its options, the processing
    window, every option, the training and inference times, the energy bins,
    the spectral rank and the fitted energy blend (JSON strings where nested);
    entries that are ``None`` are left out.
    """
    params = {
        "package": "n2s_eds",
        "version": package_version(),
        "model": model,
        "model_options": json.dumps(model_options),
        "guided": bool(guided),
        "energy_window_kev": [window.low_kev, window.high_kev],
        "energy_window_channels": [window.start, window.stop],
        "seed": seed,
        **{k: v for k, v in options.items() if v is not None},
        "train_seconds": history.get("train_seconds"),
        "final_loss": history.get("final_loss"),
        "inference_seconds": round(seconds, 3),
    }
    if binning.factor > 1:
        params["energy_bin_channels"] = binning.factor
        params["energy_bin_width_ev"] = round(binning.width_ev, 6)
    if hasattr(net, "rank"):
        params["spectral_rank"] = int(net.rank)
    if getattr(net, "blend_report", None):
        params["energy_blend"] = json.dumps(net.blend_report)
    return {k: v for k, v in params.items() if v is not None}
