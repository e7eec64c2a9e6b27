"""Classical 2D baselines: up-sampling accuracy and alignment, Richardson-Lucy with the known
PSF, smoothing, BM3D, the uniform interface and parameter tuning."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.imaging.ablation import AblationSettings, ablation_expectation, integrate_dwell
from n2s_eds.imaging.baselines import (
    BASELINES,
    PARAM_GRIDS,
    bm3d_image,
    gaussian,
    richardson_lucy,
    tune_baseline,
    upsample,
)
from n2s_eds.metrics.reference import psnr

HAS_BM3D = importlib.util.find_spec("bm3d") is not None


def smooth_image(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (0.5 + 0.3 * np.sin(xx / 6.0) * np.cos(yy / 9.0)).astype(np.float32)


def structured_image(h: int = 64, w: int = 64) -> np.ndarray:
    """Sharp-edged grains and a thin line: what deconvolution should sharpen."""
    yy, xx = np.mgrid[:h, :w]
    img = 0.2 + 0.6 * ((yy - 20) ** 2 + (xx - 22) ** 2 < 80) + 0.4 * ((xx > 40) & (yy > 30))
    img[:, 12] += 0.5
    return img.astype(np.float32)


def centroid(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    total = img.sum()
    return float((img * yy).sum() / total), float((img * xx).sum() / total)


def coarse(img: np.ndarray, scale: int) -> np.ndarray:
    return integrate_dwell(img, counts_per_unit=1.0, scale=scale)


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_upsample_shapes_ranks_and_dtype(scale, method):
    img = smooth_image(16, 12)
    before = img.copy()
    out = upsample(img, scale, method)
    assert out.shape == (16 * scale, 12 * scale) and out.dtype == np.float32
    assert upsample(np.stack([img, img]), scale, method).shape == (2, 16 * scale, 12 * scale)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_upsampling_a_block_averaged_smooth_image_beats_nearest(method):
    truth = smooth_image()
    low = coarse(truth, 2)
    nearest = np.kron(low, np.ones((2, 2)))
    score = psnr(truth, upsample(low, 2, method))
    assert score > 40.0
    assert score > psnr(truth, nearest) + 10.0


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_upsampling_keeps_a_blob_in_place(scale, method):
    yy, xx = np.mgrid[:64, :64]
    truth = np.exp(-((yy - 30.3) ** 2 + (xx - 25.7) ** 2) / 32.0)
    out = upsample(coarse(truth, scale), scale, method)
    assert centroid(out) == pytest.approx(centroid(truth), abs=0.01)


@pytest.mark.parametrize("scale", [1, 2])
def test_richardson_lucy_with_the_true_psf_sharpens(scale):
    truth = structured_image()
    settings = AblationSettings()
    blurred = ablation_expectation(truth, scale=scale)
    before = psnr(truth, upsample(blurred, scale))
    after = psnr(truth, richardson_lucy(blurred, settings.psf(), iterations=40, scale=scale))
    assert after > before + 1.0


def test_richardson_lucy_takes_one_psf_per_image():
    truth = np.stack([structured_image(), structured_image()[::-1]])
    psfs = AblationSettings(dwell_s=(0.02, 0.01)).psf()
    blurred = ablation_expectation(truth, dwell_s=(0.02, 0.01))
    out = richardson_lucy(blurred, psfs, iterations=10)
    assert out.shape == truth.shape
    assert psnr(truth[1], out[1]) > psnr(truth[1], blurred[1])


def test_gaussian_reduces_noise():
    truth = smooth_image()
    noisy = truth + np.random.default_rng(0).normal(0, 0.1, truth.shape).astype(np.float32)
    assert psnr(truth, gaussian(noisy, 1.5)) > psnr(truth, noisy) + 5.0
    assert gaussian(coarse(noisy, 2), 1.0, scale=2).shape == truth.shape


def test_bm3d_denoises():
    pytest.importorskip("bm3d")
    truth = smooth_image(32, 32)
    noisy = truth + np.random.default_rng(1).normal(0, 0.1, truth.shape).astype(np.float32)
    assert psnr(truth, bm3d_image(noisy, 0.1)) > psnr(truth, noisy) + 5.0
    settings = AblationSettings()
    acquired = settings.acquire(truth, seed=2)
    out = BASELINES["bm3d"](acquired, scale=1, settings=settings)
    assert psnr(truth, out) > psnr(truth, acquired) + 3.0


def test_missing_bm3d_gives_install_advice(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(ImportError, match=r'pip install "n2s-eds\[bm3d\]"'):
        bm3d_image(smooth_image(16, 16), 0.1)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_has_the_uniform_signature(name):
    if name == "bm3d" and not HAS_BM3D:
        pytest.skip("bm3d is not installed")
    settings = AblationSettings(counts_per_unit=(30.0, 60.0))
    truth = np.stack([smooth_image(32, 32), structured_image(32, 32)])
    acquired = settings.acquire(truth, scale=2, seed=0)
    before = acquired.copy()
    out = BASELINES[name](acquired, scale=2, settings=settings)
    assert out.shape == truth.shape and out.dtype == np.float32
    np.testing.assert_array_equal(acquired, before)
    single = BASELINES[name](acquired[0], scale=2, settings=AblationSettings())
    assert single.shape == truth.shape[1:]


def test_tuning_picks_the_better_parameter():
    settings = AblationSettings()
    truth = np.stack([smooth_image(32, 32), smooth_image(32, 32)[::-1]])
    acquired = settings.acquire(truth, seed=4)
    tuned = tune_baseline("gaussian", truth, acquired, scale=1, settings=settings, grid=(0.0, 1.5))
    assert tuned.param == 1.5 and tuned.scores[1.5] > tuned.scores[0.0]
    np.testing.assert_array_equal(tuned(acquired[0]), gaussian(acquired[0], 1.5))
    blurred = ablation_expectation(structured_image(32, 32))
    tuned = tune_baseline(
        "richardson_lucy", structured_image(32, 32), blurred, scale=1, settings=settings,
        grid=(0, 20),
    )  # fmt: skip
    assert tuned.param == 20 and set(tuned.scores) == {0, 20}
    tuned = tune_baseline("bicubic", truth, coarse(truth, 2), scale=2, settings=settings)
    assert tuned.param is None and list(tuned.scores) == [None]
    assert set(PARAM_GRIDS) == set(BASELINES)


def test_tuning_takes_lists_of_images_of_different_sizes():
    settings = AblationSettings()
    clean = [smooth_image(32, 32), smooth_image(48, 24)]
    degraded = [settings.acquire(c, scale=2, seed=k) for k, c in enumerate(clean)]
    tuned = tune_baseline("gaussian", clean, degraded, scale=2, settings=settings)
    assert tuned.param in PARAM_GRIDS["gaussian"] and len(tuned.scores) == 6
    assert tuned(degraded[1]).shape == (48, 24)


def test_tuning_checks_its_pairs():
    truth = np.stack([smooth_image(32, 32)] * 2)
    with pytest.raises(InvalidInputError):
        tune_baseline("gaussian", truth, truth, scale=2, settings=AblationSettings())
    with pytest.raises(InvalidInputError):
        tune_baseline("gaussian", truth, truth[:1], scale=1, settings=AblationSettings())
    with pytest.raises(InvalidInputError):
        tune_baseline("median", truth, truth, scale=1, settings=AblationSettings())


@pytest.mark.parametrize(
    "call",
    [
        lambda img: upsample(img, 2, "nearest"),
        lambda img: upsample(img, 0),
        lambda img: upsample(img, 1.5),
        lambda img: upsample(np.full_like(img, np.nan), 2),
        lambda img: upsample(img[:0], 2),
        lambda img: gaussian(img, -1.0),
        lambda img: richardson_lucy(-img, AblationSettings().psf()),
        lambda img: richardson_lucy(img, np.ones((4, 4))),
        lambda img: richardson_lucy(img, np.ones((2, 3, 3))),
        lambda img: richardson_lucy(img, AblationSettings().psf(), iterations=-1),
        lambda img: bm3d_image(img, -0.1),
        lambda img: bm3d_image(img, (0.1, 0.2)),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(InvalidInputError):
        call(smooth_image(16, 16))
