"""The candidates of the prior mixture and their mixing by per-pixel weights.

:class:`CandidateMixing` holds the methods of :class:`~.module.PriorMixture`
that build its J-invariant candidate estimates and spread each pixel's counts
with the weights of the mixing network (:meth:`CandidateMixing.mix`). It is a
mixin: it keeps no state of its own and reads the attributes that
:class:`~.module.PriorMixture` sets (listed in the class body).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .basis import own_projection, projection_matrix, rank_diagonals
from .coarse import coarse_operators, coarse_path
from .filters import GuidedFilter, neighbour_mean, smooth2d, smoothing_diagonal
from .mixture_fit import window_own_terms
from .spreading import (
    band_edges,
    band_of_channel,
    band_spectra,
    gaussian_operator,
    own_weight,
    spread_abundances,
)

__all__ = ["CandidateMixing"]


class CandidateMixing:
    """Candidates and mixing of :class:`~.module.PriorMixture` (a mixin).

    Every candidate spreads each pixel's low-rank spectrum (its abundances on the
    spectral basis) or raw spectrum over its neighbourhood with a linear operator
    whose rows and columns sum to 1 (Gaussians, guided filters), and takes each
    voxel's own count out again (J-invariance). Candidates are ordered as the
    mixing weights: the low-rank ones (``lowrank_sigmas`` then guided filters, once
    per rank fraction), then the raw ones (``spatial_sigmas`` then guided filters),
    then those of the coarse path. :meth:`_features` gives the mixing network's
    input: count levels per band, how much the low-rank candidates disagree between
    scales, and the guide.
    """

    # set by PriorMixture: the options and the per-cube data of adapt()
    guide: bool
    lowrank_sigmas: tuple[float, ...]
    spatial_sigmas: tuple[float, ...]
    guided_filters: tuple[tuple[int, float], ...]
    coarse_sigmas: tuple[float, ...]
    coarse_lowrank_sigmas: tuple[float, ...]
    rank_fractions: tuple[float, ...]
    residual_sigma: float
    own_window: int
    coarse_ev: float
    channel_ev: float
    n_bands: int
    n_lowrank: int
    n_candidates: int
    n_coarse: int
    n_coarse_lowrank: int
    basis: Tensor
    channel_scale: Tensor
    rank: int
    _coarse_cache: tuple | None

    def _window_own_terms(
        self,
        counts: Tensor,
        keep: Tensor,
        band: tuple[int, int],
        w: int,
        hw: tuple[int, int],
        guide: Tensor | None,
    ) -> Tensor:
        """Per candidate, what its window sums owe to the own pixel's counts (n,), for
        the (E, V) ``counts`` of the ``keep`` pixels of a ``hw`` scan (see
        :func:`~.mixture_fit.window_own_terms`)."""
        return window_own_terms(
            counts,
            keep,
            band,
            w,
            basis=self.basis,
            channel_scale=self.channel_scale,
            own_window=self.own_window,
            low_ops=self._operators(hw, guide, self.basis.device, self.basis.dtype)[0],
            ranks=self._candidate_ranks(),
            n_candidates=self.n_candidates,
        )

    def _features(self, c: Tensor, z: Tensor, guide: Tensor | None) -> Tensor:
        """Per-pixel features (B, F, Y, X) of the mixing network."""
        e = c.shape[1]
        feats = []
        for a, b in self._band_edges(e):
            level = c[:, a:b].sum(dim=1, keepdim=True)
            level = level / (self.channel_scale[a:b].pow(2).sum() + 1e-6)  # 1 = band average
            feats += [torch.log(smooth2d(level, s) + 1e-2) for s in (1.0, 2.0, 4.0)]
        vd = self.basis * self.channel_scale[:, None]  # (E, K) spectra in counts
        gram = vd.T @ vd
        ones = vd.sum(dim=0)  # total counts of each component
        zs = [smooth2d(z, s) for s in self.lowrank_sigmas]
        for a, b_ in zip(zs[:-1], zs[1:], strict=True):
            d = a - b_
            sq = torch.einsum("bkyx,kl,blyx->byx", d, gram, d)[:, None]
            tot = torch.einsum("k,bkyx->byx", ones, b_)[:, None].clamp_min(0)
            feats.append(torch.log1p(sq / (tot + 1.0)))
        if self.guide:
            # the guide arrives robustly normalised for the whole scan (see n2s_eds.preprocess.normalise_guide)
            gy, gx = torch.gradient(smooth2d(guide, 1.0), dim=(2, 3))
            feats += [guide, torch.sqrt(gx**2 + gy**2)]
        return torch.cat(feats, dim=1)

    def _candidates(self, c: Tensor, guide: Tensor | None) -> list[Tensor]:
        """Each fine candidate alone (B, E, Y, X), J-invariant, in the weights' order."""
        return list(self._iter_candidates(c, guide))

    def _iter_candidates(self, c: Tensor, guide: Tensor | None):
        """:meth:`_candidates` one at a time."""
        hw = c.shape[-2:]
        low_ops, raw_ops, _ = self._operators(hw, guide, c.device, c.dtype)
        z = self._abundances(c)
        vd = self.basis * self.channel_scale[:, None]
        fill = neighbour_mean(c)
        for (spread, diag), r in zip(low_ops, self._candidate_ranks(), strict=True):
            spectra = torch.einsum("ek,bkyx->beyx", vd[:, :r], spread(z[:, :r]))
            yield spectra + diag[:, None] * self._own_projection(r, fill - c)
        for spread, diag in raw_ops:
            yield spread(c) + diag[:, None] * (fill - c)

    def _check_ready(self, e: int) -> None:
        if not self.basis.numel():
            raise RuntimeError("call adapt(cube) before using PriorMixture (no spectral basis)")
        if e != self.basis.shape[0]:
            raise ValueError(
                f"the cube has {e} energy channels but the spectral basis was computed for "
                f"{self.basis.shape[0]}; call adapt() on this cube first"
            )

    def _band_edges(self, e: int) -> list[tuple[int, int]]:
        """Channel ranges [start, stop) of the energy bands of an E-channel cube."""
        return band_edges(e, self.n_bands)

    def _band_of_channel(self, e: int, device) -> Tensor:
        """(E,) band of each channel of an E-channel cube."""
        return band_of_channel(e, self.n_bands, device)

    def _candidate_ranks(self) -> list[int]:
        """Rank of each low-rank candidate, in the weights' order (fraction-major)."""
        k = self.rank
        per = self.n_lowrank // len(self.rank_fractions)
        return [max(1, min(k, round(f * k))) for f in self.rank_fractions for _ in range(per)]

    def _own_projection(self, r: int, d: Tensor) -> Tensor:
        """What a pixel's own counts ``d`` near each channel give its estimate through the
        projection on the first ``r`` basis vectors (see :func:`~.basis.own_projection`)."""
        return own_projection(self.basis, self.channel_scale, r, d, self.own_window)

    def _abundances(self, c: Tensor) -> Tensor:
        """Normalised-space abundances of each pixel, (B, K, Y, X)."""
        return torch.einsum("ek,beyx->bkyx", self.basis, c / self.channel_scale.view(1, -1, 1, 1))

    def _operators(
        self, hw: tuple[int, int], guide: Tensor | None, device, dtype
    ) -> tuple[list, list, list]:
        """Low-rank, raw and coarse-path candidates as (spread, own weight (B|1, Y, X)) pairs."""

        def gaussian(sigma: float) -> tuple:
            return gaussian_operator(hw, sigma, device, dtype)

        guided = []
        if self.guide:
            if guide is None:
                raise ValueError("this PriorMixture was built with guide=True: pass the guide")
            for radius, eps in self.guided_filters:
                op = GuidedFilter(guide, radius, eps)
                guided.append((op, op.diagonal))
        low = ([gaussian(s) for s in self.lowrank_sigmas] + guided) * len(self.rank_fractions)
        raw = [gaussian(s) for s in self.spatial_sigmas] + guided
        coarse = [gaussian(s) for s in (*self.coarse_lowrank_sigmas, *self.coarse_sigmas)]
        coarse += guided if self.n_coarse else []
        return low, raw, coarse

    def mix(
        self,
        counts: Tensor,
        weights: Tensor,
        mask: Tensor | None = None,
        guide: Tensor | None = None,
        pixels: Tensor | None = None,
    ) -> Tensor:
        """Spread each pixel's counts with its own per-candidate weights (J-invariant).

        Each input pixel sends its low-rank spectrum (or, for the raw
        candidates, its raw spectrum) to its neighbourhood with kernels whose
        weights sum to 1 (Gaussians, and guided filters with a guide), mixed by
        ``weights`` band by band; so the total counts are kept. The share of a
        voxel's own count that lands on itself is taken out and replaced by the
        same share of its neighbours' mean: no output voxel depends on its own
        input count.

        Parameters
        ----------
        counts : torch.Tensor
            (B, 1, E, Y, X) counts.
        weights : torch.Tensor
            (B, n_bands, n_candidates + n_coarse, Y, X) weights, as
            :meth:`mixing_weights` gives them.
        mask : torch.Tensor, optional
            Boolean (B, 1, E, Y, X); when given, only the masked voxels are
            computed and returned as a 1-D tensor (``mask.nonzero()`` order).
        guide : torch.Tensor, optional
            (B, 1, Y, X) guide image (required with ``guide=True``).
        pixels : torch.Tensor, optional
            Boolean (Y, X): without ``mask``, only these pixels' estimates are
            needed (the others may be left without the coarse path).
        """
        if self.n_coarse and mask is not None:
            # the coarse path filters whole spectra: compute them, then pick the hidden voxels
            full = self.mix(counts, weights, None, guide)
            return full[mask.expand_as(full)]
        c = counts[:, 0]
        e = c.shape[1]
        self._check_ready(e)
        hw = c.shape[-2:]
        z = self._abundances(c)
        n_lr = self.n_lowrank
        weights_all, weights = weights, weights[:, :, : self.n_candidates]
        low_ops, raw_ops, coarse_ops = self._operators(hw, guide, c.device, c.dtype)
        band = self._band_of_channel(e, c.device)
        # low-rank part: per band, spread the abundances (K channels: cheap)
        ranks = self._candidate_ranks()
        zsum_t = spread_abundances(z, weights, low_ops, self.n_bands, ranks)  # (B, G, K, Y, X)
        own_lr = own_weight(weights[:, :, :n_lr], low_ops)
        own_sp = own_weight(weights[:, :, n_lr:], raw_ops)
        diag_p = (self.basis**2).sum(dim=1)  # (E,) own-channel weight of the projection
        own_ranked = self._own_lowrank(weights[:, :, :n_lr], low_ops, ranks)  # [(G-own, diag)]
        fill = neighbour_mean(c)
        vd = self.basis * self.channel_scale[:, None]  # (E, K)
        w_sp = weights[:, :, n_lr:][:, band]  # (B, E, n_raw, Y, X)
        res = None  # the low-rank residual spread back (channel totals kept)
        d_res = None
        if self.residual_sigma > 0:
            w_lr = weights[:, :, :n_lr].sum(dim=2)[:, band]  # (B, E, Y, X)
            resid = c - torch.einsum("ek,bkyx->beyx", vd, z)
            res = smooth2d(w_lr * resid, self.residual_sigma, transpose=True)
            d_res = smoothing_diagonal(hw, self.residual_sigma, c.device, c.dtype)
            own_res = w_lr * d_res * (1.0 - diag_p).view(1, e, 1, 1)  # (B, E, Y, X)
        if mask is None:
            out = band_spectra(vd, zsum_t, self._band_edges(e))
            for j, (spread, _) in enumerate(raw_ops):
                out = out + spread(w_sp[:, :, j] * c)
            own = own_sp[:, band]
            for (w_r, _), r in zip(own_ranked, sorted(set(ranks)), strict=True):
                # the own pixel's counts (within own_window channels), through the projection
                out = out + w_r[:, band] * self._own_projection(r, fill - c)
            if res is not None:
                out, own = out + res, own + own_res
            est = out + own * (fill - c)
            if self.n_coarse:
                gamma = own_lr  # (B, G, Y, X): own pixel's weight on its own abundances
                if d_res is not None:
                    gamma = gamma - weights[:, :, :n_lr].sum(dim=2) * d_res
                est = self._coarse(c, z, est, weights_all, coarse_ops, band, gamma, fill, pixels)
            return est[:, None]
        bi, _, ei, yi, xi = mask.nonzero(as_tuple=True)
        gi = band[ei]
        cv, fv = c[bi, ei, yi, xi], fill[bi, ei, yi, xi]
        out = (vd[ei] * zsum_t[bi, gi, :, yi, xi]).sum(dim=1)
        for j, (spread, _) in enumerate(raw_ops):
            out = out + spread(w_sp[:, :, j] * c)[bi, ei, yi, xi]
        own_v = own_sp[bi, gi, yi, xi]
        if self.own_window:
            for (w_r, _), r in zip(own_ranked, sorted(set(ranks)), strict=True):
                near = self._own_projection(r, fill - c)[bi, ei, yi, xi]
                out = out + w_r[bi, gi, yi, xi] * near
        else:  # the same term, per hidden voxel only (no whole-cube product in training)
            for w_r, d_r in own_ranked:
                own_v = own_v + w_r[bi, gi, yi, xi] * d_r[ei]
        if res is not None:
            out = out + res[bi, ei, yi, xi]
            own_v = own_v + own_res[bi, ei, yi, xi]
        return out + own_v * (fv - cv)

    def _own_lowrank(self, w: Tensor, ops: list, ranks: list[int]) -> list[tuple[Tensor, Tensor]]:
        """Per rank of the low-rank candidates: the pixels' own weight (B, G, Y, X) of those
        candidates and the projection's own-channel weight (E,) at that rank."""
        diag_r = rank_diagonals(self.basis, self._candidate_ranks())
        out = []
        for r in sorted(set(ranks)):
            idx = [i for i, ri in enumerate(ranks) if ri == r]
            out.append((own_weight(w[:, :, idx], [ops[i] for i in idx]), diag_r[r]))
        return out

    def _coarse_operators(self, e: int, band: Tensor, device, dtype) -> tuple[Tensor, Tensor]:
        """The coarse path's energy filter ``C`` (E, E) and own-count weights ``Q`` (G, E)
        (see :func:`~.coarse.coarse_operators`), cached until the next :meth:`adapt`."""
        key = (e, str(device), dtype, self.channel_ev)
        if self._coarse_cache is not None and self._coarse_cache[0] == key:
            return self._coarse_cache[1]
        proj = projection_matrix(self.basis, self.channel_scale)
        sigma = self.coarse_ev / self.channel_ev
        ops = coarse_operators(e, band, self.n_bands, sigma, proj, device, dtype)
        self._coarse_cache = (key, ops)
        return ops

    def _coarse(
        self,
        c: Tensor,
        z: Tensor,
        est: Tensor,
        weights: Tensor,
        ops: list,
        band: Tensor,
        gamma: Tensor,
        fill: Tensor,
        pixels: Tensor | None = None,
    ) -> Tensor:
        """``est + C (b - est)``, J-invariant (see :func:`~.coarse.coarse_path`)."""
        cmat, q = self._coarse_operators(c.shape[1], band, c.device, c.dtype)
        return coarse_path(
            c,
            z,
            est,
            weights[:, :, self.n_candidates :],
            ops,
            self.n_coarse_lowrank,
            band,
            gamma,
            fill,
            cmat,
            q,
            self.basis,
            self.channel_scale,
            self._band_edges(c.shape[1]),
            pixels,
        )
