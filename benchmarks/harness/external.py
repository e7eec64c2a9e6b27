"""External baselines, run as their authors intend: espm and multi-modal fusion.

* ``espm`` (Teurtrie et al., Ultramicroscopy 2023): physics-guided NMF. espm pins its own
  HyperSpy/exspy versions, so it runs in its own virtual environment
  (``benchmarks/external/.venv-espm``, made by ``make external-venvs``) through
  ``benchmarks/external/espm_runner.py``: :func:`run_espm` writes the case's window channels
  and metadata to an ``.npz`` file, runs the script with that environment's python and reads
  back espm's reconstruction ``G @ W @ H``. The script's docstring holds the parameter rule.
* ``fused`` (Schwartz et al., npj Comput. Mater. 8, 16 (2022); package ``multimodal-fusion``):
  the element maps of the case's windows fused with its HAADF image (HAADF ~ sum c^gamma,
  Poisson and TV terms), the package's default parameters. :func:`run_fused` returns maps
  only; each fused map (normalised to [0, 1] by the package) is rescaled to the raw map's
  total (:func:`rescale_to_totals`).

The harness's part of espm's rule: the elements (:func:`espm_elements`: the case's metadata
elements, ``Sample.elements`` and ``Sample.xray_lines``, plus :data:`EXTRA_ELEMENTS`, the
elements whose peaks the full-dose sum spectrum shows but the metadata do not name, identified
by hand from the peak energies as an espm user sets the elements), the energy axis and peak
widths (:func:`calibrate`, fitted to the noisy input) and the detector angles
(:func:`detector_angles`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import numpy as np

from n2s_eds.metrics import element_maps
from n2s_eds.preprocess import beam_energy_kev, instrument_value

from .cases import Case, CaseSkipped

__all__ = [
    "EXTERNAL_DIR",
    "ESPM_VENV",
    "ESPM_RUNNER",
    "ESPM_PACKAGES",
    "ESPM_TIMEOUT_S",
    "EXTRA_ELEMENTS",
    "CALIBRATION_LINES",
    "CALIBRATION_MIN_SNR",
    "DEFAULT_WIDTH",
    "line_fits",
    "calibrate",
    "FUSION_PARAMETERS",
    "espm_python",
    "espm_elements",
    "MIN_TAKE_OFF_DEG",
    "detector_angles",
    "espm_input",
    "espm_case_key",
    "espm_version",
    "run_espm",
    "rescale_to_totals",
    "fuse_maps",
    "run_fused",
]

#: ``benchmarks/external/``: the runner scripts, requirements and virtual environments.
EXTERNAL_DIR = Path(__file__).resolve().parents[1] / "external"
#: espm's own virtual environment (git-ignored; ``make external-venvs``).
ESPM_VENV = Path(os.environ.get("N2S_EDS_ESPM_VENV", EXTERNAL_DIR / ".venv-espm"))
#: The script that the espm environment runs.
ESPM_RUNNER = EXTERNAL_DIR / "espm_runner.py"
#: Distributions of the espm environment whose versions enter the code version.
ESPM_PACKAGES = ("espm", "hyperspy", "exspy", "numpy", "scipy", "scikit-learn")
#: Longest run of the espm script, in seconds.
ESPM_TIMEOUT_S = 4 * 3600

#: Elements whose peaks the full-dose sum spectrum shows but the case's metadata (with the
#: lines ``harness.cases`` adds) do not name, per case; espm models every peak, the support,
#: grid and detector ones included (Cu through its default ``ignored_elements``). FePt: C
#: (support film, 0.26 keV), O (oxide shell, 0.52), Si (1.74), Cu (grid: 0.92, 8.04, 8.88);
#: rock: Mn (5.91), Cu (8.07); SiO2: C (0.31, support film), Cu (0.96, 8.09, 8.95, grid);
#: Velox: O (0.54), Si (1.73), Cu (8.06, 8.92). The phantoms hold exactly their metadata
#: elements.
EXTRA_ELEMENTS: dict[str, tuple[str, ...]] = {
    "fept_core_shell_tem": ("C", "O", "Si", "Cu"),
    "bruker_sem_30x30_highcount": ("Mn", "Cu"),
    "sio2_particles_stem_haadf": ("C", "Cu"),
    "velox_20frames": ("O", "Si", "Cu"),
}

#: Lines fitted for the calibration (:func:`calibrate`): the alpha line of each family.
CALIBRATION_LINES = ("Ka", "La", "Ma")
#: A fitted line counts when its net counts reach this many times the noise under it.
CALIBRATION_MIN_SNR = 20.0
#: espm's default width law ``FWHM = slope E + intercept`` (keV), kept when the fit fails.
DEFAULT_WIDTH = (0.01, 0.065)

#: Smallest take-off angle (degrees) taken from the metadata (:func:`detector_angles`).
MIN_TAKE_OFF_DEG = 5.0

#: ``DataFusion.run`` arguments: the package's defaults (``gamma`` 1.6 is the constructor's
#: default), without its figures.
FUSION_PARAMETERS: dict[str, Any] = {
    "nIter": 50,
    "lambdaEDS": 0.005,
    "lambdaTV": 0.1,
    "ng": 15,
    "bkg": 0.1,
}


def espm_python() -> Path:
    """The python of the espm environment; :class:`CaseSkipped` when it is absent."""
    python = ESPM_VENV / "bin" / "python"
    if not python.is_file():
        raise CaseSkipped(
            f"the espm environment {ESPM_VENV} is absent; create it with `make external-venvs`"
        )
    return python


def espm_elements(case: Case) -> list[str]:
    """The elements espm models for a case: metadata elements and :data:`EXTRA_ELEMENTS`."""
    md = case.signal.metadata
    names: list[str] = []
    if md.has_item("Sample.elements"):
        names += [str(e) for e in np.asarray(md.get_item("Sample.elements")).ravel()]
    if md.has_item("Sample.xray_lines"):
        names += [
            str(x).split("_")[0] for x in np.asarray(md.get_item("Sample.xray_lines")).ravel()
        ]
    names += EXTRA_ELEMENTS.get(case.name, ())
    return sorted(set(names))


def _angle(signal: Any, item: str) -> float:
    md = signal.metadata
    for mic in ("TEM", "SEM"):
        key = f"Acquisition_instrument.{mic}.{item}"
        if md.has_item(key):
            try:
                return float(md.get_item(key))
            except (TypeError, ValueError):
                break
    return 0.0


def _is_sem(signal: Any) -> bool:
    """A bulk (SEM) acquisition: SEM metadata or an ``EDS_SEM`` signal type."""
    md = signal.metadata
    return md.has_item("Acquisition_instrument.SEM") or "SEM" in str(
        md.get_item("Signal.signal_type", "")
    )


def _sample_value(signal: Any, item: str) -> float:
    md = signal.metadata
    if md.has_item(f"Sample.{item}"):
        try:
            return float(md.get_item(f"Sample.{item}"))
        except (TypeError, ValueError):
            pass
    return float("nan")


def _fit_line(e: np.ndarray, y: np.ndarray, centre: float, fwhm: float) -> tuple | None:
    """Gaussian on a straight background fitted to one line, or None.

    Returns ``(centre, FWHM, snr, sd_centre, sd_fwhm)``: the fitted values, the net counts
    over their noise and the standard errors of the centre and FWHM.
    """
    from scipy.optimize import curve_fit

    m = (e > centre - 1.5 * fwhm) & (e < centre + 1.5 * fwhm)
    if m.sum() < 6:
        return None
    x, v = e[m], y[m]
    sig0 = fwhm / 2.3548

    def model(t, a, mu, sig, c0, c1):
        return a * np.exp(-0.5 * ((t - mu) / sig) ** 2) + c0 + c1 * (t - centre)

    lo = [0.0, centre - 0.1, 0.3 * sig0, -np.inf, -np.inf]
    hi = [np.inf, centre + 0.1, 3.0 * sig0, np.inf, np.inf]
    p0 = [max(float(v.max() - v.min()), 1.0), centre, sig0, float(v.min()), 0.0]
    try:
        p, cov = curve_fit(model, x, v, p0=p0, bounds=(lo, hi), sigma=np.sqrt(np.maximum(v, 1.0)))
    except (RuntimeError, ValueError):
        return None
    a, mu, sig = p[0], p[1], p[2]
    if not (lo[1] < mu < hi[1] and lo[2] < sig < hi[2]):  # at a bound: not a clean peak
        return None
    near = np.abs(x - mu) < 2.3548 * sig
    net = float(np.sum(a * np.exp(-0.5 * ((x[near] - mu) / sig) ** 2)))
    snr = net / np.sqrt(max(float(v[near].sum()), 1.0))
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-30))
    return float(mu), float(2.3548 * sig), snr, float(sd[1]), float(2.3548 * sd[2])


def line_fits(
    spectrum: np.ndarray, energies: np.ndarray, elements: Sequence[str], fwhm_mn_ka_ev: float
) -> list[tuple[str, float, float, float, float, float]]:
    """Fitted centre and FWHM of the isolated alpha lines of the elements in a sum spectrum.

    A line (:data:`CALIBRATION_LINES`, exspy's line table) is isolated when no other line of
    the elements (weight >= 0.05) lies within one nominal FWHM of it; it counts when the fit
    converges inside its bounds with a signal-to-noise ratio of :data:`CALIBRATION_MIN_SNR`.

    Returns
    -------
    list of tuple
        ``(line, table energy, centre, FWHM, sd_centre, sd_fwhm)``: the fitted values and
        their standard errors, energies in keV.
    """
    from exspy.material import elements as db

    from n2s_eds.preprocess import detector_fwhm_kev

    table = []
    for el in elements:
        for name, v in db[el]["Atomic_properties"]["Xray_lines"].as_dictionary().items():
            table.append((f"{el}_{name}", float(v["energy (keV)"]), float(v["weight"])))
    out = []
    for line, e0, _ in table:
        if line.split("_")[1] not in CALIBRATION_LINES or not energies[0] < e0 < energies[-1]:
            continue
        fwhm = float(detector_fwhm_kev(e0, fwhm_mn_ka_ev))
        if any(o != line and w >= 0.05 and abs(e - e0) < fwhm for o, e, w in table):
            continue
        fit = _fit_line(energies, spectrum, e0, fwhm)
        if fit is not None and fit[2] >= CALIBRATION_MIN_SNR:
            out.append((line, e0, fit[0], fit[1], fit[3], fit[4]))
    return sorted(out, key=lambda f: f[1])


def calibrate(case: Case) -> dict[str, Any]:
    """Energy axis and peak-width law for espm, fitted to the noisy input's sum spectrum.

    espm's workflow calibrates the energy axis before it builds G and advises measuring the
    peak widths for its linear width law. Here both are fitted to the isolated alpha lines of
    the modelled elements (:func:`line_fits`) in the input's sum spectrum (window channels):
    recorded energy = ``a + g`` x table energy (``g`` = 1 with one line or lines spanning
    less than 1 keV; no correction without lines); FWHM = ``slope E + intercept`` over lines
    spanning at least 2 keV, else :data:`DEFAULT_WIDTH` shifted by the resolution at Mn Ka
    minus 130 eV. Both are weighted least squares, each line weighted by the inverse
    variance of its fitted centre (or FWHM), so the strongest peaks, which weigh most in the
    fit of the cube, are placed best.

    Returns
    -------
    dict
        ``offset``, ``scale`` (keV, of the window's first channel and per channel, on the
        calibrated axis), ``width_slope``, ``width_intercept``, ``calibration_lines``.
    """
    from n2s_eds.preprocess import energy_axis_kev

    win = case.window
    energies = energy_axis_kev(case.signal)[win.slice]
    spectrum = np.asarray(case.raw[..., win.slice], dtype=np.float64).reshape(-1, energies.size)
    fwhm_mn = float(instrument_value(case.signal, "Detector.EDS.energy_resolution_MnKa") or 130.0)
    fits = line_fits(spectrum.sum(axis=0), energies, espm_elements(case), fwhm_mn)
    e_tab = np.array([f[1] for f in fits])
    a, g = 0.0, 1.0
    w_centre = np.array([1.0 / f[4] for f in fits])
    if len(fits) >= 2 and np.ptp(e_tab) >= 1.0:
        g, a = np.polyfit(e_tab, [f[2] for f in fits], 1, w=w_centre)
    elif fits:
        a = float(np.average([f[2] - f[1] for f in fits], weights=w_centre**2))
    slope, intercept = DEFAULT_WIDTH[0], DEFAULT_WIDTH[1] + (fwhm_mn - 130.0) / 1000.0
    if len(fits) >= 2 and np.ptp(e_tab) >= 2.0:
        s_fit, i_fit = np.polyfit(e_tab, [f[3] for f in fits], 1, w=[1.0 / f[5] for f in fits])
        if s_fit >= 0 and i_fit > 0:
            slope, intercept = float(s_fit), float(i_fit)
    scale = float(energies[1] - energies[0])
    return {
        "offset": (float(energies[0]) - a) / g,
        "scale": scale / g,
        "width_slope": slope,
        "width_intercept": intercept,
        "calibration_lines": np.array(
            [f"{f[0]}: {f[2] - f[1]:+.4f} keV, FWHM {f[3]:.4f} keV" for f in fits]
        ),
    }


def detector_angles(signal: Any) -> dict[str, float]:
    """Elevation, azimuth and stage tilts for espm's take-off angle.

    From the metadata (elevation 35 degrees and the rest 0 when absent, espm's notebook
    values). When they give a take-off angle below :data:`MIN_TAKE_OFF_DEG` (the Velox scan:
    -0.3 degrees at alpha tilt -35 degrees, as its four Super-X detectors are recorded as one
    at azimuth 0), the tilts are set to 0, so that the take-off angle is the elevation: espm's
    absorption term diverges at a take-off angle of 0 or below.
    """
    from exspy.utils.eds import take_off_angle

    angles = {
        "elevation_angle": _angle(signal, "Detector.EDS.elevation_angle") or 35.0,
        "azimuth_angle": _angle(signal, "Detector.EDS.azimuth_angle"),
        "tilt_alpha": _angle(signal, "Stage.tilt_alpha"),
        "tilt_beta": _angle(signal, "Stage.tilt_beta"),
    }
    toa = take_off_angle(
        angles["tilt_alpha"],
        angles["azimuth_angle"],
        angles["elevation_angle"],
        angles["tilt_beta"],
    )
    if not toa >= MIN_TAKE_OFF_DEG:
        angles["tilt_alpha"] = angles["tilt_beta"] = 0.0
    return angles


def espm_input(case: Case, seed: int) -> dict[str, Any]:
    """What the espm script gets: the window channels and the metadata espm needs.

    The energy axis and the width law come from :func:`calibrate`, the angles from
    :func:`detector_angles`; thickness (nm) and density are ``nan`` unless the metadata give
    ``Sample.thickness`` / ``Sample.density``.
    """
    signal = case.signal
    sem = _is_sem(signal)
    return {
        "counts": np.asarray(case.raw[..., case.window.slice], dtype=np.float64),
        **calibrate(case),
        "elements": np.array(espm_elements(case)),
        "beam_energy": float(beam_energy_kev(signal) or (20.0 if sem else 200.0)),
        "sem": bool(sem),
        **detector_angles(signal),
        "thickness_nm": _sample_value(signal, "thickness"),
        "density": _sample_value(signal, "density"),
        "seed": int(seed),
    }


def espm_case_key(case: Case) -> dict[str, Any]:
    """The metadata :func:`espm_input` reads besides the cube (for the cache key)."""
    signal = case.signal
    return {
        "elements": espm_elements(case),
        "beam_energy": beam_energy_kev(signal),
        "resolution": instrument_value(signal, "Detector.EDS.energy_resolution_MnKa"),
        "angles": [
            _angle(signal, k)
            for k in (
                "Detector.EDS.elevation_angle",
                "Detector.EDS.azimuth_angle",
                "Stage.tilt_alpha",
                "Stage.tilt_beta",
            )
        ],
        "sample": [
            v if np.isfinite(v) else None
            for v in (_sample_value(signal, "thickness"), _sample_value(signal, "density"))
        ],
        "sem": _is_sem(signal),
    }


def _venv_versions(names: Sequence[str]) -> dict[str, str]:
    found = {n: "absent" for n in names}
    for lib in sorted((ESPM_VENV / "lib").glob("python*/site-packages")):
        for dist in distributions(path=[str(lib)]):
            name = str(dist.metadata["Name"]).lower()
            for n in names:
                if name == n.lower():
                    found[n] = dist.version
    return found


def espm_version() -> str:
    """The runner script's hash and the espm environment's package versions (code version)."""
    digest = hashlib.sha256(ESPM_RUNNER.read_bytes()).hexdigest()[:16]
    versions = _venv_versions(ESPM_PACKAGES)
    return f"runner {digest}; " + ", ".join(f"{k}=={v}" for k, v in versions.items())


def run_espm(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """espm's ``G @ W @ H`` in the window channels; the other channels keep the input.

    ``options["case"]`` is the :class:`~harness.cases.Case`. Raises :class:`CaseSkipped`
    when the espm environment is absent, ``RuntimeError`` when the script fails.
    """
    case: Case = options["case"]
    python = espm_python()
    inp = espm_input(case, seed)
    with tempfile.TemporaryDirectory(prefix="n2s_espm_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **inp)
        env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [str(python), str(ESPM_RUNNER), str(src), str(dst)],
            capture_output=True,
            text=True,
            env=env,
            timeout=ESPM_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0 or not dst.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"espm runner exit {proc.returncode}: " + " | ".join(tail))
        with np.load(dst, allow_pickle=False) as f:
            expected = np.asarray(f["expected"], dtype=np.float32)
    for line in proc.stdout.splitlines():
        if line.startswith("espm:"):
            print(f"    {line}", flush=True)
    full = np.array(case.raw, dtype=np.float32, copy=True)
    full[..., case.window.slice] = expected
    return signal._deepcopy_with_new_data(full)


def rescale_to_totals(fused: np.ndarray, raw_maps: np.ndarray) -> np.ndarray:
    """Scale each map ``(n_maps, Y, X)`` of ``fused`` so that its total is the raw map's.

    A map whose fused total is 0 stays 0.
    """
    fused = np.asarray(fused, dtype=np.float64)
    raw_totals = np.asarray(raw_maps, dtype=np.float64).sum(axis=(1, 2))
    totals = fused.sum(axis=(1, 2))
    factor = np.divide(raw_totals, totals, out=np.zeros_like(totals), where=totals > 0)
    return fused * factor[:, None, None]


def _fusion_key(name: str) -> str:
    """The element symbol of a window name (``"Fe_Ka"`` -> ``"Fe"``); ``"H"`` for a peak."""
    head = name.split("_")[0]
    return "H" if name.startswith("peak_") else head


def fuse_maps(raw_maps: np.ndarray, haadf: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Fuse element maps with a HAADF image (``multimodal_fusion.DataFusion``, defaults).

    Parameters
    ----------
    raw_maps : numpy.ndarray
        ``(n_maps, Y, X)`` counts, one map per element window.
    haadf : numpy.ndarray
        ``(Y, X)`` HAADF image of the same scan.
    names : sequence of str
        Window names; their element symbols (``"H"`` for a window without a line) are what
        the package looks up for its atomic numbers, which its default unweighted
        measurement matrix does not use.

    Returns
    -------
    numpy.ndarray
        ``(n_maps, Y, X)`` fused maps rescaled to the raw totals (:func:`rescale_to_totals`).
    """
    import contextlib
    import io

    import matplotlib

    matplotlib.use("Agg")
    from multimodal_fusion import DataFusion

    raw_maps = np.asarray(raw_maps, dtype=np.float64)
    n, ny, nx = raw_maps.shape
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fusion = DataFusion([_fusion_key(k) for k in names])
        # keys unique per window: the package keeps the dict's order
        fusion.load_chemical_maps({f"{i}:{k}": raw_maps[i].copy() for i, k in enumerate(names)})
        fusion.load_haadf(np.asarray(haadf, dtype=np.float64).copy())
        fusion.run(**FUSION_PARAMETERS, plot_images=False, plot_convergence=False)
    fused = np.asarray(fusion.xx, dtype=np.float64).reshape(n, ny, nx)
    return rescale_to_totals(fused, raw_maps)


def run_fused(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> np.ndarray:
    """Fused maps ``(n_maps, Y, X)`` of the case's element windows (a maps-only method)."""
    case: Case = options["case"]
    if guide is None:
        raise CaseSkipped("no guide image for this case")
    raw = element_maps(case.raw, case.windows)
    return fuse_maps(raw, np.asarray(guide.data), [w.name for w in case.windows])
