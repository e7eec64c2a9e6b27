"""Behaviour of the EDS phantoms: classes, axes, metadata, dose, physics, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from exspy.material import elements as elements_db
from exspy.signals import EDSSEMSpectrum, EDSTEMSpectrum
from hyperspy.signals import Signal2D

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.simulate import PHANTOM_ELEMENTS, Phantom, phantom

SMALL = {"shape": (24, 20), "n_channels": 256, "channel_width_ev": 50.0}
DOSE = 20.0


@pytest.fixture(scope="module", params=["tem", "sem"])
def ph(request: pytest.FixtureRequest) -> Phantom:
    return phantom(request.param, dose=DOSE, seed=3, **SMALL)


def _energies(signal) -> np.ndarray:
    return np.asarray(signal.axes_manager.signal_axes[0].axis)


def _kind(p: Phantom) -> str:
    return "tem" if isinstance(p.truth, EDSTEMSpectrum) else "sem"


def test_classes_shapes_and_dtypes(ph: Phantom) -> None:
    cls = EDSTEMSpectrum if _kind(ph) == "tem" else EDSSEMSpectrum
    assert isinstance(ph, Phantom)
    assert type(ph.noisy) is cls and type(ph.truth) is cls
    assert isinstance(ph.haadf, Signal2D)
    assert ph.noisy.data.shape == ph.truth.data.shape == (24, 20, 256)
    assert ph.haadf.data.shape == (24, 20)
    assert np.issubdtype(ph.noisy.data.dtype, np.integer)
    assert ph.noisy.data.min() >= 0
    assert np.issubdtype(ph.truth.data.dtype, np.floating)
    assert ph.truth.data.min() >= 0


def test_axes(ph: Phantom) -> None:
    units = "nm" if _kind(ph) == "tem" else "µm"
    for s in (ph.noisy, ph.truth):
        e = s.axes_manager.signal_axes[0]
        assert e.name == "Energy" and e.units == "keV"
        assert e.scale == pytest.approx(0.05) and e.offset == pytest.approx(-0.1)
        nav = {a.name: a for a in s.axes_manager.navigation_axes}
        assert set(nav) == {"x", "y"}
        assert nav["x"].size == 20 and nav["y"].size == 24
    for name in ("x", "y"):
        cube_axis = ph.truth.axes_manager[name]
        image_axis = ph.haadf.axes_manager[name]
        assert cube_axis.units == image_axis.units == units
        assert cube_axis.scale == image_axis.scale > 0
        assert cube_axis.size == image_axis.size


def test_metadata(ph: Phantom) -> None:
    kind = _kind(ph)
    mic = "TEM" if kind == "tem" else "SEM"
    for s in (ph.noisy, ph.truth):
        md = s.metadata
        assert sorted(md.Sample.elements) == sorted(PHANTOM_ELEMENTS[kind])
        lines = list(md.Sample.xray_lines)
        assert {line.split("_")[0] for line in lines} == set(PHANTOM_ELEMENTS[kind])
        assert "Fe_Ka" in lines
        beam = md.get_item(f"Acquisition_instrument.{mic}.beam_energy")
        assert beam == (200.0 if kind == "tem" else 20.0)
        eds = f"Acquisition_instrument.{mic}.Detector.EDS"
        assert md.get_item(f"{eds}.energy_resolution_MnKa") == 130.0
        assert md.get_item(f"{eds}.live_time") == 0.5
        assert md.General.title
    assert ph.noisy.metadata.General.title != ph.truth.metadata.General.title


def test_dose_is_exact_in_truth_and_matched_by_counts(ph: Phantom) -> None:
    above = _energies(ph.truth) >= 0.2
    truth_dose = ph.truth.data[..., above].astype(np.float64).sum(-1).mean()
    assert truth_dose == pytest.approx(DOSE, rel=1e-5)
    noisy_dose = ph.noisy.data[..., above].sum(-1).mean()
    # 480 pixels of ~Poisson(20) totals: standard error ~0.2 counts.
    assert noisy_dose == pytest.approx(DOSE, abs=1.2)


def test_counts_are_poisson_around_truth(ph: Phantom) -> None:
    t = ph.truth.data.astype(np.float64)
    n = ph.noisy.data.astype(np.float64)
    assert n[t == 0].sum() == 0
    pos = t > 0
    # Pearson chi-square per voxel has mean 1 under Poisson(truth).
    assert np.mean((n[pos] - t[pos]) ** 2 / t[pos]) == pytest.approx(1.0, abs=0.05)


def test_dose_scales_counts() -> None:
    e = None
    means = []
    for dose in (5.0, 50.0):
        p = phantom("tem", dose=dose, **SMALL)
        e = _energies(p.truth)
        means.append(p.truth.data[..., e >= 0.2].astype(np.float64).sum(-1).mean())
    assert means == pytest.approx([5.0, 50.0], rel=1e-5)


def test_seeded_and_deterministic() -> None:
    a = phantom("tem", seed=7, **SMALL)
    b = phantom("tem", seed=7, **SMALL)
    c = phantom("tem", seed=8, **SMALL)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.data, y.data)
    assert not np.array_equal(a.truth.data, c.truth.data)
    assert not np.array_equal(a.noisy.data, c.noisy.data)


def test_line_peaks_at_line_channels(ph: Phantom) -> None:
    energies = _energies(ph.truth)
    total = ph.truth.data.astype(np.float64).sum(axis=(0, 1))
    lines = list(ph.truth.metadata.Sample.xray_lines)
    assert lines
    for line in lines:
        element, name = line.split("_")
        energy = float(elements_db[element].Atomic_properties.Xray_lines[name]["energy (keV)"])
        channel = int(np.argmin(np.abs(energies - energy)))
        lo, hi = max(channel - 2, 0), channel + 3
        peak = lo + int(np.argmax(total[lo:hi]))
        assert abs(peak - channel) <= 1, line
        # A real peak: it rises above the continuum a few channels away.
        assert total[peak] > 1.05 * min(total[channel - 5], total[channel + 5]), line


def test_zero_peak_lies_below_0p2_kev() -> None:
    with_zero = phantom("tem", zero_peak=True, **SMALL)
    without = phantom("tem", zero_peak=False, **SMALL)
    e = _energies(with_zero.truth)
    zero = (with_zero.truth.data.astype(np.float64) - without.truth.data).sum(axis=(0, 1))
    assert np.all(zero[e >= 0.2] == 0)
    assert abs(e[np.argmax(zero)]) < 1e-9
    per_pixel = zero.sum() / (24 * 20)
    assert per_pixel == pytest.approx(DOSE * 0.15 / 0.85, rel=1e-4)
    total = with_zero.truth.data.astype(np.float64).sum(axis=(0, 1))
    assert e[np.argmax(total)] < 0.2


def test_haadf_correlates_with_xray_counts(ph: Phantom) -> None:
    counts = ph.truth.data.astype(np.float64).sum(-1).ravel()
    r = np.corrcoef(ph.haadf.data.ravel(), counts)[0, 1]
    assert r > 0.5


def test_haadf_has_high_snr() -> None:
    p = phantom("tem", **SMALL)
    counts = p.truth.data.sum(-1)
    support = counts <= counts.min() * (1 + 1e-6)
    assert support.sum() > 20
    h = p.haadf.data[support]
    assert h.std() / h.mean() < 0.01


@pytest.mark.parametrize("kind", ["tem", "sem"])
def test_haadf_thickness_step_leaves_xrays_alone(kind: str) -> None:
    plain = phantom(kind, **SMALL)
    step = phantom(kind, haadf_thickness_step=True, **SMALL)
    np.testing.assert_array_equal(plain.truth.data, step.truth.data)
    np.testing.assert_array_equal(plain.noisy.data, step.noisy.data)
    y0, y1, x0, x1 = step.haadf.metadata.Simulation.thickness_step_region
    inside = np.zeros((24, 20), dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert inside.any() and (~inside).any()
    ratio = step.haadf.data / plain.haadf.data
    assert np.all(ratio[inside] > 1.05)
    assert np.allclose(ratio[~inside], 1.0, rtol=0.02)


def test_haadf_step_region_spectra_match_surroundings() -> None:
    p = phantom("tem", haadf_thickness_step=True, **SMALL)
    y0, y1, x0, x1 = p.haadf.metadata.Simulation.thickness_step_region
    inside = np.zeros((24, 20), dtype=bool)
    inside[y0:y1, x0:x1] = True
    t = p.truth.data
    counts = t.sum(-1)
    support = counts <= counts.min() * (1 + 1e-6)  # bare film, no particle
    assert (support & inside).sum() > 5 and (support & ~inside).sum() > 5
    ref = t[support & ~inside][0]
    np.testing.assert_allclose(
        t[support & inside], np.broadcast_to(ref, t[support & inside].shape), rtol=1e-6
    )
    h = p.haadf.data
    assert h[support & inside].mean() > 1.5 * h[support & ~inside].mean()


def test_layouts_and_sizes() -> None:
    for kind in ("tem", "sem"):
        p = phantom(kind, layout="particles", **SMALL)
        assert p.truth.data.shape == (24, 20, 256)
    big = phantom("tem", shape=(48, 40), n_channels=64, channel_width_ev=200.0)
    counts = big.truth.data.sum(-1)
    # Particles are resolved: many pixels are well above the bare support.
    assert (counts > 2 * counts.min()).sum() > 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "stem"},
        {"layout": "onion"},
        {"dose": 0.0},
        {"dose": float("nan")},
        {"shape": (4, 4)},
        {"n_channels": 2},
        {"channel_width_ev": -1.0},
        {"live_time": 0.0},
    ],
)
def test_invalid_input_raises(kwargs: dict) -> None:
    args = {**SMALL, **kwargs}
    with pytest.raises(InvalidInputError):
        phantom(**args)
