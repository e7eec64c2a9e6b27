"""Unsupervised phase maps (k-means on element maps, HyperSpy's SVD + k-means), the phase
matching used for scoring, and the per-phase composition."""

from __future__ import annotations

import numpy as np
import pytest
from exspy.signals import EDSTEMSpectrum
from hyperspy.signals import Signal2D

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.segment.cluster import CLUSTER_FEATURES, cluster, hyperspy_clusters, match_phases
from n2s_eds.segment.composition import PhaseComposition, composition_error, phase_composition
from n2s_eds.segment.metrics import mean_iou
from n2s_eds.simulate import phantom, phantom_phases

SMALL = {"shape": (48, 48), "n_channels": 512, "channel_width_ev": 20.0}


@pytest.fixture(scope="module")
def sem():
    """SEM particles at a high dose, with its truth labels (5 phases, all present)."""
    ph = phantom("sem", dose=200.0, seed=0, layout="particles", **SMALL)
    labels, names = phantom_phases("sem", SMALL["shape"], seed=0, layout="particles")
    return ph, labels, names


@pytest.fixture(scope="module")
def tem():
    """TEM core-shell particles on carbon, with its truth labels (film, FePt, Fe3O4)."""
    ph = phantom("tem", dose=20.0, seed=0, layout="core_shell", **SMALL)
    labels, names = phantom_phases("tem", SMALL["shape"], seed=0, layout="core_shell")
    return ph, labels, names


def _snapshot(signal) -> tuple[np.ndarray, dict]:
    return signal.data.copy(), signal.metadata.as_dictionary()


def _unchanged(signal, snapshot) -> None:
    data, metadata = snapshot
    np.testing.assert_array_equal(signal.data, data)
    assert signal.metadata.as_dictionary() == metadata


# --- match_phases ---------------------------------------------------------------------------


def test_match_phases_undoes_a_renumbering() -> None:
    truth = np.repeat(np.arange(3), 8).reshape(4, 6)
    pred = np.array([2, 0, 1])[truth]
    out = match_phases(pred, truth, 3)
    np.testing.assert_array_equal(out, truth)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(pred, np.array([2, 0, 1])[truth])  # input kept


def test_match_phases_maximises_the_summed_iou() -> None:
    # predicted phase 0 overlaps truths 0 and 1 equally; the numbering as it stands is not
    # the best one: predicted 0 -> truth 1 and predicted 1 -> truth 0 score higher
    truth = np.array([0] * 6 + [1] * 4 + [2] * 2)
    pred = np.array([0] * 4 + [1] * 2 + [0] * 4 + [2] * 2)
    out = match_phases(pred, truth, 3)
    scores = {
        perm: mean_iou(np.array(perm)[pred], truth)
        for perm in [(0, 1, 2), (1, 0, 2), (0, 2, 1), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    }
    assert mean_iou(out, truth) == pytest.approx(max(scores.values()))
    assert mean_iou(out, truth) > scores[(0, 1, 2)]


def test_match_phases_errors() -> None:
    truth = np.zeros((4, 4), np.int64)
    with pytest.raises(InvalidInputError, match="shape"):
        match_phases(np.zeros((4, 5), np.int64), truth, 2)
    with pytest.raises(InvalidInputError, match="0 ... 1"):
        match_phases(np.full((4, 4), 2), truth, 2)
    with pytest.raises(InvalidInputError):
        match_phases(np.full((4, 4), 0.5), truth, 2)


# --- cluster --------------------------------------------------------------------------------


def test_cluster_output(sem) -> None:
    ph, labels, names = sem
    before = _snapshot(ph.noisy)
    out = cluster(ph.noisy, 5)
    _unchanged(ph.noisy, before)
    assert isinstance(out, Signal2D)
    assert out.data.shape == (48, 48) and np.issubdtype(out.data.dtype, np.integer)
    assert set(np.unique(out.data)) == set(range(5))
    for name in ("x", "y"):
        a, b = out.axes_manager[name], ph.noisy.axes_manager[name]
        assert (a.size, a.scale, a.offset, a.units) == (b.size, b.scale, b.offset, b.units)
    title = ph.noisy.metadata.General.title
    assert out.metadata.General.title == f"Phases of {title} (k-means, 5 phases)"
    seg = out.metadata.Segmentation
    assert seg.method == "kmeans" and seg.n_phases == 5
    assert list(seg.phase_names) == [f"phase {k}" for k in range(5)]
    assert list(seg.features) == sorted(ph.noisy.metadata.Sample.elements)
    assert seg.feature_scaling == "fractions"
    sizes = np.bincount(out.data.ravel(), minlength=5)
    assert np.all(np.diff(sizes) <= 0)  # phase 0 the largest


def test_cluster_keeps_the_phases_apart(sem) -> None:
    ph, labels, _ = sem
    # measured: mIoU 0.987 (noisy, dose 200) and 1.000 (expected counts)
    for cube in (ph.noisy, ph.truth):
        out = cluster(cube, 5)
        assert mean_iou(match_phases(out, labels, 5), labels) > 0.93


def test_cluster_tem_core_shell(tem) -> None:
    ph, labels, _ = tem
    # measured on the expected counts: fractions 0.876, standardised 0.79, sqrt 0.785
    scores = {f: cluster(ph.truth, 3, features=f) for f in CLUSTER_FEATURES}
    scores = {f: mean_iou(match_phases(out, labels, 3), labels) for f, out in scores.items()}
    assert scores["fractions"] > 0.8
    assert all(v > 0.65 for v in scores.values())


def test_cluster_deterministic_per_seed(sem) -> None:
    ph, _, _ = sem
    a = cluster(ph.noisy, 4, seed=3)
    np.testing.assert_array_equal(a.data, cluster(ph.noisy, 4, seed=3).data)
    assert a.metadata.Segmentation.seed == 3


def test_cluster_lazy_signal_gives_the_same_map(tem) -> None:
    ph, _, _ = tem
    np.testing.assert_array_equal(cluster(ph.noisy.as_lazy(), 3).data, cluster(ph.noisy, 3).data)


def test_cluster_errors(sem) -> None:
    ph, _, _ = sem
    for n in (1, 0, 48 * 48 + 1):
        with pytest.raises(InvalidInputError, match="n_phases"):
            cluster(ph.noisy, n)
    with pytest.raises(InvalidInputError, match="integer"):
        cluster(ph.noisy, 2.5)
    with pytest.raises(InvalidInputError, match="scikit-learn"):
        cluster(ph.noisy, 3, method="gmm")
    with pytest.raises(InvalidInputError, match="features"):
        cluster(ph.noisy, 3, features="pca")
    for bad in (ph.haadf, ph.noisy.inav[0, 0], ph.noisy.data):
        with pytest.raises(InvalidInputError, match="spectrum image"):
            cluster(bad, 3)
    with pytest.raises(InvalidInputError, match="no elements"):
        cluster(EDSTEMSpectrum(np.asarray(ph.noisy.data)), 3)


def test_cluster_more_phases_than_distinct_pixels() -> None:
    flat = phantom("sem", dose=50.0, seed=0, layout="boundary", shape=(12, 12), n_channels=256)
    # the expected counts of a boundary at a pixel edge hold exactly two spectra
    with pytest.raises(InvalidInputError, match="distinct"):
        cluster(flat.truth, 3)
    assert set(np.unique(cluster(flat.truth, 2).data)) == {0, 1}


# --- hyperspy_clusters ----------------------------------------------------------------------


def test_hyperspy_clusters(sem) -> None:
    ph, labels, _ = sem
    before = _snapshot(ph.noisy)
    out = hyperspy_clusters(ph.noisy, 5)
    _unchanged(ph.noisy, before)
    assert isinstance(out, Signal2D) and out.data.shape == (48, 48)
    assert out.axes_manager["x"].scale == ph.noisy.axes_manager["x"].scale
    assert "HyperSpy SVD + k-means, 5 phases" in out.metadata.General.title
    seg = out.metadata.Segmentation
    assert seg.method == "hyperspy_svd_kmeans" and seg.n_components == 6
    assert seg.preprocessing == "norm" and len(seg.phase_names) == 5
    # measured: mIoU 0.979
    assert mean_iou(match_phases(out, labels, 5), labels) > 0.9
    sizes = np.bincount(out.data.ravel(), minlength=5)
    assert np.all(np.diff(sizes) <= 0)


def test_hyperspy_clusters_options_and_errors(tem) -> None:
    ph, labels, _ = tem
    out = hyperspy_clusters(ph.truth, 3, n_components=3, preprocessing=None, seed=1)
    assert out.metadata.Segmentation.preprocessing == "none"
    # measured: 0.82 (norm, the default), 0.79 (unscaled)
    assert mean_iou(match_phases(out, labels, 3), labels) > 0.7
    with pytest.raises(InvalidInputError, match="n_components"):
        hyperspy_clusters(ph.noisy, 3, n_components=0)
    with pytest.raises(InvalidInputError, match="n_components"):
        hyperspy_clusters(ph.noisy, 3, n_components=10_000)
    with pytest.raises(InvalidInputError, match="preprocessing"):
        hyperspy_clusters(ph.noisy, 3, preprocessing="minmax")
    with pytest.raises(InvalidInputError, match="n_phases"):
        hyperspy_clusters(ph.noisy, 1)
    with pytest.raises(InvalidInputError, match="spectrum image"):
        hyperspy_clusters(ph.haadf, 3)
    negative = ph.truth.deepcopy()
    negative.data[0, 0, 100] = -1.0
    with pytest.raises(InvalidInputError, match="negative"):
        hyperspy_clusters(negative, 3)


# --- phase_composition ----------------------------------------------------------------------


def _ones(signal) -> list[float]:
    return [1.0] * len(signal.metadata.Sample.xray_lines)


def test_phase_composition_of_the_truth(tem) -> None:
    ph, labels, names = tem
    before = _snapshot(ph.truth)
    comp = phase_composition(ph.truth, labels, _ones(ph.truth), phase_names=names)
    _unchanged(ph.truth, before)
    assert isinstance(comp, PhaseComposition)
    assert comp.phase_names == names
    assert comp.lines == tuple(ph.truth.metadata.Sample.xray_lines)
    assert comp.elements == tuple(line.split("_")[0] for line in comp.lines)
    assert comp.atomic_percent.shape == (3, len(comp.lines))
    assert comp.pixels == tuple(int(np.count_nonzero(labels == k)) for k in range(3))
    np.testing.assert_allclose(comp.atomic_percent.sum(axis=1), 100.0)
    at = dict(zip(names, comp.atomic_percent, strict=True))
    pt = [comp.lines.index(line) for line in comp.lines if line.startswith("Pt")]
    carbon = comp.lines.index("C_Ka")
    assert at["amorphous carbon"][carbon] > 90.0  # the film is (almost) only carbon
    assert at["amorphous carbon"][pt].sum() < 0.5
    assert at["FePt"][pt].sum() > 5 * at["Fe3O4"][pt].sum()  # Pt in the FePt cores
    # the noisy counts summed over the same pixels give the same major composition
    noisy = phase_composition(ph.noisy, labels, _ones(ph.noisy), phase_names=names)
    err = composition_error(noisy, comp)
    major = comp.atomic_percent >= 20.0
    assert np.nanmax(err[major]) < 0.06  # measured: 3.4 %


def test_phase_composition_takes_a_phase_map(sem) -> None:
    ph, _, _ = sem
    phases = cluster(ph.truth, 5)
    k = {"Al_Ka": 1.0, "Ca_Ka": 1.2, "Fe_Ka": 1.5, "K_Ka": 1.1, "O_Ka": 2.0, "Si_Ka": 1.0}
    comp = phase_composition(ph.truth, phases, k)
    assert comp.phase_names == tuple(phases.metadata.Segmentation.phase_names)
    assert comp.lines == tuple(sorted(k))  # only the lines given, in the signal's order
    assert sum(comp.pixels) == 48 * 48
    np.testing.assert_allclose(comp.atomic_percent.sum(axis=1), 100.0)
    same = phase_composition(ph.truth.as_lazy(), phases.data, k, phase_names=comp.phase_names)
    np.testing.assert_allclose(same.atomic_percent, comp.atomic_percent, rtol=1e-6)
    # a larger k-factor raises its line's share
    more = phase_composition(ph.truth, phases, {**k, "Fe_Ka": 3.0})
    fe = comp.lines.index("Fe_Ka")
    assert np.all(more.atomic_percent[:, fe] > comp.atomic_percent[:, fe])


def test_phase_composition_empty_phase_and_left_out_pixels(tem) -> None:
    ph, labels, names = tem
    partial = labels.copy()
    partial[:, :24] = -1  # pixels left out
    comp = phase_composition(ph.truth, partial, _ones(ph.truth), phase_names=(*names, "gold"))
    assert comp.pixels[3] == 0 and np.all(np.isnan(comp.atomic_percent[3]))
    assert np.all(np.isfinite(comp.atomic_percent[:3]))
    assert sum(comp.pixels) == np.count_nonzero(labels[:, 24:] >= 0)
    table = comp.to_markdown()
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| phase | pixels | C_Ka")
    assert "| gold | 0 | n/a" in table
    assert f"| FePt | {comp.pixels[1]} |" in table


def test_phase_composition_errors(tem) -> None:
    ph, labels, names = tem
    k = _ones(ph.truth)
    with pytest.raises(InvalidInputError, match="shape"):
        phase_composition(ph.truth, labels[:, :40], k)
    with pytest.raises(InvalidInputError, match="integer"):
        phase_composition(ph.truth, labels + 0.5, k)
    with pytest.raises(InvalidInputError, match="phase names"):
        phase_composition(ph.truth, labels, k, phase_names=names[:2])
    with pytest.raises(InvalidInputError, match="k-factors for"):
        phase_composition(ph.truth, labels, k[:-1])
    with pytest.raises(InvalidInputError, match="positive"):
        phase_composition(ph.truth, labels, [0.0] + k[1:])
    with pytest.raises(InvalidInputError, match="not X-ray lines"):
        phase_composition(ph.truth, labels, {"C_Ka": 1.0, "Au_La": 1.0})
    with pytest.raises(InvalidInputError, match="two"):
        phase_composition(ph.truth, labels, {"C_Ka": 1.0})
    with pytest.raises(InvalidInputError, match="sequence"):
        phase_composition(ph.truth, labels, 1.0)
    with pytest.raises(InvalidInputError, match="spectrum image"):
        phase_composition(ph.haadf, labels, k)
    with pytest.raises(InvalidInputError, match="X-ray lines"):
        phase_composition(EDSTEMSpectrum(np.asarray(ph.truth.data)), labels, k)


def test_composition_error() -> None:
    names, lines = ("a", "b"), ("Fe_Ka", "O_Ka")
    ref = PhaseComposition(names, lines, np.array([[40.0, 60.0], [100.0, 0.0]]), (3, 4))
    est = PhaseComposition(names, lines, np.array([[44.0, 57.0], [90.0, 10.0]]), (3, 4))
    np.testing.assert_array_equal(composition_error(ref, ref), [[0.0, 0.0], [0.0, np.nan]])
    np.testing.assert_allclose(composition_error(est, ref), [[0.1, 0.05], [0.1, np.nan]])
    np.testing.assert_allclose(
        composition_error(est.atomic_percent, ref.atomic_percent)[0], [0.1, 0.05]
    )
    other = PhaseComposition(names, ("Fe_Ka", "C_Ka"), ref.atomic_percent, (3, 4))
    with pytest.raises(InvalidInputError, match="different lines"):
        composition_error(est, other)
    with pytest.raises(InvalidInputError, match="shape"):
        composition_error(est.atomic_percent, ref.atomic_percent[:1])
