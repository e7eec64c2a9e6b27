"""The default network: a learned, spatially adaptive mixture of J-invariant priors.

The model starts from classical estimates and learns only how to combine
them, pixel by pixel:

* a low-rank spectral prior: the cube's Poisson-normalised principal
  spectra (as HyperSpy's ``decomposition(normalize_poissonian_noise=True)``),
  with the rank chosen by the Noise2Self criterion itself (:mod:`.basis`);
* spatial Gaussian smoothing at several scales, and with a guide image guided
  filters (:mod:`.filters`).

Every candidate estimate is *J-invariant at the voxel level*: the estimate of
voxel (e, y, x) never uses the count in that voxel (its own share is removed
analytically and replaced by the same share of the neighbours' mean), but it
does use the same pixel's other channels and the neighbouring pixels. A small
2D convolutional network looks at local features (count level, how much the
candidates disagree, optionally the HAADF guide) and outputs per-pixel convex
weights over the candidates (:mod:`.mixing` mixes them, :mod:`.spreading`
spreads the counts).
Optional parts: a coarse energy path (:mod:`.coarse`) and the fitted blend with
the pixel's own counts (:mod:`.blend`); :mod:`.mixture_fit` fits the fixed
mixture the network starts from.

The output is a combination of estimates that are linear in the X-ray counts:
the guide image steers the weights and, with ``guide=True``, the kernels of
guided-filter candidates (local linear fits of the counts on the guide), but
a map is only ever built from counts; where the X-rays do not follow the
guide, the fitted slope, and so the guide's imprint, is near zero. The
hallucination checks of the benchmark (``benchmarks/harness/hallucination.py``) measure it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...masking import replace_masked
from ..checks import check_input
from ..options import PriorMixtureOptions
from .basis import cross_fitted_rank_errors, fit_basis, projection_matrix
from .blend import blend_crop, blend_statistics, fit_blend_shares, level_weights
from .filters import energy_smooth, gaussian_kernel1d
from .mixing import CandidateMixing
from .mixture_fit import fit_band_mixtures, mixture_bias
from .spreading import own_weight

__all__ = ["ASSUMED_CHANNEL_EV", "PriorMixture"]

#: Channel width (eV) assumed by :meth:`PriorMixture.adapt` when it is not told one.
ASSUMED_CHANNEL_EV = 10.0


class PriorMixture(CandidateMixing, nn.Module):
    """Spatially adaptive mixture of voxel-J-invariant spatial-spectral priors.

    Parameters
    ----------
    guide : bool
        Whether the input carries a guide-image channel (channel 1).
    lowrank_sigmas, spatial_sigmas : tuple of float
        Spatial scales (pixels) of the low-rank and of the raw-spectrum candidates.
    max_rank : int
        Largest rank tried for the spectral basis.
    rank : int or None
        Fixed rank; ``None`` chooses it on each cube (:meth:`adapt`).
    n_bands : int
        Energy bands of equal width, each with its own per-pixel weights.
    width, depth : int
        Width and number of 3x3 layers of the 2D mixing network.
    guided_filters : tuple of (int, float)
        With ``guide=True``: (radius, eps) of guided-filter candidates.
    residual_sigma : float
        Width (pixels) of the spreading of the low-rank residual; 0: none.
    coarse_ev : float
        Width (eV) of the coarse energy path; 0 (default): none.
    coarse_sigmas, coarse_lowrank_sigmas : tuple of float
        Spatial scales (pixels) of the coarse path's raw and low-rank candidates.
    coarse_weights : {"learned", "uniform"}
        The coarse candidates' weights: from the mixing network, or equal.
    init_mixture : bool
        Whether :meth:`init_weights` starts at the best fixed mixture of each band.
    rank_fractions : tuple of float
        Fractions of the chosen rank at which the low-rank candidates are built.
    own_window : int
        Channels on each side of a voxel that its own pixel's projection leaves out.
    blend_ev : float or None
        Width (eV) of the fitted blend with the pixel's own counts
        (:meth:`fit_blend`); 0: none; ``None``: 60 eV where the blend applies.
    blend_window_ev, blend_pixels, blend_levels : float, int, int
        The blend's scoring windows (eV), fitting crop (pixels) and count levels.

    Each option but ``guide`` is a field of
    :class:`~n2s_eds.models.options.PriorMixtureOptions`, which states its
    default, describes it in full and checks it.

    Notes
    -----
    The spectral basis is data, not a learned weight: :meth:`adapt` computes
    it for each cube to denoise (it is not part of the state dict), so a
    trained mixing network applies to new cubes with other energy axes.
    """

    #: ``forward(x, mask)`` returns estimates at the masked voxels only.
    supports_masked_forward = True

    def __init__(
        self,
        guide: bool = False,
        lowrank_sigmas: tuple[float, ...] = PriorMixtureOptions.lowrank_sigmas,
        spatial_sigmas: tuple[float, ...] = PriorMixtureOptions.spatial_sigmas,
        max_rank: int = PriorMixtureOptions.max_rank,
        rank: int | None = PriorMixtureOptions.rank,
        n_bands: int = PriorMixtureOptions.n_bands,
        width: int = PriorMixtureOptions.width,
        depth: int = PriorMixtureOptions.depth,
        guided_filters: tuple[tuple[int, float], ...] = PriorMixtureOptions.guided_filters,
        residual_sigma: float = PriorMixtureOptions.residual_sigma,
        coarse_ev: float = PriorMixtureOptions.coarse_ev,
        coarse_sigmas: tuple[float, ...] = PriorMixtureOptions.coarse_sigmas,
        coarse_lowrank_sigmas: tuple[float, ...] = PriorMixtureOptions.coarse_lowrank_sigmas,
        coarse_weights: str = PriorMixtureOptions.coarse_weights,
        init_mixture: bool = PriorMixtureOptions.init_mixture,
        rank_fractions: tuple[float, ...] = PriorMixtureOptions.rank_fractions,
        own_window: int = PriorMixtureOptions.own_window,
        blend_ev: float | None = PriorMixtureOptions.blend_ev,
        blend_window_ev: float = PriorMixtureOptions.blend_window_ev,
        blend_pixels: int = PriorMixtureOptions.blend_pixels,
        blend_levels: int = PriorMixtureOptions.blend_levels,
    ):
        super().__init__()
        options = PriorMixtureOptions(  # checks every option (InvalidInputError)
            lowrank_sigmas=lowrank_sigmas,
            spatial_sigmas=spatial_sigmas,
            max_rank=max_rank,
            rank=rank,
            n_bands=n_bands,
            width=width,
            depth=depth,
            guided_filters=guided_filters,
            residual_sigma=residual_sigma,
            coarse_ev=coarse_ev,
            coarse_sigmas=coarse_sigmas,
            coarse_lowrank_sigmas=coarse_lowrank_sigmas,
            coarse_weights=coarse_weights,
            init_mixture=init_mixture,
            rank_fractions=rank_fractions,
            own_window=own_window,
            blend_ev=blend_ev,
            blend_window_ev=blend_window_ev,
            blend_pixels=blend_pixels,
            blend_levels=blend_levels,
        )
        self.init_mixture = bool(init_mixture)
        self.coarse_weights = coarse_weights
        self.coarse_ev = float(coarse_ev)
        on = coarse_ev > 0
        self.coarse_sigmas = tuple(float(s) for s in coarse_sigmas) if on else ()
        self.coarse_lowrank_sigmas = tuple(float(s) for s in coarse_lowrank_sigmas) if on else ()
        #: Channel width (eV) of the cube of the last :meth:`adapt`; sets the coarse filter.
        self.channel_ev = ASSUMED_CHANNEL_EV
        self.residual_sigma = float(residual_sigma)
        self.guide = guide
        self.lowrank_sigmas = tuple(float(s) for s in lowrank_sigmas)
        self.spatial_sigmas = tuple(float(s) for s in spatial_sigmas)
        self.guided_filters = tuple((int(r), float(e)) for r, e in guided_filters)
        self.max_rank = int(max_rank)
        self.fixed_rank = rank
        self.rank_fractions = tuple(float(f) for f in rank_fractions)
        self.own_window = int(own_window)
        n_guided = len(self.guided_filters) if guide else 0
        self.n_lowrank = (len(self.lowrank_sigmas) + n_guided) * len(self.rank_fractions)
        self.n_candidates = self.n_lowrank + len(self.spatial_sigmas) + n_guided
        self.n_coarse_lowrank = len(self.coarse_lowrank_sigmas)
        self.n_coarse = (
            self.n_coarse_lowrank
            + len(self.coarse_sigmas)
            + (n_guided if self.coarse_ev > 0 else 0)
        )
        self.n_bands = int(n_bands)
        self.max_logit = 4.0
        n_feat = 3 * self.n_bands + (len(self.lowrank_sigmas) - 1) + (2 if guide else 0)
        layers: list[nn.Module] = [nn.Conv2d(n_feat, width, 3, padding=1), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, (self.n_candidates + self.n_coarse) * self.n_bands, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # per-cube data (not saved): basis (E, K) in normalised space, channel weights
        self.register_buffer("basis", torch.zeros(0, 0), persistent=False)
        self.register_buffer("channel_scale", torch.zeros(0), persistent=False)
        self.register_buffer("count_scale", torch.tensor(1.0), persistent=False)
        self.rank_errors: list[float] = []
        self._coarse_cache: tuple | None = None
        self.blend_ev = float(options.resolved_blend_ev())
        self.blend_window_ev = float(blend_window_ev)
        self.blend_pixels = int(blend_pixels)
        self.blend_levels = int(blend_levels)
        # the blend's per-band weights and the crop of the last adapt() they are fitted on
        self.register_buffer("_blend_counts", torch.zeros(0), persistent=False)
        self.register_buffer("_blend_guide", torch.zeros(0), persistent=False)
        self._blend: tuple | None = None  # (key, (n_bands, levels) shares, knots, report)

    #: Hide whole spectra in training: the weights must not see the hidden pixel.
    default_mask_mode = "spectrum"

    #: Pixel grid of :meth:`blind_forward`; tiles must start at multiples of it

    #: for tiled inference to equal a single pass.
    tile_multiple = 3

    @property
    def receptive_radius(self) -> int:
        """Pixels of context one output pixel depends on (for tiling halos)."""
        smooth = max(
            int(math.ceil(3.0 * s))
            for s in (
                *self.lowrank_sigmas,
                *self.spatial_sigmas,
                *self.coarse_sigmas,
                *self.coarse_lowrank_sigmas,
                self.residual_sigma,
                4.0,
            )
        )
        n_conv = sum(isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 for m in self.body)
        return 2 * smooth + n_conv + 3

    # ------------------------------------------------------------------ data prior

    @property
    def rank(self) -> int:
        """Rank of the current spectral basis (0 before :meth:`adapt`)."""
        return int(self.basis.shape[1]) if self.basis.numel() else 0

    @torch.no_grad()
    def adapt(
        self,
        cube: Tensor,
        guide: Tensor | None = None,
        max_pixels: int = 20000,
        channel_ev: float | None = None,
    ) -> None:
        """Compute the spectral basis of a (E, Y, X) count cube.

        Unless ``rank`` is fixed, the rank is chosen by cross-fitting
        (:func:`~.basis.cross_fitted_rank_errors`): a basis is fitted on each half
        of a pixel checkerboard and scored, by the self-supervised error of the
        sigma = 1 candidate, on the other half. The final basis is then fitted on
        all pixels at the chosen rank.

        Parameters
        ----------
        cube : torch.Tensor
            Counts, (E, Y, X), the processing window only.
        guide : torch.Tensor, optional
            (Y, X) or (1, 1, Y, X) normalised guide image (``guide=True``), kept
            with the central crop of the cube on which :meth:`fit_blend` fits.
        max_pixels : int
            At most this many pixels (a regular subsample) enter each SVD.
        channel_ev : float, optional
            Width of one channel of ``cube`` in eV (after any binning); it sets
            the width in channels of the coarse energy filter (``coarse_ev``).
            ``None`` assumes :data:`ASSUMED_CHANNEL_EV`.
        """
        if channel_ev is not None and not channel_ev > 0:
            raise ValueError(f"channel_ev must be > 0 eV, got {channel_ev}")
        self.channel_ev = ASSUMED_CHANNEL_EV if channel_ev is None else float(channel_ev)
        self._coarse_cache = None
        cube = cube.detach().to(torch.float32)
        e, y, x = cube.shape
        self._store_blend_crop(cube, guide)
        flat = cube.reshape(e, y * x)
        mean = flat.mean().clamp_min(1e-6)
        b = flat.mean(dim=1) + 1e-3 * mean  # channel means (> 0)
        self.channel_scale = torch.sqrt(b)
        self.count_scale = mean
        k_cap = max(1, int(min(self.max_rank, e - 1, y * x // 4)))
        if self.fixed_rank is not None:
            self.basis = self._fit_basis(flat, min(self.fixed_rank, k_cap), max_pixels)
            self.rank_errors = []
            return
        errors = cross_fitted_rank_errors(cube, self.channel_scale, k_cap, max_pixels)
        self.rank_errors = errors
        best = int(torch.tensor(errors).argmin()) + 1
        self.basis = self._fit_basis(flat, best, max_pixels)

    def _fit_basis(self, flat: Tensor, k: int, max_pixels: int) -> Tensor:
        """(E, k) spectral basis of (E, N) counts (see :func:`~.basis.fit_basis`)."""
        return fit_basis(flat, k, max_pixels, self.channel_scale)

    @torch.no_grad()
    def init_weights(
        self,
        cube: Tensor,
        guide: Tensor | None = None,
        max_voxels: int = 2**22,
        window_loss: float = 0.0,
        window_channels: int = 16,
    ) -> Tensor | None:
        """Start the mixing network at the best fixed mixture of each energy band.

        Every candidate is J-invariant (no estimate depends on its own voxel's
        count), so the mean squared difference between a fixed mixture of
        candidates and the counts is, up to a constant, the mixture's error
        against the expected counts. For each band, the weights on the simplex
        that minimise it are found in closed form (a small quadratic programme)
        and written into the head's bias; the head's weights stay zero, so the
        untrained network *is* that mixture, and training learns how each pixel
        should depart from it. Call after :meth:`adapt`, before training (a
        trained network is left alone by everything else). Does nothing when
        ``init_mixture`` is false or a coarse path is used.

        Parameters
        ----------
        cube : torch.Tensor
            Counts, (E, Y, X), the cube given to :meth:`adapt`.
        guide : torch.Tensor, optional
            (Y, X) or (1, 1, Y, X) normalised guide image (``guide=True``).
        max_voxels : int
            At most about this many voxels (a regular pixel subsample) enter the fit.
        window_loss, window_channels : float, int
            As in training (:class:`n2s_eds.module.N2SModule`): the fit then also
            minimises ``window_loss`` times the squared error of the sums over
            sliding energy windows of ``window_channels``, within each band,
            corrected for what the candidates take from the own pixel's other
            channels in the window (:meth:`_window_own_terms`), so that it is
            the windows' error against the expected counts for Poisson counts.

        Returns
        -------
        torch.Tensor or None
            The fitted weights (n_bands, n_candidates), or ``None`` when nothing was done.
        """
        if not self.init_mixture or self.n_coarse:
            return None
        e, y, x = cube.shape
        self._check_ready(e)
        dev, dtype = self.basis.device, self.basis.dtype
        c = cube.to(dev, dtype)[None]
        if self.guide:
            if guide is None:
                raise ValueError("this PriorMixture was built with guide=True: pass the guide")
            guide = guide.to(dev, dtype).reshape(1, 1, y, x)
        step = max(1, math.ceil(e * y * x / max_voxels))
        keep = torch.arange(y * x, device=dev)[::step]
        target = c[0].reshape(e, -1)[:, keep].to(torch.float64)
        cands = [  # one candidate of the whole cube at a time: only the subsample is kept
            f[0].reshape(e, -1)[:, keep].to(torch.float64) for f in self._iter_candidates(c, guide)
        ]
        fitted = fit_band_mixtures(
            cands,
            target,
            self._band_edges(e),
            window_loss,
            window_channels,
            lambda band, w: self._window_own_terms(target, keep, band, w, (y, x), guide),
        )
        bias = mixture_bias(fitted, self.max_logit)
        full = torch.zeros(self.n_bands, self.n_candidates + self.n_coarse, dtype=torch.float64)
        full[:, : self.n_candidates] = bias
        self.head.bias.copy_(full.reshape(-1).to(self.head.bias))
        return fitted.to(torch.float32)

    # ------------------------------------------------------------------ mixing

    def mixing_weights(self, counts: Tensor, guide: Tensor | None = None) -> Tensor:
        """Per-pixel weights, (B, n_bands, n_candidates + n_coarse, Y, X).

        For each energy band, the first ``n_lowrank`` weights spread a pixel's
        low-rank spectrum (``lowrank_sigmas``, then the guided filters when a
        guide is used), the next ones its raw spectrum (``spatial_sigmas``, then
        the guided filters); these ``n_candidates`` weights sum to 1. With
        ``coarse_ev > 0``, the last ``n_coarse`` weights (``coarse_lowrank_sigmas``,
        ``coarse_sigmas``, then the guided filters) are those of the coarse path
        and sum to 1 too.
        """
        self._check_ready(counts.shape[2])
        c = counts[:, 0]
        return self._weights(c, self._abundances(c), guide)

    def _weights(self, c: Tensor, z: Tensor, guide: Tensor | None) -> Tensor:
        raw = self.head(self.body(self._features(c, z, guide)))
        logits = self.max_logit * torch.tanh(raw / self.max_logit)  # no saturated softmax
        b, _, y, x = logits.shape
        logits = logits.view(b, self.n_bands, self.n_candidates + self.n_coarse, y, x)
        fine = torch.softmax(logits[:, :, : self.n_candidates], dim=2)
        if not self.n_coarse:
            return fine
        coarse = logits[:, :, self.n_candidates :]
        if self.coarse_weights == "uniform":
            coarse = torch.zeros_like(coarse)  # equal weights, not trained
        return torch.cat([fine, torch.softmax(coarse, dim=2)], dim=2)

    def blind_forward(self, counts: Tensor, guide: Tensor | None = None) -> Tensor:
        """Estimate every voxel exactly as training does, then add the blend.

        The scan is cut into ``grid x grid`` interleaved pixel sets; for each
        set, its pixels' spectra are replaced by their 8 neighbours' mean, the
        mixing weights of *all* pixels are computed from that input, and the
        spreading (which excludes each voxel's own count by construction)
        gives the estimates of that set's pixels. Training hides pixels the
        same way (whole-spectrum Bernoulli masks), so no estimate depends on
        its own voxel's count and the network is used exactly as trained.
        With ``blend_ev > 0``, the blend fitted by :meth:`fit_blend` is then
        added (``f + beta C (x - f)``), which is no longer J-invariant.
        """
        est = self._blind(counts, guide)
        if self.blend_ev <= 0:
            return est
        beta = self.fit_blend().to(counts.device, counts.dtype)  # (G, L)
        if not bool((beta > 0).any()):
            return est
        band = self._band_of_channel(counts.shape[2], counts.device)
        resid = energy_smooth((counts - est)[:, 0], self._energy_kernel())
        phi = level_weights(counts[:, 0], self._blend[2])  # (B, L, Y, X)
        share = torch.einsum("el,blyx->beyx", beta[band], phi)
        return est + (share * resid)[:, None]

    def _blind(self, counts: Tensor, guide: Tensor | None, own: bool = False):
        """The J-invariant estimates (B, 1, E, Y, X) of :meth:`blind_forward`; with
        ``own=True`` also each pixel's weight on its own abundances (B, G, Y, X)."""
        _, _, _, y, x = counts.shape
        grid = self.tile_multiple
        out = torch.empty_like(counts)
        own_lr = None
        if own:
            low_ops = self._operators((y, x), guide, counts.device, counts.dtype)[0]
            own_lr = counts.new_empty(counts.shape[0], self.n_bands, y, x)
        for i in range(grid):
            for j in range(grid):
                sel = torch.zeros(y, x, dtype=torch.bool, device=counts.device)
                sel[i::grid, j::grid] = True
                hidden = replace_masked(counts, sel.expand_as(counts), "local_mean")[:, 0]
                w = self._weights(hidden, self._abundances(hidden), guide)
                out = torch.where(sel, self.mix(counts, w, guide=guide, pixels=sel), out)
                if own:
                    part = own_weight(w[:, :, : self.n_lowrank], low_ops)
                    own_lr = torch.where(sel, part, own_lr)
        return (out, own_lr) if own else out

    # ------------------------------------------------------------------ blend

    def _store_blend_crop(self, cube: Tensor, guide: Tensor | None) -> None:
        """Keep the central ``blend_pixels``-square crop of ``cube`` (and guide) for
        :meth:`fit_blend`; a new crop makes any fitted blend stale."""
        self._blend = None
        if self.blend_ev <= 0:
            return
        self._blend_counts, self._blend_guide = blend_crop(cube, guide, self.blend_pixels)

    def _energy_kernel(self) -> Tensor:
        return gaussian_kernel1d(self.blend_ev / self.channel_ev, dtype=torch.float64)

    def _blend_key(self) -> tuple:
        """What the fitted blend depends on: the crop, the basis and the weights."""
        with torch.no_grad():
            sums = tuple(
                (float(p.double().sum()), float(p.double().square().sum()))
                for p in self.parameters()
            )
        return (self._blend_counts.data_ptr(), self.basis.data_ptr(), self.channel_ev, sums)

    @torch.no_grad()
    def fit_blend(self) -> Tensor:
        """The blend's shares ``beta`` (n_bands, blend_levels), fitted on the adapted cube.

        The estimate ``f`` is J-invariant and linear in each pixel's own counts
        (through the projection of its own spectrum on the other channels), so
        for Poisson counts the error of ``f + beta C (x - f)`` against the
        expected counts has an unbiased estimate in closed form, for single
        voxels and for sums over energy windows alike (a Poisson unbiased risk
        estimate: the squared difference to the counts, minus the counts, plus
        twice the counts times the output's derivative in them). ``beta`` in
        [0, 1] per band maximises the sum of the two estimated gains in dB over
        the counts (voxels, and windows of ``blend_window_ev``), on the central
        ``blend_pixels``-square crop kept by :meth:`adapt`. Refitted only when the
        crop, basis or weights change. Counts that are not whole numbers (no
        Poisson noise model) get ``beta = 0``. An estimated error below two of its
        standard errors (across pixels) is not resolved and counts as that limit,
        as the benchmark reports such gains as bounds: the blend may then add error
        that stays unseen, but no more. :attr:`blend_report`
        says what was fitted, the estimated gains and which were below resolution.
        """
        key = self._blend_key()
        if self._blend is None or self._blend[0] != key:
            beta, knots, report = self._fit_blend()
            self._blend = (key, beta, knots, report)
        return self._blend[1]

    @property
    def blend_report(self) -> dict:
        """What :meth:`fit_blend` found: ``beta`` per band and the estimated gains (dB) of
        the J-invariant estimate and of the blend, voxels and windows (empty before)."""
        return dict(self._blend[3]) if self._blend is not None else {}

    def _fit_blend(self) -> tuple[Tensor, Tensor | None, dict]:
        """Fit the blend's shares on the crop kept by :meth:`adapt` (uncached)."""
        return fit_blend_shares(self._blend_statistics(), self.n_bands, self.blend_levels)

    @torch.no_grad()
    def _blend_statistics(self) -> dict | str:
        """What the blend's risk estimates need, from the crop kept by :meth:`adapt`
        (see :func:`~.blend.blend_statistics`), or why there is none (a string)."""
        c = self._blend_counts
        if self.blend_ev <= 0 or not c.numel():
            return "no blend"
        if not bool((c == torch.round(c)).all()) or bool((c < 0).any()):
            return "counts are not whole non-negative numbers: no Poisson risk estimate"
        guide = self._blend_guide[None, None] if self._blend_guide.numel() else None
        if self.guide and guide is None:
            return "no guide was given to adapt()"
        e = c.shape[0]
        was_training = self.training
        self.eval()
        f, own = self._blind(c[None, None], guide, own=True)
        self.train(was_training)
        w = max(1, min(e, int(round(self.blend_window_ev / self.channel_ev))))
        return blend_statistics(
            c,
            f,
            own,
            edges=self._band_edges(e),
            kernel=self._energy_kernel(),
            proj=projection_matrix(self.basis, self.channel_scale),
            window_channels=w,
            levels=self.blend_levels,
        )

    def forward(
        self, x: Tensor, mask: Tensor | None = None, masked: Tensor | None = None
    ) -> Tensor:
        """Denoise (B, C, E, Y, X) counts (+ guide).

        Parameters
        ----------
        x : torch.Tensor
            (B, C, E, Y, X): counts (channel 0) and, with ``guide=True``, the
            guide image broadcast along energy (channel 1).
        mask : torch.Tensor, optional
            Boolean (B, 1, E, Y, X) of hidden voxels (training). When given,
            only the estimates at the masked voxels are computed and returned,
            as a 1-D tensor in the order of ``mask.nonzero()``.
        masked : torch.Tensor, optional
            ``x`` with the hidden pixels' spectra replaced (training): the
            mixing weights are computed from it, the spreading from ``x``.
            Every estimate then excludes the hidden voxel's own count exactly:
            the spreading by construction, the weights because the pixel was
            hidden from the weight network.

        Returns
        -------
        torch.Tensor
            (B, 1, E, Y, X) expected counts, or the masked values (see ``mask``).
        """
        check_input(x, self.guide)
        guide = x[:, 1:2, 0] if self.guide else None
        self._check_ready(x.shape[2])
        if mask is None:
            return self.blind_forward(x[:, :1], guide)
        else:
            src = (x if masked is None else masked)[:, 0]
            w = self._weights(src, self._abundances(src), guide)
        return self.mix(x[:, :1], w, mask, guide)
