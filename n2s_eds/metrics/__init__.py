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
  always with an explicit ``data_range``) and :func:`spectral_angle`; and the phase-mixing
  scores :func:`edge_width` (10-90 % width of a step edge) and :func:`absent_leakage` (an
  element carried into the pixels where it is absent).

Array convention: every cube is a numpy array in HyperSpy's order, navigation first and energy
last, ``(Y, X, E)`` (a line scan ``(X, E)`` works too); element maps are stacked as
``(n_maps, Y, X)``. Energy windows (:class:`~n2s_eds.preprocess.EnergyWindow`,
:class:`ElementWindow`) index channels of the full energy axis of the signal they were made
for. All split scores are computed inside the processing energy window (by default 0.2 keV up
to the lower of the beam energy and 20 keV, :func:`processing_window`), so that the detector
zero peak and the empty channels above the beam energy do not count.

Modules
-------
windows
    :class:`ElementWindow`, :func:`element_windows`, :func:`element_maps`.
split
    The split scores: :func:`binomial_split`, :func:`frame_split`, :func:`umse`,
    :func:`umse_stderr`, :func:`score_split` and the count ratios.
reference
    :func:`psnr`, :func:`ssim`, :func:`spectral_angle`.
phases
    :func:`edge_profile`, :func:`edge_width`, :func:`absent_leakage`, :func:`line_presence`.
"""

from __future__ import annotations

from ..preprocess import processing_window
from .phases import absent_leakage, edge_profile, edge_width, line_presence
from .reference import psnr, spectral_angle, ssim
from .split import (
    binomial_split,
    count_ratio,
    frame_split,
    map_count_ratios,
    resolved_gain_db,
    score_split,
    split_gain_db,
    split_scale,
    umse,
    umse_stderr,
)
from .windows import DEFAULT_FWHM_MN_KA_EV, ElementWindow, element_maps, element_windows

__all__ = [
    "DEFAULT_FWHM_MN_KA_EV",
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
    "edge_profile",
    "edge_width",
    "absent_leakage",
    "line_presence",
]
