"""The virtual laser-ablation acquisition: shapes, expectation, noise levels, flicker shared
across a stack, causal washout, seeds, defaults and input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.signal import fftconvolve

from n2s_eds.datasets import data_dir
from n2s_eds.exceptions import InvalidInputError
from n2s_eds.imaging.ablation import (
    CLINKER_ISOTOPES,
    CLINKER_SETTINGS,
    AblationSettings,
    ablation_expectation,
    ablation_psf,
    flicker_noise,
    integrate_dwell,
    laser_sampling,
    poisson_counts,
    virtual_ablation,
    washout,
)


def smooth_image(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)


def blob(h: int = 64, w: int = 64, cy: float = 31.0, cx: float = 30.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0).astype(np.float32)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_shapes_and_ranks_single_and_stack(scale):
    img = smooth_image()
    out = virtual_ablation(img, scale=scale)
    assert out.shape == (64 // scale, 64 // scale) and out.dtype == np.float32
    stack = np.stack([img, img[::-1], 1 - img])
    out = virtual_ablation(stack, scale=scale, dwell_s=(0.01, 0.02, 0.03))
    assert out.shape == (3, 64 // scale, 64 // scale)
    assert ablation_expectation(stack, scale=scale).shape == out.shape
    for step in (laser_sampling, flicker_noise, washout):
        assert step(img).shape == img.shape and step(stack).shape == stack.shape
    assert integrate_dwell(stack, scale=scale).shape == out.shape


def test_input_is_not_modified():
    img = smooth_image()
    before = img.copy()
    virtual_ablation(img, scale=2)
    np.testing.assert_array_equal(img, before)


def test_mean_of_many_acquisitions_converges_to_the_expectation():
    img = smooth_image(32, 32)
    expected = ablation_expectation(img, scale=2)
    mean = np.mean([virtual_ablation(img, scale=2, seed=s) for s in range(400)], axis=0)
    assert np.abs(mean - expected).mean() < 0.01
    assert abs(mean.mean() - expected.mean()) < 0.002


def test_expectation_is_the_psf_blurred_block_averaged_image():
    img = smooth_image()
    psf = ablation_psf(1.0, 3.0, 0.5, 0.02, 0.02)
    blurred = fftconvolve(img.astype(np.float64), psf, mode="same")
    coarse = blurred.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    expected = ablation_expectation(img, scale=2)
    np.testing.assert_allclose(expected[6:-6, 6:-6], coarse[6:-6, 6:-6], atol=1e-4)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_total_intensity_is_kept(scale):
    img = blob()
    out = ablation_expectation(img, scale=scale, washout_s=0.05)
    assert out.sum() * scale**2 == pytest.approx(img.sum(), rel=1e-3)


def test_psf_sums_to_one_and_honours_size():
    psf = ablation_psf((1.0, 0.5), 3.0, 0.5, 0.02, 0.02)
    assert psf.sum() == pytest.approx(1.0) and psf.shape[0] % 2 == psf.shape[1] % 2 == 1
    small = ablation_psf(1.0, 3.0, 0.5, 0.02, 0.02, size=7)
    assert small.shape == (7, 7) and small.sum() == pytest.approx(1.0)
    assert ablation_psf(1.0, 3.0, 0.5, 0.02, (0.01, 0.04)).shape[0] == 2
    np.testing.assert_array_equal(AblationSettings().psf(), ablation_psf(1.0, 3.0, 0.5, 0.02, 0.02))


def test_per_image_counts_per_unit_sets_the_poisson_variance():
    level = 0.5
    stack = np.full((2, 128, 128), level, np.float32)
    out = virtual_ablation(stack, flicker=0.0, counts_per_unit=(10.0, 100.0), seed=1)
    for img, cpu in zip(out, (10.0, 100.0), strict=True):
        assert img.mean() == pytest.approx(level, rel=0.02)
        assert img.var() == pytest.approx(level / cpu, rel=0.1)
        counts = img.astype(np.float64) * cpu
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_poisson_counts_back_in_input_units():
    counts = np.full((64, 64), 20.0)
    out = poisson_counts(counts, counts_per_unit=4.0, seed=0)
    assert out.mean() == pytest.approx(5.0, rel=0.03)
    assert out.var() == pytest.approx(5.0 / 4.0, rel=0.1)


def test_flicker_is_shared_by_the_images_of_a_stack():
    rng = np.random.default_rng(0)
    stack = rng.uniform(0.2, 1.0, size=(3, 128, 128)).astype(np.float32)
    out = flicker_noise(stack, flicker=0.2, seed=3)
    ratios = out / stack
    np.testing.assert_allclose(ratios[1], ratios[0], rtol=1e-5)
    np.testing.assert_allclose(ratios[2], ratios[0], rtol=1e-5)
    assert (ratios > 0).all()
    assert ratios[0].mean() == pytest.approx(1.0, abs=0.01)
    assert ratios[0].std() == pytest.approx(0.2, rel=0.05)


def test_flicker_without_counting_noise_keeps_ratios_through_the_steps():
    rng = np.random.default_rng(1)
    stack = rng.uniform(0.2, 1.0, size=(2, 32, 32)).astype(np.float32)
    sampled = laser_sampling(stack)
    noisy = flicker_noise(sampled, flicker=0.1, seed=5)
    field = noisy / sampled
    np.testing.assert_allclose(field[0], field[1], rtol=1e-5)
    assert not np.allclose(field[0], 1.0)


def test_washout_is_causal_along_x():
    img = np.zeros((21, 21), np.float32)
    img[10, 10] = 1.0
    out = washout(img, washout_s=0.04, dwell_s=0.02)
    assert (out[:, :10] == 0).all() and (np.delete(out, 10, axis=0) == 0).all()
    assert (out[10, 10:] > 0).all() and (np.diff(out[10, 10:]) < 0).all()
    assert out.sum() == pytest.approx(1.0, abs=0.01)
    psf = ablation_psf(1.0, 1.0, 0.0, 0.05, 0.02)
    centre = psf.shape[1] // 2
    assert psf[:, centre + 1 :].sum() > 5 * psf[:, :centre].sum()


def test_washout_depends_on_the_dwell_of_each_image():
    img = np.zeros((2, 9, 30), np.float32)
    img[:, 4, 5] = 1.0
    out = washout(img, washout_s=0.05, dwell_s=(0.01, 0.1))
    tail = out[:, 4, 6:].sum(axis=1)
    assert tail[0] > tail[1] > 0


def test_the_same_seed_gives_the_same_acquisition():
    img = smooth_image(32, 32)
    a = virtual_ablation(img, seed=7)
    np.testing.assert_array_equal(a, virtual_ablation(img, seed=7))
    assert not np.array_equal(a, virtual_ablation(img, seed=8))
    np.testing.assert_array_equal(
        virtual_ablation(img, seed=[9, 2, 1]), virtual_ablation(img, seed=[9, 2, 1])
    )


def test_settings_are_the_keywords_and_frozen():
    settings = AblationSettings(spot_um=4.0)
    img = smooth_image(32, 32)
    np.testing.assert_array_equal(
        settings.acquire(img, scale=2, seed=3),
        virtual_ablation(img, **vars(settings), scale=2, seed=3),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.spot_um = 5.0  # type: ignore[misc]


def test_defaults_degrade_a_unit_image_to_tens_of_counts():
    out = virtual_ablation(np.ones((64, 64), np.float32), seed=0)
    counts = out * AblationSettings().counts_per_unit
    assert 20 <= counts.mean() <= 50
    assert 0.1 < out.std() < 0.3  # clearly noisy at the brightest level


def test_clinker_settings_fit_the_acquisition():
    assert len(CLINKER_SETTINGS.counts_per_unit) == len(CLINKER_ISOTOPES) == 11
    stack = np.full((11, 10, 40), 1000.0, np.float32)  # 1000 cps everywhere
    out = CLINKER_SETTINGS.acquire(stack, seed=0)
    assert out.shape == stack.shape
    counts = out[4] * 0.007  # Ti47: 7 ms dwell
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


@pytest.mark.data
def test_clinker_dwell_matches_the_count_quantisation():
    path = data_dir() / "laicpms_clinker_area1" / "area1_cps_lines.npz"
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (set N2S_EDS_DATA to the data folder)")
    data = np.load(path)
    assert tuple(data["isotopes"]) == CLINKER_ISOTOPES
    assert np.diff(data["time_s"]).mean() == pytest.approx(CLINKER_SETTINGS.dwell_s, rel=1e-3)
    for i, dwell in enumerate(CLINKER_SETTINGS.counts_per_unit):
        cps = data["cps"][..., i].astype(np.float64)
        low = cps[(cps > 0) & (cps < 3000)]  # low rates: dead-time correction negligible
        if low.size:
            counts = low * dwell
            assert np.abs(counts - np.round(counts)).max() < 0.02, CLINKER_ISOTOPES[i]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spot_um": 0.0},
        {"spot_um": -1.0},
        {"pixel_um": (1.0, 0.0)},
        {"pixel_um": (1.0, 2.0, 3.0)},
        {"dwell_s": 0.0},
        {"dwell_s": (0.01, 0.02)},
        {"counts_per_unit": 0.0},
        {"counts_per_unit": float("nan")},
        {"overlap": 1.0},
        {"overlap": -0.1},
        {"flicker": -0.01},
        {"washout_s": -1.0},
        {"scale": 3},
        {"scale": 0},
        {"scale": 1.5},
    ],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(InvalidInputError):
        virtual_ablation(np.ones((3, 64, 64), np.float32), **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.full((8, 8), np.nan, np.float32),
        np.zeros((0, 8), np.float32),
        -np.ones((8, 8), np.float32),
        np.ones((2, 2, 8, 8), np.float32),
        "not an image",
    ],
)
def test_bad_images_raise(image):
    with pytest.raises(InvalidInputError):
        virtual_ablation(image)


def test_bad_psf_size_raises():
    with pytest.raises(InvalidInputError):
        ablation_psf(1.0, 3.0, 0.5, 0.02, 0.02, size=8)
