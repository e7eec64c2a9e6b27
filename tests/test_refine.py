"""The element-map stage (n2s_eds.refine) and its trust report (n2s_eds.trust)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import n2s_eds
from n2s_eds import MapQualityWarning
from n2s_eds.metrics import element_maps, element_windows
from n2s_eds.refine import MapRefinement, apply_maps, nonlocal_means, refine_maps
from n2s_eds.simulate import phantom
from n2s_eds.trust import MapsReport, record_trust


def _two_phase_maps(shape=(48, 48), seed=0):
    """Expected counts of two maps with a vertical step: A only on the left, B on both
    sides with twice as much on the right; Poisson counts."""
    rng = np.random.default_rng(seed)
    left = np.zeros(shape, bool)
    left[:, : shape[1] // 2] = True
    truth = np.stack([np.where(left, 4.0, 0.0), np.where(left, 2.0, 4.0)])
    return truth, rng.poisson(truth).astype(np.float64), left


def test_refined_maps_beat_the_raw_maps_and_do_not_cross_the_step():
    truth, y, left = _two_phase_maps()
    ref = refine_maps(y, names=["A", "B"])
    mse_raw = ((y - truth) ** 2).mean(axis=(1, 2))
    mse_ref = ((ref.maps - truth) ** 2).mean(axis=(1, 2))
    assert np.all(mse_ref < mse_raw / 4)  # > 6 dB on each map
    # A is absent right of the step: what the refined map puts there is a small share of
    # its level on the left (a Gaussian sigma=2 leaks about 20 % into the first columns)
    right = ~left
    right[:, : left.shape[1] // 2 + 1] = False  # beyond the boundary column
    assert ref.maps[0][right].mean() < 0.02 * truth[0][left].mean()
    # the estimated gains are conservative: below the true ones (where the risk is below
    # its estimate's uncertainty they are bounds), and the lower bounds lie below them
    true_gain = 10 * np.log10(truth.mean(axis=(1, 2)) / mse_ref)
    assert np.all(ref.gains_db < true_gain + 0.5) and np.all(ref.gains_db > 6.0)
    assert np.all(ref.gains_low_db <= ref.gains_db)
    assert ref.maps.sum(axis=(1, 2)) == pytest.approx(y.sum(axis=(1, 2)))  # counts kept


def test_the_non_local_average_never_uses_a_pixels_own_counts():
    _, y, _ = _two_phase_maps(shape=(24, 24), seed=1)
    y = torch.from_numpy(y)
    feats = torch.rand(3, 24, 24, dtype=torch.float64)
    one = nonlocal_means(y, feats, (0.5, 1.0), (2, 4))
    changed = y.clone()
    changed[:, 12, 12] += 50.0
    two = nonlocal_means(changed, feats, (0.5, 1.0), (2, 4))
    torch.testing.assert_close(two[..., 12, 12], one[..., 12, 12])  # exactly J-invariant
    assert (two[..., 12, 13] > one[..., 12, 13]).all()  # the neighbours do use it


def test_apply_maps_makes_window_sums_equal_the_targets():
    rng = np.random.default_rng(2)
    cube = rng.random((6, 5, 40)).astype(np.float32)
    cube[0, 0, 10:14] = 0.0  # an empty window at one pixel
    slices = [slice(10, 14), slice(12, 18), slice(30, 33)]  # two overlapping
    targets = rng.random((3, 6, 5)) * 5 + 1
    profile = np.ones(40)
    out = apply_maps(cube.copy(), slices, targets, profile=profile)
    got = np.stack([out[..., s].sum(axis=-1) for s in slices])
    np.testing.assert_allclose(got, targets, rtol=1e-3)
    np.testing.assert_array_equal(out[..., 20:30], cube[..., 20:30])  # outside: unchanged
    assert (out >= 0).all()


def test_denoise_refines_the_maps_keeps_pixel_counts_and_reports_gains(small_phantom):
    noisy = small_phantom.noisy
    before = noisy.data.copy()
    den = n2s_eds.Denoiser(steps=8, progress=False).fit(noisy)
    out = den.denoise(noisy)
    plain = n2s_eds.Denoiser(steps=8, progress=False, refine_maps=False).fit(noisy)
    ref = plain.denoise(noisy)
    np.testing.assert_array_equal(noisy.data, before)  # the input is not modified
    w = element_windows(noisy)
    window = slice(*out.metadata.Signal.Denoising.parameters.energy_window_channels)
    # every pixel keeps its counts in the processing window
    np.testing.assert_allclose(
        out.data[..., window].sum(-1), ref.data[..., window].sum(-1), rtol=1e-3, atol=1e-3
    )
    md = out.metadata.Signal.Denoising
    assert md.maps_refined is True
    assert md.map_names == [x.name for x in w]
    report = json.loads(md.maps)
    assert set(report) == set(md.map_names)
    assert all(r["estimated_gain_db"] > 0 for r in report.values())
    # the cube's maps are the refined maps, which keep the raw maps' totals
    raw_maps = element_maps(noisy.data, w)
    out_maps = element_maps(out.data, w)
    np.testing.assert_allclose(out_maps.sum(axis=(1, 2)), raw_maps.sum(axis=(1, 2)), rtol=1e-3)
    assert ref.metadata.Signal.Denoising.maps_refined is False


def test_a_map_that_may_have_got_worse_is_warned_about(small_phantom):
    out = small_phantom.noisy.deepcopy()
    fake = MapRefinement(
        maps=np.zeros((2, 2, 2)),
        raw_risk=np.array([1.0, 1.0]),
        risk=np.array([0.5, 0.9]),
        risk_upper=np.array([0.6, 1.4]),
        h=np.ones(2),
        radius=np.ones(2, int),
        guide_scale=np.zeros(2),
        beta=np.zeros(2),
        names=["Fe_Ka", "Pt_La"],
    )
    with pytest.warns(MapQualityWarning, match="Pt_La"):
        record_trust(out, None, MapsReport(fake))
    gains = out.metadata.Signal.Denoising.map_estimated_gains_db
    assert gains[0] == pytest.approx(3.01, abs=0.01)
    fake.risk_upper = np.array([0.6, 0.95])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MapQualityWarning)
        record_trust(out, None, MapsReport(fake))


def test_phases_stay_apart_on_the_phantom_at_dose_5():
    """Line ratios summed over each phase stay near the truth's (the default without the
    stage moved them by 13-23 % on the benchmark's phantoms)."""
    ph = phantom("tem", dose=5.0, shape=(48, 48), n_channels=512, seed=11)
    truth_maps = element_maps(ph.truth.data, element_windows(ph.noisy))
    w = element_windows(ph.noisy)
    y = element_maps(ph.noisy.data, w)
    ref = refine_maps(y)
    fe = [i for i, x in enumerate(w) if x.name == "Fe_Ka"][0]
    pt = [i for i, x in enumerate(w) if x.name == "Pt_La"][0]
    for region in (truth_maps[pt] > np.percentile(truth_maps[pt], 80),
                   truth_maps[fe] > np.percentile(truth_maps[fe], 80)):  # fmt: skip
        r_truth = truth_maps[pt][region].sum() / truth_maps[fe][region].sum()
        r_ref = ref.maps[pt][region].sum() / ref.maps[fe][region].sum()
        r_raw = y[pt][region].sum() / y[fe][region].sum()
        assert abs(r_ref / r_truth - 1) < max(0.05, abs(r_raw / r_truth - 1) + 0.02)
