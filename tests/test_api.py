import copy

import numpy as np
import pytest

import n2s_eds
from n2s_eds import Denoiser, InvalidInputError, baselines
from n2s_eds.metrics import binomial_split, element_maps, element_windows, umse
from n2s_eds.preprocess import processing_window

FAST = {"steps": 8, "progress": False}


@pytest.fixture(scope="module")
def denoised(small_phantom):
    noisy = small_phantom.noisy
    noisy.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.live_time", 12.5)
    before = (noisy.data.copy(), copy.deepcopy(noisy.metadata.as_dictionary()))
    out = n2s_eds.denoise(noisy, **FAST)
    return noisy, out, before


def test_same_class_shape_axes(denoised):
    noisy, out, _ = denoised
    assert type(out) is type(noisy)
    assert out.data.shape == noisy.data.shape
    assert out.data.dtype == np.float32
    for a, b in zip(out.axes_manager._axes, noisy.axes_manager._axes, strict=True):
        assert (a.name, a.units, a.scale, a.offset, a.size) == (
            b.name,
            b.units,
            b.scale,
            b.offset,
            b.size,
        )


def test_metadata_kept_and_provenance_added(denoised):
    noisy, out, _ = denoised
    md = out.metadata
    assert md.Acquisition_instrument.TEM.Detector.EDS.live_time == 12.5
    assert (
        md.Acquisition_instrument.TEM.beam_energy
        == noisy.metadata.Acquisition_instrument.TEM.beam_energy
    )
    assert list(md.Sample.xray_lines) == list(noisy.metadata.Sample.xray_lines)
    rec = md.Signal.Denoising
    assert rec.method == "n2s_eds"
    assert rec.parameters.model == "prior_mixture"
    assert rec.parameters.steps == FAST["steps"]
    assert "n2s_eds" in md.General.title


def test_input_unchanged(denoised):
    noisy, _, (data, metadata) = denoised
    np.testing.assert_array_equal(noisy.data, data)
    assert noisy.metadata.as_dictionary() == metadata
    assert not noisy.metadata.has_item("Signal.Denoising")


def test_channels_outside_window_returned_unchanged(denoised):
    noisy, out, _ = denoised
    w = processing_window(noisy)
    assert w.start > 0  # the phantom has a zero peak below 0.2 keV
    np.testing.assert_array_equal(out.data[..., : w.start], noisy.data[..., : w.start])
    np.testing.assert_array_equal(out.data[..., w.stop :], noisy.data[..., w.stop :])


def test_counts_conserved_and_non_negative(denoised):
    noisy, out, _ = denoised
    w = processing_window(noisy)
    ratio = out.data[..., w.slice].sum() / noisy.data[..., w.slice].sum()
    assert abs(ratio - 1) < 0.03
    assert out.data.min() >= 0


def test_seed_reproducible(small_phantom):
    a = n2s_eds.denoise(small_phantom.noisy, seed=4, **FAST)
    b = n2s_eds.denoise(small_phantom.noisy, seed=4, **FAST)
    np.testing.assert_array_equal(a.data, b.data)


def test_save_load_roundtrip(small_phantom, tmp_path):
    den = Denoiser(**FAST).fit(small_phantom.noisy)
    path = den.save(tmp_path / "model.pt")
    again = Denoiser.load(path, progress=False)
    np.testing.assert_allclose(
        again.denoise(small_phantom.noisy).data, den.denoise(small_phantom.noisy).data, rtol=1e-5
    )
    assert again.describe()["model"] == "prior_mixture"
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_load_rejects_truncated_or_foreign_files(small_phantom, tmp_path):
    path = Denoiser(**FAST).fit(small_phantom.noisy).save(tmp_path / "m.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InvalidInputError, match="not a readable"):
        Denoiser.load(cut)
    other = tmp_path / "other.pt"
    import torch

    torch.save({"description": "{}", "state_dict": {}}, other)
    with pytest.raises(InvalidInputError, match="not an n2s_eds model"):
        Denoiser.load(other)
    with pytest.raises(InvalidInputError, match="does not exist"):
        Denoiser.load(tmp_path / "missing.pt")


def test_lazy_in_lazy_out_matches_eager(small_phantom):
    den = Denoiser(**FAST).fit(small_phantom.noisy)
    eager = den.denoise(small_phantom.noisy)
    lazy_in = small_phantom.noisy.as_lazy()
    lazy_in.data = lazy_in.data.rechunk((10, 9, -1))
    lazy_out = den.denoise(lazy_in)
    assert lazy_out._lazy
    np.testing.assert_allclose(lazy_out.data.compute(), eager.data, rtol=1e-4, atol=1e-4)


def test_guided_denoise_and_guide_checks(small_phantom):
    out = n2s_eds.denoise(small_phantom.noisy, haadf=small_phantom.haadf, **FAST)
    assert out.metadata.Signal.Denoising.parameters.guided is True
    with pytest.raises(InvalidInputError):
        n2s_eds.denoise(small_phantom.noisy, haadf=np.ones((5, 5)), **FAST)
    den = Denoiser(**FAST).fit(small_phantom.noisy, haadf=small_phantom.haadf)
    with pytest.raises(InvalidInputError, match="guide"):
        den.denoise(small_phantom.noisy)


def test_frame_axis_refused_before_training(small_phantom):
    import hyperspy.api as hs

    stack = hs.stack([small_phantom.noisy, small_phantom.noisy])
    with pytest.raises(InvalidInputError, match="navigation"):
        n2s_eds.denoise(stack, **FAST)


def test_bad_options():
    with pytest.raises(InvalidInputError, match="unknown model"):
        Denoiser(model="unet")
    with pytest.raises(InvalidInputError, match="mask_rate"):
        Denoiser(mask_rate=2)


def test_autoencoder3d_option_runs(small_phantom):
    out = n2s_eds.denoise(
        small_phantom.noisy,
        model="autoencoder3d",
        model_options={"base_channels": 4, "depth": 1},
        energy_patch=32,
        **FAST,
    )
    assert out.data.shape == small_phantom.noisy.data.shape


# ---------------------------------------------------------------- quality (slow)
@pytest.mark.slow
def test_phantom_quality_at_least_gaussian(tmp_path):
    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=20.0, shape=(48, 48), n_channels=512, seed=11)
    w = processing_window(ph.noisy)
    truth = ph.truth.data[..., w.slice]

    def err(sig):
        return float(np.mean((np.asarray(sig.data[..., w.slice], np.float64) - truth) ** 2))

    raw = err(ph.noisy)
    gauss = err(baselines.gaussian(ph.noisy, 1.0))
    ours = err(n2s_eds.denoise(ph.noisy, steps=100, progress=False))
    assert ours <= gauss < raw


@pytest.mark.slow
@pytest.mark.data
def test_real_fept_thinned_at_least_gaussian(fept_signal):
    """Count splitting on the real FePt cube at 10 % of its counts."""
    x, r = binomial_split(fept_signal.data, 0.1, seed=0)
    sx = fept_signal._deepcopy_with_new_data(x)
    w = processing_window(sx)
    wins = element_windows(sx, w)

    def scores(data):
        d = np.asarray(data, np.float64)[..., w.slice]
        cube = umse(d, r[..., w.slice], 0.1)
        dm = element_maps(np.asarray(data, np.float64), wins)
        maps = umse(dm, element_maps(r, wins), 0.1)
        return cube, maps

    cube_raw, _ = scores(x)
    cube_g, maps_g = scores(baselines.gaussian(sx, 1.0).data)
    out = n2s_eds.denoise(sx, steps=150, progress=False)
    cube_n, maps_n = scores(out.data)
    assert cube_n <= cube_g < cube_raw
