"""2D elemental and electron images: virtual laser-ablation acquisition, a trained enhancer
(denoising and x2/x4 super-resolution), classical baselines and a statistical comparison.
"""

from __future__ import annotations

from .validation import as_image_stack, check_scale

__all__ = ["as_image_stack", "check_scale"]
