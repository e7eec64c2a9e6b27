"""Element maps that keep phases apart: a non-local, J-invariant map estimate chosen by
Poisson risk, and the denoised cube made to agree with it.

What a microscopist reads from a spectrum image are its element maps: the counts summed
in a window around each X-ray line. Spatial smoothing that averages across a phase
boundary, and spectral projections fitted to the whole scan, pull every phase's
composition toward the mean of the scan. This stage works on the maps themselves:

1. **Raw maps** ``y`` (counts per window and pixel) are Poisson.
2. **Features** that tell phases apart: every map, smoothed by a Gaussian that leaves the
   pixel's own counts out, variance-stabilised (Anscombe), plus the guide image when
   there is one (scaled by a factor ``gamma``).
3. **Non-local averages**: a pixel's map value is the weighted mean of the raw maps of
   the pixels within radius ``R``, its own pixel excluded, weighted by
   ``exp(-|F_p - F_q|^2 / h^2)`` and a spatial Gaussian. Pixels of another phase have
   other features and get no weight, so no phase borrows another's composition.
4. **Choice by Poisson risk**: each average leaves the pixel's own counts out
   (J-invariance), so ``mean((g - y)^2) - mean(y)`` estimates its mean squared error
   against the expected counts without bias. Each map gets the ``(gamma, h, R)`` of
   lowest estimated risk: its own scale.
5. **Own counts**: ``g + beta (y - g)`` with the ``beta`` that minimises the closed-form
   Poisson risk ``(1 - beta)^2 R_g + beta^2 mean(y)``.
6. Each map is scaled to keep the raw map's total counts.

:func:`apply_maps` then rescales the denoised cube's channels inside each window, pixel
by pixel, so that its window sums are the refined maps; outside the windows the cube is
unchanged. The estimated risks give the trust report: the estimated gain of each map
over the raw counts (:attr:`MapRefinement.gains_db`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FEATURE_PEAKS",
    "FEATURE_SIGMA",
    "GUIDE_SCALES",
    "OWN_COUNTS_WEIGHT",
    "H_GRID",
    "RADII",
    "MapRefinement",
    "apply_maps",
    "nonlocal_means",
    "refine_cube",
    "refine_lazy",
    "refine_maps",
]

#: Peaks of the sum spectrum whose maps join the features (besides the element maps).
FEATURE_PEAKS = 8
#: Width (pixels) of the own-pixel-free Gaussian that smooths the maps into features.
FEATURE_SIGMA = 1.0
#: Feature distances (in units of the Anscombe noise) tried for the non-local weights.
H_GRID: tuple[float, ...] = (0.3, 0.5, 0.8, 1.2)
#: Search radii (pixels) tried; the spatial Gaussian of radius ``R`` has sigma ``R / 1.7``.
RADII: tuple[int, ...] = (3, 5, 7, 9)
#: Weight of a pixel's own counts outside a map's window among that map's features.
OWN_COUNTS_WEIGHT = 0.5
#: Weights of the guide image among the features (0: the maps alone).
GUIDE_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)


@dataclass
class MapRefinement:
    """The refined element maps and what the risk estimates say about them.

    Attributes
    ----------
    maps : numpy.ndarray
        Refined maps ``(n_maps, Y, X)``, float64 expected counts per window.
    raw_risk : numpy.ndarray
        Mean squared error of the raw maps per map (their mean count: Poisson).
    risk : numpy.ndarray
        Estimated mean squared error of each refined map.
    risk_upper : numpy.ndarray
        The same with the non-local average's risk raised by two standard errors of its
        estimate: an upper bound at about 97.5 % confidence.
    h, radius, guide_scale, beta : numpy.ndarray
        The chosen feature distance, radius, guide weight and own-count share per map.
    """

    maps: np.ndarray
    raw_risk: np.ndarray
    risk: np.ndarray
    risk_upper: np.ndarray
    h: np.ndarray
    radius: np.ndarray
    guide_scale: np.ndarray
    beta: np.ndarray
    names: list[str] = field(default_factory=list)

    def _gain(self, risk: np.ndarray) -> np.ndarray:
        floor = np.maximum(self.risk_upper - self.risk, 1e-6 * self.raw_risk)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = 10.0 * np.log10(self.raw_risk / np.maximum(risk, floor))
        return np.where(self.raw_risk > 0, gain, np.nan)

    @property
    def resolved(self) -> np.ndarray:
        """Whether each map's estimated risk is above the estimate's own uncertainty (two
        standard errors); where it is not, :attr:`gains_db` is a lower bound."""
        return self.risk > self.risk_upper - self.risk

    @property
    def gains_db(self) -> np.ndarray:
        """Estimated gain (dB) of each refined map over the raw map (``nan`` for an empty
        map). Where the risk is not resolved, the gain that its uncertainty allows: a
        lower bound."""
        return self._gain(self.risk)

    @property
    def gains_low_db(self) -> np.ndarray:
        """Lower confidence bound of :attr:`gains_db` (from :attr:`risk_upper`)."""
        return self._gain(self.risk_upper)

    def report(self) -> dict[str, Any]:
        """A JSON-ready report: per map its estimated gain and the chosen parameters."""
        out = {}
        for i, name in enumerate(self.names or [f"map_{i}" for i in range(len(self.maps))]):
            gain, low = float(self.gains_db[i]), float(self.gains_low_db[i])
            out[name] = {
                "estimated_gain_db": None if math.isnan(gain) else round(gain, 2),
                "gain_lower_bound_db": None if math.isnan(low) else round(low, 2),
                "gain_is_bound": not bool(self.resolved[i]),
                "h": float(self.h[i]),
                "radius": int(self.radius[i]),
                "guide_scale": float(self.guide_scale[i]),
                "own_share": round(float(self.beta[i]), 4),
            }
        return out


def _loo_gaussian(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``(n, Y, X)`` maps without each pixel's own value, normalised
    by the kernel's weight inside the image."""
    r = max(1, math.ceil(3 * sigma))
    a = torch.arange(-r, r + 1, dtype=maps.dtype)
    k1 = torch.exp(-(a**2) / (2 * sigma**2))
    k = k1[:, None] * k1[None, :]
    k[r, r] = 0.0
    k = k[None, None]
    ones = torch.ones(1, 1, *maps.shape[-2:], dtype=maps.dtype)
    num = F.conv2d(maps[:, None], k, padding=r)[:, 0]
    den = F.conv2d(ones, k, padding=r)[0, 0]
    return num / den


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy or dx) and dy * dy + dx * dx <= radius * radius
    ]


def _shifted(a: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``a[..., y + dy, x + dx]``, zero outside the image."""
    out = torch.zeros_like(a)
    ny, nx = a.shape[-2:]
    if abs(dy) >= ny or abs(dx) >= nx:
        return out
    dst_y = slice(max(0, -dy), ny - max(0, dy))
    src_y = slice(max(0, dy), ny - max(0, -dy))
    dst_x = slice(max(0, -dx), nx - max(0, dx))
    src_x = slice(max(0, dx), nx - max(0, -dx))
    out[..., dst_y, dst_x] = a[..., src_y, src_x]
    return out


def nonlocal_means(
    y: torch.Tensor,
    feats: torch.Tensor,
    hs: Sequence[float],
    radii: Sequence[int],
    own: torch.Tensor | None = None,
) -> torch.Tensor:
    """Own-pixel-free non-local means of maps for every feature distance and radius.

    Parameters
    ----------
    y : torch.Tensor
        Maps ``(n, Y, X)`` to average.
    feats : torch.Tensor
        Features ``(f, Y, X)``, shared by the maps; the weight of pixel ``q`` in the
        average at ``p`` is ``exp(-d^2 / h^2) exp(-|p - q|^2 / (2 (R / 1.7)^2))`` for
        ``0 < |p - q| <= R``, never the pixel's own value, with ``d^2`` the mean of
        ``(F_p - F_q)^2`` over the features.
    hs, radii : sequence
        Feature distances ``h`` and radii ``R``.
    own : torch.Tensor or None
        One further feature per map ``(n, Y, X)`` (map ``i`` only weighs with its own
        ``own[i]``), counted in the mean of ``d^2`` like the shared ones: for the counts a
        pixel holds outside map ``i``'s window, which are independent of that window's.

    Returns
    -------
    torch.Tensor
        ``(len(hs), len(radii), n, Y, X)``.
    """
    nh, nr = len(hs), len(radii)
    num = torch.zeros(nh, nr, *y.shape, dtype=y.dtype)
    den = torch.zeros(nh, nr, y.shape[0] if own is not None else 1, *y.shape[-2:], dtype=y.dtype)
    valid = torch.ones(1, *y.shape[-2:], dtype=y.dtype)
    nf = feats.shape[0] + (own is not None)
    inv_h2 = torch.tensor([1.0 / h**2 for h in hs], dtype=y.dtype)
    for dy, dx in _offsets(max(radii)):
        d2 = ((feats - _shifted(feats, dy, dx)) ** 2).sum(0, keepdim=True)  # (1, Y, X)
        if own is not None:
            d2 = d2 + (own - _shifted(own, dy, dx)) ** 2  # (n, Y, X)
        d2 = d2 / nf
        inside = _shifted(valid, dy, dx)
        ys = _shifted(y, dy, dx)
        r2 = dy * dy + dx * dx
        for i in range(nh):
            w = torch.exp(-d2 * inv_h2[i]) * inside
            wy = w * ys
            for j, radius in enumerate(radii):
                if r2 > radius * radius:
                    continue
                c = math.exp(-r2 / (2 * (radius / 1.7) ** 2))
                num[i, j] += c * wy
                den[i, j] += c * w
    return num / den.clamp_min(1e-12)


def _anscombe(m: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.sqrt(m.clamp_min(0) + 0.375)


def refine_maps(
    raw_maps: np.ndarray,
    guide: np.ndarray | None = None,
    *,
    names: Sequence[str] | None = None,
    feature_maps: np.ndarray | None = None,
    totals: np.ndarray | None = None,
    h_grid: Sequence[float] = H_GRID,
    radii: Sequence[int] = RADII,
    guide_scales: Sequence[float] = GUIDE_SCALES,
) -> MapRefinement:
    """Refine raw element maps by non-local averaging chosen by Poisson risk.

    Parameters
    ----------
    raw_maps : numpy.ndarray
        Counts per window ``(n_maps, Y, X)`` (Poisson).
    guide : numpy.ndarray or None
        An image of the same scan ``(Y, X)`` (HAADF, BSE): a further feature.
    names : sequence of str, optional
        One name per map (the trust report's keys).
    feature_maps : numpy.ndarray or None
        Further count maps ``(k, Y, X)`` (e.g. the strongest peaks of the sum spectrum)
        used as features only.
    totals : numpy.ndarray or None
        Each pixel's counts ``(Y, X)`` in the processing window. Map ``i`` then also
        weighs pixels by the counts they hold outside its window (Anscombe-transformed,
        times :data:`OWN_COUNTS_WEIGHT`): a pixel's own spectrum tells its phase, and
        Poisson counts outside the window are independent of the counts inside it.
    h_grid, radii, guide_scales : sequence
        The candidates (see :data:`H_GRID`, :data:`RADII`, :data:`GUIDE_SCALES`).

    Returns
    -------
    MapRefinement
    """
    y_np = np.asarray(raw_maps, dtype=np.float64)
    n = y_np.shape[0]
    y = torch.from_numpy(y_np)
    fy = (
        y
        if feature_maps is None
        else torch.cat([y, torch.from_numpy(np.asarray(feature_maps, np.float64))])
    )
    base = _anscombe(_loo_gaussian(fy, FEATURE_SIGMA))
    spread = float(base.std(dim=(1, 2)).mean()) or 1.0
    scales = [0.0] if guide is None else list(guide_scales)
    g_std = None
    if guide is not None:
        g = torch.as_tensor(np.asarray(guide, dtype=np.float64))
        g_std = (g - g.mean()) / (g.std() if float(g.std()) > 0 else 1.0)
    own = None
    if totals is not None:
        outside = torch.as_tensor(np.asarray(totals, dtype=np.float64))[None] - y
        own = OWN_COUNTS_WEIGHT * _anscombe(outside)
    mean_y = y.mean(dim=(1, 2))
    best = best_risk = None
    chosen = np.zeros((n, 3))
    for s in scales:
        feats = (
            base if s == 0 else torch.cat([base, s * spread * math.sqrt(fy.shape[0]) * g_std[None]])
        )
        cand = nonlocal_means(y, feats, h_grid, radii, own)  # (H, R, n, Y, X)
        risk = ((cand - y) ** 2).mean(dim=(-2, -1)) - mean_y  # (H, R, n)
        flat = risk.reshape(-1, n)
        idx = flat.argmin(dim=0)
        r_min = flat[idx, torch.arange(n)]
        m = cand.reshape(-1, n, *y.shape[-2:])[idx, torch.arange(n)]
        if best is None:
            best, best_risk = m.clone(), r_min.clone()
            better = torch.ones(n, dtype=torch.bool)
        else:
            better = r_min < best_risk
            best[better], best_risk[better] = m[better], r_min[better]
        for k in np.flatnonzero(better.numpy()):
            i, j = divmod(int(idx[k]), len(radii))
            chosen[k] = (h_grid[i], radii[j], s)
    a = best_risk.clamp_min(0)
    beta = a / (a + mean_y).clamp_min(1e-12)
    est = (1 - beta) ** 2 * a + beta**2 * mean_y
    terms = ((best - y) ** 2 - y).reshape(n, -1)
    se = terms.std(dim=1) / math.sqrt(max(terms.shape[1], 1))
    est_upper = (1 - beta) ** 2 * (a + 2 * se) + beta**2 * mean_y
    maps = best + beta[:, None, None] * (y - best)
    totals = y.sum(dim=(1, 2))
    have = maps.sum(dim=(1, 2))
    maps = maps * torch.where(have > 0, totals / have.clamp_min(1e-12), 1.0)[:, None, None]
    return MapRefinement(
        maps=maps.numpy(),
        raw_risk=mean_y.numpy(),
        risk=est.numpy(),
        risk_upper=est_upper.numpy(),
        h=chosen[:, 0],
        radius=chosen[:, 1].astype(int),
        guide_scale=chosen[:, 2],
        beta=beta.numpy(),
        names=list(names) if names is not None else [],
    )


def apply_maps(
    cube: np.ndarray,
    slices: Sequence[slice],
    maps: np.ndarray,
    *,
    profile: np.ndarray | None = None,
    iterations: int = 25,
) -> np.ndarray:
    """Rescale a denoised cube's channels inside each window so its window sums are ``maps``.

    Parameters
    ----------
    cube : numpy.ndarray
        Denoised counts ``(Y, X, E)`` (modified in place and returned).
    slices : sequence of slice
        Channel slice of each window on the cube's energy axis.
    maps : numpy.ndarray
        Target window sums ``(n_maps, Y, X)``.
    profile : numpy.ndarray or None
        A spectrum ``(E,)`` (e.g. the scan's summed raw spectrum) whose shape inside a
        window receives a target where the cube holds no counts; ``None``: the cube's
        summed spectrum.
    iterations : int
        Passes over the windows; overlapping windows agree after a few (iterative
        proportional fitting); disjoint windows are exact after one.

    Returns
    -------
    numpy.ndarray
        ``cube``. Where the cube holds no counts in a window, the target is spread over
        the window's channels in the shape of ``profile`` there.
    """
    overlap = any(
        a.start < b.stop and b.start < a.stop for i, a in enumerate(slices) for b in slices[i + 1 :]
    )
    for _ in range(iterations if overlap else 1):
        for sl, target in zip(slices, maps, strict=True):
            part = cube[..., sl]
            have = part.sum(axis=-1, dtype=np.float64)
            empty = have <= 1e-9
            factor = np.where(empty, 0.0, target / np.where(empty, 1.0, have))
            part *= factor[..., None].astype(cube.dtype)
            if empty.any():
                src = cube if profile is None else profile
                shape = np.asarray(src[..., sl], dtype=np.float64)
                shape = shape.reshape(-1, shape.shape[-1]).sum(axis=0)
                if shape.sum() <= 0:
                    shape = np.ones(part.shape[-1])
                shape = shape / shape.sum()
                part[empty] = (target[empty][:, None] * shape[None]).astype(cube.dtype)
            cube[..., sl] = part
    return cube


def _window_mask(n_channels: int, slices: Sequence[slice]) -> np.ndarray:
    inside = np.zeros(n_channels, dtype=bool)
    for sl in slices:
        inside[sl] = True
    return inside


def _keep_pixel_totals(
    cube: np.ndarray, totals: np.ndarray, inside: np.ndarray, outside: np.ndarray
) -> np.ndarray:
    """Scale each pixel's channels in ``outside`` (a channel mask) so that its counts over
    ``inside | outside`` are ``totals`` again (where the outside channels can hold it)."""
    now_in = cube[..., inside].sum(axis=-1, dtype=np.float64)
    now_out = cube[..., outside].sum(axis=-1, dtype=np.float64)
    want_out = np.maximum(totals - now_in, 0.0)
    factor = np.where(now_out > 0, want_out / np.where(now_out > 0, now_out, 1.0), 1.0)
    cube[..., outside] *= factor[..., None].astype(cube.dtype)
    return cube


def _maps_and_features(
    raw: Any, windows: Sequence[Any], peaks: Sequence[Any], channels: slice
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Window sums of a (Y, X, E) cube (numpy or dask) for the windows and the peaks, its
    summed spectrum and its pixel totals in ``channels``."""

    def sums(ws: Sequence[Any]) -> Any:
        return [raw[..., w.slice].sum(axis=-1, dtype=np.float64) for w in ws]

    parts = [
        *sums(windows),
        *sums(peaks),
        raw[..., channels].sum(axis=-1, dtype=np.float64),
        raw.sum(axis=(0, 1), dtype=np.float64),
    ]
    if hasattr(raw, "compute"):
        import dask

        parts = list(dask.compute(*parts))
    maps = np.stack(parts[: len(windows)])
    feats = np.stack(parts[len(windows) : -2]) if peaks else None
    return maps, feats, np.asarray(parts[-1]), np.asarray(parts[-2])


def _refine(
    raw: Any,
    n_channels: int,
    windows: Sequence[Any],
    peaks: Sequence[Any],
    guide: np.ndarray | None,
    channels: slice,
) -> tuple[MapRefinement, Any]:
    """Refine the raw maps of ``raw`` and return the refinement with the function
    ``rescale(cube, maps) -> cube`` that makes a (part of a) denoised cube agree with the
    maps (:func:`apply_maps`, in place) while each pixel keeps its counts in ``channels``."""
    maps, feats, profile, totals = _maps_and_features(raw, windows, peaks, channels)
    result = refine_maps(
        maps, guide, names=[w.name for w in windows], feature_maps=feats, totals=totals
    )
    slices = [w.slice for w in windows]
    inside = _window_mask(n_channels, slices)
    outside = ~inside & _window_mask(n_channels, [channels])

    def rescale(cube: np.ndarray, targets: np.ndarray) -> np.ndarray:
        kept = cube[..., channels].sum(axis=-1, dtype=np.float64)
        apply_maps(cube, slices, targets, profile=profile)
        return _keep_pixel_totals(cube, kept, inside, outside)

    return result, rescale


def refine_cube(
    raw: np.ndarray,
    den: np.ndarray,
    windows: Sequence[Any],
    peaks: Sequence[Any] = (),
    guide: np.ndarray | None = None,
    *,
    channels: slice = slice(None),
) -> MapRefinement:
    """Refine the element maps of a denoised cube in place (eager).

    Parameters
    ----------
    raw, den : numpy.ndarray
        The noisy counts and the denoised cube, ``(Y, X, E)`` on one energy axis;
        ``den`` is changed in place.
    windows : sequence of ElementWindow
        The element windows (:func:`~n2s_eds.metrics.element_windows`): the maps refined.
    peaks : sequence of ElementWindow
        Windows whose raw maps are further features.
    guide : numpy.ndarray or None
        Image of the scan, ``(Y, X)``.
    channels : slice
        The processing window: the channels whose per-pixel totals are kept.

    Returns
    -------
    MapRefinement
        The refined maps and their risk estimates; ``den``'s window sums now equal
        :attr:`MapRefinement.maps` and every pixel keeps its counts in ``channels``.
    """
    result, rescale = _refine(raw, den.shape[-1], windows, peaks, guide, channels)
    rescale(den, result.maps)
    return result


def refine_lazy(
    raw: Any,
    den: Any,
    windows: Sequence[Any],
    peaks: Sequence[Any] = (),
    guide: np.ndarray | None = None,
    *,
    channels: slice = slice(None),
) -> tuple[Any, MapRefinement]:
    """:func:`refine_cube` for dask arrays: the raw maps are computed now (one pass over
    the data); the denoised cube stays lazy, refined block by block (blocks hold every
    channel).

    Returns
    -------
    (dask.array.Array, MapRefinement)
    """
    result, rescale = _refine(raw, den.shape[-1], windows, peaks, guide, channels)

    def block(b: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        (y0, y1), (x0, x1), _ = block_info[0]["array-location"]
        return rescale(np.array(b, copy=True), result.maps[:, y0:y1, x0:x1])

    whole = den.rechunk({2: -1}) if len(den.chunks[2]) > 1 else den
    out = whole.map_blocks(block, dtype=den.dtype)
    return out, result
