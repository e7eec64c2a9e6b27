"""Behaviour of the split scores, element windows and truth-based scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from n2s_eds import metrics as M
from n2s_eds.exceptions import InvalidInputError
from n2s_eds.preprocess import detector_fwhm_kev, energy_axis_kev

LINES = {"Si_Ka": 1.7397, "Ca_Ka": 3.6917, "Fe_Ka": 6.4039}


def _truth(ny: int = 24, nx: int = 20, ne: int = 128, dose: float = 3.0) -> np.ndarray:
    """Smooth, low-rank (Y, X, E) expected counts: two phases, three lines, a zero peak."""
    e = -0.2 + 0.08 * np.arange(ne)
    yy, xx = np.mgrid[0:ny, 0:nx]
    a = 0.5 + 0.5 * np.tanh((xx - nx / 2 + 3 * np.sin(yy / 4)) / 2.5)
    spec1 = 2.0 * np.exp(-0.5 * ((e - LINES["Si_Ka"]) / 0.06) ** 2) + 0.6 * np.exp(
        -0.5 * ((e - LINES["Fe_Ka"]) / 0.06) ** 2
    )
    spec2 = 1.5 * np.exp(-0.5 * ((e - LINES["Ca_Ka"]) / 0.06) ** 2) + 0.4 * np.exp(
        -0.5 * ((e - LINES["Si_Ka"]) / 0.06) ** 2
    )
    brems = 0.15 * np.clip(8.0 - e, 0, None) / 8.0
    zero = 4.0 * np.exp(-0.5 * (e / 0.05) ** 2)
    lam = a[..., None] * spec1 + (1 - a[..., None]) * spec2 + brems + zero
    lam[..., e > 8.0] = 0.01
    return dose * lam


def _signal(data: np.ndarray, lines: list[str] | None = None):
    exspy = pytest.importorskip("exspy")
    s = exspy.signals.EDSTEMSpectrum(data)
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.scale, ax.offset = "Energy", "keV", 0.08, -0.2
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 8.0)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa", 130.0)
    if lines is not None:
        s.metadata.set_item("Sample.xray_lines", lines)
    return s


# ---------------------------------------------------------------------------------- splits


def test_binomial_split_sums_to_counts_and_is_seeded():
    rng = np.random.default_rng(1)
    n = rng.poisson(5.0, size=(7, 9, 11)).astype(np.uint16)
    x, r = M.binomial_split(n, 0.3, seed=4)
    assert x.dtype.kind == "i" and r.dtype.kind == "i"
    np.testing.assert_array_equal(x + r, n)
    assert (x >= 0).all() and (r >= 0).all()
    x2, _ = M.binomial_split(n, 0.3, seed=4)
    np.testing.assert_array_equal(x, x2)
    assert abs(x.sum() / n.sum() - 0.3) < 0.03


@pytest.mark.parametrize("bad", [np.array([1.5, 2.0]), np.array([-1, 2]), np.array([np.nan])])
def test_binomial_split_rejects_non_counts(bad):
    with pytest.raises(InvalidInputError):
        M.binomial_split(bad, 0.5, seed=0)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.2])
def test_binomial_split_rejects_bad_p(p):
    with pytest.raises(InvalidInputError):
        M.binomial_split(np.ones(3, dtype=int), p, seed=0)


def test_frame_split_odd_even_and_scale():
    frames = np.arange(4 * 6).reshape(4, 2, 3)
    x, r, s = M.frame_split(frames, axis=0)
    np.testing.assert_array_equal(x, frames[0] + frames[2])
    np.testing.assert_array_equal(r, frames[1] + frames[3])
    assert s == 1.0
    _, _, s3 = M.frame_split(frames[:3], axis=0)
    assert s3 == 2.0


def test_umse_is_unbiased_for_binomial_splits():
    lam = _truth(12, 10, 40, dose=2.0)
    p = 0.3
    rng = np.random.default_rng(0)
    est_raw, true_raw, est_den, true_den = [], [], [], []
    for _ in range(300):
        n = rng.poisson(lam)
        x, r = M.binomial_split(n, p, seed=rng)
        d = gaussian_filter(x.astype(float), (1, 1, 0))
        est_raw.append(M.umse(x, r, p))
        true_raw.append(np.mean((x - p * lam) ** 2))
        est_den.append(M.umse(d, r, p))
        true_den.append(np.mean((d - p * lam) ** 2))
    assert np.mean(est_raw) == pytest.approx(np.mean(true_raw), rel=0.03)
    assert np.mean(est_den) == pytest.approx(np.mean(true_den), rel=0.03)


def test_umse_is_unbiased_for_frame_splits():
    lam = _truth(12, 10, 40, dose=2.0)
    rng = np.random.default_rng(1)
    est, true = [], []
    for _ in range(300):
        frames = rng.poisson(lam / 3.0, size=(3, *lam.shape))
        x, r, s = M.frame_split(frames)
        d = gaussian_filter(x.astype(float), (1, 1, 0))
        est.append(M.umse(d, r, scale=s))
        true.append(np.mean((d - 2.0 * lam / 3.0) ** 2))
    assert np.mean(est) == pytest.approx(np.mean(true), rel=0.03)


def test_gain_of_raw_is_zero_and_smoothing_gains():
    lam = _truth(dose=5.0)
    n = np.random.default_rng(2).poisson(lam)
    x, r = M.binomial_split(n, 0.5, seed=0)
    assert M.split_gain_db(x, x, r, 0.5) == 0.0
    d = gaussian_filter(x.astype(float), (1.5, 1.5, 0))
    assert M.split_gain_db(x, d, r, 0.5) > 3.0


def test_umse_stderr_matches_the_spread_of_umse():
    lam = _truth(16, 14, 40, dose=3.0)
    rng = np.random.default_rng(4)
    est, se = [], []
    for _ in range(200):
        x, r = M.binomial_split(rng.poisson(lam), 0.5, seed=rng)
        d = gaussian_filter(x.astype(float), (1, 1, 0))
        est.append(M.umse(d, r, 0.5))
        se.append(M.umse_stderr(d, r, 0.5))
    assert np.mean(se) == pytest.approx(np.std(est), rel=0.3)


def test_resolved_gain_is_a_lower_bound_below_resolution():
    # resolved: the plain ratio
    assert M.resolved_gain_db(10.0, 1.0, 0.1) == (pytest.approx(10.0), False)
    # unresolved (an estimate within two standard errors of 0, or below 0): a bound
    gain, bound = M.resolved_gain_db(10.0, -0.05, 0.05)
    assert bound and gain == pytest.approx(10.0 * np.log10(10.0 / 0.1))
    gain, bound = M.resolved_gain_db(10.0, 0.05, 0.05)
    assert bound and gain == pytest.approx(10.0 * np.log10(10.0 / 0.15))
    assert np.isnan(M.resolved_gain_db(0.0, 1.0, 0.1)[0])


def test_score_split_flags_unresolved_gains():
    lam = _truth(dose=5.0)
    n = np.random.default_rng(3).poisson(lam)
    x, r = M.binomial_split(n, 0.5, seed=0)
    res = M.score_split(x, r, gaussian_filter(x.astype(float), (1, 1, 0)), 0.5)
    assert res["cube_gain_is_bound"] is False
    # the truth itself has MSE 0: never resolvable, reported as a finite lower bound
    res = M.score_split(x, r, 0.5 * lam, 0.5)
    assert res["cube_gain_is_bound"] is True and np.isfinite(res["cube_gain_db"])


def test_umse_needs_exactly_one_of_p_and_scale():
    a = np.ones((2, 2))
    with pytest.raises(InvalidInputError):
        M.umse(a, a)
    with pytest.raises(InvalidInputError):
        M.umse(a, a, 0.5, scale=1.0)
    assert M.umse(a, a, scale=1.0) == pytest.approx(-1.0)


# ---------------------------------------------------------------------------------- windows


def test_processing_window_drops_zero_peak_and_channels_above_beam():
    s = _signal(np.zeros((3, 4, 128)))
    w = M.processing_window(s)
    e = energy_axis_kev(s)
    assert e[w.start] >= 0.2 and e[w.start - 1] < 0.2
    assert e[w.stop - 1] <= 8.0 and e[w.stop] > 8.0


def test_element_windows_from_metadata_are_plus_minus_one_fwhm():
    s = _signal(np.zeros((3, 4, 128)), lines=["Ca_Ka", "Si_Ka", "Fe_Ka", "Pb_La", "B_Ka"])
    e = energy_axis_kev(s)
    win = M.processing_window(s)
    ws = M.element_windows(s, win)
    # Pb La (10.55 keV) lies above the beam energy and B Ka (0.18 keV) below 0.2 keV.
    assert [w.name for w in ws] == ["Si_Ka", "Ca_Ka", "Fe_Ka"]
    for w in ws:
        assert w.energy_kev == pytest.approx(LINES[w.name], abs=1e-3)
        fwhm = float(detector_fwhm_kev(w.energy_kev, 130.0))
        inside = e[w.slice]
        assert inside.min() >= w.energy_kev - fwhm - 1e-9
        assert inside.max() <= w.energy_kev + fwhm + 1e-9
        assert e[w.start - 1] < w.energy_kev - fwhm
        assert e[w.stop] > w.energy_kev + fwhm
        assert win.start <= w.start < w.stop <= win.stop
    fixed = M.element_windows(s, win, half_width_kev=0.3)
    assert all(w.stop - w.start > v.stop - v.start for w, v in zip(fixed, ws, strict=True))


def test_element_windows_fall_back_to_strongest_peaks():
    lam = _truth(dose=20.0)
    s = _signal(np.random.default_rng(3).poisson(lam))
    ws = M.element_windows(s, n_peaks=3)
    found = sorted(w.energy_kev for w in ws)
    assert len(found) == 3
    for got, want in zip(found, sorted(LINES.values()), strict=True):
        assert abs(got - want) < 0.1
    with pytest.raises(InvalidInputError, match="xray_lines"):
        M.element_windows(s, source="lines")


def test_element_maps_sum_each_window():
    data = np.random.default_rng(0).poisson(2.0, size=(5, 6, 30))
    ws = [M.ElementWindow("a", 1.0, 2, 5), M.ElementWindow("b", 2.0, 10, 11)]
    maps = M.element_maps(data, ws)
    assert maps.shape == (2, 5, 6)
    np.testing.assert_array_equal(maps[0], data[..., 2:5].sum(-1))
    np.testing.assert_array_equal(maps[1], data[..., 10])


# ---------------------------------------------------------------------------------- scores


def test_count_ratios():
    raw = np.ones((2, 3, 3))
    assert M.count_ratio(raw * 0.9, raw) == pytest.approx(0.9)
    ratios, worst = M.map_count_ratios(np.stack([raw[0], raw[1] * 1.2]), raw[:2])
    np.testing.assert_allclose(ratios, [1.0, 1.2])
    assert worst == pytest.approx(1.2)


def test_score_split_only_looks_inside_the_window():
    lam = _truth(dose=5.0)
    s = _signal(np.random.default_rng(4).poisson(lam), lines=["Si_Ka", "Ca_Ka", "Fe_Ka"])
    win = M.processing_window(s)
    ws = M.element_windows(s, win)
    x, r = M.binomial_split(s.data, 0.5, seed=0)
    d = gaussian_filter(x.astype(float), (1, 1, 0))
    res = M.score_split(x, r, d, 0.5, window=win, windows=ws)
    assert set(res) >= {"cube_gain_db", "maps_gain_db", "count_ratio", "worst_map_count_ratio"}
    assert res["cube_gain_db"] > 0 and res["maps_gain_db"] > 0
    assert res["count_ratio"] == pytest.approx(1.0, abs=1e-6)
    d2 = d.copy()
    d2[..., : win.start] = 1e6
    d2[..., win.stop :] = -5.0
    assert M.score_split(x, r, d2, 0.5, window=win, windows=ws) == res


def test_psnr_and_ssim_use_an_explicit_data_range():
    rng = np.random.default_rng(5)
    truth = _truth(dose=10.0)
    noisy = rng.poisson(truth).astype(float)
    assert M.psnr(truth, truth) == np.inf
    assert M.ssim(truth, truth) == pytest.approx(1.0)
    smooth = gaussian_filter(noisy, (1, 1, 0))
    assert M.psnr(truth, smooth) > M.psnr(truth, noisy)
    assert M.ssim(truth, smooth) > M.ssim(truth, noisy)
    # the data range is the truth's, not the estimate's: scaling the estimate's outliers up
    # must not change it
    rng_t = truth.max() - truth.min()
    assert M.psnr(truth, noisy) == pytest.approx(M.psnr(truth, noisy, data_range=rng_t))
    assert M.psnr(truth, noisy, data_range=2 * rng_t) > M.psnr(truth, noisy)
    maps_t = truth[..., 20:25].sum(-1)[None].repeat(2, 0)
    maps_n = noisy[..., 20:25].sum(-1)[None].repeat(2, 0)
    assert 0 < M.ssim(maps_t, maps_n, channel_axis=0) < 1
    assert np.isfinite(M.psnr(maps_t, maps_n, channel_axis=0))
    with pytest.raises(InvalidInputError):
        M.ssim(truth[:5], noisy[:5])


def test_spectral_angle():
    a = np.abs(np.random.default_rng(6).normal(size=(4, 5, 16))) + 0.1
    assert M.spectral_angle(a, a) == pytest.approx(0.0, abs=1e-6)
    assert M.spectral_angle(a, 3.0 * a) == pytest.approx(0.0, abs=1e-6)
    b = np.zeros((1, 2, 2))
    b[..., 0] = 1.0
    c = np.zeros((1, 2, 2))
    c[..., 1] = 1.0
    assert M.spectral_angle(b, c) == pytest.approx(90.0)
