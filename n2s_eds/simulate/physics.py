"""The physics of the simulated spectra, shared by the phantoms and the pretraining corpus.

Characteristic lines of every element (energies and weights from exspy's X-ray line
database) as Gaussian peaks whose width follows the detector law, integrated exactly over each
channel; family intensities from an approximate fluorescence yield and a Bethe-like
ionisation cross-section; a Kramers-like continuum; the detector efficiency; a crude
low-energy roll-off for bulk (SEM) specimens. See :mod:`n2s_eds.simulate.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from exspy.material import elements as _elements_db
from scipy.special import erf

from ..preprocess import detector_fwhm_kev

__all__ = [
    "BREMS_GAIN",
    "ENERGY_RESOLUTION_EV",
    "YIELD_CONSTANT",
    "ZERO_PEAK_FRACTION",
    "Phase",
    "bremsstrahlung_spectrum",
    "bulk_absorption",
    "channel_gaussian",
    "detector_efficiency",
    "element_data",
    "element_spectrum",
    "family_line_intensity",
    "mass_fractions",
]

ENERGY_RESOLUTION_EV = 130.0
#: Fraction of all counts (zero peak included) that the zero peak holds.
ZERO_PEAK_FRACTION = 0.15
#: Bremsstrahlung strength relative to the characteristic lines, per kind.
BREMS_GAIN = {"tem": 1.5e-9, "sem": 3.0e-8}
#: Approximate fluorescence yield constant a in w = Z^4 / (a + Z^4), per family.
YIELD_CONSTANT = {"K": 1.12e6, "L": 1.0e8, "M": 1.0e9}


@dataclass(frozen=True)
class Phase:
    """A material: name, density (g/cm^3) and atomic formula."""

    name: str
    density: float
    formula: dict[str, float]


@cache
def element_data(symbol: str) -> tuple[int, float, tuple[tuple[str, float, float], ...]]:
    """Atomic number, atomic weight and (line, energy keV, weight) of an element."""
    entry = _elements_db[symbol]
    z = int(entry["General_properties"]["Z"])
    weight = float(entry["General_properties"]["atomic_weight"])
    lines = entry["Atomic_properties"]["Xray_lines"].as_dictionary()
    table = tuple(
        (name, float(v["energy (keV)"]), float(v["weight"])) for name, v in sorted(lines.items())
    )
    return z, weight, table


def mass_fractions(phase: Phase) -> dict[str, float]:
    """Mass fraction of each element of a phase."""
    masses = {el: n * element_data(el)[1] for el, n in phase.formula.items()}
    total = sum(masses.values())
    return {el: m / total for el, m in masses.items()}


def detector_efficiency(energy_kev: np.ndarray) -> np.ndarray:
    """Detector efficiency: window absorption below ~1 keV, crystal transparency above ~15 keV."""
    e = np.asarray(energy_kev, dtype=np.float64)
    out = np.zeros_like(e)
    pos = e > 0
    ep = e[pos]
    out[pos] = np.exp(-((0.3 / ep) ** 3)) * (1.0 - np.exp(-((20.0 / ep) ** 3)))
    return out


def channel_gaussian(edges: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    """Integral of a unit Gaussian over each channel, from the channel edges."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    cdf = 0.5 * erf((edges - centre) / (np.sqrt(2.0) * sigma))
    return np.diff(cdf)


def family_line_intensity(z: int, family: str, family_lines: list[float], beam_kev: float) -> float:
    """Relative intensity of the main line of a family (fluorescence yield x cross-section)."""
    edge = 1.02 * max(family_lines)
    overvoltage = beam_kev / edge
    if overvoltage <= 1.0:
        return 0.0
    omega = z**4 / (YIELD_CONSTANT[family] + z**4)
    return omega * np.log(overvoltage) / (overvoltage * edge**2)


def element_spectrum(
    symbol: str,
    energies: np.ndarray,
    scale: float,
    beam_kev: float,
    bulk: bool,
    *,
    resolution_ev: float = ENERGY_RESOLUTION_EV,
) -> tuple[np.ndarray, list[str]]:
    """Characteristic spectrum of one element per unit mass, and its 'a' lines in range.

    Lines are kept when their energy lies inside the axis (between the outer
    channel edges) and below the beam energy. ``bulk`` applies :func:`bulk_absorption`;
    ``resolution_ev`` is the detector FWHM at Mn Ka.
    """
    z, atomic_weight, lines = element_data(symbol)
    edges = np.append(energies - scale / 2.0, energies[-1] + scale / 2.0)
    spectrum = np.zeros(energies.size)
    families: dict[str, list[tuple[str, float, float]]] = {}
    for name, energy, weight in lines:
        families.setdefault(name[0], []).append((name, energy, weight))
    main_lines = []
    for family, members in families.items():
        if family not in YIELD_CONSTANT:
            continue
        gain = family_line_intensity(z, family, [e for _, e, _ in members], beam_kev)
        for name, energy, weight in members:
            if weight <= 0 or gain <= 0 or not (edges[0] < energy < edges[-1]):
                continue
            if energy >= beam_kev:
                continue
            fwhm = float(detector_fwhm_kev(energy, resolution_ev))
            at = np.array([energy])
            height = gain * weight * float(detector_efficiency(at)[0])
            if bulk:
                height *= float(bulk_absorption(at)[0])
            spectrum += height * channel_gaussian(edges, energy, fwhm)
            if name == f"{family}a":
                main_lines.append(f"{symbol}_{name}")
    return spectrum / atomic_weight, main_lines


def bremsstrahlung_spectrum(
    energies: np.ndarray, scale: float, beam_kev: float, bulk: bool
) -> np.ndarray:
    """Kramers-like continuum (E0 - E) / E times the detector efficiency, per channel."""
    out = np.zeros(energies.size)
    ok = (energies > 0) & (energies < beam_kev)
    e = energies[ok]
    out[ok] = (beam_kev - e) / e * detector_efficiency(e) * scale
    if bulk:
        out[ok] *= bulk_absorption(e)
    return out


def bulk_absorption(energy_kev: np.ndarray) -> np.ndarray:
    """Crude low-energy roll-off for X-rays leaving a bulk (SEM) specimen: exp(-(0.7/E)^2)."""
    e = np.asarray(energy_kev, dtype=np.float64)
    out = np.zeros_like(e)
    pos = e > 0
    out[pos] = np.exp(-((0.7 / e[pos]) ** 2))
    return out
