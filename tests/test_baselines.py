"""Behaviour of the classical baselines: HyperSpy-like outputs, window handling, quality."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from n2s_eds import baselines as B
from n2s_eds import metrics as M
from n2s_eds.exceptions import InvalidInputError

exspy = pytest.importorskip("exspy")


def _truth(ny: int = 24, nx: int = 20, ne: int = 128, dose: float = 6.0) -> np.ndarray:
    """Smooth, low-rank (Y, X, E) expected counts: two phases, three lines, a zero peak."""
    e = -0.2 + 0.08 * np.arange(ne)
    yy, xx = np.mgrid[0:ny, 0:nx]
    a = 0.5 + 0.5 * np.tanh((xx - nx / 2 + 3 * np.sin(yy / 4)) / 3.0)

    def line(e0: float, h: float) -> np.ndarray:
        return h * np.exp(-0.5 * ((e - e0) / 0.06) ** 2)

    spec1 = line(1.74, 2.0) + line(6.40, 0.6)
    spec2 = line(3.69, 1.5) + line(1.74, 0.4)
    brems = 0.15 * np.clip(8.0 - e, 0, None) / 8.0
    lam = a[..., None] * spec1 + (1 - a[..., None]) * spec2 + brems
    lam += 4.0 * np.exp(-0.5 * (e / 0.05) ** 2)
    lam[..., e > 8.0] = 0.05
    return dose * lam


def _signal(data: np.ndarray):
    s = exspy.signals.EDSTEMSpectrum(data)
    s.metadata.General.title = "synthetic"
    s.axes_manager.navigation_axes[0].name = "x"
    s.axes_manager.navigation_axes[1].name = "y"
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.scale, ax.offset = "Energy", "keV", 0.08, -0.2
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 8.0)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.live_time", 1.5)
    s.metadata.set_item("Sample.xray_lines", ["Si_Ka", "Ca_Ka", "Fe_Ka"])
    return s


@pytest.fixture(scope="module")
def split():
    """A seeded Poisson cube of a smooth truth, binomially split at p = 0.5."""
    n = np.random.default_rng(0).poisson(_truth()).astype(np.uint16)
    x, r = M.binomial_split(n, 0.5, seed=1)
    return _signal(x.astype(np.uint16)), r


def _guide(ny: int = 24, nx: int = 20) -> np.ndarray:
    """A HAADF-like image of the two phases of :func:`_truth`, with a little noise."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    a = 0.5 + 0.5 * np.tanh((xx - nx / 2 + 3 * np.sin(yy / 4)) / 3.0)
    return 100.0 + 50.0 * a + np.random.default_rng(5).normal(0, 1.0, a.shape)


FAST = {
    "gaussian": lambda s: B.gaussian(s, sigma=1.0),
    "pca": lambda s: B.pca(s),
    "pca_gaussian": lambda s: B.pca_gaussian(s),
    "guided_filter": lambda s: B.guided_filter(s, _guide()),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_returns_a_new_signal_like_hyperspy(split, name):
    s, _ = split
    data_before = s.data.copy()
    md_before = s.metadata.as_dictionary()
    axes_before = s.axes_manager.as_dictionary()
    out = FAST[name](s)
    # the input is untouched
    np.testing.assert_array_equal(s.data, data_before)
    assert s.metadata.as_dictionary() == md_before
    assert s.axes_manager.as_dictionary() == axes_before
    # the output looks like the input
    assert out is not s and type(out) is type(s)
    assert out.data.shape == s.data.shape and out.data.dtype == np.float32
    assert out.axes_manager.as_dictionary() == axes_before
    assert out.metadata.Acquisition_instrument.TEM.Detector.EDS.live_time == 1.5
    assert out.metadata.General.title.startswith("synthetic (")
    assert out.metadata.Signal.Denoising.method == name
    # channels outside the processing window are returned unchanged
    win = M.processing_window(s)
    np.testing.assert_array_equal(out.data[..., : win.start], s.data[..., : win.start])
    np.testing.assert_array_equal(out.data[..., win.stop :], s.data[..., win.stop :])


@pytest.mark.parametrize("name", sorted(FAST))
def test_gains_on_a_smooth_low_rank_cube(split, name):
    s, r = split
    out = FAST[name](s)
    win = M.processing_window(s)
    res = M.score_split(s.data, r, out.data, 0.5, window=win, windows=M.element_windows(s, win))
    assert res["cube_gain_db"] > 2.0
    assert res["maps_gain_db"] > 0.0
    assert res["count_ratio"] == pytest.approx(1.0, abs=0.05)


def test_pca_finds_the_rank_and_honours_n_components(split):
    s, _ = split
    out = B.pca(s)
    k = out.metadata.Signal.Denoising.parameters.n_components
    assert 1 <= k <= 4
    assert out.metadata.Signal.Denoising.parameters.elbow
    out5 = B.pca(s, n_components=5)
    assert out5.metadata.Signal.Denoising.parameters.n_components == 5
    with pytest.raises(InvalidInputError):
        B.pca(s, n_components=0)


def test_sigma_zero_is_identity_and_lazy_matches_eager(split):
    s, _ = split
    np.testing.assert_array_equal(B.gaussian(s, sigma=0).data, s.data.astype(np.float32))
    lazy = s.as_lazy()
    out = B.gaussian(lazy, sigma=1.0)
    assert out._lazy
    out.compute()
    np.testing.assert_allclose(out.data, B.gaussian(s, sigma=1.0).data)
    out = B.pca(lazy)
    assert out._lazy
    out.compute()
    np.testing.assert_allclose(out.data, B.pca(s).data, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInputError):
        B.gaussian(s, sigma=-1)


def test_rejects_a_single_spectrum():
    s = _signal(np.ones((3, 4, 128)))
    with pytest.raises(InvalidInputError):
        B.gaussian(s.inav[0, 0])


def test_inverse_anscombe_is_unbiased():
    rng = np.random.default_rng(0)
    for lam in (1.0, 3.0, 10.0, 50.0):
        z = B.anscombe(rng.poisson(lam, size=400_000))
        assert B.inverse_anscombe(np.array([z.mean()]))[0] == pytest.approx(lam, rel=0.02)
    assert B.inverse_anscombe(np.array([0.0, 1.0, 2 * np.sqrt(0.375)])).tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["bm3d", "bm4d"])
def test_missing_extra_gives_a_clear_import_error(split, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "n2s-eds\[bm3d\]"') as err:
        getattr(B, name)(split[0])
    assert "non-commercial" in str(err.value)


@pytest.mark.parametrize("name", ["bm3d", "bm4d"])
def test_bm3d_bm4d_on_a_tiny_cube(name):
    pytest.importorskip(name)
    n = np.random.default_rng(2).poisson(_truth(16, 16, 128, dose=6.0))
    x, r = M.binomial_split(n, 0.5, seed=3)
    s = _signal(x.astype(np.uint16))
    before = s.metadata.as_dictionary()
    win = M.processing_window(s)
    small = s.isig[: win.start + 12]  # keep it fast: the zero peak and 12 window channels
    small.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 8.0)
    out = getattr(B, name)(small)
    assert type(out) is type(small) and out.data.shape == small.data.shape
    assert out.data.dtype == np.float32
    assert out.metadata.Signal.Denoising.method == name
    np.testing.assert_array_equal(out.data[..., : win.start], small.data[..., : win.start])
    assert s.metadata.as_dictionary() == before
    gain = M.split_gain_db(
        small.data[..., win.start :],
        out.data[..., win.start :],
        r[..., win.start : win.start + 12],
        0.5,
    )
    assert gain > 0.0


def test_guided_filter_follows_the_guide_edges():
    """Across a sharp phase boundary the guide keeps the maps sharp: it beats box smoothing."""
    lam = _truth(dose=20.0)
    yy, xx = np.mgrid[0:24, 0:20]
    sharp = (xx > 8 + 3 * np.sin(yy / 4)).astype(float)
    lam = sharp[..., None] * lam[:, ::-1][:, :1] + (1 - sharp[..., None]) * lam[:, :1]
    n = np.random.default_rng(0).poisson(np.broadcast_to(lam, (24, 20, 128)))
    x, r = M.binomial_split(n, 0.5, seed=1)
    s = _signal(x.astype(np.uint16))
    guide = 100.0 + 50.0 * sharp + np.random.default_rng(5).normal(0, 1.0, sharp.shape)
    win = M.processing_window(s)
    windows = M.element_windows(s, win)
    gains = {
        name: M.score_split(s.data, r, out.data, 0.5, window=win, windows=windows)["maps_gain_db"]
        for name, out in (
            ("guided", B.guided_filter(s, guide, radius=2)),
            ("box-like", B.guided_filter(s, guide, radius=2, eps=1e6)),
        )
    }
    assert gains["guided"] > gains["box-like"] + 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [({"radius": 0}, "radius"), ({"radius": 1.5}, "radius"), ({"eps": 0.0}, "eps")],
)
def test_guided_filter_rejects_bad_parameters(split, kwargs, match):
    s, _ = split
    with pytest.raises(InvalidInputError, match=match):
        B.guided_filter(s, _guide(), **kwargs)


def test_guided_filter_rejects_a_guide_of_another_shape(split):
    s, _ = split
    with pytest.raises(InvalidInputError):
        B.guided_filter(s, _guide(10, 10))


def test_energy_slabs_cover_the_cube_seamlessly_and_respect_the_size_limit():
    z = np.random.default_rng(4).random((6, 5, 300))
    sizes = []

    def double(block):
        sizes.append(block.size)
        return 2.0 * block

    out = B._in_energy_slabs(z, double, max_voxels=6 * 5 * 128)
    np.testing.assert_allclose(out, 2.0 * z, rtol=1e-12)
    assert len(sizes) == 3 and max(sizes) <= 6 * 5 * 128
    calls = []
    whole = B._in_energy_slabs(z, lambda b: calls.append(b.shape) or b + 1.0, max_voxels=z.size)
    assert calls == [z.shape]
    np.testing.assert_array_equal(whole, z + 1.0)


def test_bm4d_in_slabs_scores_like_the_whole_cube():
    pytest.importorskip("bm4d")
    n = np.random.default_rng(5).poisson(_truth(8, 8, 420, dose=40.0))
    x, r = M.binomial_split(n, 0.5, seed=6)
    s = _signal(x.astype(np.uint16))
    win = M.processing_window(s)
    small = s.isig[: win.start + 200]
    small.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 8.0)
    whole = B.bm4d(small).data[..., win.start :]
    slabs = B.bm4d(small, max_voxels=8 * 8 * 128).data[..., win.start :]
    ref = r[..., win.start : win.start + 200]
    g_whole = M.split_gain_db(small.data[..., win.start :], whole, ref, 0.5)
    g_slabs = M.split_gain_db(small.data[..., win.start :], slabs, ref, 0.5)
    assert g_slabs > 0 and abs(g_slabs - g_whole) < 0.5
    assert slabs.sum() == pytest.approx(whole.sum(), rel=0.01)
    with pytest.raises(InvalidInputError, match="max_voxels"):
        B.bm4d(small, max_voxels=0)
