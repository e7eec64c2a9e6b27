"""An endless, seeded corpus of varied simulated EDS acquisitions, for pretraining.

:func:`draw_acquisition` draws acquisition ``index`` of the stream ``seed``: a
TEM thin film or an SEM bulk specimen made of 2-8 elements from most of the
periodic table, arranged in one of several layouts, measured with a random
detector (channel width, offset, resolution), beam energy, dose, scan
artefacts and HAADF image. It returns the Poisson counts and their exact
expectation on the canonical energy bins of the processing window
(:data:`CANONICAL_BIN_EV`), computed with the physics of
:mod:`~n2s_eds.simulate.phantom`.

The element sets of the benchmark phantoms (:data:`HELD_OUT_ELEMENT_SETS`) are
never drawn, and every random number comes from
``numpy.random.default_rng([seed, index, CORPUS_STREAM])``, a stream distinct
from the phantoms' ``default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import NamedTuple

import numpy as np

from ..exceptions import InvalidInputError
from ..preprocess import (
    DEFAULT_HIGH_KEV,
    DEFAULT_LOW_KEV,
    detector_fwhm_kev,
    energy_binning,
    normalise_guide,
)
from .geometry import SUPERSAMPLE, disc_maps, pixel_grid, place_discs, voronoi_fractions
from .phantom import PHANTOM_ELEMENTS
from .physics import (
    BREMS_GAIN,
    ZERO_PEAK_FRACTION,
    Phase,
    bremsstrahlung_spectrum,
    channel_gaussian,
    element_data,
    element_spectrum,
    mass_fractions,
)

__all__ = [
    "CANONICAL_BIN_EV",
    "CORPUS_STREAM",
    "CORPUS_LAYOUTS",
    "HELD_OUT_ELEMENT_SETS",
    "CorpusOptions",
    "Acquisition",
    "draw_acquisition",
    "draw_elements",
    "eligible_elements",
]

#: Width (eV) of the network's energy bins: whole native channels, the nearest multiple.
CANONICAL_BIN_EV = 20.0
#: Word mixed into the seed of every corpus acquisition (never a phantom's stream).
CORPUS_STREAM = 0x5C0_2B05
#: Element sets of the benchmark phantoms, never drawn by the corpus.
HELD_OUT_ELEMENT_SETS: frozenset[frozenset[str]] = frozenset(
    frozenset(PHANTOM_ELEMENTS[kind]) for kind in ("tem", "sem")
)
#: Spatial layouts of the corpus.
CORPUS_LAYOUTS: tuple[str, ...] = ("particles", "core_shell", "grains", "layers", "gradient")

_BEAMS_KEV = {"tem": (80.0, 120.0, 200.0, 300.0), "sem": (10.0, 15.0, 20.0, 25.0, 30.0)}
_EXCLUDED = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Tc", "Pm"})
_Z_RANGE = (5, 83)
#: Probability that a TEM specimen lies on an amorphous support film.
_SUPPORT_PROBABILITY = 0.7
#: Support films: (phase, thickness range in nm).
_SUPPORTS = (
    (Phase("amorphous carbon", 2.0, {"C": 1.0}), (3.0, 20.0)),
    (Phase("silicon nitride", 3.1, {"Si": 3.0, "N": 4.0}), (5.0, 50.0)),
)
_THICKNESS_NM = (5.0, 60.0)
_DENSITY = (1.0, 20.0)
_BREMS_FACTOR = (0.3, 3.0)
_HAADF_COUNTS = (1.0e2, 1.0e5)
_ARTEFACTS = ("line_intensity", "line_jitter", "drift")
#: Phases a layout holds, (fewest, most), besides a support film or matrix.
_LAYOUT_PHASES = dict(zip(CORPUS_LAYOUTS, ((1, 4), (2, 2), (2, 4), (2, 4), (2, 2)), strict=True))


def _pair(name: str, value: object, low: float, integer: bool = False, ordered: bool = True):
    try:
        lo, hi = (int(v) if integer else float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidInputError(f"corpus.{name}={value!r} must be a pair (low, high).") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and low <= lo and (hi >= lo or not ordered)):
        rule = "low <= high" if ordered else "both"
        raise InvalidInputError(f"corpus.{name}={value!r} must satisfy {low} <= {rule}.")
    return lo, hi


def _choices(name: str, value: object, known: tuple[str, ...]) -> tuple[str, ...]:
    chosen = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    if not chosen or any(v not in known for v in chosen):
        raise InvalidInputError(f"corpus.{name}={value!r} must be a non-empty subset of {known}.")
    return chosen


@dataclass(frozen=True)
class CorpusOptions:
    """The ranges from which :func:`draw_acquisition` draws.

    Pairs are inclusive ranges ``(low, high)``; lists are accepted for them (as
    read from YAML) and stored as tuples.

    Attributes
    ----------
    shape : tuple of int
        Navigation shape (Y, X), at least 8 x 8.
    kinds : tuple of str
        Specimen kinds to draw from, ``"tem"`` and/or ``"sem"``.
    n_elements : tuple of int
        Number of drawn elements (a support film may add C, or Si and N).
    dose : tuple of float
        Mean expected counts per pixel in the processing window, drawn log-uniform.
    channel_ev : tuple of float
        Native channel width (eV), drawn uniform.
    offset_kev : tuple of float
        Centre of the native first channel (keV).
    resolution_ev : tuple of float
        Detector FWHM at Mn Ka (eV).
    zero_peak : float
        Probability of a detector zero peak (it reaches the bins only when
        ``low_kev`` lies close to 0).
    guide : float
        Probability that the acquisition has a HAADF image.
    artefacts : float
        Probability of scan artefacts.
    low_kev, high_kev : float
        Processing window; the beam energy lowers the upper bound.
    bin_ev : float
        Wanted bin width (eV); bins hold ``max(1, round(bin_ev / channel_ev))`` channels.
    layouts : tuple of str
        Spatial layouts to draw from (:data:`CORPUS_LAYOUTS`).

    Raises
    ------
    InvalidInputError
        For an option out of range, naming it.
    """

    shape: tuple[int, int] = (48, 48)
    kinds: tuple[str, ...] = ("tem", "sem")
    n_elements: tuple[int, int] = (2, 8)
    dose: tuple[float, float] = (1.0, 500.0)
    channel_ev: tuple[float, float] = (5.0, 20.0)
    offset_kev: tuple[float, float] = (-0.5, 0.05)
    resolution_ev: tuple[float, float] = (120.0, 145.0)
    zero_peak: float = 0.5
    guide: float = 0.7
    artefacts: float = 0.5
    low_kev: float = DEFAULT_LOW_KEV
    high_kev: float = DEFAULT_HIGH_KEV
    bin_ev: float = CANONICAL_BIN_EV
    layouts: tuple[str, ...] = CORPUS_LAYOUTS

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "shape", _pair("shape", self.shape, 8, True, False))
        put(self, "kinds", _choices("kinds", self.kinds, ("tem", "sem")))
        put(self, "layouts", _choices("layouts", self.layouts, CORPUS_LAYOUTS))
        put(self, "n_elements", _pair("n_elements", self.n_elements, 1, integer=True))
        if self.n_elements[1] > 12:
            raise InvalidInputError(f"corpus.n_elements={self.n_elements} allows at most 12.")
        for name, low in (("dose", 1e-9), ("channel_ev", 1e-3), ("resolution_ev", 40.0)):
            put(self, name, _pair(name, getattr(self, name), low))
        put(self, "offset_kev", _pair("offset_kev", self.offset_kev, -np.inf))
        for name in ("zero_peak", "guide", "artefacts"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"corpus.{name}={value} must be a probability in [0, 1].")
            put(self, name, value)
        for name in ("low_kev", "high_kev", "bin_ev"):
            put(self, name, float(getattr(self, name)))
        if not 0.0 <= self.low_kev < self.high_kev < np.inf:
            raise InvalidInputError(
                f"corpus.low_kev={self.low_kev} and high_kev={self.high_kev} must satisfy "
                "0 <= low_kev < high_kev."
            )
        if not (np.isfinite(self.bin_ev) and self.bin_ev > 0):
            raise InvalidInputError(f"corpus.bin_ev={self.bin_ev} must be a positive width.")
        if self.min_bins() < 8:
            raise InvalidInputError(
                f"corpus.low_kev={self.low_kev}, high_kev={self.high_kev} and bin_ev="
                f"{self.bin_ev} leave fewer than 8 energy bins; widen the window."
            )

    def min_bins(self) -> int:
        """A lower bound on the number of energy bins of every acquisition drawn.

        Returns
        -------
        int
            At most the bins of the narrowest window (lowest beam energy) with
            the widest bins the channel widths allow.
        """
        w_hi = self.channel_ev[1]
        widest_ev = max(w_hi, self.bin_ev + w_hi / 2.0)
        high = min(self.high_kev, min(min(_BEAMS_KEV[k]) for k in self.kinds))
        return max(int(np.floor((high - self.low_kev) * 1000.0 / widest_ev)) - 3, 0)

    def as_dict(self) -> dict:
        """The options as plain lists and numbers (for YAML and JSON)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


class Acquisition(NamedTuple):
    """One simulated acquisition on the canonical bins of its processing window.

    Attributes
    ----------
    counts : numpy.ndarray
        float32 Poisson counts (E, Y, X).
    truth : numpy.ndarray
        float32 expected counts (E, Y, X): ``counts ~ Poisson(truth)``.
    guide : numpy.ndarray
        float32 HAADF image (Y, X) normalised with
        :func:`~n2s_eds.preprocess.normalise_guide`; zeros when there is none.
    energy_kev : numpy.ndarray
        float32 centre of every bin (E,), keV.
    bin_ev : float
        Width of every bin in eV (``factor`` native channels).
    info : dict
        JSON-serialisable description: kind, layout, elements, phases (name,
        formula, density, role), dose, channel_ev, factor, offset_kev,
        resolution_ev, beam_kev, zero_peak, has_guide, artefacts, seed, index.
    """

    counts: np.ndarray
    truth: np.ndarray
    guide: np.ndarray
    energy_kev: np.ndarray
    bin_ev: float
    info: dict


@cache
def eligible_elements(beam_kev: float, low_kev: float, high_kev: float) -> tuple[str, ...]:
    """Elements the corpus draws from for a beam energy and processing window.

    Parameters
    ----------
    beam_kev : float
        Beam energy (keV).
    low_kev, high_kev : float
        Processing window (keV).

    Returns
    -------
    tuple of str
        Symbols with Z from 5 to 83, without noble gases, Tc and Pm, that have an
        excited X-ray line inside the window and below the beam energy.
    """
    from exspy.material import elements as elements_db

    top = min(float(high_kev), float(beam_kev))
    centre, width = np.array([(low_kev + top) / 2.0]), top - low_kev
    found = []
    for symbol in elements_db.keys():
        if symbol in _EXCLUDED:
            continue
        try:
            z = element_data(symbol)[0]
        except (KeyError, AttributeError):
            continue
        if not _Z_RANGE[0] <= z <= _Z_RANGE[1]:
            continue
        spectrum, _ = element_spectrum(symbol, centre, width, float(beam_kev), False)
        if spectrum[0] > 0:
            found.append((z, symbol))
    return tuple(s for _, s in sorted(found))


def draw_elements(
    rng: np.random.Generator,
    n: int,
    candidates: tuple[str, ...] | list[str],
    present: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Draw ``n`` distinct elements, redrawing any set that the benchmark holds out.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of elements.
    candidates : sequence of str
        Symbols to draw from.
    present : tuple of str
        Elements the specimen holds besides the drawn ones (a support film):
        the union may not be held out either.

    Returns
    -------
    tuple of str
        The drawn symbols, neither alone nor with ``present`` in
        :data:`HELD_OUT_ELEMENT_SETS`.

    Raises
    ------
    InvalidInputError
        When there are fewer candidates than ``n`` or every draw is held out.
    """
    pool = list(candidates)
    if not 1 <= n <= len(pool):
        raise InvalidInputError(f"cannot draw {n} elements from {len(pool)} candidates.")
    for _ in range(1000):
        picked = tuple(pool[i] for i in rng.choice(len(pool), size=n, replace=False))
        chosen = frozenset(picked)
        if chosen not in HELD_OUT_ELEMENT_SETS and chosen | set(present) not in (
            HELD_OUT_ELEMENT_SETS
        ):
            return picked
    raise InvalidInputError(f"every set of {n} elements of {pool} is held out.")


def _draw_phases(rng: np.random.Generator, elements: tuple[str, ...], n: int) -> list[Phase]:
    """``n`` random phases over subsets of ``elements``; each element is in one at least."""
    members = [set() for _ in range(n)]
    for el in elements:
        members[int(rng.integers(n))].add(el)
        for k in np.flatnonzero(rng.random(n) < 0.3):
            members[k].add(el)
    phases = []
    for chosen in members:
        if not chosen:
            chosen.add(elements[int(rng.integers(len(elements)))])
        ordered = [el for el in elements if el in chosen]
        n_atoms = rng.integers(1, 7, len(ordered))
        n_atoms //= np.gcd.reduce(n_atoms)
        formula = {el: float(c) for el, c in zip(ordered, n_atoms, strict=True)}
        name = "".join(el + (f"{int(c)}" if c > 1 else "") for el, c in formula.items())
        density = float(rng.uniform(*_DENSITY))
        phases.append(Phase(name, density, formula))
    return phases


def _coarsen(fine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mean of each pixel's supersampled block."""
    return fine.reshape(shape[0], SUPERSAMPLE, shape[1], SUPERSAMPLE).mean(axis=(1, 3))


def _direction(rng: np.random.Generator, shape: tuple[int, int], fine: bool) -> np.ndarray:
    """Coordinate along a random direction, 0 to 1 over the pixel centres of the field."""
    angle = rng.uniform(0.0, np.pi)
    y = pixel_grid(shape[0]) if fine else np.arange(shape[0], dtype=np.float64)
    x = pixel_grid(shape[1]) if fine else np.arange(shape[1], dtype=np.float64)
    s = y[:, None] * np.cos(angle) + x[None, :] * np.sin(angle)
    corners = [
        a * np.cos(angle) + b * np.sin(angle) for a in (0, shape[0] - 1) for b in (0, shape[1] - 1)
    ]
    return (s - min(corners)) / max(max(corners) - min(corners), 1e-9)


def _geometry(
    rng: np.random.Generator, layout: str, shape: tuple[int, int], n: int, chord: bool
) -> tuple[list[np.ndarray], bool]:
    """Maps of up to ``n`` phases, and whether the rest of the field is a matrix.

    Disc layouts give sphere chords relative to the largest diameter (``chord``)
    or area fractions; the others give area fractions that sum to 1.
    """
    if layout in ("particles", "core_shell"):
        discs = place_discs(rng, shape, float(rng.uniform(0.1, 0.4)))
        norm = 2.0 * max(r for _, _, r in discs) if chord else 1.0
        if layout == "core_shell":
            cores, shells = disc_maps(shape, discs, float(rng.uniform(0.4, 0.8)), chord)
            return [sum(cores) / norm, sum(shells) / norm], True
        full, _ = disc_maps(shape, discs, 1.0, chord)
        n = min(n, len(full))
        labels = rng.permutation(np.arange(len(full)) % n)
        return [sum(f for f, lab in zip(full, labels, strict=True) if lab == k) / norm
                for k in range(n)], True  # fmt: skip
    if layout == "grains":
        return voronoi_fractions(rng, shape, n), False
    if layout == "layers":
        s = _direction(rng, shape, fine=True)
        n_bands = int(rng.integers(n, 3 * n + 1))
        cuts = np.sort(rng.uniform(0.0, 1.0, n_bands - 1))
        labels = (np.arange(n_bands) + int(rng.integers(n))) % n
        band = labels[np.searchsorted(cuts, s)]
        return [_coarsen((band == k).astype(np.float64), shape) for k in range(n)], False
    s = _direction(rng, shape, fine=False)
    a, b = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    f = a + (b - a) * s
    return [f, 1.0 - f], False


def _scan_artefacts(
    rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-row x shift (px) and intensity gain of a distorted scan, and the artefact names."""
    height = shape[0]
    names = [name for name in _ARTEFACTS if rng.random() < 0.5]
    if not names:
        names = [_ARTEFACTS[int(rng.integers(len(_ARTEFACTS)))]]
    shift, gain = np.zeros(height), np.ones(height)
    if "line_intensity" in names:
        gain = np.maximum(1.0 + rng.normal(0.0, rng.uniform(0.05, 0.2), height), 0.2)
    if "line_jitter" in names:
        hit = rng.random(height) < rng.uniform(0.05, 0.3)
        shift += np.where(hit, rng.choice([-1.0, 1.0], height), 0.0)
    if "drift" in names:
        shift += rng.uniform(-2.0, 2.0) * np.arange(height) / max(height - 1, 1)
    return shift, gain, names


def _shift_rows(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Each row moved right by its (fractional) shift, linear interpolation, edges held."""
    width = image.shape[1]
    src = np.clip(np.arange(width)[None, :] - shift[:, None], 0.0, width - 1.0)
    x0 = np.minimum(np.floor(src).astype(np.intp), width - 2)
    frac = src - x0
    rows = np.arange(image.shape[0])[:, None]
    return image[rows, x0] * (1.0 - frac) + image[rows, x0 + 1] * frac


def _energy_bins(
    channel_ev: float, offset_kev: float, low_kev: float, high_kev: float, bin_ev: float
) -> tuple[np.ndarray, int]:
    """Centres (keV) of the full bins of the processing window, and channels per bin."""
    w = channel_ev / 1000.0
    first = int(np.ceil((low_kev - offset_kev) / w - 1e-9))
    last = int(np.floor((high_kev - offset_kev) / w + 1e-9))
    n_channels = max(last - first + 1, 0)
    factor = energy_binning(max(n_channels, 1), channel_ev, bin_ev).factor
    starts = first + factor * np.arange(n_channels // factor)
    return offset_kev + w * (starts + (factor - 1) / 2.0), factor


def draw_acquisition(seed: int, index: int, options: CorpusOptions | None = None) -> Acquisition:
    """Draw acquisition ``index`` of the corpus stream ``seed``.

    Parameters
    ----------
    seed, index : int
        Non-negative integers; the acquisition depends on them (and the options)
        alone, through ``numpy.random.default_rng([seed, index, CORPUS_STREAM])``.
    options : CorpusOptions, optional
        The ranges to draw from; defaults to ``CorpusOptions()``.

    Returns
    -------
    Acquisition
        Counts, expected counts, guide and energy axis on full bins of
        ``factor`` native channels, from the window's first channel (a last,
        partial bin is left out).

    Raises
    ------
    InvalidInputError
        For a negative seed or index.

    Examples
    --------
    >>> from n2s_eds.simulate.corpus import CorpusOptions, draw_acquisition
    >>> acq = draw_acquisition(0, 5, CorpusOptions(shape=(16, 16)))
    >>> acq.counts.shape[1:]
    (16, 16)
    """
    opts = CorpusOptions() if options is None else options
    if int(seed) < 0 or int(index) < 0:
        raise InvalidInputError(f"seed={seed} and index={index} must be non-negative.")
    rng = np.random.default_rng([int(seed), int(index), CORPUS_STREAM])
    shape = opts.shape
    kind = opts.kinds[int(rng.integers(len(opts.kinds)))]
    beam_kev = float(rng.choice(_BEAMS_KEV[kind]))
    layout = opts.layouts[int(rng.integers(len(opts.layouts)))]
    channel_ev = float(rng.uniform(*opts.channel_ev))
    offset_kev = float(rng.uniform(*opts.offset_kev))
    resolution_ev = float(rng.uniform(*opts.resolution_ev))
    dose = float(np.exp(rng.uniform(*np.log(opts.dose))))
    zero_peak = bool(rng.random() < opts.zero_peak)
    has_guide = bool(rng.random() < opts.guide)
    distorted = bool(rng.random() < opts.artefacts)
    high_kev = min(opts.high_kev, beam_kev)

    # Elements and phases.
    support = None
    if kind == "tem" and rng.random() < _SUPPORT_PROBABILITY:
        support_phase, (t_lo, t_hi) = _SUPPORTS[int(rng.integers(len(_SUPPORTS)))]
        support = (support_phase, float(rng.uniform(t_lo, t_hi)))
    present = tuple(support[0].formula) if support else ()
    n_el = int(rng.integers(opts.n_elements[0], opts.n_elements[1] + 1))
    drawn = draw_elements(rng, n_el, eligible_elements(beam_kev, opts.low_kev, high_kev), present)
    lo, hi = _LAYOUT_PHASES[layout]
    n_phases = int(np.clip(rng.integers(1, 5), lo, hi))
    maps, matrix = _geometry(rng, layout, shape, n_phases, chord=kind == "tem")
    roles = ["phase"] * len(maps) + (["matrix"] if matrix and kind == "sem" else [])
    phases = _draw_phases(rng, drawn, len(roles))
    if kind == "tem":
        thickness = rng.uniform(*_THICKNESS_NM, len(maps))
        if layout == "gradient":
            thickness[:] = thickness[0]
        amounts = [m * t for m, t in zip(maps, thickness, strict=True)]
        if support:
            phases.append(support[0])
            roles.append("support")
            amounts.append(np.full(shape, support[1]))
    else:
        amounts = [np.asarray(m, dtype=np.float64) for m in maps]
        if matrix:
            amounts.append(np.clip(1.0 - sum(amounts), 0.0, 1.0))

    # Scan artefacts move the phase maps and modulate the beam, row by row.
    gain, artefacts = np.ones(shape[0]), []
    if distorted:
        shift, gain, artefacts = _scan_artefacts(rng, shape)
        if np.any(shift):
            amounts = [_shift_rows(a, shift) for a in amounts]

    # Element maps (TEM: mass thickness; SEM: mass fraction) and the Z-contrast image.
    elements = tuple(dict.fromkeys(drawn + present))
    mass = {el: np.zeros(shape) for el in elements}
    for phase, amount in zip(phases, amounts, strict=True):
        for el, c in mass_fractions(phase).items():
            mass[el] += phase.density * c * amount
    haadf_clean = sum(
        mass[el] / element_data(el)[1] * element_data(el)[0] ** 1.7 for el in elements
    )
    if kind == "sem":
        total = np.maximum(sum(mass.values()), 1e-12)
        mass = {el: m / total for el, m in mass.items()}

    # Expected counts on the canonical bins.
    bulk = kind == "sem"
    centres, factor = _energy_bins(channel_ev, offset_kev, opts.low_kev, high_kev, opts.bin_ev)
    width_kev = factor * channel_ev / 1000.0
    spectra = [
        element_spectrum(el, centres, width_kev, beam_kev, bulk, resolution_ev=resolution_ev)
        for el in elements
    ]
    flat = np.stack([mass[el].ravel() for el in elements])
    expected = np.stack([spectrum for spectrum, _ in spectra]).T @ flat
    z = np.array([element_data(el)[0] for el in elements], dtype=np.float64)
    atomic_weight = np.array([element_data(el)[1] for el in elements])
    brems_map = (z**2 / atomic_weight if kind == "tem" else z) @ flat
    brems_gain = BREMS_GAIN[kind] * np.exp(rng.uniform(*np.log(_BREMS_FACTOR)))
    continuum = bremsstrahlung_spectrum(centres, width_kev, beam_kev, bulk)
    expected += np.outer(continuum, brems_gain * brems_map)
    expected = expected.reshape(centres.size, *shape) * gain[None, :, None]
    counted = expected.sum(axis=0).mean()
    if not counted > 0:
        raise InvalidInputError(f"acquisition {index} of stream {seed} holds no X-ray signal.")
    expected *= dose / counted
    if zero_peak:
        edges = np.append(centres - width_kev / 2.0, centres[-1] + width_kev / 2.0)
        peak = channel_gaussian(edges, 0.0, float(detector_fwhm_kev(0.0)))
        if np.any(peak > 0):
            amplitude = dose * ZERO_PEAK_FRACTION / (1.0 - ZERO_PEAK_FRACTION)
            expected += (amplitude * peak)[:, None, None]
    truth = expected.astype(np.float32)
    counts = rng.poisson(expected).astype(np.float32)

    guide = np.zeros(shape, dtype=np.float32)
    if has_guide:
        level = np.exp(rng.uniform(*np.log(_HAADF_COUNTS)))
        positive = haadf_clean[haadf_clean > 0]
        ref = float(np.median(haadf_clean)) or (float(positive.mean()) if positive.size else 1.0)
        image = rng.poisson(haadf_clean * (level / ref) * gain[:, None])
        guide = normalise_guide(image.astype(np.float32))

    info = {
        "kind": kind,
        "layout": layout,
        "elements": list(elements),
        "phases": [
            dict(name=p.name, formula=dict(p.formula), density=float(p.density), role=role)
            for p, role in zip(phases, roles, strict=True)
        ],
        "dose": dose,
        "channel_ev": channel_ev,
        "factor": int(factor),
        "offset_kev": offset_kev,
        "resolution_ev": resolution_ev,
        "beam_kev": beam_kev,
        "zero_peak": zero_peak,
        "has_guide": has_guide,
        "artefacts": list(artefacts),
        "seed": int(seed),
        "index": int(index),
    }
    return Acquisition(counts, truth, guide, centres.astype(np.float32), factor * channel_ev, info)
