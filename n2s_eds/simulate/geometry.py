"""Anti-aliased geometry of the simulated scans: supersampled pixel grids, discs (sphere
chords or area fractions) and Voronoi grain mosaics, shared by the phantoms and the corpus."""

from __future__ import annotations

import numpy as np

__all__ = ["SUPERSAMPLE", "disc_maps", "pixel_grid", "place_discs", "voronoi_fractions"]

#: Supersampling factor per pixel side for anti-aliased edges.
SUPERSAMPLE = 4


def pixel_grid(n: int, lo: int = 0) -> np.ndarray:
    """Supersampled coordinates of pixels lo..lo+n-1 (pixel centres at integers)."""
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    return (np.arange(lo, lo + n)[:, None] + sub[None, :]).ravel()


def place_discs(
    rng: np.random.Generator, shape: tuple[int, int], area_fraction: float
) -> list[tuple[float, float, float]]:
    """Random non-overlapping discs (cy, cx, radius) in pixels, fully inside the field."""
    height, width = shape
    small = min(shape)
    r_min, r_max = max(3.0, 0.07 * small), max(4.5, 0.12 * small)
    discs: list[tuple[float, float, float]] = []
    covered = 0.0
    for _ in range(400):
        if covered >= area_fraction * height * width:
            break
        r = float(rng.uniform(r_min, r_max))
        if 2 * r + 2 > small:
            r = (small - 2) / 2.0
        cy = float(rng.uniform(r + 0.5, height - 1.5 - r))
        cx = float(rng.uniform(r + 0.5, width - 1.5 - r))
        if all(np.hypot(cy - y, cx - x) >= r + q + 1.5 for y, x, q in discs):
            discs.append((cy, cx, r))
            covered += np.pi * r**2
    return discs


def disc_maps(
    shape: tuple[int, int], discs: list[tuple[float, float, float]], core_ratio: float, chord: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-disc core and shell maps: projected sphere chords (px) or area fractions."""
    height, width = shape
    ss = SUPERSAMPLE
    cores, shells = [], []
    for cy, cx, r in discs:
        y0, y1 = max(int(np.floor(cy - r)) - 1, 0), min(int(np.ceil(cy + r)) + 2, height)
        x0, x1 = max(int(np.floor(cx - r)) - 1, 0), min(int(np.ceil(cx + r)) + 2, width)
        yy = pixel_grid(y1 - y0, y0)[:, None]
        xx = pixel_grid(x1 - x0, x0)[None, :]
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        rc = core_ratio * r
        if chord:
            total = 2.0 * np.sqrt(np.maximum(r**2 - r2, 0.0))
            core = 2.0 * np.sqrt(np.maximum(rc**2 - r2, 0.0))
        else:
            total = (r2 < r**2).astype(np.float64)
            core = (r2 < rc**2).astype(np.float64)
        shell = total - core
        core_map = np.zeros(shape)
        shell_map = np.zeros(shape)
        block = (y1 - y0, ss, x1 - x0, ss)
        core_map[y0:y1, x0:x1] = core.reshape(block).mean(axis=(1, 3))
        shell_map[y0:y1, x0:x1] = shell.reshape(block).mean(axis=(1, 3))
        cores.append(core_map)
        shells.append(shell_map)
    return cores, shells


def voronoi_fractions(
    rng: np.random.Generator, shape: tuple[int, int], n_phases: int
) -> list[np.ndarray]:
    """Area fraction of each of n_phases in a random Voronoi grain mosaic."""
    height, width = shape
    n_grains = max(n_phases, int(round(height * width / (0.3 * min(shape)) ** 2)))
    seeds = rng.uniform((0.0, 0.0), (height, width), size=(n_grains, 2)) - 0.5
    labels = np.arange(n_grains) % n_phases
    labels = labels[rng.permutation(n_grains)]
    yy = pixel_grid(height)[:, None]
    xx = pixel_grid(width)[None, :]
    best = np.full((yy.size, xx.size), np.inf)
    phase = np.zeros((yy.size, xx.size), dtype=np.intp)
    for (sy, sx), label in zip(seeds, labels, strict=True):
        d2 = (yy - sy) ** 2 + (xx - sx) ** 2
        closer = d2 < best
        best[closer] = d2[closer]
        phase[closer] = label
    block = (height, SUPERSAMPLE, width, SUPERSAMPLE)
    return [(phase == k).reshape(block).mean(axis=(1, 3)) for k in range(n_phases)]
