"""Procedural clean images for training: random fields, grains with smooth boundaries, and
their mixtures, so that the enhancer also sees fine texture and low-contrast gradients, not
only the flat discs and shells of the phantoms.

Every image is a Gaussian random field (white noise smoothed with a random correlation length
of 1 to 8 px, or a sum of two such fields), passed through one of three maps: none (smooth
texture), a soft quantisation into 2 to 5 levels (grains whose boundaries follow the field's
level sets), or a quantisation plus a weaker texture inside the grains; then a random gamma
and an optional linear gradient, normalised to [0, 1]. Seeds never overlap those of the test
images, which come from other generators and acquisitions (:mod:`n2s_eds.imaging.sources`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

__all__ = ["random_field", "texture_image", "texture_images"]

#: Seed stream of the textures (beside the image's own seed).
TEXTURE_STREAM = 0x7E47


def random_field(shape: tuple[int, int], length: float, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field of correlation length ``length`` px."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), length, mode="wrap")
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def texture_image(seed: int, size: int = 64) -> np.ndarray:
    """One procedural clean image in [0, 1], float32 ``(size, size)`` (module docstring)."""
    rng = np.random.default_rng([TEXTURE_STREAM, int(seed)])
    shape = (size, size)
    f = random_field(shape, rng.uniform(1.0, 8.0), rng)
    if rng.random() < 0.5:
        f = f + rng.uniform(0.2, 0.8) * random_field(shape, rng.uniform(1.0, 4.0), rng)
    kind = rng.integers(3)
    if kind > 0:
        levels = int(rng.integers(2, 6))
        edges = np.quantile(f, np.sort(rng.uniform(0.1, 0.9, levels - 1)))
        values = rng.uniform(0.0, 1.0, levels)
        q = values[np.searchsorted(edges, f)]
        q = ndimage.gaussian_filter(q, rng.uniform(0.0, 1.0))
        f = q if kind == 1 else q + rng.uniform(0.03, 0.15) * random_field(shape, 1.0, rng)
    f = f - f.min()
    f = f / max(float(f.max()), 1e-12)
    f = f ** np.exp(rng.uniform(-0.7, 0.7))
    if rng.random() < 0.3:
        yy, xx = np.mgrid[:size, :size] / size
        angle = rng.uniform(0, 2 * np.pi)
        f = f + rng.uniform(0.2, 1.0) * (np.cos(angle) * xx + np.sin(angle) * yy)
    f = f - f.min()
    return (f / max(float(f.max()), 1e-12)).astype(np.float32)


def texture_images(seeds: Iterable[int], size: int = 64) -> list[np.ndarray]:
    """:func:`texture_image` for each seed."""
    return [texture_image(s, size) for s in seeds]
