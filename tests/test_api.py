import copy

import numpy as np
import pytest
import torch

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
    """One thread: bit for bit. Several: float sums may be split differently between runs
    (the masked training gathers/scatters voxels), so equal to float32 precision.
    Every step is trained from equal weights (``holdout=0``, no fitted start): the fitted
    start does not depend on the seed, and held-out stopping may keep it."""
    fast = {**FAST, "holdout": 0.0, "model_options": {"init_mixture": False}}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = n2s_eds.denoise(small_phantom.noisy, seed=4, **fast)
        b = n2s_eds.denoise(small_phantom.noisy, seed=4, **fast)
        np.testing.assert_array_equal(a.data, b.data)
    finally:
        torch.set_num_threads(threads)
    c = n2s_eds.denoise(small_phantom.noisy, seed=4, **fast)
    np.testing.assert_allclose(c.data, a.data, rtol=1e-3, atol=1e-4)
    d = n2s_eds.denoise(small_phantom.noisy, seed=5, **fast)
    assert not np.allclose(d.data, a.data, rtol=1e-3, atol=1e-4)


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
    """The 3D network trained from scratch, with options of its own (pretrained=False)."""
    out = n2s_eds.denoise(
        small_phantom.noisy,
        model="autoencoder3d",
        pretrained=False,
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


# ---------------------------------------------------------------- energy window (SEM)
def sem_cube(beam_kev: float = 10.0, seed: int = 1):
    """A 20 kV SEM phantom relabelled as measured at ``beam_kev``: the axis goes past the beam.

    Channels above the beam energy get stray counts (pile-up, noise) so that
    leaving them untouched can be seen; the counts are uint16 as in a file.
    """
    from n2s_eds.simulate import phantom

    s = phantom("sem", dose=30.0, shape=(14, 12), n_channels=400, channel_width_ev=50.0, seed=seed)
    s = s.noisy
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", beam_kev)
    w = processing_window(s)
    data = s.data.astype(np.uint16)
    rng = np.random.default_rng(seed)
    data[..., w.stop :] = rng.poisson(0.5, data[..., w.stop :].shape)
    return s._deepcopy_with_new_data(data)


def _lazy(signal, chunks=(7, 6, -1)):
    lazy = signal.as_lazy()
    lazy.data = lazy.data.rechunk(chunks)
    return lazy


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_sem_channels_past_beam_energy_returned_unchanged(lazy):
    s = sem_cube(beam_kev=10.0)
    w = processing_window(s)
    assert w.high_kev == 10.0 and 0 < w.start and w.stop < s.data.shape[-1]  # beam < axis top
    out = n2s_eds.denoise(_lazy(s) if lazy else s, **FAST)
    assert out._lazy is lazy
    data = out.data.compute() if lazy else out.data
    np.testing.assert_array_equal(data[..., w.stop :], s.data[..., w.stop :])  # exactly
    np.testing.assert_array_equal(data[..., : w.start], s.data[..., : w.start])
    assert not np.array_equal(data[..., w.slice], s.data[..., w.slice])  # denoised inside
    assert out.metadata.Signal.Denoising.parameters.energy_window_kev == [0.2, 10.0]


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_channels_outside_window_never_reach_the_network(lazy):
    """Wild values outside the window change nothing inside it, in training or inference."""
    s = sem_cube(beam_kev=10.0)
    w = processing_window(s)
    wild = s.data.copy()
    rng = np.random.default_rng(9)
    wild[..., w.stop :] = rng.integers(0, 60000, wild[..., w.stop :].shape)
    wild[..., : w.start] = rng.integers(0, 60000, wild[..., : w.start].shape)
    s2 = s._deepcopy_with_new_data(wild)
    dens, outs = [], []
    for sig in (s, s2):
        den = Denoiser(**FAST).fit(_lazy(sig) if lazy else sig)
        out = den.denoise(_lazy(sig) if lazy else sig)
        dens.append(den)
        outs.append(out.data.compute() if lazy else out.data)
    assert dens[0].net.basis.shape[0] == w.n_channels  # adapted on the window only
    # the same training (up to float rounding: CPU kernels do not always sum in one order)
    states = [d.net.state_dict() for d in dens]
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outs[0][..., w.slice], outs[1][..., w.slice], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(outs[1][..., w.stop :], wild[..., w.stop :])


# ---------------------------------------------------------------- energy binning in eV
def _two_axes(seed: int = 2):
    """One measurement recorded on 5 eV and on 20 eV channels (4 fine channels summed)."""
    import exspy

    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=40.0, shape=(16, 14), n_channels=160, channel_width_ev=20.0, seed=seed)
    lam = np.repeat(ph.truth.data / 4.0, 4, axis=-1)  # 640 channels of 5 eV
    fine = np.random.default_rng(seed).poisson(lam).astype(np.uint16)
    coarse = fine.reshape(16, 14, 160, 4).sum(-1).astype(np.uint16)
    out = []
    for data, width in ((fine, 0.005), (coarse, 0.02)):
        s = exspy.signals.EDSTEMSpectrum(data)
        e = s.axes_manager.signal_axes[0]
        # channel edges at multiples of the width: the 0.2 keV window edge is an edge of both
        e.name, e.units, e.scale, e.offset = "Energy", "keV", width, width / 2
        s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
        out.append(s)
    return out


def test_bin_ev_gives_the_same_result_on_5_and_20_ev_channels():
    # the network's part: the element-map stage works on each axis's own channels, whose
    # +-1 FWHM windows end at different energies on the two axes
    fine, coarse = _two_axes()
    wf, wc = processing_window(fine), processing_window(coarse)
    assert (wf.start, wf.n_channels) == (4 * wc.start, 4 * wc.n_channels)
    out_f = n2s_eds.denoise(fine, bin_ev=40, refine_maps=False, **FAST)
    out_c = n2s_eds.denoise(coarse, bin_ev=40, refine_maps=False, **FAST)
    assert out_f.data.shape == fine.data.shape  # the input's energy axis
    pf, pc = out_f.metadata.Signal.Denoising.parameters, out_c.metadata.Signal.Denoising.parameters
    assert (pf.energy_bin_channels, pc.energy_bin_channels) == (8, 2)
    assert pf.energy_bin_width_ev == pc.energy_bin_width_ev == 40.0
    summed = out_f.data[..., wf.slice].reshape(16, 14, -1, 4).sum(-1)
    np.testing.assert_allclose(summed, out_c.data[..., wc.slice], rtol=1e-4, atol=1e-5)
    ratio = out_f.data[..., wf.slice].sum() / fine.data[..., wf.slice].sum()
    assert abs(ratio - 1) < 0.03
    np.testing.assert_array_equal(out_f.data[..., : wf.start], fine.data[..., : wf.start])


def test_bin_ev_lazy_matches_eager_and_survives_save_load(tmp_path):
    import json

    _, coarse = _two_axes(seed=3)
    den = Denoiser(bin_ev=60, **FAST).fit(coarse)
    eager = den.denoise(coarse)
    lazy = den.denoise(_lazy(coarse, (8, 7, -1)))
    np.testing.assert_allclose(lazy.data.compute(), eager.data, rtol=1e-4, atol=1e-4)
    path = den.save(tmp_path / "binned.pt")
    desc = json.loads(torch.load(path, weights_only=True)["description"])
    assert desc["options"]["bin_ev"] == 60.0 and desc["format_version"] == 3
    assert desc["options"]["refine_maps"] is True
    again = Denoiser.load(path, progress=False)
    assert again.options["bin_ev"] == 60.0
    np.testing.assert_allclose(again.denoise(coarse).data, eager.data, rtol=1e-5, atol=1e-6)
    plain = json.loads(
        torch.load(
            Denoiser(refine_maps=False, **FAST).fit(coarse).save(tmp_path / "p.pt"),
            weights_only=True,
        )["description"]
    )
    assert "bin_ev" not in plain["options"] and "refine_maps" not in plain["options"]
    assert plain["format_version"] == 1  # old readers load it
    assert Denoiser.load(tmp_path / "p.pt").options["refine_maps"] is False


@pytest.mark.parametrize("bad", [0, -20.0, float("nan")])
def test_bad_bin_ev_refused_before_training(small_phantom, bad):
    with pytest.raises(InvalidInputError, match="bin_ev"):
        n2s_eds.denoise(small_phantom.noisy, bin_ev=bad, **FAST)


def test_lazy_chunks_with_halo_match_eager():
    """A lazy cube cut into several chunks (each with a halo) gives the eager result."""
    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=20.0, shape=(75, 66), n_channels=64, channel_width_ev=80.0, seed=5)
    opts = {"model_options": {"n_bands": 2, "width": 8, "depth": 1}, "tile": 24, **FAST}
    den = Denoiser(**opts).fit(ph.noisy)
    eager = den.denoise(ph.noisy)
    lazy = den.denoise(_lazy(ph.noisy, (25, 22, -1)))
    assert lazy.data.numblocks[:2] != (1, 1)
    np.testing.assert_allclose(lazy.data.compute(), eager.data, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- tiny scans
@pytest.mark.parametrize("shape", [(10, 10), (10, 12), (50, 10)])
def test_tiny_scans_are_denoised(shape):
    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=30.0, shape=shape, n_channels=160, channel_width_ev=50.0, seed=3)
    out = n2s_eds.denoise(ph.noisy, steps=4, progress=False)
    assert out.data.shape == ph.noisy.data.shape
    w = processing_window(ph.noisy)
    inside = out.data[..., w.slice]
    assert abs(inside.sum() / ph.noisy.data[..., w.slice].sum() - 1) < 0.03
    truth = ph.truth.data[..., w.slice]
    assert np.mean((inside - truth) ** 2) < np.mean((ph.noisy.data[..., w.slice] - truth) ** 2)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("shape", [(9, 9), (9, 30), (40, 9)])
def test_scans_below_10_pixels_refused_before_training(shape, lazy, monkeypatch):
    from n2s_eds.simulate import phantom

    ph = phantom("tem", dose=30.0, shape=shape, n_channels=64, channel_width_ev=80.0, seed=3)

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(Denoiser, "_new_net", no_training)
    sig = ph.noisy.as_lazy() if lazy else ph.noisy
    with pytest.raises(
        InvalidInputError, match=rf"{shape[0]} x {shape[1]} pixels, smaller than 10"
    ):
        n2s_eds.denoise(sig, **FAST)


def test_lazy_blocks_read_their_own_input(small_phantom):
    """Every block is one task reading its pixels and halo itself: no input chunk is shared.

    Shared input chunks (``map_overlap``) made dask hold chunks or halo strips
    of a whole row of blocks: peak memory then grew with the scan width.
    """
    from dask.core import flatten

    from n2s_eds.inference import split_sizes

    assert split_sizes((129, 129, 7), 64) == (65, 64, 65, 64, 7)
    den = Denoiser(**{**FAST, "tile": 9}).fit(small_phantom.noisy)
    lazy_in = _lazy(small_phantom.noisy, (5, 6, -1))
    out = den.denoise(lazy_in).data
    assert out.chunks[:2] == ((5, 4, 5, 4, 2), (5, 4, 5, 4))  # 9-pixel blocks, split
    assert not set(lazy_in.data.__dask_graph__()) & set(out.__dask_graph__())
    deps = out.__dask_graph__().get_all_dependencies()

    def blocks_of(key):
        todo, seen = [key], {key}
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return {k for k in seen if str(k[0]).startswith("n2s-eds-denoise")}

    for key in flatten(out.__dask_keys__()):  # every output chunk comes from one block
        assert len(blocks_of(key)) == 1
    np.testing.assert_allclose(out.compute(), den.denoise(small_phantom.noisy).data, atol=1e-4)


def test_fit_against_the_truth_gives_the_supervised_bound(small_phantom):
    noisy, truth = small_phantom.noisy, small_phantom.truth
    win = slice(4, None)  # above the zero-peak channels

    def mse(out):
        return float(np.mean((out.data[..., win] - truth.data[..., win]) ** 2))

    opts = {"steps": 40, "progress": False, "seed": 1, "holdout": 0.0}  # every step trained
    supervised = Denoiser(**opts).fit(noisy, target=truth)
    self_supervised = Denoiser(**opts).fit(noisy)
    assert supervised.history["final_loss"] < self_supervised.history["final_loss"]
    assert mse(supervised.denoise(noisy)) < mse(self_supervised.denoise(noisy))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("shape", "does not match"),
        ("negative", "non-negative"),
        ("nan", "finite"),
    ],
)
def test_a_bad_target_is_refused_before_training(small_phantom, monkeypatch, target, message):
    data = small_phantom.truth.data
    target = {
        "shape": np.zeros((3, 3, 3)),
        "negative": -np.ones_like(data),
        "nan": np.full_like(data, np.nan),
    }[target]
    monkeypatch.setattr(
        "n2s_eds.api.train_on_cube", lambda *a, **k: pytest.fail("training started")
    )
    with pytest.raises(InvalidInputError, match=message):
        Denoiser(**FAST).fit(small_phantom.noisy, target=target)
    with pytest.raises(InvalidInputError, match="eager"):
        Denoiser(**FAST).fit(small_phantom.noisy.as_lazy(), target=data)


def _rising_then(monkeypatch, values):
    """Held-out errors that follow ``values`` (each score a clear step from the last)."""
    from n2s_eds.callbacks import HeldOutSelection

    noise = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores = iter(values)
    monkeypatch.setattr(
        HeldOutSelection, "_errors", lambda self, module: next(scores) + 1e-3 * noise
    )


def test_held_out_score_keeps_the_best_weights_and_stops(small_phantom, monkeypatch):
    opts = {"progress": False, "seed": 2, "val_every": 5, "patience": 2}
    start = Denoiser(steps=0, **opts).fit(small_phantom.noisy)
    _rising_then(monkeypatch, np.linspace(1.0, 2.0, 50))  # every later score is worse
    den = Denoiser(steps=60, **opts).fit(small_phantom.noisy)
    assert den.history["best_step"] == 0
    assert [int(s) for s, _ in den.history["held_out_curve"]] == [0, 5, 10]
    assert len(den.history["loss_curve"]) == 10  # stopped after 2 scores without a gain
    for name, value in start.net.state_dict().items():
        torch.testing.assert_close(den.net.state_dict()[name], value)


def test_held_out_score_that_falls_trains_every_step(small_phantom, monkeypatch):
    _rising_then(monkeypatch, np.linspace(2.0, 1.0, 50))
    den = Denoiser(steps=12, val_every=4, progress=False, seed=2).fit(small_phantom.noisy)
    assert [int(s) for s, _ in den.history["held_out_curve"]] == [0, 4, 8, 12]
    assert den.history["best_step"] == 12
    assert len(den.history["loss_curve"]) == 12
    none = Denoiser(steps=12, holdout=0.0, progress=False, seed=2).fit(small_phantom.noisy)
    assert "held_out_curve" not in none.history and len(none.history["loss_curve"]) == 12


def test_held_out_score_that_falls_slowly_keeps_training(small_phantom, monkeypatch):
    """Gains too small to replace the kept weights still count as progress: training goes on
    (and the kept weights move once the gain adds up to two standard errors)."""
    from n2s_eds.callbacks import HeldOutSelection

    gen = torch.Generator().manual_seed(0)
    values = iter(1.0 - 1e-4 * np.arange(50))  # each score 1e-4 lower: ~0.5 standard error

    def errors(self, module):
        noise = 1e-2 * torch.rand(400, generator=gen, dtype=torch.float64)
        return next(values) + noise - noise.mean()

    monkeypatch.setattr(HeldOutSelection, "_errors", errors)
    den = Denoiser(steps=40, val_every=4, patience=4, progress=False, seed=2)
    den.fit(small_phantom.noisy)
    assert len(den.history["loss_curve"]) == 40  # never 4 scores without a lower mean
    assert den.history["best_step"] > 4  # the first 0.5-standard-error gain did not replace it


def test_held_out_pixels_are_never_training_targets(small_phantom):
    from n2s_eds.data import CubeSample, PatchDataset
    from n2s_eds.models import PriorMixture
    from n2s_eds.module import N2SModule

    cube = np.moveaxis(small_phantom.noisy.data, -1, 0).astype(np.float32)
    keep = np.ones(cube.shape[1:], dtype=bool)
    keep[::3, ::2] = False
    item = PatchDataset([CubeSample(cube, target=cube, trainable=keep)], 64, None, 1, seed=0)[0]
    assert item["trainable"].shape == (1, *cube.shape[1:])
    module = N2SModule(PriorMixture(), mask_rate=0.5)
    module.adapt(torch.from_numpy(cube))
    batch = {k: v[None] for k, v in item.items()}

    def loss(target):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return float(module.masked_loss({**batch, "target": target}, generator=gen))

    base = loss(batch["target"])
    moved = batch["target"].clone()
    moved[..., ~torch.from_numpy(keep)] += 100.0  # the held-out pixels' reference
    assert loss(moved) == base
    moved = batch["target"].clone()
    moved[..., torch.from_numpy(keep)] += 1.0
    assert loss(moved) != base
    with pytest.raises(ValueError, match="trainable shape"):
        CubeSample(cube, trainable=keep[1:])


@pytest.mark.parametrize(
    ("option", "message"),
    [({"holdout": 1.0}, "holdout"), ({"val_every": 0}, "val_every"), ({"patience": 0}, "patience")],
)
def test_bad_held_out_options(option, message):
    with pytest.raises(InvalidInputError, match=message):
        Denoiser(**option)


def test_fit_starts_from_the_best_fixed_mixture(small_phantom):
    from n2s_eds.module import N2SModule

    den = Denoiser(steps=0, progress=False).fit(small_phantom.noisy)
    assert torch.count_nonzero(den.net.head.bias) > 0  # not the equal-weight start
    cube = torch.from_numpy(np.moveaxis(small_phantom.noisy.data, -1, 0).astype(np.float32))
    module = N2SModule(Denoiser()._new_net(False))
    module.adapt(cube)  # inference-time adapt: the weights are left alone
    assert torch.count_nonzero(module.net.head.bias) == 0
