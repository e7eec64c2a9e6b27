"""Behaviour of the EDS phantoms: classes, axes, metadata, dose, physics, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from exspy.material import elements as elements_db
from exspy.signals import EDSSEMSpectrum, EDSTEMSpectrum
from hyperspy.signals import Signal2D

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.simulate import PHANTOM_ELEMENTS, Phantom, phantom, phantom_maps

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


# Fingerprints of the phantoms as they were before the "boundary" layout was added: the
# existing layouts must stay bit-identical (same draws from the seed, same arithmetic).
# (kind, layout, sha256[:16] of the noisy int32 counts and of the HAADF, truth sum, counts sum)
FINGERPRINTS = [
    ("tem", "core_shell", "39a3ac6bb47091ee", "a90ffa24b2921910", 24094.504771040527, 24202),
    ("tem", "particles", "0366e4bb57a5279d", "57fcd3da7ddef7a1", 24094.574466823364, 24111),
    ("sem", "core_shell", "a05e671aff2d2746", "8380666108ea1059", 24094.117624959068, 24129),
    ("sem", "particles", "beb718c06947b5d6", "19995d9accacbc86", 24094.117688021048, 24012),
]


def _sha(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(("kind", "layout", "noisy", "haadf", "total", "counts"), FINGERPRINTS)
def test_existing_layouts_unchanged(
    kind: str, layout: str, noisy: str, haadf: str, total: float, counts: int
) -> None:
    p = phantom(kind, 20, (32, 32), n_channels=256, channel_width_ev=50.0, seed=0, layout=layout)
    assert int(p.noisy.data.sum()) == counts
    assert float(p.truth.data.sum(dtype=np.float64)) == pytest.approx(total, rel=1e-9)
    assert _sha(p.noisy.data) == noisy
    assert _sha(p.haadf.data) == haadf


def test_default_tem_phantom_unchanged() -> None:
    p = phantom(kind="tem", dose=20, shape=(32, 32), seed=0)
    assert _sha(p.noisy.data) == "c2c03afaae0a49c7"
    assert _sha(p.haadf.data) == "e15feb841c033e04"
    assert float(p.truth.data.sum(dtype=np.float64)) == pytest.approx(24112.747296715614, rel=1e-9)


@pytest.mark.parametrize("kind", ["tem", "sem"])
def test_boundary_layout_is_a_vertical_step(kind: str) -> None:
    p = phantom(kind, layout="boundary", **SMALL)
    masses, phases = phantom_maps(kind, (24, 20), seed=0, layout="boundary")
    assert p.truth.metadata.Simulation.boundary_x == 9.5
    assert set(masses) == set(PHANTOM_ELEMENTS[kind])
    assert len(phases) == (3 if kind == "tem" else 2)
    left, right = slice(0, 10), slice(10, 20)
    one_side, both = 0, 0
    for el, m in masses.items():
        # Constant on each side, rows all alike: a straight vertical step edge.
        assert np.ptp(m[:, left]) == 0 and np.ptp(m[:, right]) == 0, el
        a, b = m[0, 0], m[0, -1]
        assert a != b, el
        one_side += (a == 0) != (b == 0)
        both += a > 0 and b > 0
    assert one_side >= 2 and both >= 2
    # The label image: the left phase fills the left half exactly.
    first = phases["FePt" if kind == "tem" else "K-feldspar"]
    label = first / first.max()
    np.testing.assert_array_equal(label, np.broadcast_to(np.arange(20) < 10, (24, 20)))
    # Spectra follow the maps: identical within each side, different across.
    t = p.truth.data
    np.testing.assert_allclose(t[:, left], np.broadcast_to(t[0, 0], t[:, left].shape), rtol=1e-6)
    np.testing.assert_allclose(t[:, right], np.broadcast_to(t[0, -1], t[:, right].shape), rtol=1e-6)
    assert not np.allclose(t[0, 0], t[0, -1], rtol=0.05)
    haadf = p.haadf.data
    assert abs(haadf[:, left].mean() / haadf[:, right].mean() - 1.0) > 0.1


def test_boundary_tem_elements() -> None:
    masses, _ = phantom_maps("tem", (16, 16), layout="boundary")
    left, right = (
        {el: m[0, 0] for el, m in masses.items()},
        {el: m[0, -1] for el, m in masses.items()},
    )
    assert left["Pt"] > 0 and right["Pt"] == 0
    assert left["O"] == 0 and right["O"] > 0
    assert 0 < left["Fe"] != right["Fe"] > 0
    assert 0 < left["C"] != right["C"] > 0


def test_boundary_odd_width_halves_the_middle_column() -> None:
    _, phases = phantom_maps("sem", (8, 9), layout="boundary")
    np.testing.assert_array_equal(phases["K-feldspar"][0], [1, 1, 1, 1, 0.5, 0, 0, 0, 0])
    np.testing.assert_array_equal(phases["andradite"][0], [0, 0, 0, 0, 0.5, 1, 1, 1, 1])


def test_boundary_deterministic_with_seed() -> None:
    a = phantom("tem", layout="boundary", seed=5, **SMALL)
    b = phantom("tem", layout="boundary", seed=5, **SMALL)
    c = phantom("tem", layout="boundary", seed=6, **SMALL)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.data, y.data)
    np.testing.assert_array_equal(a.truth.data, c.truth.data)  # no random draw in the layout
    assert not np.array_equal(a.noisy.data, c.noisy.data)


@pytest.mark.parametrize("layout", ["core_shell", "particles"])
def test_phantom_maps_match_the_phantom(layout: str) -> None:
    p = phantom("tem", layout=layout, seed=3, **SMALL)
    masses, phases = phantom_maps("tem", (24, 20), seed=3, layout=layout)
    # Bare film where no particle element is present: the lowest, identical spectra.
    bare = (masses["Fe"] == 0) & (masses["Pt"] == 0) & (masses["O"] == 0)
    counts = p.truth.data.sum(-1)
    assert bare.any() and (~bare).any()
    np.testing.assert_array_equal(bare, counts <= counts.min() * (1 + 1e-6))
    np.testing.assert_allclose(phases["amorphous carbon"], 5.0)
    with pytest.raises(InvalidInputError):
        phantom_maps("tem", (24, 20), layout="onion")
