"""Typed options of the networks: the one place that states their defaults.

:class:`PriorMixtureOptions` and :class:`Autoencoder3DOptions` mirror the keyword
arguments of :class:`~n2s_eds.models.PriorMixture` and
:class:`~n2s_eds.models.ConvAutoencoder3D` (all but ``guide``, which comes from
the data). The constructors take their defaults from these classes and check
their arguments with :meth:`validate`, so a bad option fails with the same
:class:`~n2s_eds.exceptions.InvalidInputError` whichever way it is given
(Python, options file, LightningCLI config).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidInputError

__all__ = ["DEFAULT_BLEND_EV", "Autoencoder3DOptions", "OptionsMixin", "PriorMixtureOptions"]

#: Width (eV, standard deviation along energy) of the prior mixture's blend filter
#: where ``blend_ev=None`` and the blend applies.
DEFAULT_BLEND_EV = 60.0

#: Fields holding tuples (JSON gives lists): converted back by ``__post_init__``.
_TUPLE_FIELDS = (
    "lowrank_sigmas",
    "spatial_sigmas",
    "coarse_sigmas",
    "coarse_lowrank_sigmas",
    "rank_fractions",
)


def _fail(name: str, value: Any, allowed: str) -> InvalidInputError:
    return InvalidInputError(f"{name} must be {allowed}, got {value!r}")


class OptionsMixin:
    """``to_dict``, ``field_names`` and ``from_dict`` of every options dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (JSON-serialisable; tuples stay tuples)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None):
        """Options from a dict such as :meth:`to_dict` gives (missing keys, or ``None``:
        the defaults; lists are taken as tuples).

        Raises
        ------
        InvalidInputError
            When ``d`` holds a key that is not an option, or a value that is not allowed.
        """
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise InvalidInputError(
                f"unknown {cls.__name__} key(s) {unknown}; the options are "
                f"{list(cls.field_names())}"
            )
        return cls(**d)


@dataclass(frozen=True)
class PriorMixtureOptions(OptionsMixin):
    """Options of :class:`~n2s_eds.models.PriorMixture` (all but ``guide``).

    Attributes
    ----------
    lowrank_sigmas : tuple of float
        Spatial scales (pixels, Gaussian standard deviation) of the low-rank
        candidates; 0 means the pixel's own spectrum projected on the low-rank
        basis. At least one.
    spatial_sigmas : tuple of float
        Scales (pixels) of the purely spatial candidates (neighbour averages per
        channel, no spectral prior) for signal outside the low-rank span.
    max_rank : int
        Largest rank (number of principal spectra) tried for the spectral basis.
    rank : int or None
        Fixed rank; ``None`` chooses it on each cube by the self-supervised
        (J-invariant) error of the sigma = 1 candidate.
    n_bands : int
        The energy window is cut into this many contiguous bands of equal
        width (in channels); each band gets its own per-pixel weights, so that
        the strong low-energy lines (which dominate the loss) do not set the
        smoothing of the weaker lines.
    width : int
        Feature channels of the 2D mixing network.
    depth : int
        Number of 3x3 convolution layers of the mixing network.
    guided_filters : tuple of (int, float)
        With ``guide=True``: (radius in pixels, eps in units of the guide's squared
        spread) of guided filters steered by the guide image, added as candidates
        beside the Gaussian scales, both for the low-rank and for the raw spectra.
        Like the Gaussian candidates they are linear in the counts, keep the totals
        and exclude each voxel's own count. The default (radius 1, 2 and 4 px, eps
        0.001) follows the guide's edges closely; the mixing weights decide per
        pixel and band how much of them the counts support.
    residual_sigma : float
        When > 0, what the low-rank candidates leave out of each pixel's spectrum
        (the counts minus their projection), weighted by the pixel's total
        low-rank weight, is spread back with a Gaussian of this width (pixels).
        Projection keeps each pixel's total but not each channel's, so mixing
        projected and raw spectra with weights that vary between pixels moves
        counts between channels (element maps); this term puts them back, and
        keeps the counts of every channel. 0 leaves it out.
    coarse_ev : float
        When > 0, a coarse path replaces what the estimate holds at the scale of
        an X-ray peak (a Gaussian of this width in eV along energy, ``C``) by
        what its own candidates hold there: ``est + C (b - est)``. Element maps
        integrate over about a peak's width, so they come from ``b``; the finer
        spectral detail from the estimate. 0 (default) leaves the path out.
    coarse_sigmas : tuple of float
        Spatial scales (pixels) of the coarse path's raw-count candidates; 0 is
        the pixel's own spectrum (its own voxel excluded, as everywhere).
    coarse_lowrank_sigmas : tuple of float
        Scales (pixels) of the coarse path's low-rank candidates (none by default).
    coarse_weights : {"learned", "uniform"}
        The coarse candidates' weights: per pixel and band from the mixing
        network, or equal and fixed.
    init_mixture : bool
        Whether ``init_weights`` (called once before training) starts the mixing
        network at the best fixed mixture of each band, fitted in closed form on
        the cube to denoise; ``False`` starts at equal weights.
    rank_fractions : tuple of float
        The low-rank candidates are built at each of these fractions, in (0, 1], of
        the chosen rank (rounded, at least 1): every scale of ``lowrank_sigmas``
        (and guided filter) once per fraction. A lower rank keeps less noise per
        channel, a higher one the weaker spectral components; the weights choose
        per pixel and band. Only ``(1.0,)`` works with ``residual_sigma`` or the
        coarse path.
    own_window : int
        Channels on each side of a voxel that its own pixel's low-rank
        projection leaves out (replaced, like the voxel itself, by the
        neighbours' mean). 0 makes each estimate independent of its own voxel
        only; ``w`` makes it independent of every count of its own pixel within
        ``w`` channels, so that the error of sums over energy windows of up to
        ``w + 1`` channels (element maps) is measured without bias by the
        hidden-spectrum loss (``window_loss`` of the training module). Only 0
        works with ``residual_sigma`` or the coarse path.
    blend_ev : float or None
        When > 0, the output adds back, band by band, a share ``beta`` of what the
        J-invariant estimate ``f`` leaves out of the pixel's own counts at the scale
        of an X-ray peak: ``f + beta C (x - f)``, with ``C`` a Gaussian of this
        width (eV, standard deviation) along energy (see ``PriorMixture.fit_blend``).
        A J-invariant estimate can never use a voxel's own count; at high counts
        per pixel the own pixel's peak areas are worth more than their noise.
        0 gives the J-invariant estimate itself; ``None`` (default) is
        :data:`DEFAULT_BLEND_EV` where the blend applies (``own_window=0``,
        ``rank_fractions=(1.0,)``, no residual or coarse path) and 0 otherwise
        (:meth:`resolved_blend_ev`).
    blend_window_ev : float
        Width (eV) of the sliding energy windows (about an element map's window)
        on whose sums the blend is scored besides single voxels.
    blend_pixels : int
        The blend is fitted on the central ``blend_pixels x blend_pixels`` pixels
        of the adapted cube.
    blend_levels : int
        With more than 1, the blend's share is fitted at this many count levels
        (the total counts of a pixel's neighbours, on a log scale between
        quantiles of the cube) and interpolated between them per pixel: pixels in
        bright regions can take more of their own counts than those of the
        background.
    """

    lowrank_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    spatial_sigmas: tuple[float, ...] = (1.0, 2.0)
    max_rank: int = 24
    rank: int | None = None
    n_bands: int = 8
    width: int = 32
    depth: int = 4
    guided_filters: tuple[tuple[int, float], ...] = ((1, 0.001), (2, 0.001), (4, 0.001))
    residual_sigma: float = 0.0
    coarse_ev: float = 0.0
    coarse_sigmas: tuple[float, ...] = (0.0, 1.0, 2.0)
    coarse_lowrank_sigmas: tuple[float, ...] = ()
    coarse_weights: str = "learned"
    init_mixture: bool = True
    rank_fractions: tuple[float, ...] = (1.0,)
    own_window: int = 0
    blend_ev: float | None = None
    blend_window_ev: float = 200.0
    blend_pixels: int = 64
    blend_levels: int = 1

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "guided_filters", tuple(tuple(p) for p in self.guided_filters))
        self.validate()

    @property
    def blend_applies(self) -> bool:
        """Whether the blend combines with the other options (``own_window=0``,
        ``rank_fractions=(1.0,)``, ``residual_sigma=0`` and ``coarse_ev=0``)."""
        return not (
            self.own_window
            or tuple(self.rank_fractions) != (1.0,)
            or self.residual_sigma > 0
            or self.coarse_ev > 0
        )

    def resolved_blend_ev(self) -> float:
        """``blend_ev``, with ``None`` resolved: :data:`DEFAULT_BLEND_EV` where the blend
        applies, else 0."""
        if self.blend_ev is None:
            return DEFAULT_BLEND_EV if self.blend_applies else 0.0
        return self.blend_ev

    def validate(self) -> None:
        """Check every option and their combinations.

        Raises
        ------
        InvalidInputError
            Naming the option, its value and what is allowed.
        """
        if self.coarse_weights not in ("learned", "uniform"):
            raise _fail("coarse_weights", self.coarse_weights, "'learned' or 'uniform'")
        if self.coarse_ev < 0:
            raise _fail("coarse_ev", self.coarse_ev, ">= 0 (eV)")
        if self.coarse_ev > 0 and not (self.coarse_sigmas or self.coarse_lowrank_sigmas):
            raise InvalidInputError(
                "coarse_sigmas or coarse_lowrank_sigmas must name a scale when coarse_ev > 0"
            )
        if any(s < 0 for s in (*self.coarse_sigmas, *self.coarse_lowrank_sigmas)):
            raise InvalidInputError(
                "coarse_sigmas and coarse_lowrank_sigmas must be >= 0 pixels, got "
                f"{self.coarse_sigmas}, {self.coarse_lowrank_sigmas}"
            )
        if self.residual_sigma < 0:
            raise _fail("residual_sigma", self.residual_sigma, ">= 0 (pixels)")
        if not self.lowrank_sigmas:
            raise InvalidInputError("lowrank_sigmas must name at least one scale, got ()")
        for name in ("lowrank_sigmas", "spatial_sigmas"):
            if any(s < 0 for s in getattr(self, name)):
                raise _fail(name, getattr(self, name), "scales >= 0 (pixels)")
        if any(len(p) != 2 or int(p[0]) < 1 or float(p[1]) <= 0 for p in self.guided_filters):
            raise _fail("guided_filters", self.guided_filters, "(radius >= 1, eps > 0) pairs")
        if int(self.max_rank) < 1:
            raise _fail("max_rank", self.max_rank, ">= 1")
        if self.rank is not None and int(self.rank) < 1:
            raise _fail("rank", self.rank, "None or >= 1")
        if not self.rank_fractions or any(not 0 < f <= 1 for f in self.rank_fractions):
            raise _fail("rank_fractions", self.rank_fractions, "fractions in (0, 1]")
        if int(self.own_window) < 0:
            raise _fail("own_window", self.own_window, ">= 0 channels")
        if self.own_window and (self.residual_sigma > 0 or self.coarse_ev > 0):
            raise InvalidInputError(
                f"own_window > 0 (got {self.own_window}) does not combine with "
                "residual_sigma or coarse_ev"
            )
        if tuple(self.rank_fractions) != (1.0,) and (self.residual_sigma > 0 or self.coarse_ev > 0):
            raise InvalidInputError(
                f"rank_fractions other than (1.0,) (got {self.rank_fractions}) do not combine "
                "with residual_sigma or coarse_ev"
            )
        if self.n_bands < 1:
            raise _fail("n_bands", self.n_bands, ">= 1")
        if int(self.width) < 1:
            raise _fail("width", self.width, ">= 1")
        if int(self.depth) < 1:
            raise _fail("depth", self.depth, ">= 1")
        if self.blend_ev is not None and self.blend_ev < 0:
            raise _fail("blend_ev", self.blend_ev, ">= 0 eV or None")
        if not self.blend_window_ev > 0:
            raise _fail("blend_window_ev", self.blend_window_ev, "> 0 eV")
        if int(self.blend_pixels) < 1:
            raise _fail("blend_pixels", self.blend_pixels, ">= 1")
        if int(self.blend_levels) < 1:
            raise _fail("blend_levels", self.blend_levels, ">= 1")
        if self.resolved_blend_ev() > 0 and not self.blend_applies:
            raise InvalidInputError(
                f"blend_ev > 0 (got {self.blend_ev}) works only with own_window=0, "
                "rank_fractions=(1.0,), residual_sigma=0 and coarse_ev=0; pass blend_ev=0 "
                "to combine those"
            )


@dataclass(frozen=True)
class Autoencoder3DOptions(OptionsMixin):
    """Options of :class:`~n2s_eds.models.ConvAutoencoder3D` (all but ``guide``).

    Attributes
    ----------
    base_channels : int
        Feature channels at full resolution; doubled at each level.
    depth : int
        Number of down-sampling levels (each halves the scan axes).
    energy_stride : int
        Down-sampling factor of the energy axis (channels) at each level.
    residual_blocks : int
        Residual blocks before the bottleneck.
    conditioned : bool
        Whether the input carries the energy of every channel (keV), after the
        counts and the guide: the network then knows where on the energy axis it
        is, the channel width and the count level of the cube (the shipped
        pretrained network is conditioned; see :mod:`n2s_eds.pretrained`).
    """

    base_channels: int = 16
    depth: int = 2
    energy_stride: int = 2
    residual_blocks: int = 1
    conditioned: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every option.

        Raises
        ------
        InvalidInputError
            Naming the option, its value and what is allowed.
        """
        if int(self.base_channels) < 1:
            raise _fail("base_channels", self.base_channels, ">= 1")
        if self.depth < 1:
            raise _fail("depth", self.depth, ">= 1")
        if int(self.energy_stride) < 1:
            raise _fail("energy_stride", self.energy_stride, ">= 1")
        if int(self.residual_blocks) < 0:
            raise _fail("residual_blocks", self.residual_blocks, ">= 0")
