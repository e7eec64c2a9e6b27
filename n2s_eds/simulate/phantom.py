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

from typing import Any, NamedTuple

import numpy as np
from exspy.signals import EDSSEMSpectrum, EDSTEMSpectrum
from hyperspy.signals import Signal2D

from ..exceptions import InvalidInputError
from ..preprocess import DEFAULT_LOW_KEV, detector_fwhm_kev
from .geometry import SUPERSAMPLE, disc_maps, pixel_grid, place_discs, voronoi_fractions
from .physics import (
    BREMS_GAIN,
    ENERGY_RESOLUTION_EV,
    ZERO_PEAK_FRACTION,
    Phase,
    bremsstrahlung_spectrum,
    channel_gaussian,
    element_data,
    element_spectrum,
    mass_fractions,
)

__all__ = [
    "PHANTOM_ELEMENTS",
    "PHANTOM_LAYOUTS",
    "Phantom",
    "PhaseLabels",
    "phantom",
    "phantom_maps",
    "phantom_phases",
]

#: Elements present in the phantoms of each kind.
PHANTOM_ELEMENTS: dict[str, tuple[str, ...]] = {
    "tem": ("C", "O", "Fe", "Pt"),
    "sem": ("O", "Al", "Si", "K", "Ca", "Fe"),
}

#: Spatial layouts :func:`phantom` accepts.
PHANTOM_LAYOUTS: tuple[str, ...] = ("core_shell", "particles", "boundary")

_BEAM_ENERGY_KEV = {"tem": 200.0, "sem": 20.0}
_PIXEL_SIZE = {"tem": (0.5, "nm"), "sem": (0.5, "µm")}
#: Thickness of the TEM carbon support film, in nm.
_SUPPORT_NM = 5.0
#: Thickness (nm) of the FePt and siderite slabs of the TEM "boundary" layout (similar counts).
_SLAB_NM = (2.0, 20.0)
#: Mean HAADF intensity of the support/matrix, in detector counts (sets its SNR).
_HAADF_LEVEL = 1.0e5


_CARBON_FILM = Phase("amorphous carbon", 2.0, {"C": 1.0})
_FEPT = Phase("FePt", 15.1, {"Fe": 1.0, "Pt": 1.0})
_MAGNETITE = Phase("Fe3O4", 5.17, {"Fe": 3.0, "O": 4.0})
_QUARTZ = Phase("quartz", 2.65, {"Si": 1.0, "O": 2.0})
_K_FELDSPAR = Phase("K-feldspar", 2.56, {"K": 1.0, "Al": 1.0, "Si": 3.0, "O": 8.0})
_ANORTHITE = Phase("anorthite", 2.73, {"Ca": 1.0, "Al": 2.0, "Si": 2.0, "O": 8.0})
_HEMATITE = Phase("hematite", 5.26, {"Fe": 2.0, "O": 3.0})
_ANDRADITE = Phase("andradite", 3.86, {"Ca": 3.0, "Fe": 2.0, "Si": 3.0, "O": 12.0})
_SIDERITE = Phase("siderite", 3.96, {"Fe": 1.0, "C": 1.0, "O": 3.0})


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


def _layout_phases(
    kind: str, layout: str, shape: tuple[int, int], rng: np.random.Generator, scale: float
) -> list[tuple[Phase, np.ndarray]]:
    """(phase, amount map) pairs: thickness in nm (TEM) or area fraction (SEM)."""
    if layout == "boundary":
        # Area fraction of the left phase: columns left of x = width / 2 - 0.5 (pixel units).
        x = pixel_grid(shape[1]).reshape(shape[1], SUPERSAMPLE)
        left = np.broadcast_to((x < shape[1] / 2.0 - 0.5).mean(axis=1), shape).astype(np.float64)
        if kind == "tem":
            slabs = [(_FEPT, _SLAB_NM[0] * left), (_SIDERITE, _SLAB_NM[1] * (1.0 - left))]
            return [(_CARBON_FILM, np.full(shape, _SUPPORT_NM)), *slabs]
        return [(_K_FELDSPAR, left), (_ANDRADITE, 1.0 - left)]
    if kind == "tem":
        discs = place_discs(rng, shape, area_fraction=0.3)
        if layout == "core_shell":
            cores, shells = disc_maps(shape, discs, core_ratio=0.6, chord=True)
            amounts = [(_FEPT, sum(cores)), (_MAGNETITE, sum(shells))]
        else:
            full, _ = disc_maps(shape, discs, core_ratio=1.0, chord=True)
            amounts = [(_FEPT, sum(full[0::2])), (_MAGNETITE, sum(full[1::2]))]
        support = np.full(shape, _SUPPORT_NM)
        return [(_CARBON_FILM, support)] + [(p, scale * np.asarray(a)) for p, a in amounts]
    matrix_phases = (_QUARTZ, _K_FELDSPAR, _ANORTHITE)
    fractions = voronoi_fractions(rng, shape, len(matrix_phases))
    discs = place_discs(rng, shape, area_fraction=0.15)
    if layout == "core_shell":
        cores, shells = disc_maps(shape, discs, core_ratio=0.6, chord=False)
        grains = [(_HEMATITE, sum(cores)), (_ANDRADITE, sum(shells))]
    else:
        full, _ = disc_maps(shape, discs, core_ratio=1.0, chord=False)
        grains = [(_HEMATITE, sum(full[0::2])), (_ANDRADITE, sum(full[1::2]))]
    grains = [(p, np.asarray(a, dtype=np.float64) + np.zeros(shape)) for p, a in grains]
    free = 1.0 - sum(a for _, a in grains)
    return [(p, f * free) for p, f in zip(matrix_phases, fractions, strict=True)] + grains


def _composition(
    kind: str, layout: str, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[list[tuple[Phase, np.ndarray]], dict[str, np.ndarray], np.ndarray]:
    """Phases, element maps (TEM: mass thickness; SEM: mass fraction) and noiseless HAADF."""
    phases = _layout_phases(kind, layout, shape, rng, _PIXEL_SIZE[kind][0])
    elements = PHANTOM_ELEMENTS[kind]
    mass = {el: np.zeros(shape) for el in elements}
    haadf_clean = np.zeros(shape)
    for phase, amount in phases:
        weight = phase.density * amount
        for el, c in mass_fractions(phase).items():
            mass[el] += weight * c
    for el in elements:
        z, atomic_weight, _ = element_data(el)
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


class PhaseLabels(NamedTuple):
    """The exact phase label image of a phantom.

    Attributes
    ----------
    labels : numpy.ndarray
        (Y, X) int64: at every pixel the index into ``names`` of its phase.
    names : tuple of str
        The phase names, in the order of the phantom's ``metadata.Simulation.phases``.
    """

    labels: np.ndarray
    names: tuple[str, ...]


def phantom_phases(
    kind: str = "tem",
    shape: tuple[int, int] = (64, 64),
    *,
    seed: int | None = 0,
    layout: str = "core_shell",
) -> PhaseLabels:
    """The exact phase label image of :func:`phantom` (same kind, shape, seed, layout).

    Rule for mixed pixels: a pixel takes the phase with the largest projected mass
    in it (density x thickness for TEM, density x area fraction for SEM). The TEM
    carbon support film lies under everything, so it is the label only where no
    other phase lies at all (every other phase's amount exactly 0); ties go to the
    phase listed first.

    Returns
    -------
    PhaseLabels
        ``(labels, names)``: the (Y, X) int64 label image and the phase names.

    Examples
    --------
    >>> from n2s_eds.simulate import phantom_phases
    >>> labels, names = phantom_phases("tem", shape=(32, 32), seed=0)
    >>> names
    ('amorphous carbon', 'FePt', 'Fe3O4')
    >>> labels.shape
    (32, 32)
    """
    _check_inputs(kind, 1.0, shape, 8, 1.0, 1.0, layout)
    shape = (int(shape[0]), int(shape[1]))
    phases, _, _ = _composition(kind, layout, shape, np.random.default_rng(seed))
    names = tuple(phase.name for phase, _ in phases)
    mass = np.stack([phase.density * np.asarray(amount, np.float64) for phase, amount in phases])
    if kind == "tem":
        film = names.index(_CARBON_FILM.name)
        mass[film] = np.where((np.delete(mass, film, axis=0) > 0).any(axis=0), -1.0, 1.0)
    return PhaseLabels(np.argmax(mass, axis=0).astype(np.int64), names)


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
        spectrum, main_lines = element_spectrum(el, energies, scale_kev, beam_kev, kind == "sem")
        templates.append(spectrum)
        lines.extend(main_lines)
    continuum = bremsstrahlung_spectrum(energies, scale_kev, beam_kev, kind == "sem")
    if kind == "tem":
        brems_map = sum(
            mass[el] * element_data(el)[0] ** 2 / element_data(el)[1] for el in elements
        )
    else:
        brems_map = sum(mass[el] * element_data(el)[0] for el in elements)
    maps = np.stack([mass[el] for el in elements], axis=-1)
    expected = np.einsum("yxk,ke->yxe", maps, np.stack(templates))
    expected += (BREMS_GAIN[kind] * brems_map)[..., None] * continuum

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
        shape_zero = channel_gaussian(edges, 0.0, float(detector_fwhm_kev(0.0)))
        shape_zero[above] = 0.0
        if shape_zero.sum() > 0:
            amplitude = float(dose) * ZERO_PEAK_FRACTION / (1.0 - ZERO_PEAK_FRACTION)
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
        s.metadata.set_item(f"{mic}.Detector.EDS.energy_resolution_MnKa", ENERGY_RESOLUTION_EV)
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
