"""Phase-mixing scores: 10-90 % edge width and leakage into the pixels where an element is absent."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.stats import norm

from n2s_eds import baselines
from n2s_eds.exceptions import InvalidInputError
from n2s_eds.metrics import (
    absent_leakage,
    edge_profile,
    edge_width,
    element_maps,
    element_windows,
    line_presence,
)
from n2s_eds.simulate import phantom, phantom_maps

X = np.arange(64, dtype=np.float64)
BOUNDARY = 31.5  # between pixels 31 and 32
GAUSS_10_90 = norm.ppf(0.9) - norm.ppf(0.1)  # 2.563


def _step_map(rows: int = 16) -> np.ndarray:
    return np.broadcast_to((X > BOUNDARY).astype(np.float64), (rows, X.size)).copy()


# ---------------------------------------------------------------------------------------------
# edge_width
# ---------------------------------------------------------------------------------------------


def test_ideal_step_on_a_pixel_edge_is_0p8_px() -> None:
    assert edge_width((X > BOUNDARY).astype(float)) == pytest.approx(0.8)
    # Falling steps, offsets and scale do not matter.
    assert edge_width(5.0 - 3.0 * (X > BOUNDARY)) == pytest.approx(0.8)


def test_ideal_step_inside_a_pixel_is_at_most_1p6_px() -> None:
    for fraction in (0.2, 0.5, 0.8):
        profile = np.r_[np.zeros(20), fraction, np.ones(20)]
        assert 0.8 <= edge_width(profile) <= 1.6 + 1e-12


def test_map_is_averaged_along_the_boundary() -> None:
    m = _step_map()
    assert edge_width(m) == pytest.approx(0.8)
    assert edge_width(m.T, axis=0) == pytest.approx(0.8)
    np.testing.assert_allclose(edge_profile(m), m[0])
    np.testing.assert_allclose(edge_profile(m.T, axis=0), m[0])


@pytest.mark.parametrize("sigma", [2.0, 3.0, 5.0])
def test_gaussian_blurred_step_is_2p563_sigma(sigma: float) -> None:
    sampled = norm.cdf((X - BOUNDARY) / sigma)
    assert edge_width(sampled) == pytest.approx(GAUSS_10_90 * sigma, rel=0.03)
    assert edge_width(sampled, method="erf") == pytest.approx(GAUSS_10_90 * sigma, rel=1e-3)
    filtered = gaussian_filter1d((X > BOUNDARY).astype(float), sigma, mode="nearest")
    assert edge_width(filtered) == pytest.approx(GAUSS_10_90 * sigma, rel=0.03)


def test_blurred_map_width_grows_with_sigma() -> None:
    widths = [edge_width(gaussian_filter(_step_map(), (0, s), mode="nearest")) for s in (1, 2, 4)]
    assert widths[0] < widths[1] < widths[2]


def test_erf_fit_is_robust_to_noise() -> None:
    rng = np.random.default_rng(0)
    clean = norm.cdf((X - BOUNDARY) / 2.0)
    fits = [edge_width(clean + rng.normal(0, 0.05, X.size), method="erf") for _ in range(20)]
    assert np.mean(fits) == pytest.approx(GAUSS_10_90 * 2.0, rel=0.05)
    assert edge_width((X > BOUNDARY).astype(float), method="erf") < 0.3


def test_no_step_gives_nan() -> None:
    assert np.isnan(edge_width(np.ones(32)))
    assert np.isnan(edge_width(np.ones(32), method="erf"))


def test_linear_ramp_is_80_percent_of_its_length() -> None:
    assert edge_width(np.linspace(0, 1, 32), plateau=1) == pytest.approx(0.8 * 31)
    assert edge_width(np.r_[np.zeros(8), np.linspace(0, 1, 11), np.ones(8)]) == pytest.approx(8)


def test_position_picks_the_edge() -> None:
    profile = np.r_[np.zeros(10), np.ones(10), np.zeros(2), np.ones(10)]
    assert edge_width(profile, position=9.5, plateau=4) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "kwargs",
    [{"low": 0.6}, {"high": 0.4}, {"method": "fit"}, {"plateau": 0}, {"plateau": 40}],
)
def test_edge_width_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        edge_width(X > BOUNDARY, **kwargs)


def test_edge_width_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInputError):
        edge_width(np.zeros((2, 3, 4)))
    with pytest.raises(InvalidInputError):
        edge_width(np.arange(3.0))


# ---------------------------------------------------------------------------------------------
# absent_leakage
# ---------------------------------------------------------------------------------------------


def test_leakage_is_the_excess_over_the_truth_as_a_fraction() -> None:
    present = np.zeros((8, 8), bool)
    present[:, :4] = True
    truth = np.where(present, 1.2, 0.2)  # background 0.2 everywhere
    den = truth + np.where(present, 0.0, 0.06)
    assert absent_leakage(truth, truth, present)[0] == 0.0
    assert absent_leakage(den, truth, present)[0] == pytest.approx(0.06 / 1.2)
    # Element masses work as the presence too, and several maps at once.
    masses = np.stack([present * 3.5, ~present * 1.0])
    out = absent_leakage(np.stack([den, truth]), np.stack([truth, truth]), masses)
    assert out == pytest.approx([0.05, 0.0])


def test_leakage_nan_without_absent_or_present_pixels() -> None:
    truth = np.ones((6, 6))
    assert np.isnan(absent_leakage(truth, truth, np.ones((6, 6), bool))[0])
    assert np.isnan(absent_leakage(truth, truth, np.zeros((6, 6), bool))[0])


def test_leakage_margin_leaves_out_the_boundary() -> None:
    present = _step_map(32) > 0
    truth = present.astype(float)
    blurred = gaussian_filter(truth, 1.0, mode="nearest")
    near = absent_leakage(blurred, truth, present)[0]
    away = absent_leakage(blurred, truth, present, margin=4)[0]
    assert near > 0.005
    assert abs(away) < 1e-6


def test_leakage_rejects_mismatched_shapes() -> None:
    with pytest.raises(InvalidInputError):
        absent_leakage(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(InvalidInputError):
        absent_leakage(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), margin=-1)


def test_line_presence_from_element_names() -> None:
    masses = {"Fe": np.array([[0.0, 1.0]]), "Pt": np.array([[2.0, 0.0]])}
    out = line_presence(["Fe_Ka", "Pt_La", "peak_1.00keV"], masses)
    np.testing.assert_array_equal(out, [[[False, True]], [[True, False]], [[True, True]]])


# ---------------------------------------------------------------------------------------------
# On the boundary phantom
# ---------------------------------------------------------------------------------------------

SHAPE = (32, 32)
PHANTOM = {"shape": SHAPE, "n_channels": 512, "channel_width_ev": 20.0, "layout": "boundary"}


@pytest.fixture(scope="module")
def boundary() -> dict:
    ph = phantom("tem", dose=100.0, seed=0, **PHANTOM)
    masses, _ = phantom_maps("tem", SHAPE, seed=0, layout="boundary")
    windows = element_windows(ph.noisy)
    truth_maps = element_maps(np.asarray(ph.truth.data), windows)
    return {
        "ph": ph,
        "windows": windows,
        "presence": line_presence(windows, masses),
        "truth_maps": truth_maps,
        "maps": lambda s: element_maps(np.asarray(s.data), windows),
    }


def test_phantom_truth_has_sharp_edges_and_no_leakage(boundary: dict) -> None:
    names = [w.name for w in boundary["windows"]]
    assert {"O_Ka", "Pt_La", "Fe_Ka", "C_Ka"} <= set(names)
    leak = absent_leakage(boundary["truth_maps"], boundary["truth_maps"], boundary["presence"])
    absent = [n.split("_")[0] in ("O", "Pt") for n in names]
    np.testing.assert_array_equal(np.isfinite(leak), absent)
    assert np.all(leak[np.isfinite(leak)] == 0.0)
    for m in boundary["truth_maps"]:  # every element map steps at the boundary
        assert edge_width(m) == pytest.approx(0.8)


def test_phantom_smoothing_widens_edges_and_leaks(boundary: dict) -> None:
    ph, tm, pres = boundary["ph"], boundary["truth_maps"], boundary["presence"]
    finite = np.isfinite(absent_leakage(tm, tm, pres))
    smooth = {s: boundary["maps"](baselines.gaussian(ph.truth, sigma=s)) for s in (1.0, 2.0)}
    leak1 = absent_leakage(smooth[1.0], tm, pres)[finite]
    leak2 = absent_leakage(smooth[2.0], tm, pres)[finite]
    assert np.all(leak1 > 0.005) and np.all(leak2 > 1.5 * leak1)
    for m in smooth[2.0]:
        assert edge_width(m) == pytest.approx(GAUSS_10_90 * 2.0, rel=0.05)


def test_phantom_raw_has_no_leakage_but_smoothed_raw_has(boundary: dict) -> None:
    ph, tm, pres = boundary["ph"], boundary["truth_maps"], boundary["presence"]
    finite = np.isfinite(absent_leakage(tm, tm, pres))
    # Standard error of the raw leakage: Poisson noise of the mean over the absent pixels.
    pairs = zip(tm[finite], pres[finite], strict=True)
    se = np.array([np.sqrt(t[~p].mean() / (~p).sum()) / t[p].mean() for t, p in pairs])
    raw = absent_leakage(boundary["maps"](ph.noisy), tm, pres)[finite]
    assert np.all(np.abs(raw) < 4 * se)
    smoothed = absent_leakage(boundary["maps"](baselines.gaussian(ph.noisy, sigma=2.0)), tm, pres)
    assert np.all(smoothed[finite] > raw + 4 * se)
    assert np.all(smoothed[finite] > 0.02)
