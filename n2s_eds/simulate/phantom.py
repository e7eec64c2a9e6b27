"""Physical EDS phantoms with exact truth, for tests, benchmarks and demos.

:func:`phantom` builds a spectrum image (Y, X, E) whose expected counts are known
exactly, draws Poisson counts from them and adds a matching Z-contrast (HAADF)
image. The physics is deliberately simple but has the features a denoiser meets
in real data:

* characteristic lines of every element, with energies and relative weights
  from exspy's X-ray line database, as Gaussian peaks whose width follows the
  detector law of :func:`n2s_eds.preprocess.detector_fwhm_kev`, integrated
  exactly over each channel with the error function;
* family intensities (K, L, M) from an approximate fluorescence yield and a
  Bethe-like ionisation cross-section ``ln(U) / (U Ec^2)``;
* a Kramers-like bremsstrahlung ``(E0 - E) / E``; both are multiplied by a
  detector efficiency (window absorption at low energy, crystal transparency at
  high energy);
* an optional detector zero (strobe) peak at 0 keV, below 0.2 keV.

Inside the specimen, no matrix absorption or secondary fluorescence is modelled,
except, for bulk (SEM) specimens, one crude low-energy roll-off ``exp(-(0.7/E)^2)``
applied to lines and continuum alike.

TEM phantoms are nanoparticles on a thin amorphous carbon film: the X-ray signal
of each phase is proportional to its projected mass thickness (sphere chords).
SEM phantoms are polished rock sections: the X-ray signal is proportional to the
area fraction of each phase in a pixel (bulk specimen). :func:`phantom_maps` gives
the exact element and phase maps behind a phantom.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import numpy as np
from exspy.material import elements as _elements_db
from exspy.signals import EDSSEMSpectrum, EDSTEMSpectrum
from hyperspy.signals import Signal2D
from scipy.special import erf

from ..exceptions import InvalidInputError
from ..preprocess import DEFAULT_LOW_KEV, detector_fwhm_kev

__all__ = ["PHANTOM_ELEMENTS", "PHANTOM_LAYOUTS", "Phantom", "phantom", "phantom_maps"]

#: Elements present in the phantoms of each kind.
PHANTOM_ELEMENTS: dict[str, tuple[str, ...]] = {
    "tem": ("C", "O", "Fe", "Pt"),
    "sem": ("O", "Al", "Si", "K", "Ca", "Fe"),
}

#: Spatial layouts :func:`phantom` accepts.
PHANTOM_LAYOUTS: tuple[str, ...] = ("core_shell", "particles", "boundary")

_BEAM_ENERGY_KEV = {"tem": 200.0, "sem": 20.0}
_PIXEL_SIZE = {"tem": (0.5, "nm"), "sem": (0.5, "µm")}
_ENERGY_RESOLUTION_EV = 130.0
#: Fraction of all counts (zero peak included) that the zero peak holds.
_ZERO_PEAK_FRACTION = 0.15
#: Thickness of the TEM carbon support film, in nm.
_SUPPORT_NM = 5.0
#: Bremsstrahlung strength relative to the characteristic lines, per kind.
_BREMS_GAIN = {"tem": 1.5e-9, "sem": 3.0e-8}
#: Approximate fluorescence yield constant a in w = Z^4 / (a + Z^4), per family.
_YIELD_CONSTANT = {"K": 1.12e6, "L": 1.0e8, "M": 1.0e9}
#: Supersampling factor per pixel side for anti-aliased edges.
_SUPERSAMPLE = 4
#: Thickness (nm) of the FePt and siderite slabs of the TEM "boundary" layout (similar counts).
_SLAB_NM = (2.0, 20.0)
#: Mean HAADF intensity of the support/matrix, in detector counts (sets its SNR).
_HAADF_LEVEL = 1.0e5


@dataclass(frozen=True)
class _Phase:
    """A material: name, density (g/cm^3) and atomic formula."""

    name: str
    density: float
    formula: dict[str, float]


_CARBON_FILM = _Phase("amorphous carbon", 2.0, {"C": 1.0})
_FEPT = _Phase("FePt", 15.1, {"Fe": 1.0, "Pt": 1.0})
_MAGNETITE = _Phase("Fe3O4", 5.17, {"Fe": 3.0, "O": 4.0})
_QUARTZ = _Phase("quartz", 2.65, {"Si": 1.0, "O": 2.0})
_K_FELDSPAR = _Phase("K-feldspar", 2.56, {"K": 1.0, "Al": 1.0, "Si": 3.0, "O": 8.0})
_ANORTHITE = _Phase("anorthite", 2.73, {"Ca": 1.0, "Al": 2.0, "Si": 2.0, "O": 8.0})
_HEMATITE = _Phase("hematite", 5.26, {"Fe": 2.0, "O": 3.0})
_ANDRADITE = _Phase("andradite", 3.86, {"Ca": 3.0, "Fe": 2.0, "Si": 3.0, "O": 12.0})
_SIDERITE = _Phase("siderite", 3.96, {"Fe": 1.0, "C": 1.0, "O": 3.0})


class Phantom(NamedTuple):
    """A simulated EDS acquisition and its exact truth.

    Attributes
    ----------
    noisy : exspy.signals.EDSTEMSpectrum or exspy.signals.EDSSEMSpectrum
        Poisson counts (int32), shape (Y, X, E).
    truth : exspy.signals.EDSTEMSpectrum or exspy.signals.EDSSEMSpectrum
        Expected counts (float32), same class and axes: ``noisy ~ Poisson(truth)``.
    haadf : hyperspy.signals.Signal2D
        Z-contrast image (Y, X), float32, high SNR, same navigation axes.
    """

    noisy: Any
    truth: Any
    haadf: Any


@cache
def _element(symbol: str) -> tuple[int, float, tuple[tuple[str, float, float], ...]]:
    """Atomic number, atomic weight and (line, energy keV, weight) of an element."""
    entry = _elements_db[symbol]
    z = int(entry["General_properties"]["Z"])
    weight = float(entry["General_properties"]["atomic_weight"])
    lines = entry["Atomic_properties"]["Xray_lines"].as_dictionary()
    table = tuple(
        (name, float(v["energy (keV)"]), float(v["weight"])) for name, v in sorted(lines.items())
    )
    return z, weight, table


def _mass_fractions(phase: _Phase) -> dict[str, float]:
    """Mass fraction of each element of a phase."""
    masses = {el: n * _element(el)[1] for el, n in phase.formula.items()}
    total = sum(masses.values())
    return {el: m / total for el, m in masses.items()}


def _detector_efficiency(energy_kev: np.ndarray) -> np.ndarray:
    """Detector efficiency: window absorption below ~1 keV, crystal transparency above ~15 keV."""
    e = np.asarray(energy_kev, dtype=np.float64)
    out = np.zeros_like(e)
    pos = e > 0
    ep = e[pos]
    out[pos] = np.exp(-((0.3 / ep) ** 3)) * (1.0 - np.exp(-((20.0 / ep) ** 3)))
    return out


def _channel_gaussian(edges: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    """Integral of a unit Gaussian over each channel, from the channel edges."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    cdf = 0.5 * erf((edges - centre) / (np.sqrt(2.0) * sigma))
    return np.diff(cdf)


def _line_intensity(z: int, family: str, family_lines: list[float], beam_kev: float) -> float:
    """Relative intensity of the main line of a family (fluorescence yield x cross-section)."""
    edge = 1.02 * max(family_lines)
    overvoltage = beam_kev / edge
    if overvoltage <= 1.0:
        return 0.0
    omega = z**4 / (_YIELD_CONSTANT[family] + z**4)
    return omega * np.log(overvoltage) / (overvoltage * edge**2)


def _element_spectrum(
    symbol: str,
    energies: np.ndarray,
    scale: float,
    beam_kev: float,
    bulk: bool,
    *,
    resolution_ev: float = _ENERGY_RESOLUTION_EV,
) -> tuple[np.ndarray, list[str]]:
    """Characteristic spectrum of one element per unit mass, and its 'a' lines in range.

    Lines are kept when their energy lies inside the axis (between the outer
    channel edges) and below the beam energy. ``bulk`` applies :func:`_bulk_absorption`;
    ``resolution_ev`` is the detector FWHM at Mn Ka.
    """
    z, atomic_weight, lines = _element(symbol)
    edges = np.append(energies - scale / 2.0, energies[-1] + scale / 2.0)
    spectrum = np.zeros(energies.size)
    families: dict[str, list[tuple[str, float, float]]] = {}
    for name, energy, weight in lines:
        families.setdefault(name[0], []).append((name, energy, weight))
    main_lines = []
    for family, members in families.items():
        if family not in _YIELD_CONSTANT:
            continue
        gain = _line_intensity(z, family, [e for _, e, _ in members], beam_kev)
        for name, energy, weight in members:
            if weight <= 0 or gain <= 0 or not (edges[0] < energy < edges[-1]):
                continue
            if energy >= beam_kev:
                continue
            fwhm = float(detector_fwhm_kev(energy, resolution_ev))
            at = np.array([energy])
            height = gain * weight * float(_detector_efficiency(at)[0])
            if bulk:
                height *= float(_bulk_absorption(at)[0])
            spectrum += height * _channel_gaussian(edges, energy, fwhm)
            if name == f"{family}a":
                main_lines.append(f"{symbol}_{name}")
    return spectrum / atomic_weight, main_lines


def _bremsstrahlung(energies: np.ndarray, scale: float, beam_kev: float, bulk: bool) -> np.ndarray:
    """Kramers-like continuum (E0 - E) / E times the detector efficiency, per channel."""
    out = np.zeros(energies.size)
    ok = (energies > 0) & (energies < beam_kev)
    e = energies[ok]
    out[ok] = (beam_kev - e) / e * _detector_efficiency(e) * scale
    if bulk:
        out[ok] *= _bulk_absorption(e)
    return out


def _bulk_absorption(energy_kev: np.ndarray) -> np.ndarray:
    """Crude low-energy roll-off for X-rays leaving a bulk (SEM) specimen: exp(-(0.7/E)^2)."""
    e = np.asarray(energy_kev, dtype=np.float64)
    out = np.zeros_like(e)
    pos = e > 0
    out[pos] = np.exp(-((0.7 / e[pos]) ** 2))
    return out


def _pixel_grid(n: int, lo: int = 0) -> np.ndarray:
    """Supersampled coordinates of pixels lo..lo+n-1 (pixel centres at integers)."""
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    return (np.arange(lo, lo + n)[:, None] + sub[None, :]).ravel()


def _place_discs(
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


def _disc_maps(
    shape: tuple[int, int], discs: list[tuple[float, float, float]], core_ratio: float, chord: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-disc core and shell maps: projected sphere chords (px) or area fractions."""
    height, width = shape
    ss = _SUPERSAMPLE
    cores, shells = [], []
    for cy, cx, r in discs:
        y0, y1 = max(int(np.floor(cy - r)) - 1, 0), min(int(np.ceil(cy + r)) + 2, height)
        x0, x1 = max(int(np.floor(cx - r)) - 1, 0), min(int(np.ceil(cx + r)) + 2, width)
        yy = _pixel_grid(y1 - y0, y0)[:, None]
        xx = _pixel_grid(x1 - x0, x0)[None, :]
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


def _voronoi_fractions(
    rng: np.random.Generator, shape: tuple[int, int], n_phases: int
) -> list[np.ndarray]:
    """Area fraction of each of n_phases in a random Voronoi grain mosaic."""
    height, width = shape
    n_grains = max(n_phases, int(round(height * width / (0.3 * min(shape)) ** 2)))
    seeds = rng.uniform((0.0, 0.0), (height, width), size=(n_grains, 2)) - 0.5
    labels = np.arange(n_grains) % n_phases
    labels = labels[rng.permutation(n_grains)]
    yy = _pixel_grid(height)[:, None]
    xx = _pixel_grid(width)[None, :]
    best = np.full((yy.size, xx.size), np.inf)
    phase = np.zeros((yy.size, xx.size), dtype=np.intp)
    for (sy, sx), label in zip(seeds, labels, strict=True):
        d2 = (yy - sy) ** 2 + (xx - sx) ** 2
        closer = d2 < best
        best[closer] = d2[closer]
        phase[closer] = label
    block = (height, _SUPERSAMPLE, width, _SUPERSAMPLE)
    return [(phase == k).reshape(block).mean(axis=(1, 3)) for k in range(n_phases)]


def _layout_phases(
    kind: str, layout: str, shape: tuple[int, int], rng: np.random.Generator, scale: float
) -> list[tuple[_Phase, np.ndarray]]:
    """(phase, amount map) pairs: thickness in nm (TEM) or area fraction (SEM)."""
    if layout == "boundary":
        # Area fraction of the left phase: columns left of x = width / 2 - 0.5 (pixel units).
        x = _pixel_grid(shape[1]).reshape(shape[1], _SUPERSAMPLE)
        left = np.broadcast_to((x < shape[1] / 2.0 - 0.5).mean(axis=1), shape).astype(np.float64)
        if kind == "tem":
            slabs = [(_FEPT, _SLAB_NM[0] * left), (_SIDERITE, _SLAB_NM[1] * (1.0 - left))]
            return [(_CARBON_FILM, np.full(shape, _SUPPORT_NM)), *slabs]
        return [(_K_FELDSPAR, left), (_ANDRADITE, 1.0 - left)]
    if kind == "tem":
        discs = _place_discs(rng, shape, area_fraction=0.3)
        if layout == "core_shell":
            cores, shells = _disc_maps(shape, discs, core_ratio=0.6, chord=True)
            amounts = [(_FEPT, sum(cores)), (_MAGNETITE, sum(shells))]
        else:
            full, _ = _disc_maps(shape, discs, core_ratio=1.0, chord=True)
            amounts = [(_FEPT, sum(full[0::2])), (_MAGNETITE, sum(full[1::2]))]
        support = np.full(shape, _SUPPORT_NM)
        return [(_CARBON_FILM, support)] + [(p, scale * np.asarray(a)) for p, a in amounts]
    matrix_phases = (_QUARTZ, _K_FELDSPAR, _ANORTHITE)
    fractions = _voronoi_fractions(rng, shape, len(matrix_phases))
    discs = _place_discs(rng, shape, area_fraction=0.15)
    if layout == "core_shell":
        cores, shells = _disc_maps(shape, discs, core_ratio=0.6, chord=False)
        grains = [(_HEMATITE, sum(cores)), (_ANDRADITE, sum(shells))]
    else:
        full, _ = _disc_maps(shape, discs, core_ratio=1.0, chord=False)
        grains = [(_HEMATITE, sum(full[0::2])), (_ANDRADITE, sum(full[1::2]))]
    grains = [(p, np.asarray(a, dtype=np.float64) + np.zeros(shape)) for p, a in grains]
    free = 1.0 - sum(a for _, a in grains)
    return [(p, f * free) for p, f in zip(matrix_phases, fractions, strict=True)] + grains


def _composition(
    kind: str, layout: str, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[list[tuple[_Phase, np.ndarray]], dict[str, np.ndarray], np.ndarray]:
    """Phases, element maps (TEM: mass thickness; SEM: mass fraction) and noiseless HAADF."""
    phases = _layout_phases(kind, layout, shape, rng, _PIXEL_SIZE[kind][0])
    elements = PHANTOM_ELEMENTS[kind]
    mass = {el: np.zeros(shape) for el in elements}
    haadf_clean = np.zeros(shape)
    for phase, amount in phases:
        weight = phase.density * amount
        for el, c in _mass_fractions(phase).items():
            mass[el] += weight * c
    for el in elements:
        z, atomic_weight, _ = _element(el)
        haadf_clean += mass[el] / atomic_weight * z**1.7
    if kind == "sem":
        # Bulk: X-rays follow mass fractions; the density stays in the HAADF (BSE) image.
        total = sum(mass.values())
        mass = {el: m / total for el, m in mass.items()}
    return phases, mass, haadf_clean


def phantom_maps(
    kind: str = "tem",
    shape: tuple[int, int] = (64, 64),
    *,
    seed: int | None = 0,
    layout: str = "core_shell",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The exact element and phase maps of :func:`phantom` (same kind, shape, seed, layout).

    Returns
    -------
    elements : dict of str to numpy.ndarray
        Per element, the float64 map (Y, X) its X-ray lines are proportional to:
        mass thickness (g/cm^3 x nm, TEM) or mass fraction (SEM); exactly 0 where
        the element is absent.
    phases : dict of str to numpy.ndarray
        Per phase name, its thickness in nm (TEM) or area fraction (SEM). For
        ``layout="boundary"`` the left phase's fraction is the exact label image.
    """
    _check_inputs(kind, 1.0, shape, 8, 1.0, 1.0, layout)
    shape = (int(shape[0]), int(shape[1]))
    phases, mass, _ = _composition(kind, layout, shape, np.random.default_rng(seed))
    return mass, {phase.name: amount for phase, amount in phases}


def _check_inputs(
    kind: str,
    dose: float,
    shape: tuple[int, int],
    n_channels: int,
    channel_width_ev: float,
    live_time: float,
    layout: str,
) -> None:
    if kind not in _BEAM_ENERGY_KEV:
        raise InvalidInputError(f"kind={kind!r} is not known; pass kind='tem' or kind='sem'.")
    if layout not in PHANTOM_LAYOUTS:
        raise InvalidInputError(f"layout={layout!r} is not known; pass one of {PHANTOM_LAYOUTS}.")
    if not np.isfinite(dose) or dose <= 0:
        raise InvalidInputError(f"dose={dose!r} must be a positive number of counts per pixel.")
    if len(shape) != 2 or min(int(s) for s in shape) < 8:
        raise InvalidInputError(f"shape={shape!r} must be two sizes (Y, X) of at least 8 pixels.")
    if int(n_channels) < 8:
        raise InvalidInputError(f"n_channels={n_channels!r} must be at least 8.")
    if not channel_width_ev > 0:
        raise InvalidInputError(f"channel_width_ev={channel_width_ev!r} must be positive.")
    if not live_time > 0:
        raise InvalidInputError(f"live_time={live_time!r} must be positive (seconds per pixel).")


def phantom(
    kind: str = "tem",
    dose: float = 20.0,
    shape: tuple[int, int] = (64, 64),
    *,
    n_channels: int = 1024,
    channel_width_ev: float = 20.0,
    offset_kev: float = -0.1,
    seed: int | None = 0,
    live_time: float = 0.5,
    zero_peak: bool = True,
    layout: str = "core_shell",
    haadf_thickness_step: bool = False,
) -> Phantom:
    """Simulate an EDS spectrum image with its exact expected counts and a HAADF image.

    Parameters
    ----------
    kind : {"tem", "sem"}
        ``"tem"``: 200 kV, nanoparticles on a 5 nm carbon film (elements C, O,
        Fe, Pt), pixel 0.5 nm. ``"sem"``: 20 kV, polished rock section made of a
        Voronoi mosaic of quartz, K-feldspar and anorthite grains with embedded
        round Fe-rich grains (elements O, Al, Si, K, Ca, Fe), pixel 0.5 µm.
    dose : float
        Mean expected X-ray counts per pixel in the channels at or above
        0.2 keV (:data:`n2s_eds.preprocess.DEFAULT_LOW_KEV`), zero peak excluded.
        The truth is scaled so that this holds exactly.
    shape : tuple of int
        Navigation shape (Y, X).
    n_channels : int
        Number of energy channels.
    channel_width_ev : float
        Channel width in eV.
    offset_kev : float
        Energy of the first channel (centre) in keV.
    seed : int or None
        Seed of :func:`numpy.random.default_rng`; everything (layout, counts,
        HAADF noise) derives from it.
    live_time : float
        Live time per pixel in seconds (metadata only; ``dose`` sets the counts).
    zero_peak : bool
        Add the detector zero (strobe) peak at 0 keV: a narrow Gaussian, cut to
        the channels below 0.2 keV and holding 15 % of all counts.
    layout : {"core_shell", "particles", "boundary"}
        ``"core_shell"``: TEM particles have a Pt-rich FePt core (60 % of the
        radius) in an Fe3O4 shell; SEM grains have a hematite core in an
        andradite (Ca-Fe garnet) rim. ``"particles"``: homogeneous particles,
        alternately of the two phases. ``"boundary"``: two phases split by a
        straight vertical boundary at ``x = X/2 - 0.5`` (pixel centres at
        integers: a pixel edge for even X, halving the middle column for odd X;
        ``metadata.Simulation.boundary_x``). TEM: FePt, 2 nm (left), and siderite
        FeCO3, 20 nm (right), on the film: Pt left only, O right only, Fe and C
        on both sides in different amounts. SEM: K-feldspar (K, Al) | andradite
        (Ca, Fe), Si and O on both sides in different amounts.
    haadf_thickness_step : bool
        Make the rectangle rows ``[Y//4, 3Y//4)``, columns ``[X//2, X)`` brighter
        in the HAADF only (as if the support were thicker there), adding the
        median noiseless HAADF intensity of the field, while the X-ray truth and
        counts are left exactly as without the step. A guided denoiser should
        not let this edge show in the spectra. The region is recorded as
        ``haadf.metadata.Simulation.thickness_step_region = [y0, y1, x0, x1]``.

    Returns
    -------
    Phantom
        ``(noisy, truth, haadf)``: the int32 Poisson counts, the float32 expected
        counts (same EDS signal class and axes) and the float32 HAADF image.

    Raises
    ------
    InvalidInputError
        For an unknown kind or layout, or a non-positive dose, size or width.

    Examples
    --------
    >>> from n2s_eds.simulate import phantom
    >>> noisy, truth, haadf = phantom("tem", dose=10, shape=(32, 32), n_channels=512)
    >>> noisy.data.shape
    (32, 32, 512)
    """
    _check_inputs(kind, dose, shape, n_channels, channel_width_ev, live_time, layout)
    height, width = int(shape[0]), int(shape[1])
    shape = (height, width)
    n_channels = int(n_channels)
    rng = np.random.default_rng(seed)
    beam_kev = _BEAM_ENERGY_KEV[kind]
    scale_kev = float(channel_width_ev) / 1000.0
    pixel, pixel_units = _PIXEL_SIZE[kind]

    signal_class = EDSTEMSpectrum if kind == "tem" else EDSSEMSpectrum
    axes = [
        {"name": "y", "size": height, "scale": pixel, "offset": 0.0, "units": pixel_units},
        {"name": "x", "size": width, "scale": pixel, "offset": 0.0, "units": pixel_units},
        {
            "name": "Energy",
            "size": n_channels,
            "scale": scale_kev,
            "offset": float(offset_kev),
            "units": "keV",
        },
    ]
    energies = float(offset_kev) + scale_kev * np.arange(n_channels)

    # Spatial layout -> element mass maps (TEM: mass thickness; SEM: mass fraction).
    phases, mass, haadf_clean = _composition(kind, layout, shape, rng)
    elements = PHANTOM_ELEMENTS[kind]

    # Spectra: characteristic lines of each element plus the continuum.
    templates, lines = [], []
    for el in elements:
        spectrum, main_lines = _element_spectrum(el, energies, scale_kev, beam_kev, kind == "sem")
        templates.append(spectrum)
        lines.extend(main_lines)
    continuum = _bremsstrahlung(energies, scale_kev, beam_kev, kind == "sem")
    if kind == "tem":
        brems_map = sum(mass[el] * _element(el)[0] ** 2 / _element(el)[1] for el in elements)
    else:
        brems_map = sum(mass[el] * _element(el)[0] for el in elements)
    maps = np.stack([mass[el] for el in elements], axis=-1)
    expected = np.einsum("yxk,ke->yxe", maps, np.stack(templates))
    expected += (_BREMS_GAIN[kind] * brems_map)[..., None] * continuum

    above = energies >= DEFAULT_LOW_KEV
    counted = expected[..., above].sum(axis=-1).mean()
    if not counted > 0:
        raise InvalidInputError(
            f"the energy axis ({energies[0]:.3f} to {energies[-1]:.3f} keV) holds no X-ray "
            f"signal at or above {DEFAULT_LOW_KEV} keV; raise n_channels or channel_width_ev."
        )
    expected *= float(dose) / counted
    if zero_peak and (~above).any():
        edges = np.append(energies - scale_kev / 2.0, energies[-1] + scale_kev / 2.0)
        shape_zero = _channel_gaussian(edges, 0.0, float(detector_fwhm_kev(0.0)))
        shape_zero[above] = 0.0
        if shape_zero.sum() > 0:
            amplitude = float(dose) * _ZERO_PEAK_FRACTION / (1.0 - _ZERO_PEAK_FRACTION)
            expected += amplitude * shape_zero / shape_zero.sum()
    truth_data = expected.astype(np.float32)
    noisy_data = rng.poisson(truth_data.astype(np.float64)).astype(np.int32)

    # HAADF: Z-contrast with high SNR; the optional step touches it alone.
    haadf_clean *= _HAADF_LEVEL / np.median(haadf_clean)
    region = None
    if haadf_thickness_step:
        region = [height // 4, (3 * height) // 4, width // 2, width]
        haadf_clean[region[0] : region[1], region[2] : region[3]] += np.median(haadf_clean)
    haadf_data = rng.poisson(haadf_clean).astype(np.float32)

    label = {
        ("tem", "core_shell"): "FePt@Fe3O4 core-shell nanoparticles on carbon",
        ("tem", "particles"): "FePt and Fe3O4 nanoparticles on carbon",
        ("sem", "core_shell"): "rock section with zoned hematite/andradite grains",
        ("sem", "particles"): "rock section with hematite and andradite grains",
        ("tem", "boundary"): "FePt | siderite (FeCO3) slabs on carbon, vertical boundary",
        ("sem", "boundary"): "K-feldspar | andradite, vertical boundary",
    }[(kind, layout)]
    simulation = {
        "kind": kind,
        "layout": layout,
        "dose": float(dose),
        "seed": seed,
        "zero_peak": bool(zero_peak),
        "phases": [p.name for p, _ in phases],
    }
    if layout == "boundary":
        simulation["boundary_x"] = width / 2.0 - 0.5

    def _eds(data: np.ndarray, what: str) -> Any:
        s = signal_class(data, axes=axes)
        s.metadata.General.title = f"Phantom: {label} ({what})"
        s.metadata.Signal.quantity = "X-rays (Counts)"
        mic = f"Acquisition_instrument.{kind.upper()}"
        s.metadata.set_item(f"{mic}.beam_energy", beam_kev)
        s.metadata.set_item(f"{mic}.Detector.EDS.energy_resolution_MnKa", _ENERGY_RESOLUTION_EV)
        s.metadata.set_item(f"{mic}.Detector.EDS.live_time", float(live_time))
        s.set_elements(list(elements))
        s.set_lines(sorted(lines))
        s.metadata.set_item("Simulation", dict(simulation))
        return s

    noisy = _eds(noisy_data, "noisy counts")
    truth = _eds(truth_data, "expected counts")
    haadf = Signal2D(haadf_data, axes=[dict(a) for a in axes[:2]])
    haadf.metadata.General.title = f"Phantom: {label} (HAADF)"
    haadf.metadata.Signal.quantity = "Intensity (counts)"
    haadf.metadata.set_item("Simulation", dict(simulation))
    if region is not None:
        haadf.metadata.set_item("Simulation.thickness_step_region", region)
    return Phantom(noisy, truth, haadf)
