"""Tests of n2s_eds.preprocess: energy window and energy binning set in eV."""

from __future__ import annotations

import exspy
import numpy as np
import pytest

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.preprocess import (
    EnergyBinning,
    bin_energy,
    channel_width_ev,
    energy_binning,
    energy_window,

)


def poisson_cube(shape: tuple[int, int, int], lam: float = 0.3, seed: int = 0) -> np.ndarray:
    """Sparse low counts (E, Y, X), like a real EDS cube."""
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.float32)


# --------------------------------------------------------------------------- window


def test_energy_window_lowered_to_beam_energy():
    e = np.arange(0.0, 10.0, 0.01)  # 10 eV channels up to 9.99 keV
    w = energy_window(e, 0.2, 20.0, beam_energy=5.0)
    assert w.high_kev == 5.0
    assert e[w.start] >= 0.2 > e[w.start - 1]
    assert e[w.stop - 1] <= 5.0 < e[w.stop]


# --------------------------------------------------------------------------- binning


def test_energy_binning_width_is_set_in_ev():
    for width, factor in ((5.0, 8), (10.0, 4), (20.0, 2)):
        b = energy_binning(100, width, 40.0)
        assert b.factor == factor
        assert b.width_ev == 40.0
    assert energy_binning(100, 10.0, None).factor == 1
    assert energy_binning(100, 20.0, 25.0).factor == 1  # nearest multiple of 20 eV
    assert energy_binning(100, 10.0, 26.0).factor == 3
    b = energy_binning(10, 10.0, 40.0)
    assert (b.n_bins, list(b.starts), list(b.bin_of_channel)) == (
        3,
        [0, 4, 8],
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2],
    )


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), float("inf")])
def test_energy_binning_rejects_bad_width(bad):
    with pytest.raises(InvalidInputError, match="bin_ev must be a positive"):
        energy_binning(100, 10.0, bad)


def test_bin_energy_sums_channels_with_partial_last_bin():
    cube = poisson_cube((10, 3, 4), lam=2.0)
    b = energy_binning(10, 10.0, 40.0)
    binned = bin_energy(cube, b)
    assert binned.shape == (3, 3, 4) and binned.dtype == np.float32
    np.testing.assert_array_equal(binned[0], cube[0:4].sum(0))
    np.testing.assert_array_equal(binned[2], cube[8:10].sum(0))  # 2 channels left
    np.testing.assert_array_equal(binned.sum(0), cube.sum(0))
    with pytest.raises(ValueError, match="E = 10"):
        bin_energy(cube[:9], b)


def test_unbin_keeps_every_pixels_counts_in_every_bin():
    raw = poisson_cube((37, 9, 8), lam=0.2, seed=1)  # mostly zeros, bins with no counts
    b = energy_binning(37, 10.0, 40.0)
    denoised = np.random.default_rng(2).gamma(2.0, 1.0, (b.n_bins, 9, 8)).astype(np.float32)
    out = unbin_energy(denoised, raw, b)
    assert out.shape == raw.shape and out.dtype == np.float32  # the input's energy axis
    assert out.min() >= 0
    np.testing.assert_allclose(bin_energy(out, b), denoised, rtol=1e-5, atol=1e-6)
    # no neighbourhood and no prior: empty bins are shared equally
    flat = unbin_energy(denoised, np.zeros_like(raw), b, radius=0, prior_counts=0.0)
    np.testing.assert_allclose(flat[:4], np.repeat(denoised[:1] / 4, 4, axis=0), rtol=1e-6)
    np.testing.assert_allclose(bin_energy(flat, b), denoised, rtol=1e-5)


def test_unbin_in_slabs_equals_one_pass(monkeypatch):
    """Unbinning in channel slabs (bounded memory) changes nothing, with uint16 views too."""
    import n2s_eds.preprocess as pp

    data = np.random.default_rng(3).poisson(0.5, (9, 10, 70)).astype(np.uint16)  # (Y, X, E)
    raw = np.moveaxis(data, -1, 0)  # strided (E, Y, X) view, as the lazy path passes it
    b = energy_binning(70, 10.0, 30.0)
    binned = bin_energy(raw, b)
    np.testing.assert_array_equal(binned, bin_energy(raw.astype(np.float32), b))
    one = unbin_energy(binned * 0.8, raw, b)
    monkeypatch.setattr(pp, "_UNBIN_SLAB", 6)
    np.testing.assert_allclose(unbin_energy(binned * 0.8, raw, b), one, rtol=1e-6)


def test_unbin_of_binned_raw_counts_gives_them_back():
    raw = poisson_cube((40, 6, 7), lam=3.0, seed=4)
    b = energy_binning(40, 5.0, 20.0)
    back = unbin_energy(bin_energy(raw, b), raw, b, radius=0, prior_counts=0.0)
    np.testing.assert_allclose(back, raw, rtol=1e-6, atol=1e-6)


def test_same_result_for_5_10_20_ev_channels():
    """One measurement on 5, 10 and 20 eV channels: same bins, consistent unbinning."""
    fine = poisson_cube((160, 12, 11), lam=0.4, seed=5)  # 5 eV channels
    axes = {
        5.0: fine,
        10.0: fine.reshape(80, 2, 12, 11).sum(1),
        20.0: fine.reshape(40, 4, 12, 11).sum(1),
    }
    binnings = {w: energy_binning(c.shape[0], w, 40.0) for w, c in axes.items()}
    binned = {w: bin_energy(axes[w], binnings[w]) for w in axes}
    assert {b.factor for b in binnings.values()} == {8, 4, 2}
    for w in (10.0, 20.0):
        np.testing.assert_array_equal(binned[w], binned[5.0])
    denoised = np.random.default_rng(6).gamma(3.0, 1.0, binned[5.0].shape).astype(np.float32)
    out = {w: unbin_energy(denoised, axes[w], binnings[w]) for w in axes}
    np.testing.assert_allclose(out[5.0].reshape(40, 4, 12, 11).sum(1), out[20.0], rtol=1e-4)
    np.testing.assert_allclose(out[10.0].reshape(40, 2, 12, 11).sum(1), out[20.0], rtol=1e-4)


def test_unbin_follows_the_local_within_bin_shape():
    """Left and right halves with opposite within-bin slopes: each keeps its own shape.

    The global mean shape is flat here, so spreading by the mean spectrum
    alone would be off by 0.15 in every fraction; the neighbourhood's counts
    follow each half's shape, without bias beyond the weak prior.
    """
    up = np.tile([1.0, 2.0, 3.0, 4.0], 8)  # 8 bins of 4 channels
    lam = np.empty((32, 40, 24))  # about 4 counts per pixel and bin
    lam[:, :, :12] = up[:, None, None] / 2.5
    lam[:, :, 12:] = up[::-1].copy()[:, None, None] / 2.5
    raw = np.random.default_rng(7).poisson(lam).astype(np.float32)
    b = energy_binning(32, 10.0, 40.0)
    truth_bins = bin_energy(lam.astype(np.float32), b)
    out = unbin_energy(truth_bins, raw, b)
    frac = out / np.repeat(truth_bins, 4, axis=0)
    left = frac[:, :, :9].mean(axis=(1, 2)).reshape(8, 4).mean(0)
    right = frac[:, :, 15:].mean(axis=(1, 2)).reshape(8, 4).mean(0)
    np.testing.assert_allclose(left, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    np.testing.assert_allclose(right, [0.4, 0.3, 0.2, 0.1], atol=0.01)


def test_unbin_checks_shapes():
    b = EnergyBinning(4, 8, 10.0)
    with pytest.raises(ValueError, match="E = 2"):
        unbin_energy(np.zeros((3, 2, 2)), np.zeros((8, 2, 2)), b)
    with pytest.raises(ValueError, match="scan shape"):
        unbin_energy(np.zeros((2, 2, 3)), np.zeros((8, 2, 2)), b)


def test_channel_width_ev_from_kev_or_ev_axis():
    s = exspy.signals.EDSTEMSpectrum(np.zeros((2, 2, 16)))
    axis = s.axes_manager.signal_axes[0]
    axis.units, axis.scale = "keV", 0.02
    assert channel_width_ev(s) == pytest.approx(20.0)
    axis.units, axis.scale = "eV", 5.0
    assert channel_width_ev(s) == pytest.approx(5.0)
