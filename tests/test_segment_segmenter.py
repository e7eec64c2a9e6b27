"""The Segmenter: fit on sparse labels, predict phase maps and probabilities, model files,
bad input refused before training, and phases kept apart on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hyperspy.signals import Signal2D

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.segment import Segmenter, mean_iou, sample_labels, write_labels
from n2s_eds.segment.networks import SegmentationNet, load_encoder
from n2s_eds.segment.pix2pix import PatchDiscriminator, fit_pix2pix
from n2s_eds.segment.training import SparseLabelBatches
from n2s_eds.simulate import phantom, phantom_phases

SHAPE = (40, 40)


@pytest.fixture(scope="module")
def tem():
    ph = phantom("tem", dose=50.0, shape=SHAPE, n_channels=512, seed=2)
    truth, names = phantom_phases("tem", SHAPE, seed=2)
    return ph, truth, names


@pytest.fixture(scope="module")
def fitted(tem):
    ph, truth, names = tem
    labels = sample_labels(truth, 0.03, seed=0)
    seg = Segmenter(steps=25, patch=32).fit(ph.noisy, labels, phase_names=names)
    return seg, labels


def test_predict_gives_phase_map_and_probabilities_on_the_scan_axes(tem, fitted) -> None:
    ph, truth, names = tem
    seg, _ = fitted
    before = ph.noisy.data.copy()
    phases, proba = seg.predict(ph.noisy)
    np.testing.assert_array_equal(ph.noisy.data, before)  # input untouched
    assert isinstance(phases, Signal2D) and phases.data.shape == SHAPE
    assert phases.data.min() >= 0 and phases.data.max() < len(names)
    assert list(phases.metadata.Segmentation.phase_names) == list(names)
    assert phases.metadata.Segmentation.channels == ["C", "Fe", "O", "Pt"]
    nav = ph.noisy.axes_manager.navigation_axes
    for ax_out, ax_in in zip(phases.axes_manager.signal_axes, nav, strict=True):
        assert (ax_out.name, ax_out.scale, ax_out.units) == (ax_in.name, ax_in.scale, ax_in.units)
    assert proba.data.shape == (len(names), *SHAPE)
    np.testing.assert_allclose(proba.data.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.data.argmax(axis=0), phases.data)


def test_pretrained_keeps_phases_apart_and_beats_scratch(tem, fitted) -> None:
    ph, truth, names = tem
    seg, labels = fitted
    pred = seg.predict(ph.noisy).phases.data
    scratch = Segmenter(pretrained=False, steps=25, patch=32).fit(
        ph.noisy, labels, phase_names=names
    )
    pred_scratch = scratch.predict(ph.noisy).phases.data
    away = mean_iou(pred, truth, exclude_boundary=True)
    assert away >= 0.9  # 1.0 measured
    assert mean_iou(pred, truth) > mean_iou(pred_scratch, truth)  # 0.85 against 0.73


def test_save_load_roundtrip(tem, fitted, tmp_path) -> None:
    ph, _, names = tem
    seg, _ = fitted
    path = seg.save(tmp_path / "seg.pt")
    again = Segmenter.load(path)
    assert again.phase_names == names and again.channel_names == seg.channel_names
    np.testing.assert_array_equal(again.predict_proba(ph.noisy), seg.predict_proba(ph.noisy))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InvalidInputError, match="not a readable"):
        Segmenter.load(tmp_path / "junk.pt")


def test_labels_from_an_image_file(tem, tmp_path) -> None:
    ph, truth, names = tem
    labels = sample_labels(truth, 0.03, seed=1)
    write_labels(tmp_path / "labels.png", labels)
    seg = Segmenter(steps=2, patch=32).fit(ph.noisy, tmp_path / "labels.png")
    assert seg.history["labelled_pixels"] == int((labels >= 0).sum())
    assert seg.phase_names == ("phase 0", "phase 1", "phase 2")


def test_images_and_image_stacks(tem) -> None:
    ph, truth, _ = tem
    labels = sample_labels(truth, 0.05, seed=0)
    image = Signal2D(ph.haadf.data.copy())
    seg = Segmenter(steps=2, patch=32).fit(image, labels)
    assert seg.channel_names == ("image",)
    assert seg.predict(image).phases.data.shape == SHAPE
    stack = Signal2D(np.stack([ph.haadf.data, ph.noisy.data.sum(-1).astype(np.float32)]))
    seg = Segmenter(steps=2, patch=32, pretrained=False).fit(stack, labels)
    assert seg.channel_names == ("image 0", "image 1")
    guided = Segmenter(steps=2, patch=32).fit(ph.noisy, labels, haadf=ph.haadf)
    assert guided.channel_names[-1] == "guide"
    with pytest.raises(InvalidInputError, match="channels"):
        guided.predict(ph.noisy)  # trained with the guide image


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full((10, 10), -1), "shape"),
        (np.zeros(SHAPE, int), "single phase"),
        (np.where(np.arange(40)[None, :] < 20, 0, 2) * np.ones(SHAPE, int), "no pixel"),
        (np.full(SHAPE, -2), "-1 for unlabelled"),
    ],
)
def test_bad_labels_are_refused_before_training(tem, monkeypatch, labels, match) -> None:
    ph, _, _ = tem

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(SparseLabelBatches, "__init__", no_training)
    with pytest.raises(InvalidInputError, match=match):
        Segmenter(steps=2).fit(ph.noisy, labels)


def test_bad_options_and_inputs_are_refused(tem) -> None:
    ph, truth, _ = tem
    with pytest.raises(InvalidInputError, match="encoder"):
        Segmenter(encoder="resnet")
    with pytest.raises(InvalidInputError, match="positive"):
        Segmenter(steps=0)
    with pytest.raises(InvalidInputError, match="not trained"):
        Segmenter().predict(ph.noisy)
    bare = ph.noisy.deepcopy()
    del bare.metadata.Sample
    with pytest.raises(InvalidInputError, match="elements"):
        Segmenter(steps=2).fit(bare, sample_labels(truth, 0.05))
    with pytest.raises(InvalidInputError, match="phase names"):
        Segmenter(steps=2).fit(ph.noisy, sample_labels(truth, 0.05), phase_names=["a", "b"])


def test_pretrained_encoder_is_loaded_into_the_trunk() -> None:
    net = SegmentationNet(n_channels=3, n_phases=2)
    before = net.trunk.stem.weight.detach().clone()
    load_encoder(net, "denoiser")
    assert not torch.equal(before, net.trunk.stem.weight)
    x = torch.rand(1, 3, 2, 20, 28)
    assert net(x).shape == (1, 2, 20, 28)


def test_pix2pix_pretraining_runs_and_records_its_objective() -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((48, 48)).astype(np.float32) for _ in range(3)]
    enh = fit_pix2pix(images, steps=2, batch_size=2, patch=32)
    assert enh.history["objective"] == "pix2pix" and enh.history["steps"] == 2
    assert enh.enhance(images[0]).shape == (48, 48)
    logits = PatchDiscriminator()(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 1, 6, 6)
