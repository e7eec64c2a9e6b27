"""2D elemental and electron images: virtual laser-ablation acquisition, a trained enhancer
(denoising, deblurring and x2/x4 super-resolution), classical baselines, and a statistical
comparison report.

* :func:`virtual_ablation` (:mod:`~n2s_eds.imaging.ablation`): the LA-ICP-MS measurement of a
  clean image in five steps (laser sampling, flicker, washout, dwell integration, Poisson).
* :class:`MapEnhancer` (:mod:`~n2s_eds.imaging.enhancer`): the network, trained on virtual
  ablation pairs; :meth:`MapEnhancer.pretrained` loads the shipped weights.
* :mod:`~n2s_eds.imaging.baselines`: bicubic, Lanczos, Gaussian, Richardson-Lucy, BM3D.
* :func:`compare` (:mod:`~n2s_eds.imaging.compare`): per-category scores, paired t-tests,
  histograms and galleries; :mod:`~n2s_eds.imaging.structure`: invented-structure checks.
* :mod:`~n2s_eds.imaging.clinker`: the real LA-ICP-MS clinker acquisition and its phase masks.
* :mod:`~n2s_eds.imaging.sources`: the clean training and test images, split by source.
"""

from __future__ import annotations

from .ablation import AblationSettings, virtual_ablation
from .compare import ComparisonReport, compare, image_scores
from .enhancer import MapEnhancer
from .losses import LossWeights
from .validation import as_image_stack, check_scale

__all__ = [
    "AblationSettings",
    "ComparisonReport",
    "LossWeights",
    "MapEnhancer",
    "as_image_stack",
    "check_scale",
    "compare",
    "image_scores",
    "virtual_ablation",
]
