"""The LA-ICP-MS clinker maps, their phase masks, and the contrast and noise measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_data
from scipy.ndimage import gaussian_filter

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.imaging.clinker import (
    PHASES,
    clinker_report,
    contrast_pairs,
    count_scale,
    line_noise,
    phase_contrast,
    phase_masks,
    read_clinker,
    to_counts,
)


def _clinker_folder() -> Path:
    """The clinker data folder; skip when absent, except on CI where absence fails."""
    return require_data("laicpms_clinker_area1").parent


@pytest.fixture(scope="module")
def clinker():
    return read_clinker(_clinker_folder())


@pytest.fixture(scope="module")
def masks():
    return phase_masks(_clinker_folder())


def _isotope(signal, name: str) -> np.ndarray:
    return signal.data[signal.metadata.Acquisition_instrument.LA_ICP_MS.isotopes.index(name)]


# ---------------------------------------------------------------- synthetic, no data needed


def test_phase_contrast_two_regions():
    image = np.full((20, 30), 4.0)
    image[:, :12] = 10.0
    a = np.zeros(image.shape, bool)
    a[:, :12] = True
    assert phase_contrast(image, a, ~a) == pytest.approx(2.5)
    assert phase_contrast(image, ~a, a) == pytest.approx(0.4)
    assert np.isnan(phase_contrast(image, a, np.zeros_like(a)))
    with pytest.raises(InvalidInputError):
        phase_contrast(image, a[:5], ~a)


def test_contrast_pairs_picks_largest_log_ratio():
    masks = {name: np.zeros((10, 12), bool) for name in ("p", "q", "r")}
    masks["p"][:3], masks["q"][3:6], masks["r"][6:9] = True, True, True
    stack = np.ones((2, 10, 12))
    stack[0][masks["p"]], stack[0][masks["q"]], stack[0][masks["r"]] = 2.0, 3.0, 12.0
    stack[1][masks["p"]], stack[1][masks["q"]], stack[1][masks["r"]] = 8.0, 4.0, 5.0
    pairs = contrast_pairs(stack, masks)
    assert pairs["0"][:2] == ("r", "p") and pairs["0"][2] == pytest.approx(6.0)
    assert pairs["1"][:2] == ("p", "q") and pairs["1"][2] == pytest.approx(2.0)


@pytest.mark.parametrize("robust", [True, False])
def test_line_noise_gaussian_and_column_structure(robust):
    rng = np.random.default_rng(0)
    sigma = 3.0
    noise = rng.normal(0.0, sigma, (200, 300))
    assert line_noise(noise, robust=robust) == pytest.approx(sigma, rel=0.1)
    columns = 50.0 * rng.random(300)  # the same on every line: cancels in line differences
    striped = noise + columns[None, :]
    assert line_noise(striped, robust=robust) == pytest.approx(line_noise(noise, robust=robust))
    smoother = gaussian_filter(noise, 1.5)
    assert line_noise(smoother, robust=robust) < 0.5 * line_noise(noise, robust=robust)


def test_line_noise_stack_and_region():
    rng = np.random.default_rng(1)
    stack = rng.normal(0.0, 1.0, (3, 80, 90)) * np.array([1.0, 2.0, 4.0])[:, None, None]
    values = line_noise(stack)
    assert values.shape == (3,)
    np.testing.assert_allclose(values, [1.0, 2.0, 4.0], rtol=0.1)
    region = np.zeros((80, 90), bool)
    region[:, :40] = True
    stack[:, :, 40:] *= 100.0  # outside the region: ignored
    np.testing.assert_allclose(line_noise(stack, region=region), [1.0, 2.0, 4.0], rtol=0.15)
    with pytest.raises(InvalidInputError):
        line_noise(stack, region=region[:10])


def test_clinker_report_synthetic():
    rng = np.random.default_rng(2)
    truth = np.full((2, 60, 80), 100.0)
    truth[:, :, 40:] = 300.0
    masks = {"a": np.zeros((60, 80), bool), "b": np.zeros((60, 80), bool)}
    masks["a"][:, :35], masks["b"][:, 45:] = True, True
    raw = truth + rng.normal(0.0, 9.0, truth.shape)
    enhanced = truth + rng.normal(0.0, 3.0, truth.shape)
    report = clinker_report(raw, enhanced, masks, region=np.ones((60, 80), bool))
    assert set(report) == {"0", "1"}
    row = report["0"]
    assert (row["phase_a"], row["phase_b"]) == ("b", "a")
    assert row["raw_contrast"] == pytest.approx(3.0, rel=0.02)
    assert abs(row["contrast_change_pct"]) < 2.0
    assert row["noise_ratio"] == pytest.approx(3.0, rel=0.15)
    assert row["meets_target"]
    same = clinker_report(raw, raw, masks, region=np.ones((60, 80), bool))["1"]
    assert same["contrast_change_pct"] == 0.0 and same["noise_ratio"] == 1.0
    assert not same["meets_target"]
    with pytest.raises(InvalidInputError):
        clinker_report(raw, enhanced[:, :30], masks)


def test_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        read_clinker(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="absent"):
        phase_masks(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="absent"):
        read_clinker(tmp_path)  # a folder without the npz


def test_count_scale_needs_metadata():
    import hyperspy.api as hs

    with pytest.raises(InvalidInputError, match="read_clinker"):
        count_scale(hs.signals.Signal2D(np.zeros((2, 4, 5))))


# ---------------------------------------------------------------- the real data


@pytest.mark.data
def test_signal_shape_axes_metadata(clinker):
    assert clinker.data.shape == (11, 50, 700)
    assert clinker.axes_manager.navigation_shape == (11,)
    assert clinker.axes_manager.signal_shape == (700, 50)
    x_axis, y_axis = clinker.axes_manager.signal_axes
    assert (x_axis.name, y_axis.name) == ("x", "y")
    for axis in (x_axis, y_axis):
        assert axis.units == "µm" and axis.scale > 0
    assert y_axis.scale == pytest.approx(7.0) and x_axis.scale == pytest.approx(0.5792, abs=1e-4)
    md = clinker.metadata
    assert md.Signal.assumed_axes is True
    la = md.Acquisition_instrument.LA_ICP_MS
    assert la.isotopes[:3] == ["Na23", "Mg24", "Al27"] and len(la.isotopes) == 11
    assert all(name in md.General.title for name in la.isotopes)
    assert la.time_per_point_s == pytest.approx(0.0744, abs=1e-4)
    first, stop = la.ablation_points
    assert 140 <= first <= 160 and 650 <= stop <= 670


@pytest.mark.data
def test_signal_equals_npz_and_raw_export(clinker):
    folder = _clinker_folder()
    with np.load(folder / "area1_cps_lines.npz") as npz:
        np.testing.assert_array_equal(clinker.data, np.moveaxis(npz["cps"], -1, 0))
        assert list(npz["isotopes"]) == clinker.metadata.Acquisition_instrument.LA_ICP_MS.isotopes
    raw = sorted((folder / "raw_data").glob("*.xl"))
    assert len(raw) == 50
    line0 = np.loadtxt(raw[0], delimiter=",", skiprows=2)
    np.testing.assert_allclose(clinker.data[:, 0, :], line0[:, 1:].T, rtol=1e-6)


@pytest.mark.data
def test_dwell_gives_whole_counts(clinker):
    dwell = count_scale(clinker)
    assert dwell.shape == (11,)
    assert dwell[:4].tolist() == [5e-3, 3e-3, 3e-3, 5e-3] and set(dwell[4:]) == {7e-3}
    np.testing.assert_allclose(to_counts(clinker), clinker.data * dwell[:, None, None])
    counts = to_counts(clinker, detected=True)
    pulse = clinker.data < 2e6  # above: the detector's analog stage (K39 only)
    assert pulse.mean() > 0.999
    assert np.abs(counts - np.round(counts))[pulse].max() < 1e-3
    # one count at 7 ms dwell: 142.9 cps
    assert _isotope(clinker, "Ti47")[_isotope(clinker, "Ti47") > 0].min() == pytest.approx(
        142.86, abs=0.01
    )


@pytest.mark.data
def test_masks_shape_disjoint_fractions(masks):
    assert tuple(masks) == PHASES
    for mask in masks.values():
        assert mask.shape == (50, 700) and mask.dtype == bool and mask.any()
        assert not mask[:, :140].any() and not mask[:, 659:].any()
    assert sum(m.astype(int) for m in masks.values()).max() == 1
    fractions = {name: m.mean() for name, m in masks.items()}
    assert 0.10 < fractions["alite"] < 0.25
    assert 0.02 < fractions["belite"] < 0.08
    assert 0.005 < fractions["C4AF"] < 0.04
    assert fractions["alite"] > fractions["belite"] > fractions["C4AF"]
    other = phase_masks(_clinker_folder(), shape=(25, 350))
    assert all(m.shape == (25, 350) and m.dtype == bool and m.any() for m in other.values())


@pytest.mark.data
def test_registration_beats_flipped_orientations(clinker, masks):
    flips = (lambda m: m[::-1], lambda m: m[:, ::-1], lambda m: m[::-1, ::-1])
    for isotope, rich, poor in [("V51", "belite", "alite"), ("Al27", "C4AF", "alite")]:
        image = _isotope(clinker, isotope)
        chosen = phase_contrast(image, masks[rich], masks[poor])
        assert chosen > 1.7
        for flip in flips:
            assert chosen > phase_contrast(image, flip(masks[rich]), flip(masks[poor])) + 0.3


@pytest.mark.data
def test_contrast_pairs_and_report_on_real_data(clinker, masks):
    pairs = contrast_pairs(clinker, masks)
    assert set(pairs) == set(clinker.metadata.Acquisition_instrument.LA_ICP_MS.isotopes)
    assert pairs["V51"][0] == "belite" and pairs["Al27"][0] == "C4AF"
    assert all(ratio >= 1.0 for _, _, ratio in pairs.values())
    report = clinker_report(clinker, clinker, masks)
    assert set(report) == set(pairs)
    for row in report.values():
        assert row["contrast_change_pct"] == 0.0 and row["noise_ratio"] == 1.0
        assert row["raw_noise"] > 0 and not row["meets_target"]
    smoothed = gaussian_filter(clinker.data, (0, 1.0, 2.0))
    smoother = clinker_report(clinker, smoothed, masks)
    assert all(row["noise_ratio"] > 1.0 for row in smoother.values())
