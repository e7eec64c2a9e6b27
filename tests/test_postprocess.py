"""Tests of n2s_eds.postprocess: count-keeping clipping and un-binning (the inverse of binning)."""

from __future__ import annotations

import numpy as np
import pytest

from n2s_eds.postprocess import clip_keeping_counts, clip_reach, unbin_energy
from n2s_eds.preprocess import EnergyBinning, bin_energy, energy_binning


def poisson_cube(shape: tuple[int, int, int], lam: float = 0.3, seed: int = 0) -> np.ndarray:
    """Sparse low counts (E, Y, X), like a real EDS cube."""
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.float32)


def test_clip_keeps_channel_counts_and_moves_them_only_locally():
    """Clipping negative estimates keeps the total (1 %) and every channel's (2 %), adds few
    counts where an element is absent, and is local (a block with a margin gives the same)."""
    rng = np.random.default_rng(0)
    e, y, x = 6, 40, 40
    truth = np.zeros((e, y, x))
    truth[:, :, :20] = 2.0  # element present on the left half only
    est = (truth + rng.normal(0, 0.5, truth.shape)).astype(np.float32)
    before = est.astype(np.float64)
    out = clip_keeping_counts(est.copy())
    assert out.min() >= 0
    assert out.sum() == pytest.approx(before.sum(), rel=0.01)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), before.sum(axis=(1, 2)), rtol=0.02)
    # zeroing the negatives adds counts where the element is absent (here 14x what the
    # estimate holds there), settling within each pixel still 6x; the local payback 1.6x
    empty = slice(28, None)  # farther than the reach from the element's edge
    held = before[:, :, empty].sum()
    per_pixel = clip_keeping_counts(est.copy(), iterations=0)[:, :, empty].sum()
    assert np.clip(before, 0, None)[:, :, empty].sum() > 10 * held
    assert per_pixel > 4 * held
    assert out[:, :, empty].sum() < 2 * held
    # locality: a block with clip_reach() pixels of margin matches the whole cube inside
    m = clip_reach()
    block = clip_keeping_counts(est[:, 5 : 25 + m, 5 : 25 + m].copy())
    sl = slice(5 + m, 25)
    np.testing.assert_allclose(out[:, sl, sl], block[:, m:20, m:20], rtol=1e-5, atol=1e-6)


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
    import n2s_eds.postprocess as pp

    data = np.random.default_rng(3).poisson(0.5, (9, 10, 70)).astype(np.uint16)  # (Y, X, E)
    raw = np.moveaxis(data, -1, 0)  # strided (E, Y, X) view, as the lazy path passes it
    b = energy_binning(70, 10.0, 30.0)
    binned = bin_energy(raw, b)
    np.testing.assert_array_equal(binned, bin_energy(raw.astype(np.float32), b))
    one = unbin_energy(binned * 0.8, raw, b)
    monkeypatch.setattr(pp, "UNBIN_SLAB", 6)
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
