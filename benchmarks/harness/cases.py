"""The benchmark cases: the noisy input every method gets, and what scores it.

* real acquisitions, split into two independent parts (see :mod:`n2s_eds.metrics`): a binomial
  split ``x ~ Binomial(N, p)``, ``r = N - x`` (``fept_core_shell_tem`` at p = 0.1,
  ``bruker_sem_30x30_highcount`` at p = 0.005, ``sio2_particles_stem_haadf`` at p = 0.5) or a
  frame split (``velox_20frames``: odd frames against even frames). The methods see ``x``
  only; ``r`` scores them through the unbiased split MSE (gain in dB over the raw ``x``);
* simulated phantoms (:func:`n2s_eds.simulate.phantom`, TEM, 5, 20 and 100 counts/px) whose
  expected counts are known: gains, PSNR, SSIM and spectral angle against the truth.

Two real files name no X-ray line in their metadata; the builders add the lines of
:data:`SAMPLE_LINES` (identified from the peaks of their sum spectra, see there) so that their
element maps follow these lines and the quantification bias is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2s_eds.datasets import data_path
from n2s_eds.metrics import ElementWindow, binomial_split, element_windows, frame_split
from n2s_eds.preprocess import EnergyWindow, processing_window

__all__ = [
    "PHANTOM_SHAPE",
    "PHANTOM_CHANNELS",
    "SAMPLE_LINES",
    "CaseSkipped",
    "Case",
    "CaseSpec",
    "CASES",
    "require_data",
    "case_windows",
    "build_case",
]

#: Navigation shape of the simulated phantoms (tests may make it smaller).
PHANTOM_SHAPE: tuple[int, int] = (64, 64)
#: Energy channels of the simulated phantoms.
PHANTOM_CHANNELS: int = 1024

#: X-ray lines of the sample, for the real files whose metadata name none: ``(elements, lines)``.
#: Identified from the peaks of the full-dose sum spectrum (Gaussian-smoothed at ~50 eV, peaks
#: ranked by prominence, centres from local Gaussian fits) matched with exspy's line table
#: (``exspy.material.elements``); the line of each element is the one exspy's ``add_lines()``
#: picks at 200 kV. Peaks of the instrument or the support are left out:
#:
#: * ``sio2_particles_stem_haadf`` (JEOL, its energy scale reads ~0.03-0.05 keV high): peaks at
#:   0.552 keV (O Ka 0.525), 1.774 keV (Si Ka 1.740) -> O, Si. Left out: 0.306 keV (C Ka 0.277,
#:   the carbon support film), 8.09 / 8.96 / 0.97 keV (Cu Ka 8.048 / Kb 8.905 / La 0.930, the
#:   Cu grid, as the data README says); nothing else rises above the noise (no zero peak is
#:   recorded). The windows (+-1 FWHM at the table energies) still hold the shifted peaks.
#: * ``velox_20frames`` (Talos, Ni-base alloy of the Inconel 718 type): 7.480 keV (Ni Ka 7.478;
#:   Ni Kb 8.27, Ni La 0.847), 5.416 keV (Cr Ka 5.415; Cr Kb 5.97, Cr La 0.57), 6.404 keV (Fe Ka
#:   6.404; Fe Kb 7.06, Fe La 0.709), 2.163 keV and 16.59 keV (Nb La 2.166, Nb Ka 16.615, Nb Kb
#:   18.62), 17.46 keV (Mo Ka 17.479; Mo La 2.293 under the Nb Lb shoulder at 2.25-2.29 keV),
#:   4.504 keV (Ti Ka 4.511; Ti Kb 4.93), 1.477 keV (Al Ka 1.486) -> Al, Ti, Cr, Fe, Ni, Nb, Mo.
#:   Left out: the zero peak at 0 keV; 8.06 / 8.92 keV (Cu Ka / Kb: holder or grid); 1.733 keV
#:   (Si Ka 1.740: can be the detector's own Si internal-fluorescence peak, and is not needed);
#:   0.54 keV (O Ka 0.525 beside Cr Ll/La: surface oxide or contamination, not the alloy);
#:   3.64 keV (~7 % above the background, where the Cr Ka escape peak lies, 5.415 - 1.740 keV).
SAMPLE_LINES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sio2_particles_stem_haadf": (("O", "Si"), ("O_Ka", "Si_Ka")),
    "velox_20frames": (
        ("Al", "Ti", "Cr", "Fe", "Ni", "Nb", "Mo"),
        ("Al_Ka", "Ti_Ka", "Cr_Ka", "Fe_Ka", "Ni_Ka", "Nb_Ka", "Mo_Ka"),
    ),
}


class CaseSkipped(Exception):
    """A case (or a row) cannot run here (e.g. its data file is absent); the message says why."""


@dataclass
class Case:
    """One benchmark case: the noisy input every method gets and what scores it.

    Attributes
    ----------
    name : str
        Case name (a key of :data:`CASES`).
    signal : exspy.signals.EDSSpectrum
        The noisy input (whole counts) given to every method.
    window : EnergyWindow
        Processing window; only its channels are scored.
    windows : list of ElementWindow
        Element-map windows (metadata lines, else the strongest peaks).
    reference : numpy.ndarray
        The full-dose cube ``x + r`` (real data) or the truth (phantoms), full energy axis:
        the reference of the quantification bias and the figures.
    remainder : numpy.ndarray or None
        The split remainder ``r`` (real data).
    p, scale : float or None
        Binomial split fraction, or the frame-split scale.
    truth : numpy.ndarray or None
        Expected counts (phantoms).
    guide : Any
        HAADF/BSE image of the scan, or ``None``.
    has_lines : bool
        The metadata names at least two X-ray lines inside the window (quantification bias).
    description : str
        One line for the report.
    """

    name: str
    signal: Any
    window: EnergyWindow
    windows: list[ElementWindow]
    reference: np.ndarray
    remainder: np.ndarray | None = None
    p: float | None = None
    scale: float | None = None
    truth: np.ndarray | None = None
    guide: Any = None
    has_lines: bool = False
    description: str = ""

    @property
    def raw(self) -> np.ndarray:
        """The noisy input counts as a numpy array."""
        return np.asarray(self.signal.data)

    @property
    def split(self) -> str:
        """The split in words (for the cache key and the report)."""
        if self.truth is not None:
            return "truth"
        if self.p is not None:
            return f"binomial p={self.p:g}"
        if self.scale is not None:
            return f"frames scale={self.scale:g}"
        return "none"  # no split: the input as recorded (hallucination checks)


@dataclass(frozen=True)
class CaseSpec:
    """How to build a case.

    Attributes
    ----------
    name : str
    build : callable
        ``build(seed) -> Case``; raises :class:`CaseSkipped` when the case cannot run.
    data : tuple of str
        Names of the real data files it needs (:data:`n2s_eds.datasets.REAL_FILES`).
    """

    name: str
    build: Callable[[int], Case]
    data: tuple[str, ...] = ()


def require_data(name: str) -> Path:
    """Path of a real data file; raises :class:`CaseSkipped` when it is absent."""
    path = data_path(name)
    if not path.exists():
        raise CaseSkipped(
            f"data file {path} not found (set N2S_EDS_DATA to the shared data folder)"
        )
    return path


def case_windows(signal: Any, window: EnergyWindow) -> tuple[list[ElementWindow], bool]:
    """Element-map windows of a signal and whether they name at least two X-ray lines."""
    windows = element_windows(signal, window)
    has_lines = sum(not w.name.startswith("peak_") for w in windows) >= 2
    return windows, has_lines


def _set_sample_lines(signal: Any, name: str) -> None:
    """Write the elements and X-ray lines of :data:`SAMPLE_LINES` into a signal's metadata."""
    if name in SAMPLE_LINES:
        elements, lines = SAMPLE_LINES[name]
        signal.metadata.set_item("Sample.elements", list(elements))
        signal.metadata.set_item("Sample.xray_lines", list(lines))


def _split_case(name: str, p: float, seed: int, guide_name: str | None = None) -> Case:
    from n2s_eds.io import load, load_guide

    acq = load(require_data(name))
    full = acq.eds
    _set_sample_lines(full, name)
    counts = np.asarray(full.data)
    x, r = binomial_split(counts, p, seed=seed)
    signal = full._deepcopy_with_new_data(x)
    title = full.metadata.get_item("General.title", "") or name
    signal.metadata.set_item("General.title", f"{title} (binomial split p={p:g})")
    window = processing_window(full)
    windows, has_lines = case_windows(full, window)
    guide = acq.haadf
    if guide_name is not None:
        guide = load_guide(require_data(guide_name), signal)
    dose = float(x[..., window.slice].sum(axis=-1).mean())
    return Case(
        name,
        signal,
        window,
        windows,
        reference=counts,
        remainder=r,
        p=p,
        guide=guide,
        has_lines=has_lines,
        description=f"binomial split p = {p:g}, {dose:.1f} X-ray counts/px in x",
    )


def _build_fept(seed: int) -> Case:
    return _split_case("fept_core_shell_tem", 0.1, seed)


def _build_rock(seed: int) -> Case:
    return _split_case("bruker_sem_30x30_highcount", 0.005, seed)


def _build_sio2(seed: int) -> Case:
    return _split_case("sio2_particles_stem_haadf", 0.5, seed, "sio2_particles_stem_haadf_image")


def _build_velox(seed: int) -> Case:
    from n2s_eds.io import load

    acq = load(require_data("velox_20frames"), sum_frames=False)
    eds = acq.eds
    if eds.axes_manager.navigation_dimension != 3:
        raise CaseSkipped(
            f"expected a frame axis (3 navigation axes), got {eds.axes_manager.navigation_shape}"
        )
    # HyperSpy's data order puts the last navigation axis (frames) first.
    x, r, scale = frame_split(np.asarray(eds.data), axis=0)
    base = eds.inav[:, :, 0]
    _set_sample_lines(base, "velox_20frames")
    signal = base._deepcopy_with_new_data(x)
    title = eds.metadata.get_item("General.title", "") or "velox"
    signal.metadata.set_item("General.title", f"{title} (odd frames)")
    full = base._deepcopy_with_new_data(x + r)
    window = processing_window(signal)
    windows, has_lines = case_windows(full, window)
    n = eds.data.shape[0]
    dose = float(x[..., window.slice].sum(axis=-1).mean())
    return Case(
        "velox_20frames",
        signal,
        window,
        windows,
        reference=x + r,
        remainder=r,
        scale=scale,
        guide=acq.haadf,
        has_lines=has_lines,
        description=f"frame split of {n} frames (x: 1st, 3rd, ...), {dose:.1f} counts/px in x",
    )


def _phantom_case(dose: float, seed: int) -> Case:
    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=dose, shape=PHANTOM_SHAPE, n_channels=PHANTOM_CHANNELS, seed=seed)
    window = processing_window(ph.noisy)
    windows, has_lines = case_windows(ph.noisy, window)
    truth = np.asarray(ph.truth.data, dtype=np.float64)
    return Case(
        f"phantom_tem_dose{dose:g}",
        ph.noisy,
        window,
        windows,
        reference=truth,
        truth=truth,
        guide=ph.haadf,
        has_lines=has_lines,
        description=f"simulated TEM core-shell phantom, {dose:g} counts/px, truth known",
    )


def _build_phantom5(seed: int) -> Case:
    return _phantom_case(5.0, seed)


def _build_phantom20(seed: int) -> Case:
    return _phantom_case(20.0, seed)


def _build_phantom100(seed: int) -> Case:
    return _phantom_case(100.0, seed)


#: The cases, in the order of the table.
CASES: dict[str, CaseSpec] = {
    spec.name: spec
    for spec in (
        CaseSpec("fept_core_shell_tem", _build_fept, ("fept_core_shell_tem",)),
        CaseSpec("bruker_sem_30x30_highcount", _build_rock, ("bruker_sem_30x30_highcount",)),
        CaseSpec(
            "sio2_particles_stem_haadf",
            _build_sio2,
            ("sio2_particles_stem_haadf", "sio2_particles_stem_haadf_image"),
        ),
        CaseSpec("velox_20frames", _build_velox, ("velox_20frames",)),
        CaseSpec("phantom_tem_dose5", _build_phantom5),
        CaseSpec("phantom_tem_dose20", _build_phantom20),
        CaseSpec("phantom_tem_dose100", _build_phantom100),
    )
}


def build_case(name: str, seed: int = 0) -> Case:
    """Build a case by name; raises :class:`CaseSkipped` when it cannot run here."""
    spec = CASES[name]
    for data in spec.data:
        require_data(data)
    return spec.build(seed)
