"""The benchmark: every denoiser on the same data, scored one way, printed as one table.

``n2s-eds bench`` (and ``benchmarks/run_bench.py``) call :func:`main`. Each *case* is a noisy
spectrum image that every *method* denoises:

* real acquisitions, split into two independent parts (see :mod:`n2s_eds.metrics`): a binomial
  split ``x ~ Binomial(N, p)``, ``r = N - x`` (``fept_core_shell_tem`` at p = 0.1,
  ``bruker_sem_30x30_highcount`` at p = 0.005, ``sio2_particles_stem_haadf`` at p = 0.5) or a
  frame split (``velox_20frames``: odd frames against even frames). The methods see ``x``
  only; ``r`` scores them through the unbiased split MSE (gain in dB over the raw ``x``);
* simulated phantoms (:func:`n2s_eds.simulate.phantom`, TEM, 5, 20 and 100 counts/px) whose
  expected counts are known: gains, PSNR, SSIM and spectral angle against the truth.

Slow rows (BM3D, BM4D, the networks) are cached on disk as denoised cubes, keyed by the case,
method, seed, split and a *code version*: a hash of the source of every function of this
package that produced the input and the output (followed through the names they use) and of
the versions of the external packages involved. A row is recomputed only when one of these
changes. The scores themselves are recomputed on every run (they take seconds).

Outputs (in ``--output``, default ``benchmarks/results/``): ``bench.csv``, ``bench.md``
(the printed table), ``quant_bias.csv`` (line-ratio bias per phase region), one PNG of element
maps per case and ``n2s_vs_best_baseline.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import inspect
import json
import math
import os
import sys
import textwrap
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines
from .datasets import data_path
from .metrics import (
    ElementWindow,
    binomial_split,
    element_maps,
    element_windows,
    frame_split,
    map_count_ratios,
    psnr,
    score_split,
    spectral_angle,
    ssim,
)
from .preprocess import EnergyWindow, processing_window

__all__ = [
    "Case",
    "Method",
    "CASES",
    "METHODS",
    "NOTES_CUBE_GAINS",
    "COLUMNS",
    "build_case",
    "run_bench",
    "check_notes",
    "main",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent
#: Navigation shape of the simulated phantoms (tests may make it smaller).
PHANTOM_SHAPE: tuple[int, int] = (64, 64)
#: Energy channels of the simulated phantoms.
PHANTOM_CHANNELS: int = 1024
#: Element maps drawn per case in the figures (the strongest ones).
FIGURE_MAPS = 4
#: Lines used for the quantification bias: the strongest ones, by full-dose counts.
QUANT_LINES = 3
#: Smallest phase region (pixels) for the quantification bias.
QUANT_MIN_PIXELS = 16

#: Table columns, in order.
COLUMNS: tuple[str, ...] = (
    "case",
    "method",
    "cube_gain_db",
    "maps_gain_db",
    "cube_psnr_db",
    "cube_ssim",
    "maps_psnr_db",
    "maps_ssim",
    "spectral_angle_deg",
    "count_ratio",
    "worst_map_count_ratio",
    "quant_bias_pct",
    "seconds",
    "cached",
)

#: Cube gains (dB) of the classical baselines measured in ``QUALITY_NOTES.md``
#: (``../shared/QUALITY_NOTES.md``), checked by ``--check-notes``.
NOTES_CUBE_GAINS: dict[str, dict[str, float]] = {
    "fept_core_shell_tem": {
        "gaussian1": 10.7,
        "gaussian2": 15.8,
        "pca": 9.1,
        "pca_gaussian": 16.9,
        "bm3d": 16.6,
        "bm4d": 18.2,
    },
    "bruker_sem_30x30_highcount": {
        "gaussian1": 10.2,
        "gaussian2": 13.4,
        "pca": 15.2,
        "pca_gaussian": 17.7,
        "bm4d": 17.8,
    },
}
#: Tolerance of ``--check-notes`` in dB.
NOTES_TOLERANCE_DB = 0.5


class CaseSkipped(Exception):
    """A case cannot run here (e.g. its data file is absent); the message says why."""


# --------------------------------------------------------------------------------------------
# Code versions (cache keys)
# --------------------------------------------------------------------------------------------


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _is_ours(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith("n2s_eds")


def code_sources(objects: Sequence[Any]) -> dict[str, str]:
    """Source texts of functions and classes of this package, followed through their names.

    Starting from ``objects`` (functions, classes or modules), every global name a function
    uses that resolves to a function or class of ``n2s_eds`` is added, recursively. Modules
    are taken whole.

    Parameters
    ----------
    objects : sequence
        Functions, classes or modules.

    Returns
    -------
    dict
        Qualified name -> source text.
    """
    out: dict[str, str] = {}
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, types.ModuleType):
            key = obj.__name__
            if key not in out:
                out[key] = inspect.getsource(obj)
            continue
        obj = inspect.unwrap(obj)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        key = f"{obj.__module__}.{obj.__qualname__}"
        if key in out:
            continue
        try:
            out[key] = inspect.getsource(obj)
        except (OSError, TypeError):
            out[key] = repr(obj)
        if inspect.isfunction(obj):
            for name in _code_names(obj.__code__):
                ref = obj.__globals__.get(name)
                if (inspect.isfunction(ref) or inspect.isclass(ref)) and _is_ours(ref):
                    stack.append(ref)
    return out


def _package_versions(names: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _package_source_hash(
    exclude: Sequence[str] = ("bench.py", "cli.py", "guide_checks.py"),
) -> str:
    """Hash of every source file of the package except ``exclude`` (file names)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        if path.name in exclude:
            continue
        digest.update(str(path.relative_to(_PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(
    objects: Sequence[Any], packages: Sequence[str] = (), whole_package: bool = False
) -> str:
    """A short hash of the code behind a result (see :func:`code_sources`).

    Parameters
    ----------
    objects : sequence
        Functions, classes or modules whose source (and helpers) produced the result.
    packages : sequence of str
        External distributions whose versions matter (``"bm4d"``, ``"torch"``).
    whole_package : bool
        Also hash every source file of ``n2s_eds`` except ``bench.py`` and ``cli.py``
        (for the networks, which use most of the package).

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    payload = {
        "sources": code_sources(objects),
        "packages": _package_versions(packages),
        "package": _package_source_hash() if whole_package else "",
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


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


def _require(name: str) -> Path:
    path = data_path(name)
    if not path.exists():
        raise CaseSkipped(
            f"data file {path} not found (set N2S_EDS_DATA to the shared data folder)"
        )
    return path


def _windows(signal: Any, window: EnergyWindow) -> tuple[list[ElementWindow], bool]:
    windows = element_windows(signal, window)
    has_lines = sum(not w.name.startswith("peak_") for w in windows) >= 2
    return windows, has_lines


def _split_case(name: str, p: float, seed: int, guide_name: str | None = None) -> Case:
    from .io import load, load_guide

    acq = load(_require(name))
    full = acq.eds
    counts = np.asarray(full.data)
    x, r = binomial_split(counts, p, seed=seed)
    signal = full._deepcopy_with_new_data(x)
    title = full.metadata.get_item("General.title", "") or name
    signal.metadata.set_item("General.title", f"{title} (binomial split p={p:g})")
    window = processing_window(full)
    windows, has_lines = _windows(full, window)
    guide = acq.haadf
    if guide_name is not None:
        guide = load_guide(_require(guide_name), signal)
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
    from .io import load

    acq = load(_require("velox_20frames"), sum_frames=False)
    eds = acq.eds
    if eds.axes_manager.navigation_dimension != 3:
        raise CaseSkipped(
            f"expected a frame axis (3 navigation axes), got {eds.axes_manager.navigation_shape}"
        )
    # HyperSpy's data order puts the last navigation axis (frames) first.
    x, r, scale = frame_split(np.asarray(eds.data), axis=0)
    base = eds.inav[:, :, 0]
    signal = base._deepcopy_with_new_data(x)
    title = eds.metadata.get_item("General.title", "") or "velox"
    signal.metadata.set_item("General.title", f"{title} (odd frames)")
    full = base._deepcopy_with_new_data(x + r)
    window = processing_window(signal)
    windows, has_lines = _windows(full, window)
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
    from .simulate import phantom

    ph = phantom("tem", dose=dose, shape=PHANTOM_SHAPE, n_channels=PHANTOM_CHANNELS, seed=seed)
    window = processing_window(ph.noisy)
    windows, has_lines = _windows(ph.noisy, window)
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
        _require(data)
    return spec.build(seed)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def _run_raw(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return signal


def _run_gaussian1(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.gaussian(signal, sigma=1.0)


def _run_gaussian2(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.gaussian(signal, sigma=2.0)


def _run_pca(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.pca(signal)


def _run_pca_gaussian(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.pca_gaussian(signal, sigma=1.0)


def _run_guided_filter(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.guided_filter(signal, guide)


def _run_bm3d(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.bm3d(signal, sigma=1.0)


def _run_bm4d(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.bm4d(signal, sigma=1.0)


def _n2s_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k == "steps" and v is not None}


def _run_n2s(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    from . import api

    return api.denoise(signal, seed=seed, progress=False, **_n2s_options(options))


def _run_n2s_guided(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    from . import api

    return api.denoise(signal, haadf=guide, seed=seed, progress=False, **_n2s_options(options))


#: The supervised bound trains this many times the steps of the self-supervised row. On the
#: dose-20 phantom, 300 / 600 / 1200 supervised steps scored 17.11 / 17.19 / 17.26 dB (cube)
#: and 8.07 / 8.06 / 8.02 dB (maps): converged well before 4x the default 300.
SUPERVISED_STEPS_FACTOR = 4


def _run_n2s_supervised(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """The default network, masks and schedule trained against the truth (phantoms only)."""
    from . import api

    steps = options.get("steps")
    if steps is None:
        steps = inspect.signature(api.Denoiser).parameters["steps"].default
    # every step is trained against the truth (no held-out stopping): the bound converges
    den = api.Denoiser(
        seed=seed, progress=False, steps=SUPERVISED_STEPS_FACTOR * int(steps), holdout=0.0
    )
    return den.fit(signal, target=options["target"]).denoise(signal)


@dataclass(frozen=True)
class Method:
    """A denoiser as the benchmark runs it.

    Attributes
    ----------
    name : str
        Row name.
    run : callable
        ``run(signal, guide, seed, options) -> signal``.
    sources : tuple
        Functions/modules whose code produces the result (with :attr:`run`): the code version.
    packages : tuple of str
        External distributions whose versions enter the code version.
    whole_package : bool
        The result depends on most of ``n2s_eds`` (the networks).
    cached : bool
        Cache the denoised cube on disk (slow methods).
    guided : bool
        Needs the case's guide image; skipped where there is none.
    uses_options : tuple of str
        Run options (``steps``) that change the result and so enter the cache key.
    needs_truth : bool
        Trains against the case's truth (given as ``options["target"]``); skipped where
        there is none (real data).
    """

    name: str
    run: Callable[[Any, Any, int, dict[str, Any]], Any]
    sources: tuple[Any, ...] = ()
    packages: tuple[str, ...] = ()
    whole_package: bool = False
    cached: bool = False
    guided: bool = False
    uses_options: tuple[str, ...] = ()
    needs_truth: bool = False

    def code_version(self) -> str:
        """The hash of the code behind this method's results.

        Taken once per process (at the first call; :func:`run_bench` calls it before it
        computes anything) and then kept: the source files may change on disk while a long
        run goes on, and the key must describe the code that was loaded, not the edits.
        """
        if self not in _CODE_VERSIONS:
            _CODE_VERSIONS[self] = code_version(
                (self.run, *self.sources), self.packages, self.whole_package
            )
        return _CODE_VERSIONS[self]


#: Method -> its code version, taken once per process (see :meth:`Method.code_version`).
_CODE_VERSIONS: dict[Method, str] = {}


_BASE_PACKAGES = ("numpy", "scipy")
#: The methods, in the order of the table.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("raw", _run_raw),
        Method("gaussian1", _run_gaussian1, (baselines.gaussian,), _BASE_PACKAGES),
        Method("gaussian2", _run_gaussian2, (baselines.gaussian,), _BASE_PACKAGES),
        Method("pca", _run_pca, (baselines.pca,), (*_BASE_PACKAGES, "hyperspy")),
        Method(
            "pca_gaussian",
            _run_pca_gaussian,
            (baselines.pca_gaussian,),
            (*_BASE_PACKAGES, "hyperspy"),
        ),
        Method(
            "guided_filter",
            _run_guided_filter,
            (baselines.guided_filter,),
            _BASE_PACKAGES,
            guided=True,
        ),
        Method("bm3d", _run_bm3d, (baselines.bm3d,), (*_BASE_PACKAGES, "bm3d"), cached=True),
        Method("bm4d", _run_bm4d, (baselines.bm4d,), (*_BASE_PACKAGES, "bm4d"), cached=True),
        Method(
            "n2s",
            _run_n2s,
            packages=(*_BASE_PACKAGES, "torch", "lightning"),
            whole_package=True,
            cached=True,
            uses_options=("steps",),
        ),
        Method(
            "n2s_supervised",
            _run_n2s_supervised,
            packages=(*_BASE_PACKAGES, "torch", "lightning"),
            whole_package=True,
            cached=True,
            uses_options=("steps",),
            needs_truth=True,
        ),
        Method(
            "n2s_guided",
            _run_n2s_guided,
            packages=(*_BASE_PACKAGES, "torch", "lightning"),
            whole_package=True,
            cached=True,
            guided=True,
            uses_options=("steps",),
        ),
    )
}
#: Methods counted as classical baselines in the n2s comparison.
BASELINES = ("gaussian1", "gaussian2", "pca", "pca_gaussian", "bm3d", "bm4d")
#: Baselines of the guided comparison (``n2s_guided`` against these).
GUIDED_BASELINES = (*BASELINES, "guided_filter")


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _input_digest(case: Case, guided: bool, truth: bool = False) -> str:
    """Hash of exactly what a method sees: the noisy cube, its energy axis, the guide and
    (for the supervised bound) the truth."""
    digest = hashlib.sha256()
    raw = np.ascontiguousarray(case.raw)
    digest.update(f"{raw.dtype}{raw.shape}".encode())
    digest.update(raw.tobytes())
    ax = case.signal.axes_manager.signal_axes[0]
    digest.update(f"{ax.offset!r}{ax.scale!r}{ax.units!r}".encode())
    if guided and case.guide is not None:
        digest.update(np.ascontiguousarray(np.asarray(case.guide.data, np.float64)).tobytes())
    if truth and case.truth is not None:
        digest.update(np.ascontiguousarray(case.truth, np.float64).tobytes())
    return digest.hexdigest()[:16]


def _cache_key(case: Case, method: Method, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    # Keyed on the input data rather than on the code that built the case: a change in the
    # loaders that leaves the cube unchanged keeps the (hours of) cached BM3D/BM4D rows.
    return {
        "case": case.name,
        "method": method.name,
        "seed": int(seed),
        "split": case.split,
        "input": _input_digest(case, method.guided, method.needs_truth),
        "method_code": method.code_version(),
        "options": {k: options.get(k) for k in method.uses_options},
        "shape": list(case.raw.shape),
    }


def _cache_file(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['case']}__{key['method']}__{digest}.npz"


def _cache_load(path: Path, key: dict[str, Any]) -> tuple[np.ndarray, float] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != key:
                return None
            return np.asarray(f["window"]), float(f["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def _cache_save(path: Path, key: dict[str, Any], window: np.ndarray, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, window=window.astype(np.float32), seconds=seconds, key=json.dumps(key, sort_keys=True)
    )
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def _full(case: Case, window_cube: np.ndarray) -> np.ndarray:
    """The denoised window channels put back on the full energy axis of the input."""
    out = np.array(case.raw, dtype=np.float32, copy=True)
    out[..., case.window.slice] = window_cube
    return out


def _mse_gain_db(raw: np.ndarray, est: np.ndarray, truth: np.ndarray) -> float:
    m_raw = float(np.mean((raw - truth) ** 2))
    m_est = float(np.mean((est - truth) ** 2))
    if m_raw <= 0:
        return float("nan")
    if m_est <= 0:
        return float("inf")
    return 10.0 * math.log10(m_raw / m_est)


def _ptp(a: np.ndarray) -> float:
    r = float(np.max(a) - np.min(a))
    return r if r > 0 else 1.0


def _truth_scores(case: Case, den: np.ndarray) -> dict[str, float]:
    sl = case.window.slice
    t = case.truth[..., sl]
    x = case.raw[..., sl].astype(np.float64)
    d = den[..., sl].astype(np.float64)
    tm = element_maps(case.truth, case.windows)
    xm = element_maps(case.raw, case.windows)
    dm = element_maps(den, case.windows)
    return {
        "cube_gain_db": _mse_gain_db(x, d, t),
        "maps_gain_db": _mse_gain_db(xm, dm, tm),
        "cube_psnr_db": psnr(t, d, data_range=_ptp(t)),
        "cube_ssim": ssim(t, d, data_range=_ptp(t)),
        "maps_psnr_db": float(
            np.mean([psnr(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "maps_ssim": float(
            np.mean([ssim(a, b, data_range=_ptp(a)) for a, b in zip(tm, dm, strict=True)])
        ),
        "spectral_angle_deg": spectral_angle(t, d),
        "count_ratio": float(d.sum() / x.sum()),
        "worst_map_count_ratio": map_count_ratios(dm, xm)[1],
    }


def _split_scores(case: Case, den: np.ndarray) -> dict[str, float]:
    s = score_split(
        case.raw,
        case.remainder,
        den,
        case.p,
        scale=case.scale,
        window=case.window,
        windows=case.windows,
    )
    keys = (
        "cube_gain_db",
        "maps_gain_db",
        "cube_gain_is_bound",
        "maps_gain_is_bound",
        "count_ratio",
        "worst_map_count_ratio",
    )
    return {k: s[k] for k in keys if k in s}


def _regions(ref_maps: np.ndarray) -> list[np.ndarray]:
    """One phase region per map: pixels above the Otsu threshold of the smoothed map."""
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu

    out = []
    for m in ref_maps:
        sm = gaussian_filter(m, 1.0)
        if np.ptp(sm) <= 0:
            out.append(np.zeros(m.shape, bool))
            continue
        out.append(sm > threshold_otsu(sm))
    return out


def quant_bias(case: Case, den: np.ndarray) -> list[dict[str, Any]]:
    """Bias of line-intensity ratios in phase regions, denoised against full dose, in %.

    The :data:`QUALITY_NOTES`-style quantification check: the ``QUANT_LINES`` strongest
    metadata lines (by full-dose counts) are integrated (element-map windows, no background
    subtraction) in the denoised low-dose cube and in the full-dose cube (``x + r``; the
    truth for phantoms). Each weaker line is divided by the strongest; the ratio is summed
    over phase regions, one per line: the pixels above the Otsu threshold of that line's
    full-dose map (smoothed with a 1-pixel Gaussian). The bias is
    ``100 (ratio_denoised / ratio_full - 1)``; scale factors between the doses cancel.

    Parameters
    ----------
    case : Case
        A case whose metadata names at least two X-ray lines (``case.has_lines``).
    den : numpy.ndarray
        The denoised cube on the full energy axis.

    Returns
    -------
    list of dict
        ``ratio``, ``region``, ``pixels``, ``ratio_full``, ``ratio_denoised``, ``bias_pct``.
    """
    lines = [w for w in case.windows if not w.name.startswith("peak_")]
    if len(lines) < 2:
        return []
    ref = element_maps(case.reference, lines)
    order = np.argsort(ref.sum(axis=(1, 2)))[::-1][:QUANT_LINES]
    lines = [lines[i] for i in order]
    ref = ref[order]
    dm = element_maps(den, lines)
    regions = _regions(ref)
    rows = []
    for i in range(1, len(lines)):
        for j, reg in enumerate(regions):
            n = int(reg.sum())
            if n < QUANT_MIN_PIXELS:
                continue
            r_full = ref[i][reg].sum() / max(ref[0][reg].sum(), 1e-12)
            r_den = dm[i][reg].sum() / max(dm[0][reg].sum(), 1e-12)
            bias = 100.0 * (r_den / r_full - 1.0) if r_full > 0 else float("nan")
            rows.append(
                {
                    "ratio": f"{lines[i].name}/{lines[0].name}",
                    "region": f"{lines[j].name}-rich",
                    "pixels": n,
                    "ratio_full": float(r_full),
                    "ratio_denoised": float(r_den),
                    "bias_pct": float(bias),
                }
            )
    return rows


def score(case: Case, window_cube: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All scores of one denoised cube (processing-window channels) of a case.

    Returns
    -------
    row : dict
        The table columns (without ``case``, ``method``, ``seconds``, ``cached``).
    quant : list of dict
        The rows of :func:`quant_bias`.
    """
    den = _full(case, window_cube)
    row: dict[str, Any] = {c: float("nan") for c in COLUMNS[2:-2]}
    row.update(_truth_scores(case, den) if case.truth is not None else _split_scores(case, den))
    quant = quant_bias(case, den) if case.has_lines else []
    if quant:
        worst = max(quant, key=lambda q: abs(q["bias_pct"]) if np.isfinite(q["bias_pct"]) else -1)
        row["quant_bias_pct"] = worst["bias_pct"]
    return row, quant


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """Everything one benchmark run produced.

    Attributes
    ----------
    rows : list of dict
        The table rows (:data:`COLUMNS`).
    quant : list of dict
        Quantification-bias detail rows (with ``case`` and ``method``).
    skipped : list of tuple
        ``(case, method or "", reason)``.
    maps : dict
        Per case: ``{"names": [...], "reference": maps, "methods": {method: maps}}`` for the
        figures.
    seconds : dict
        Wall time per case (load, all methods and scores).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    quant: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)


def _say(text: str) -> None:
    print(text, flush=True)


def _figure_windows(case: Case) -> list[ElementWindow]:
    totals = element_maps(case.reference, case.windows).sum(axis=(1, 2))
    keep = sorted(np.argsort(totals)[::-1][:FIGURE_MAPS])
    return [case.windows[i] for i in keep]


def _denoise(
    case: Case,
    method: Method,
    seed: int,
    options: dict[str, Any],
    cache_dir: Path | None,
    cache_only: bool = False,
) -> tuple[np.ndarray, float, bool]:
    """The denoised window channels, the seconds it took and whether it came from the cache.

    With ``cache_only``, a row that is not in the cache raises :class:`CaseSkipped`.
    """
    key = path = None
    if method.cached and cache_dir is not None:
        key = _cache_key(case, method, seed, options)
        path = _cache_file(cache_dir, key)
        hit = _cache_load(path, key)
        if hit is not None:
            return hit[0], hit[1], True
    if cache_only:
        raise CaseSkipped("not in the cache (--cache-only); run it without --cache-only")
    if method.needs_truth:
        if case.truth is None:
            raise CaseSkipped("needs the truth, which only the phantoms have")
        options = {**options, "target": case.truth}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = method.run(case.signal, case.guide, seed, options)
    data = out.data
    if hasattr(data, "compute"):
        data = data.compute()
    seconds = time.perf_counter() - t0
    window_cube = np.asarray(data[..., case.window.slice], dtype=np.float32)
    if key is not None and path is not None:
        _cache_save(path, key, window_cube, seconds)
    return window_cube, seconds, False


def run_bench(
    cases: Sequence[str],
    methods: Sequence[str],
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    cache_only: Sequence[str] = (),
) -> BenchResult:
    """Run methods on cases and score them.

    Parameters
    ----------
    cases, methods : sequence of str
        Keys of :data:`CASES` and :data:`METHODS`.
    seed : int
        Seed of the splits, the phantoms and the networks.
    options : dict, optional
        Run options (``steps`` for the networks).
    cache_dir : pathlib.Path or None
        Cache of the slow rows; ``None`` computes everything afresh and stores nothing.
    cache_only : sequence of str
        Methods whose rows are only read from the cache (skipped when absent).

    Returns
    -------
    BenchResult
    """
    options = dict(options or {})
    result = BenchResult()
    for mname in methods:  # snapshot the code versions before anything runs
        METHODS[mname].code_version()
    for name in cases:
        t_case = time.perf_counter()
        try:
            case = build_case(name, seed)
        except CaseSkipped as exc:
            result.skipped.append((name, "", str(exc)))
            _say(f"SKIPPED case {name}: {exc}")
            continue
        result.descriptions[name] = case.description
        _say(f"case {name}: {case.description} (built in {time.perf_counter() - t_case:.1f} s)")
        fig_windows = _figure_windows(case)
        result.maps[name] = {
            "names": [w.name for w in fig_windows],
            "reference": element_maps(case.reference, fig_windows),
            "reference_scale": float(case.raw[..., case.window.slice].sum())
            / max(float(case.reference[..., case.window.slice].sum()), 1e-12),
            "reference_label": "truth" if case.truth is not None else "full dose (scaled)",
            "methods": {},
        }
        for mname in methods:
            method = METHODS[mname]
            reason = ""
            if method.guided and case.guide is None:
                reason = "no guide image for this case"
            elif method.needs_truth and case.truth is None:
                reason = "needs the truth, which only the phantoms have"
            if reason:
                result.skipped.append((name, mname, reason))
                _say(f"  {mname:<13} skipped: {reason}")
                continue
            try:
                window_cube, seconds, cached = _denoise(
                    case, method, seed, options, cache_dir, cache_only=mname in cache_only
                )
            except CaseSkipped as exc:
                result.skipped.append((name, mname, str(exc)))
                _say(f"  {mname:<13} skipped: {exc}")
                continue
            except Exception as exc:  # one failing method must not stop the benchmark
                reason = f"{type(exc).__name__}: {exc}"
                result.skipped.append((name, mname, reason))
                _say(f"  {mname:<13} FAILED: {reason}")
                continue
            scores, quant = score(case, window_cube)
            row = {"case": name, "method": mname, **scores}
            row["seconds"] = 0.0 if mname == "raw" else seconds
            row["cached"] = cached
            result.rows.append(row)
            result.quant.extend({"case": name, "method": mname, **q} for q in quant)
            full = _full(case, window_cube)
            result.maps[name]["methods"][mname] = element_maps(full, fig_windows)
            _say(
                f"  {mname:<13} cube {row['cube_gain_db']:6.2f} dB  maps "
                f"{row['maps_gain_db']:6.2f} dB  {seconds:7.1f} s"
                + ("  (cached)" if cached else "")
            )
        result.seconds[name] = time.perf_counter() - t_case
        _say(f"case {name} done in {result.seconds[name]:.1f} s")
    return result


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column == "seconds":
        return f"{value:.1f}"
    if column in (
        "cube_ssim",
        "maps_ssim",
        "count_ratio",
        "worst_map_count_ratio",
        "value",
        "unguided",
        "ratio_or_diff",
    ):
        return f"{value:.3f}"
    return f"{value:.2f}"


def _is_bound(row: dict[str, Any], column: str) -> bool:
    """Whether a gain column (``cube_gain_db``) of a row holds only a lower bound."""
    return bool(row.get(column.removesuffix("_db") + "_is_bound", False))


def _cell(row: dict[str, Any], column: str) -> str:
    text = _fmt(row.get(column), column)
    # a split gain the estimator cannot resolve is shown as its lower bound
    return ("≥" + text) if _is_bound(row, column) else text


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """The rows as a Markdown table (unresolved split gains as lower bounds, ``≥``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, c) for c in columns) + " |")
    return "\n".join(lines)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def comparisons(
    rows: Sequence[dict[str, Any]],
    method: str = "n2s",
    baselines: Sequence[str] = BASELINES,
) -> list[dict[str, Any]]:
    """Per case, ``method`` minus the best classical baseline (cube and maps gains, in dB).

    Gains the split cannot resolve (lower bounds) are left out of the comparison.
    """
    out = []
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        by = {r["method"]: r for r in rows if r["case"] == case}
        if method not in by:
            continue
        base = [by[m] for m in baselines if m in by]
        if not base:
            continue
        entry: dict[str, Any] = {"case": case}
        for col in ("cube_gain_db", "maps_gain_db"):
            # lower bounds (gains beyond the split's resolution) cannot be compared
            def usable(r: dict[str, Any], col: str = col) -> bool:
                return bool(np.isfinite(r[col])) and not _is_bound(r, col)

            vals = [(b[col], b["method"]) for b in base if usable(b)]
            if not vals or not usable(by[method]):
                entry[col] = float("nan")
                entry[col + "_best"] = ""
                continue
            best, who = max(vals)
            entry[col] = by[method][col] - best
            entry[col + "_best"] = who
        out.append(entry)
    return out


def supervised_gaps(
    rows: Sequence[dict[str, Any]], method: str = "n2s", bound: str = "n2s_supervised"
) -> list[dict[str, Any]]:
    """Per phantom, ``method`` minus its supervised bound (cube and maps gains, in dB).

    Issue #5 asks the self-supervised default to come within 1 dB of the same network
    trained against the truth; a value of -0.4 means 0.4 dB short of the bound.
    """
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["method"]: r for r in rows if r["case"] == case}
        if method in by and bound in by:
            out.append(
                {
                    "case": case,
                    "cube_gain_db": by[method]["cube_gain_db"] - by[bound]["cube_gain_db"],
                    "maps_gain_db": by[method]["maps_gain_db"] - by[bound]["maps_gain_db"],
                }
            )
    return out


def _plot_maps(result: BenchResult, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for case, info in result.maps.items():
        methods = info["methods"]
        if not methods:
            continue
        names = info["names"]
        ref = info["reference"] * info["reference_scale"]
        rows = [(info["reference_label"], ref)] + list(methods.items())
        nr, nc = len(rows), len(names)
        fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc + 0.8, 2.0 * nr + 0.6), squeeze=False)
        scores = {r["method"]: r for r in result.rows if r["case"] == case}
        for j in range(nc):
            vmax = float(np.percentile(ref[j], 99.5)) or float(ref[j].max()) or 1.0
            for i, (label, maps) in enumerate(rows):
                ax = axes[i, j]
                ax.imshow(maps[j], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(names[j], fontsize=9)
                if j == 0:
                    text = label
                    if label in scores:
                        s = scores[label]
                        cube, maps_ = (
                            ("≥" if _is_bound(s, c) else "") + f"{s[c]:.1f}"
                            for c in ("cube_gain_db", "maps_gain_db")
                        )
                        text += f"\ncube {cube} dB\nmaps {maps_} dB"
                    ax.set_ylabel(text, fontsize=8)
        desc = textwrap.fill(result.descriptions.get(case, ""), width=12 * nc + 10)
        title = f"{case}: element maps\n{desc}"
        fig.suptitle(title, fontsize=8)
        # keep the title's lines (8 pt, ~1.4 line spacing) clear of the column titles
        title_in = (title.count("\n") + 1) * 8 * 1.4 / 72 + 0.1
        fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - title_in / fig.get_figheight()))
        path = outdir / f"maps_{case}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_differences(comp: Sequence[dict[str, Any]], outdir: Path) -> Path | None:
    if not comp:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, title in zip(
        axes, ("cube_gain_db", "maps_gain_db"), ("cube", "element maps"), strict=True
    ):
        pairs = [(c[col], c["case"]) for c in comp if np.isfinite(c[col])]
        if not pairs:
            ax.set_title(f"{title}: no finite value")
            continue
        vals = np.array([v for v, _ in pairs])
        ax.hist(vals, bins=max(5, len(vals)), color="0.7", edgecolor="k")
        ax.axvline(0.0, color="k", lw=1, ls=":")
        best, worst = max(pairs), min(pairs)
        for (v, name), colour, tag in ((best, "tab:green", "best"), (worst, "tab:red", "worst")):
            ax.axvline(v, color=colour, lw=2)
            ax.annotate(
                f"{tag}: {name}\n{v:+.2f} dB",
                xy=(v, ax.get_ylim()[1] * (0.9 if tag == "best" else 0.7)),
                fontsize=8,
                color=colour,
                ha="center",
            )
        ax.set_title(f"{title}: n2s minus best baseline (dB)")
        ax.set_xlabel("gain difference (dB), > 0: n2s better")
        ax.set_ylabel("cases")
    fig.tight_layout()
    path = outdir / "n2s_vs_best_baseline.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(result: BenchResult, outdir: Path, header: str = "") -> dict[str, Path]:
    """Write the CSV and Markdown tables, the quantification detail and the figures.

    Returns
    -------
    dict
        Name -> path of what was written.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    path = outdir / "bench.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        columns = (*COLUMNS, "cube_gain_is_bound", "maps_gain_is_bound")
        w.writerow(columns)
        for row in result.rows:
            w.writerow([_csv_value(row.get(c, "")) for c in columns])
    written["csv"] = path
    path = outdir / "quant_bias.csv"
    qcols = (
        "case",
        "method",
        "ratio",
        "region",
        "pixels",
        "ratio_full",
        "ratio_denoised",
        "bias_pct",
    )
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(qcols)
        for q in result.quant:
            w.writerow([_csv_value(q.get(c)) for c in qcols])
    written["quant"] = path

    comp = comparisons(result.rows)
    md = [header, "", markdown_table(result.rows), ""]
    if result.descriptions:
        md += ["Cases:", ""]
        md += [
            f"- `{k}`: {v} ({result.seconds.get(k, 0):.0f} s)"
            for k, v in result.descriptions.items()
        ]
        md.append("")
    comp_cols = ("case", "cube_gain_db", "cube_gain_db_best", "maps_gain_db", "maps_gain_db_best")
    if comp:
        md += ["n2s minus the best classical baseline (dB):", ""]
        md += [markdown_table(comp, comp_cols), ""]
    comp_guided = comparisons(result.rows, "n2s_guided", GUIDED_BASELINES)
    if comp_guided:
        md += ["n2s_guided minus the best classical baseline, guided filter included (dB):", ""]
        md += [markdown_table(comp_guided, comp_cols), ""]
    gaps = supervised_gaps(result.rows)
    if gaps:
        md += ["n2s minus its supervised bound `n2s_supervised` (dB; target: > -1):", ""]
        md += [markdown_table(gaps, ("case", "cube_gain_db", "maps_gain_db")), ""]
    if result.skipped:
        md += ["Skipped:", ""]
        md += [f"- `{c}`{' / ' + m if m else ''}: {why}" for c, m, why in result.skipped]
        md.append("")
    path = outdir / "bench.md"
    path.write_text("\n".join(md).lstrip("\n"))
    written["md"] = path
    try:
        for p in _plot_maps(result, outdir):
            written[p.stem] = p
        p = _plot_differences(comp, outdir)
        if p is not None:
            written["differences"] = p
    except Exception as exc:  # figures are a bonus; the tables are written already
        _say(f"figures not drawn: {type(exc).__name__}: {exc}")
    return written


# --------------------------------------------------------------------------------------------
# Self-check against QUALITY_NOTES.md
# --------------------------------------------------------------------------------------------


def check_notes(
    seed: int = 0, tolerance_db: float = NOTES_TOLERANCE_DB, cache_dir: Path | None = None
) -> bool:
    """Compare the baselines' cube gains with :data:`NOTES_CUBE_GAINS`; print PASS/FAIL.

    Parameters
    ----------
    seed : int
        Seed of the count splits.
    tolerance_db : float
        Largest difference (dB) that passes.
    cache_dir : pathlib.Path or None
        Cache of the slow rows (BM3D, BM4D take many minutes each); ``None`` computes
        every row afresh.

    Returns
    -------
    bool
        ``True`` when every number agrees within ``tolerance_db`` (skipped cases count as
        failures: nothing was checked). A baseline whose optional package (``bm3d``,
        ``bm4d``) is not installed is reported as SKIP and does not fail the check.
    """
    ok = True
    for case_name, notes in NOTES_CUBE_GAINS.items():
        expected = {}
        for method, want in notes.items():
            versions = _package_versions(METHODS[method].packages)
            missing = [p for p, v in versions.items() if v == "absent"]
            if missing:
                _say(
                    f"SKIP {case_name} {method}: the optional package {missing[0]} is not installed"
                )
            else:
                expected[method] = want
        result = run_bench([case_name], list(expected), seed=seed, cache_dir=cache_dir)
        if not result.rows:
            _say(f"FAIL {case_name}: not run ({'; '.join(s[2] for s in result.skipped)})")
            ok = False
            continue
        got = {r["method"]: r["cube_gain_db"] for r in result.rows}
        for method, want in expected.items():
            value = got.get(method, float("nan"))
            good = bool(np.isfinite(value) and abs(value - want) <= tolerance_db)
            ok &= good
            _say(
                f"{'PASS' if good else 'FAIL'} {case_name} {method}: cube gain {value:.2f} dB, "
                f"notes {want:.1f} dB (tolerance {tolerance_db} dB)"
            )
    _say("check-notes: " + ("all PASS" if ok else "FAIL"))
    return ok


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _default_output() -> Path:
    repo = _REPO_DIR / "benchmarks"
    return (repo if repo.is_dir() else Path.cwd() / "benchmarks") / "results"


def _comma_list(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``n2s-eds bench``."""
    parser = argparse.ArgumentParser(
        prog="n2s-eds bench",
        description="Run every denoiser on the benchmark cases and print one table.",
    )
    parser.add_argument(
        "--cases",
        type=lambda t: _comma_list(t, CASES, "case"),
        default=list(CASES),
        help=f"comma list of cases (default all: {','.join(CASES)})",
    )
    parser.add_argument(
        "--methods",
        type=lambda t: _comma_list(t, METHODS, "method"),
        default=list(METHODS),
        help=f"comma list of methods (default all: {','.join(METHODS)})",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="output folder (default benchmarks/results/)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache of the slow rows (default: 'cache' beside the output folder)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, phantoms, networks")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps of n2s (default: its own)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="compute every row afresh; read and write no cache"
    )
    parser.add_argument(
        "--check-notes",
        action="store_true",
        help="check the baselines' cube gains against QUALITY_NOTES.md (exit 1 on FAIL)",
    )
    parser.add_argument(
        "--cache-only",
        type=lambda t: _comma_list(t, METHODS, "method"),
        default=[],
        help="comma list of cached methods (e.g. bm3d,bm4d) read from the cache only: "
        "a row not in the cache is skipped instead of computed",
    )
    parser.add_argument(
        "--hallucination",
        action="store_true",
        help="run the guide-image hallucination checks instead (see n2s_eds.guide_checks)",
    )
    parser.add_argument("--list", action="store_true", help="list cases and methods and exit")
    return parser


def _main_hallucination(
    args: argparse.Namespace,
    argv: list[str] | None,
    outdir: Path,
    cache_dir: Path | None,
    options: dict[str, Any],
    t0: float,
) -> int:
    from .guide_checks import run_checks, write_checks

    rows, skipped = run_checks(seed=args.seed, options=options, cache_dir=cache_dir)
    total = time.perf_counter() - t0
    command = "n2s-eds bench " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"# n2s_eds hallucination checks\n\n`{command.strip()}`: seed {args.seed}, "
        f"{total:.0f} s in all. See n2s_eds/guide_checks.py for the checks and limits."
    )
    paths = write_checks(rows, skipped, outdir, header)
    _say("")
    _say(
        markdown_table(
            rows,
            ("check", "method", "metric", "value", "unguided", "ratio_or_diff", "limit", "passed"),
        )
    )
    _say(f"\nwrote {', '.join(str(p) for p in paths.values())} ({total:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``n2s-eds bench``.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when ``--check-notes`` fails, 2 for bad arguments.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        for name, spec in CASES.items():
            _say(f"case   {name}" + (f" (data: {', '.join(spec.data)})" if spec.data else ""))
        for name in METHODS:
            _say(f"method {name}")
        return 0
    if args.check_notes:
        notes_cache = None if args.no_cache else args.cache_dir
        return 0 if check_notes(seed=args.seed, cache_dir=notes_cache) else 1

    outdir = args.output if args.output is not None else _default_output()
    cache_dir = None
    if not args.no_cache:
        cache_dir = args.cache_dir if args.cache_dir is not None else outdir.parent / "cache"
    options = {"steps": args.steps}
    t0 = time.perf_counter()
    if args.hallucination:
        return _main_hallucination(args, argv, outdir, cache_dir, options, t0)
    result = run_bench(
        args.cases,
        args.methods,
        seed=args.seed,
        options=options,
        cache_dir=cache_dir,
        cache_only=args.cache_only,
    )
    total = time.perf_counter() - t0
    command = "n2s-eds bench " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"# n2s_eds benchmark\n\n`{command.strip()}`: seed {args.seed}, "
        f"n2s steps {args.steps if args.steps is not None else 'default'}, {total:.0f} s in all."
        " Real cases: split gains (unbiased split MSE against the remainder); phantoms: gains "
        "and scores against the truth. See benchmarks/README.md."
    )
    written = write_outputs(result, outdir, header)
    _say("")
    _say(markdown_table(result.rows))
    for method, base in (("n2s", BASELINES), ("n2s_guided", GUIDED_BASELINES)):
        comp = comparisons(result.rows, method, base)
        if comp:
            _say(f"\n{method} minus best baseline (dB):")
        for c in comp:
            _say(
                f"  {c['case']:<28} cube {c['cube_gain_db']:+6.2f} (vs {c['cube_gain_db_best']})"
                f"  maps {c['maps_gain_db']:+6.2f} (vs {c['maps_gain_db_best']})"
            )
    for g in supervised_gaps(result.rows):
        _say(
            f"  {g['case']:<28} n2s minus supervised bound: cube {g['cube_gain_db']:+6.2f}"
            f"  maps {g['maps_gain_db']:+6.2f} dB"
        )
    for case, method, why in result.skipped:
        _say(f"SKIPPED {case}{' / ' + method if method else ''}: {why}")
    _say(f"\nwrote {', '.join(str(p) for p in written.values())} ({total:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
