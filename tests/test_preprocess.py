"""Tests of n2s_eds.preprocess: energy window and energy binning set in eV."""

from __future__ import annotations

import exspy
import numpy as np
import pytest

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.preprocess import (
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


def test_channel_width_ev_from_kev_or_ev_axis():
    s = exspy.signals.EDSTEMSpectrum(np.zeros((2, 2, 16)))
    axis = s.axes_manager.signal_axes[0]
    axis.units, axis.scale = "keV", 0.02
    assert channel_width_ev(s) == pytest.approx(20.0)
    axis.units, axis.scale = "eV", 5.0
    assert channel_width_ev(s) == pytest.approx(5.0)
