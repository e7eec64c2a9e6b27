"""Tests of the benchmark's external baselines (benchmarks/harness/external.py): maps-only
scoring, the rescaling of fused maps, the espm inputs and cache key; the espm script itself only
where its environment exists (``make external-venvs``)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from n2s_eds import baselines
from n2s_eds.metrics import binomial_split, element_maps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the harness lives outside the installed package
    sys.path.insert(0, str(BENCHMARKS))

from harness import cache, cases, external, methods, runner, scores  # noqa: E402

CASE = "phantom_tem_dose20"
MAPS_COLUMNS = ("maps_gain_db", "maps_psnr_db", "maps_ssim", "worst_map_count_ratio")
CUBE_COLUMNS = ("cube_gain_db", "cube_psnr_db", "cube_ssim", "spectral_angle_deg", "count_ratio")


@pytest.fixture
def small_phantoms(monkeypatch):
    """Shrink the phantom cases so that they build in a second."""
    monkeypatch.setattr(cases, "PHANTOM_SHAPE", (24, 22))
    monkeypatch.setattr(cases, "PHANTOM_CHANNELS", 400)


def _split_case(seed: int = 1) -> cases.Case:
    """A binomial split of a small phantom, built like the real split cases."""
    case = cases.build_case(CASE, 0)
    counts = np.asarray(case.signal.data)
    x, r = binomial_split(counts, 0.3, seed=seed)
    return dataclasses.replace(
        case,
        name="split_phantom",
        signal=case.signal._deepcopy_with_new_data(x),
        reference=counts,
        remainder=r,
        p=0.3,
        truth=None,
    )


def _smoothed(case: cases.Case) -> np.ndarray:
    return np.asarray(baselines.gaussian(case.signal, sigma=1.0).data)


@pytest.mark.parametrize("split", [False, True])
def test_maps_only_scores_equal_the_maps_columns_of_a_cube(small_phantoms, split):
    """Scoring a cube's element maps as a maps-only row gives the cube row's maps columns."""
    case = _split_case() if split else cases.build_case(CASE, 0)
    den = _smoothed(case)
    cube_row, cube_quant = scores.score(case, den[..., case.window.slice])
    maps_row, maps_quant = scores.score_maps(case, element_maps(den, case.windows))
    for col in (*MAPS_COLUMNS, "quant_bias_pct"):
        a, b = cube_row[col], maps_row[col]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), col
    assert maps_row.get("maps_gain_is_bound", False) == cube_row.get("maps_gain_is_bound", False)
    assert [q["bias_pct"] for q in maps_quant] == pytest.approx([q["bias_pct"] for q in cube_quant])
    assert all(math.isnan(maps_row[c]) for c in CUBE_COLUMNS)
    assert maps_row["maps_gain_db"] > 0


def test_score_maps_wants_one_map_per_window(small_phantoms):
    case = cases.build_case(CASE, 0)
    with pytest.raises(ValueError, match="element windows"):
        scores.score_maps(case, element_maps(case.raw, case.windows)[:1])


def test_rescale_to_totals_keeps_each_raw_total():
    rng = np.random.default_rng(0)
    raw = rng.poisson(5.0, (3, 8, 9)).astype(float)
    fused = rng.random((3, 8, 9))
    fused[2] = 0.0
    out = external.rescale_to_totals(fused, raw)
    assert out[:2].sum(axis=(1, 2)) == pytest.approx(raw[:2].sum(axis=(1, 2)))
    assert np.all(out[2] == 0)  # nothing to scale
    assert out[0] / out[0].sum() == pytest.approx(fused[0] / fused[0].sum())  # shape kept


def test_maps_only_method_row_in_the_benchmark(small_phantoms, monkeypatch):
    """A maps-only method's row: cube columns NaN, maps columns from its maps, a figure panel."""

    def smoothed_maps(signal, guide, seed, options):
        case = options["case"]
        return element_maps(_smoothed(case), case.windows)

    fake = methods.Method("fake_maps", smoothed_maps, needs_case=True, maps_only=True)
    monkeypatch.setitem(methods.METHODS, "fake_maps", fake)
    result = runner.run_bench([CASE], ["gaussian1", "fake_maps"], cache_dir=None)
    rows = {r["method"]: r for r in result.rows}
    assert all(math.isnan(rows["fake_maps"][c]) for c in CUBE_COLUMNS)
    for col in (*MAPS_COLUMNS, "quant_bias_pct"):
        assert rows["fake_maps"][col] == pytest.approx(rows["gaussian1"][col]), col
    panels = result.maps[CASE]["methods"]
    assert panels["fake_maps"] == pytest.approx(panels["gaussian1"])


def test_fused_row_on_a_phantom(small_phantoms):
    pytest.importorskip("multimodal_fusion", reason="multimodal-fusion (bench extra) absent")
    result = runner.run_bench([CASE], ["fused"], cache_dir=None)
    (row,) = result.rows
    assert all(math.isnan(row[c]) for c in CUBE_COLUMNS)
    assert math.isfinite(row["maps_gain_db"]) and math.isfinite(row["quant_bias_pct"])
    assert row["worst_map_count_ratio"] == pytest.approx(1.0)  # rescaled to the raw totals


def test_espm_inputs_elements_and_calibration(small_phantoms):
    case = cases.build_case(CASE, 0)
    inp = external.espm_input(case, seed=3)
    assert list(inp["elements"]) == ["C", "Fe", "O", "Pt"]
    assert inp["counts"].shape == case.raw[..., case.window.slice].shape
    assert inp["sem"] is False and inp["beam_energy"] == 200.0 and inp["seed"] == 3
    # the phantom's lines sit at their table energies: the calibration moves them < 5 eV
    from n2s_eds.preprocess import energy_axis_kev

    energies = energy_axis_kev(case.signal)[case.window.slice]
    calibrated = inp["offset"] + inp["scale"] * np.arange(energies.size)
    assert np.max(np.abs(calibrated - energies)) < 0.005
    assert len(inp["calibration_lines"]) >= 2
    assert 0.0 < inp["width_slope"] < 0.03 and 0.02 < inp["width_intercept"] < 0.1


def test_extra_elements_join_the_metadata_elements(monkeypatch, small_phantoms):
    case = cases.build_case(CASE, 0)
    monkeypatch.setitem(external.EXTRA_ELEMENTS, CASE, ("Cu", "Si"))
    assert external.espm_elements(case) == ["C", "Cu", "Fe", "O", "Pt", "Si"]


def test_espm_cache_key_follows_the_metadata_and_the_runner(small_phantoms, monkeypatch, tmp_path):
    case = cases.build_case(CASE, 0)
    espm = methods.METHODS["espm"]
    key = cache.cache_key(case, espm, 0, {})
    assert key["case_inputs"]["elements"] == ["C", "Fe", "O", "Pt"]
    assert "case_inputs" not in cache.cache_key(case, methods.METHODS["bm4d"], 0, {})
    monkeypatch.setitem(external.EXTRA_ELEMENTS, CASE, ("Cu",))
    assert cache.cache_key(case, espm, 0, {})["case_inputs"] != key["case_inputs"]
    # the code version holds the runner script's hash and the environment's versions
    before = external.espm_version()
    assert "espm==" in before
    changed = tmp_path / "espm_runner.py"
    changed.write_text(external.ESPM_RUNNER.read_text() + "\n# changed\n")
    monkeypatch.setattr(external, "ESPM_RUNNER", changed)
    assert external.espm_version() != before


def test_espm_is_skipped_without_its_environment(small_phantoms, monkeypatch, tmp_path):
    monkeypatch.setattr(external, "ESPM_VENV", tmp_path / "no-venv")
    result = runner.run_bench([CASE], ["espm"], cache_dir=None)
    assert not result.rows
    ((case, method, why),) = result.skipped
    assert (case, method) == (CASE, "espm") and "make external-venvs" in why


def test_espm_runner_end_to_end(small_phantoms):
    """The espm script on a small phantom (only where its environment exists)."""
    if not (external.ESPM_VENV / "bin" / "python").is_file():
        pytest.skip(f"espm environment {external.ESPM_VENV} absent (make external-venvs)")
    case = cases.build_case(CASE, 0)
    out = external.run_espm(case.signal, case.guide, 0, {"case": case})
    den = np.asarray(out.data)
    sl = case.window.slice
    assert den.shape == case.raw.shape
    assert np.array_equal(den[..., : sl.start], case.raw[..., : sl.start])  # outside: input
    assert np.all(np.isfinite(den[..., sl])) and den[..., sl].min() >= 0
    ratio = den[..., sl].sum() / case.raw[..., sl].sum()
    assert 0.9 < ratio < 1.05  # espm's Laplacian term shrinks the total a little
    row, _ = scores.score(case, den[..., sl].astype(np.float32))
    assert row["cube_gain_db"] > 3.0


def test_detector_angles_drop_tilts_that_hide_the_detector(small_phantoms):
    """A take-off angle below 5 degrees (Velox's metadata) falls back to zero tilts."""
    case = cases.build_case(CASE, 0)
    signal = case.signal.deepcopy()
    assert external.detector_angles(signal)["elevation_angle"] == 35.0
    signal.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_alpha", -35.343)
    signal.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_beta", 2.53)
    angles = external.detector_angles(signal)
    assert angles["tilt_alpha"] == 0.0 and angles["tilt_beta"] == 0.0
    signal.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_alpha", 10.0)
    assert external.detector_angles(signal)["tilt_alpha"] == 10.0  # 45 degrees: kept
