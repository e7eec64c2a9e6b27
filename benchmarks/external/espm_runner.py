"""Run espm's physics-guided NMF on one benchmark cube (executed by the espm virtual environment).

Usage: ``.venv-espm/bin/python espm_runner.py IN.npz OUT.npz`` (the harness,
``benchmarks/harness/external.py``, writes ``IN.npz`` and reads ``OUT.npz``). espm (Teurtrie et
al., Ultramicroscopy 2023; https://github.com/adriente/espm) pins its own HyperSpy/exspy
versions, so it lives in its own virtual environment (``make external-venvs``) and this script
is the only code that imports it.

Input (``IN.npz``)
------------------
counts : (Y, X, E) float
    The noisy counts of the processing-window channels (0.2 keV to min(beam energy, 20 keV)).
offset, scale : float
    Energy of the first channel and channel width, in keV, calibrated
    (``harness.external.calibrate``).
width_slope, width_intercept : float
    espm's peak width law ``FWHM = slope E + intercept`` (keV), fitted likewise.
elements : (n,) str
    The elements espm models (see ``harness.external.espm_elements``).
beam_energy : float
    In keV.
sem : bool
    Bulk (SEM) specimen rather than a thin film (TEM).
elevation_angle, azimuth_angle, tilt_alpha, tilt_beta : float
    Detector and stage angles in degrees (take-off angle, as exspy computes it).
thickness_nm, density : float
    Specimen thickness in nm and density in g/cm^3 (``nan`` when the case gives none).
seed : int
    Seed of espm's initialisation.

Output (``OUT.npz``)
--------------------
expected : (Y, X, E) float32
    espm's reconstruction ``G @ W @ H``: the model's expected counts in every channel.
n_components, n_iter, g_columns, model_elements, xray_db, thickness_nm,
density, elements_dict
    What was run (for the log).

The model (parameter rule, the same for every case)
---------------------------------------------------
* ``EDS_espm`` signal with the case's energy axis, beam energy, detector angles and elements
  (``set_microscope_parameters``, ``set_elements``), G built by ``build_G("bremsstrahlung")``
  with espm's default ``ignored_elements=["Cu"]`` (Cu lines, usually from the grid, each get
  a free column): one column per element (all its lines, espm cross-sections, self-absorption,
  detector efficiency ``SDD_efficiency.txt``) and two bremsstrahlung columns.
* Cross-section table: espm's table nearest the beam energy (100, 200 or 300 keV).
* Energy axis and peak widths: calibrated by the harness on the noisy input's sum spectrum
  (Gaussian fits of the isolated alpha lines: axis offset and gain, and the slope and
  intercept of espm's linear width law), as espm's workflow calibrates the axis and advises
  measuring the widths. espm's model axis is ``linspace(offset, offset + size * scale,
  size)``, one channel wider than the data's; the signal's scale is set to
  ``scale * (size - 1) / size`` so that the model's energies are the channel energies.
* Line families: every element with lines of two families (K, L, M) inside the window has
  them split into two G columns at the midpoint between the families (espm's
  ``elements_dict``, ``build_G(elements_dict=...)``), which its authors provide because the
  low-energy lines of transition metals and heavy elements are hard to fit with one
  absorption and cross-section model. The families then scale freely. Without it, FePt's
  Fe Ka map kept 0.72 and Pt La 0.80 of the raw counts (the fit traded Fe K against Fe L).
* Thin film (TEM): thickness and density of the case when known, else 100 nm and
  3.5 g/cm^3 (the values of espm's spectrum-fitting notebook).
* Bulk (SEM): espm models thin films only (no backscattering, no depth distribution of the
  X-rays). A bulk specimen is approximated by a film as thick as the depth the X-rays come
  from, 1 um at 3.5 g/cm^3 (the order of the mean generation depth at 20 kV in silicates),
  with espm's table nearest the beam energy (100 keV for 20 kV) and the beam energy of the
  case in the bremsstrahlung model. The family split above absorbs most of what the
  high-voltage thin-film cross sections get wrong at 20 kV (the K / L ratio of an element).
* SmoothNMF: ``n_components`` = number of modelled elements (at least 2), Laplacian smoothing
  ``lambda_L = 1`` on the scan grid (``shape_2d``), no sparsity term (``mu = 0``), simplex
  constraint on W (espm's default), ``normalize=True`` (espm's data normalisation, so that
  the regularisation weighs the same for every dose), ``init="nndsvdar"`` with the seed,
  ``tol = 1e-6``, at most 1000 iterations with espm's own stopping tests: the settings of the
  espm paper's figure notebook except its iteration budget.
* Angles: the harness sends the metadata's, with the stage tilts set to 0 where they would
  give a take-off angle below 5 degrees (``harness.external.detector_angles``).

Counts: nothing is rescaled. The data term is espm's generalised KL divergence, whose fit keeps
the data's total at a stationary point, but the Laplacian term shrinks the abundances ``H``
(its penalty grows with their square), so the reconstruction keeps a little less than the
input, most where the abundance changes sharply (SiO2 particles). With ``lambda_L = 0`` FePt
keeps 1.000 of its counts (0.983 with it) but scores 8.2 / 2.3 dB (cube / maps) instead of
18.0 / 5.3 dB.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np

#: Thin-film defaults (espm's spectrum-fitting notebook): thickness in nm, density in g/cm^3.
TEM_THICKNESS_NM, TEM_DENSITY = 100.0, 3.5
#: Bulk approximation: film thickness in nm (the X-ray generation depth) and density.
SEM_THICKNESS_NM, SEM_DENSITY = 1000.0, 3.5
#: espm's cross-section tables and their beam energies (keV).
XRAY_DBS = {100.0: "100keV_xrays.json", 200.0: "200keV_xrays.json", 300.0: "300keV_xrays.json"}
#: espm's default ``ignored_elements``: their lines get one free column each (grid/holder).
IGNORED = ("Cu",)
#: SmoothNMF settings (see the module docstring).
NMF_SETTINGS = {
    "lambda_L": 1.0,
    "mu": 0.0,
    "simplex_W": True,
    "normalize": True,
    "init": "nndsvdar",
    "tol": 1e-6,
    "max_iter": 1000,
}


def xray_db(beam_energy: float) -> str:
    """espm's cross-section table nearest the beam energy."""
    return XRAY_DBS[min(XRAY_DBS, key=lambda e: abs(e - beam_energy))]


def make_signal(inp: dict, thickness_nm: float, density: float):
    """The ``EDS_espm`` signal of the input with its metadata set as espm asks.

    espm's model axis is ``linspace(offset, offset + size * scale, size)``, one channel wider
    than the data's; the signal's scale is set to ``scale * (size - 1) / size`` so that the
    model's energies are the channel energies.
    """
    import hyperspy.api as hs

    counts = np.asarray(inp["counts"], dtype=np.float64)
    size = counts.shape[-1]
    s = hs.signals.Signal1D(counts)
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.units, ax.name = float(inp["offset"]), "keV", "Energy"
    ax.scale = float(inp["scale"]) * (size - 1) / size
    s.set_signal_type("EDS_espm")
    s.set_microscope_parameters(
        beam_energy=float(inp["beam_energy"]),
        azimuth_angle=float(inp["azimuth_angle"]),
        elevation_angle=float(inp["elevation_angle"]),
        tilt_stage=float(inp["tilt_alpha"]),
    )
    s.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_beta", float(inp["tilt_beta"]))
    s.set_elements([str(e) for e in inp["elements"] if str(e) not in IGNORED])
    s.set_analysis_parameters(
        thickness=thickness_nm * 1e-7,  # cm
        density=density,
        detector_type="SDD_efficiency.txt",
        width_slope=float(inp["width_slope"]),
        width_intercept=float(inp["width_intercept"]),
        xray_db=xray_db(float(inp["beam_energy"])),
    )
    return s


def family_split(s, elements: list[str]) -> dict[str, float]:
    """Cut-off energies splitting each element's two lowest line families.

    The lines are those of espm's cross-section table inside the energy axis, grouped by
    family (the first letter of their IUPAC name: K, L, M). Only elements with lines of at
    least two families are split, at the midpoint between the top of the lower family and
    the bottom of the next.
    """
    import json

    from espm.conf import SYMBOLS_PERIODIC_TABLE

    with open(SYMBOLS_PERIODIC_TABLE) as f:
        numbers = json.load(f)["table"]
    model = s.model
    lo, hi = float(np.min(model.x)), float(np.max(model.x))
    out = {}
    for el in elements:
        fams: dict[str, list[float]] = {}
        for name, line in model.db_dict[str(numbers[el]["number"])].items():
            e = float(line["energy"])
            if lo < e < hi:
                fams.setdefault(name[0], []).append(e)
        ranges = sorted((min(v), max(v)) for v in fams.values())
        if len(ranges) >= 2:
            out[el] = 0.5 * (ranges[0][1] + ranges[1][0])
    return out


def run(inp: dict) -> dict:
    """espm's G @ W @ H for the input cube (see the module docstring)."""
    from espm.estimators import SmoothNMF

    sem = bool(inp["sem"])
    thickness = float(inp["thickness_nm"])
    density = float(inp["density"])
    if not np.isfinite(thickness):
        thickness = SEM_THICKNESS_NM if sem else TEM_THICKNESS_NM
    if not np.isfinite(density):
        density = SEM_DENSITY if sem else TEM_DENSITY
    s = make_signal(inp, thickness, density)
    elements = [str(e) for e in inp["elements"]]
    split = family_split(s, [e for e in elements if e not in IGNORED])
    s.build_G(problem_type="bremsstrahlung", ignored_elements=list(IGNORED), elements_dict=split)
    k = max(2, len(elements))
    est = SmoothNMF(
        n_components=k,
        G=s.model,
        shape_2d=s.shape_2d,
        random_state=int(inp["seed"]),
        hspy_comp=False,
        verbose=0,
        **NMF_SETTINGS,
    )
    x = s.X  # (E, Y * X)
    t0 = time.perf_counter()
    est.fit(x)
    expected = est.G_ @ est.W_ @ est.H_
    ny, nx, ne = np.shape(inp["counts"])
    cube = np.ascontiguousarray(expected.T.reshape(ny, nx, ne), dtype=np.float32)
    print(
        f"espm: {len(elements)} elements, {k} components, G {est.G_.shape}, "
        f"{est.n_iter_} iterations in {time.perf_counter() - t0:.1f} s, "
        f"counts {cube.sum():.6g} / {x.sum():.6g}",
        flush=True,
    )
    return {
        "expected": cube,
        "n_components": k,
        "n_iter": int(est.n_iter_),
        "g_columns": int(est.G_.shape[1]),
        "model_elements": np.array([str(e) for e in s.model.model_elts]),
        "xray_db": xray_db(float(inp["beam_energy"])),
        "thickness_nm": thickness,
        "density": density,
        "elements_dict": np.array([f"{el}:{cut:.3f}" for el, cut in split.items()]),
    }


def main(argv: list[str]) -> int:
    """Read ``argv[0]`` (input npz), write ``argv[1]`` (output npz)."""
    if len(argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as f:
        inp = {k: f[k] for k in f.files}
    out = run(inp)
    tmp = argv[1] + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
