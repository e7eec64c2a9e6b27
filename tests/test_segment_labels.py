"""Phase labels (checks, files, sparse draws), the phase-map scores and the scan channels."""

from __future__ import annotations

import numpy as np
import pytest
from exspy.signals import EDSTEMSpectrum
from hyperspy.signals import Signal2D
from skimage.io import imread, imsave

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.segment.features import element_maps, scan_channels
from n2s_eds.segment.labels import check_labels, read_labels, sample_labels, write_labels
from n2s_eds.segment.metrics import boundary_band, iou_per_phase, mean_iou
from n2s_eds.simulate import PHANTOM_ELEMENTS, phantom

LABELS = np.array(
    [
        [-1, 0, 0, -1],
        [1, -1, -1, 2],
        [-1, -1, 2, -1],
    ]
)


# --- check_labels ---------------------------------------------------------------------------


def test_check_labels_accepts_and_copies() -> None:
    out, n = check_labels(LABELS.astype(np.int16), (3, 4))
    assert n == 3
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, LABELS)
    out[0, 0] = 5
    assert LABELS[0, 0] == -1
    named, n_named = check_labels(LABELS, (3, 4), phase_names=("a", "b", "c"))
    assert n_named == 3
    floats, _ = check_labels(LABELS.astype(np.float32), (3, 4))
    np.testing.assert_array_equal(floats, LABELS)


def test_check_labels_other_shape() -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        check_labels(LABELS, (4, 3))


def test_check_labels_phase_without_labels() -> None:
    gap = np.where(LABELS == 1, 2, LABELS)  # phases 0 and 2, none of 1
    with pytest.raises(InvalidInputError, match=r"\[1\]"):
        check_labels(gap, (3, 4))
    with pytest.raises(InvalidInputError, match="gold"):
        check_labels(LABELS, (3, 4), phase_names=("a", "b", "c", "gold"))


def test_check_labels_more_phases_than_names() -> None:
    with pytest.raises(InvalidInputError, match="phase 2"):
        check_labels(LABELS, (3, 4), phase_names=("a", "b"))


def test_check_labels_single_phase() -> None:
    single = np.where(LABELS > 0, 0, LABELS)
    with pytest.raises(InvalidInputError, match="single phase"):
        check_labels(single, (3, 4))


def test_check_labels_below_minus_one() -> None:
    bad = LABELS.copy()
    bad[0, 0] = -2
    with pytest.raises(InvalidInputError, match="-2"):
        check_labels(bad, (3, 4))


def test_check_labels_non_integer_floats() -> None:
    bad = LABELS.astype(np.float64)
    bad[0, 1] = 0.5
    with pytest.raises(InvalidInputError, match="integers"):
        check_labels(bad, (3, 4))
    bad[0, 1] = np.nan
    with pytest.raises(InvalidInputError, match="integers"):
        check_labels(bad, (3, 4))
    with pytest.raises(InvalidInputError, match="dtype"):
        check_labels(LABELS.astype(str), (3, 4))


# --- label files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
def test_label_file_round_trip(tmp_path, suffix: str) -> None:
    path = write_labels(tmp_path / f"labels{suffix}", LABELS)
    assert path.exists()
    np.testing.assert_array_equal(read_labels(path), LABELS)
    assert read_labels(path).dtype == np.int64
    if suffix != ".npy":
        # in image files 0 is unlabelled and k is phase k - 1
        np.testing.assert_array_equal(imread(path), LABELS + 1)


def test_label_image_painted_by_hand(tmp_path) -> None:
    painted = np.zeros((5, 6), np.uint8)
    painted[1, 1], painted[3, 4] = 1, 3
    imsave(tmp_path / "hand.png", painted, check_contrast=False)
    labels = read_labels(tmp_path / "hand.png")
    assert labels[1, 1] == 0 and labels[3, 4] == 2
    assert np.count_nonzero(labels == -1) == painted.size - 2


def test_colour_label_image_is_rejected(tmp_path) -> None:
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[1, 1] = (255, 0, 0)
    imsave(tmp_path / "colour.png", rgb, check_contrast=False)
    with pytest.raises(InvalidInputError, match="one channel"):
        read_labels(tmp_path / "colour.png")


def test_label_file_errors(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_labels(tmp_path / "missing.png")
    (tmp_path / "labels.txt").write_text("0 1")
    with pytest.raises(InvalidInputError, match=".txt"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(InvalidInputError):
        write_labels(tmp_path / "labels.jpg", LABELS)
    with pytest.raises(InvalidInputError):
        write_labels(tmp_path / "labels.png", LABELS - 1)  # -2 is not a label
    assert not (tmp_path / "labels.png").exists()


# --- sample_labels --------------------------------------------------------------------------


def _truth() -> np.ndarray:
    truth = np.zeros((40, 50), np.int64)
    truth[:, 25:] = 1
    truth[:2, :5] = 2  # a small phase of 10 pixels
    return truth


def test_sample_labels_stratified() -> None:
    truth = _truth()
    labels = sample_labels(truth, 0.05, seed=0)
    assert labels.shape == truth.shape and labels.dtype == np.int64
    assert set(np.unique(labels)) == {-1, 0, 1, 2}
    picked = labels >= 0
    np.testing.assert_array_equal(labels[picked], truth[picked])
    counts = np.bincount(labels[picked], minlength=3)
    sizes = np.bincount(truth.ravel(), minlength=3)
    assert counts[0] == round(0.05 * sizes[0]) and counts[1] == round(0.05 * sizes[1])
    assert counts[2] == 3  # the minimum for the small phase
    assert np.count_nonzero(picked) == pytest.approx(0.05 * truth.size, rel=0.1)


def test_sample_labels_deterministic_per_seed() -> None:
    truth = _truth()
    a = sample_labels(truth, 0.02, seed=7)
    np.testing.assert_array_equal(a, sample_labels(truth, 0.02, seed=7))
    assert np.any(a != sample_labels(truth, 0.02, seed=8))


def test_sample_labels_small_phase_and_errors() -> None:
    truth = _truth()
    labels = sample_labels(truth, 0.01, seed=0, min_per_phase=20)
    assert np.count_nonzero(labels == 2) == 10  # all of it when it has fewer
    assert np.count_nonzero(labels == 0) == 20
    np.testing.assert_array_equal(sample_labels(truth, 1.0), truth)
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidInputError, match="fraction"):
            sample_labels(truth, fraction)


# --- boundary_band, iou_per_phase, mean_iou -------------------------------------------------


def test_boundary_band_by_hand() -> None:
    halves = np.array([[0, 0, 1, 1]] * 3)
    np.testing.assert_array_equal(boundary_band(halves), np.array([[False, True, True, False]] * 3))
    assert boundary_band(halves, width=2).all()
    corner = np.zeros((4, 4), np.int64)
    corner[0, 0] = 1
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True  # the diagonal neighbour counts
    np.testing.assert_array_equal(boundary_band(corner), expected)
    assert not boundary_band(np.zeros((3, 3))).any()


def test_iou_per_phase_by_hand() -> None:
    pred = np.array([[0, 0, 1], [1, 1, 1]])
    truth = np.array([[0, 1, 1], [1, 1, 2]])
    np.testing.assert_allclose(iou_per_phase(pred, truth, 3), [1 / 2, 3 / 5, 0.0])
    four = iou_per_phase(pred, truth, 4)
    assert np.isnan(four[3])  # a phase in neither map
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    masked = iou_per_phase(pred, truth, 3, mask)
    np.testing.assert_allclose(masked[:2], [1 / 2, 3 / 4])
    assert np.isnan(masked[2])
    assert mean_iou(pred, truth) == pytest.approx((1 / 2 + 3 / 5 + 0) / 3)
    with pytest.raises(InvalidInputError, match="shape"):
        iou_per_phase(pred, truth.T, 3)


def test_mean_iou_away_from_the_boundary() -> None:
    truth = np.array([[0, 0, 0, 1, 1, 1]] * 3)
    pred = truth.copy()
    pred[:, 2] = 1  # wrong along the boundary
    pred[0, 0] = 1  # and once away from it
    assert mean_iou(pred, truth) == pytest.approx((5 / 9 + 9 / 13) / 2)
    assert mean_iou(pred, truth, exclude_boundary=True) == pytest.approx((5 / 6 + 6 / 7) / 2)
    assert mean_iou(truth, truth) == 1.0


# --- scan channels --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return phantom("sem", dose=30.0, shape=(16, 14), n_channels=256, channel_width_ev=40.0, seed=2)


def test_scan_channels_of_a_spectrum_image(tiny) -> None:
    ch = scan_channels(tiny.noisy)
    assert ch.names == tuple(sorted(PHANTOM_ELEMENTS["sem"]))
    assert ch.data.shape == (len(ch.names), 16, 14) and ch.data.dtype == np.float32
    assert all(ch.counts)
    names, maps = element_maps(tiny.noisy)
    assert names == ch.names
    np.testing.assert_array_equal(maps, ch.data)
    # each element map holds the counts of its lines' windows: integers, mostly non-zero
    assert np.all(maps == np.round(maps)) and np.all(maps.sum(axis=(1, 2)) > 0)
    truth = scan_channels(tiny.truth)
    assert not any(truth.counts)  # expected counts are not integers


def test_scan_channels_with_a_guide(tiny) -> None:
    ch = scan_channels(tiny.noisy, tiny.haadf)
    assert ch.names[-1] == "guide" and ch.names[:-1] == tuple(sorted(PHANTOM_ELEMENTS["sem"]))
    assert ch.counts[-1] is False and all(ch.counts[:-1])
    np.testing.assert_allclose(ch.data[-1], tiny.haadf.data)
    with pytest.raises(InvalidInputError):
        scan_channels(tiny.noisy, np.ones((5, 5), np.float32))


def test_scan_channels_of_an_image(tiny) -> None:
    image = Signal2D(tiny.haadf.data * 0.5 + 0.25)
    ch = scan_channels(image)
    assert ch.names == ("image",) and ch.counts == (False,)
    assert ch.data.shape == (1, 16, 14)
    guided = scan_channels(image, tiny.haadf.data)
    assert guided.names == ("image", "guide") and guided.data.shape == (2, 16, 14)
    with pytest.raises(InvalidInputError, match="shape"):
        scan_channels(image, np.ones((3, 3)))
    bad = image.deepcopy()
    bad.data[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        scan_channels(bad)


def test_scan_channels_errors(tiny) -> None:
    bare = EDSTEMSpectrum(np.asarray(tiny.noisy.data))  # no elements named
    with pytest.raises(InvalidInputError, match="no elements"):
        scan_channels(bare)
    with pytest.raises(InvalidInputError, match="spectrum image"):
        scan_channels(tiny.noisy.inav[0, 0])  # one spectrum
    with pytest.raises(InvalidInputError):
        scan_channels(np.zeros((16, 14, 256)))
    with pytest.raises(InvalidInputError):
        element_maps(tiny.haadf)
