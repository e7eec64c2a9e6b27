"""`n2s-eds segment IN --labels LABELS -o OUT`: phase maps written, bad input refused first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n2s_eds.cli import main
from n2s_eds.segment import Segmenter, read_labels, sample_labels, write_labels
from n2s_eds.simulate import phantom, phantom_phases

SHAPE = (32, 32)
SEED = 2


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny TEM phantom (.hspy, elements in its metadata), its HAADF, and 5 % labels."""
    folder = tmp_path_factory.mktemp("segment")
    # 256 channels of 40 eV reach 10.1 keV: every line of C, O, Fe, Pt (Pt La 9.44 keV) is in
    noisy, _, haadf = phantom(
        "tem", dose=50, shape=SHAPE, n_channels=256, channel_width_ev=40, seed=SEED
    )
    truth = phantom_phases("tem", SHAPE, seed=SEED)
    files = {
        "scan": folder / "scan.hspy",
        "haadf": folder / "haadf.hspy",
        "labels": folder / "labels.png",
        "labels_npy": folder / "labels.npy",
        "image": folder / "image.npy",
    }
    noisy.save(files["scan"])
    haadf.save(files["haadf"])
    labels = sample_labels(truth.labels, 0.05, seed=0)
    write_labels(files["labels"], labels)
    write_labels(files["labels_npy"], labels)
    np.save(files["image"], np.asarray(haadf.data, dtype=np.float32))
    return files


def test_segment_spectrum_image_to_hspy(scan_files, tmp_path, capsys) -> None:
    import hyperspy.api as hs
    from hyperspy.signals import Signal2D

    assert hs.load(scan_files["scan"]).metadata.Sample.elements == ["C", "Fe", "O", "Pt"]
    out = tmp_path / "phases.hspy"
    proba = tmp_path / "proba.hspy"
    model = tmp_path / "segmenter.pt"
    argv = [
        "segment", str(scan_files["scan"]), "--labels", str(scan_files["labels"]),
        "-o", str(out), "--haadf", str(scan_files["haadf"]), "--steps", "3",
        "--phase-names", "carbon, FePt ,Fe3O4", "--probabilities", str(proba),
        "--save-model", str(model),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    assert "3 phases" in printed and "FePt" in printed and " s" in printed

    phases = hs.load(out)
    assert isinstance(phases, Signal2D)
    assert phases.data.shape == SHAPE
    assert set(np.unique(phases.data)) <= {0, 1, 2}
    assert phases.metadata.Segmentation.phase_names == ["carbon", "FePt", "Fe3O4"]
    assert phases.metadata.Segmentation.channels == ["C", "Fe", "O", "Pt", "guide"]
    assert phases.axes_manager.signal_axes[0].units == "nm"
    for name, count in zip(
        ["carbon", "FePt", "Fe3O4"], np.bincount(phases.data.ravel(), minlength=3), strict=True
    ):
        assert f"{name} {count}" in printed

    p = hs.load(proba)
    assert p.data.shape == (3, *SHAPE)
    np.testing.assert_allclose(p.data.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.data.argmax(axis=0), phases.data)

    seg = Segmenter.load(model)
    assert seg.phase_names == ("carbon", "FePt", "Fe3O4")
    assert seg.steps == 3
    again = seg.predict(hs.load(scan_files["scan"]), hs.load(scan_files["haadf"]))
    np.testing.assert_array_equal(again.phases.data, phases.data)


def test_segment_png_npy_outputs_and_image_input(scan_files, tmp_path, capsys) -> None:
    from skimage.io import imread

    png = tmp_path / "phases.png"
    proba = tmp_path / "proba.npy"
    argv = [
        "segment", str(scan_files["scan"]), "--labels", str(scan_files["labels_npy"]),
        "-o", str(png), "--steps", "3", "--scratch", "--probabilities", str(proba),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "from scratch" in capsys.readouterr().out
    image = imread(png)
    assert image.shape == SHAPE and image.min() >= 1 and image.max() <= 3  # phase k as k + 1
    phases = read_labels(png)
    np.testing.assert_array_equal(np.load(proba).argmax(axis=0), phases)

    # one 2D image (here the HAADF as .npy) is a scan too; the map as phase indices (.npy)
    out = tmp_path / "image_phases.npy"
    argv = [
        "segment", str(scan_files["image"]), "--labels", str(scan_files["labels"]),
        "-o", str(out), "--steps", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    result = np.load(out)
    assert result.shape == SHAPE and result.min() >= 0 and result.max() <= 2
    assert main([*argv, "--seed", "1"]) == 2  # the output exists
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0


@pytest.fixture()
def no_training(monkeypatch):
    """Fail the test if training starts: the errors below must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError("training started before the input was refused")

    monkeypatch.setattr(Segmenter, "fit", fail)


def test_segment_refuses_bad_input_before_training(
    scan_files, tmp_path, capsys, no_training
) -> None:
    wrong = tmp_path / "wrong.png"
    write_labels(wrong, sample_labels(phantom_phases("tem", (24, 32), seed=SEED).labels, 0.05))
    existing = tmp_path / "exists.hspy"
    existing.write_bytes(b"keep")
    scan, labels = str(scan_files["scan"]), str(scan_files["labels"])
    out = tmp_path / "out.hspy"
    cases = [
        (["--labels", str(tmp_path / "none.png"), "-o", str(out)], "label file"),
        (["--labels", str(wrong), "-o", str(out)], "labels have shape (24, 32)"),
        (["--labels", labels, "-o", str(out), "--phase-names", "a,b"], "only 2 phase names"),
        (["--labels", labels, "-o", str(out), "--phase-names", "a,,b"], "empty name"),
        (["--labels", labels, "-o", str(existing)], "already exists"),
        (["--labels", labels, "-o", str(tmp_path / "out.jpg")], ".jpg"),
        (["--labels", labels, "-o", str(out), "--probabilities", str(tmp_path / "p.png")],
         "--probabilities"),
        (["--labels", labels, "-o", str(out), "--save-model", str(out)], "different files"),
        (["--labels", labels, "-o", str(out), "--scratch", "--encoder", "pix2pix"], "--scratch"),
        (["--labels", labels, "-o", str(out), "--haadf", str(tmp_path / "none.hspy")],
         "does not exist"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(["segment", scan, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert "Traceback" not in err
        assert err.strip().count("\n") == 0  # one line
    missing = tmp_path / "none.hspy"
    assert main(["segment", str(missing), "--labels", labels, "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.hspy", "wrong.png"]


def test_segment_usage_and_help(capsys) -> None:
    assert main(["segment", "--help"]) == 0
    assert "--labels" in capsys.readouterr().out
    assert main(["segment", "scan.hspy", "-o", "x.hspy"]) == 2  # --labels is required
    assert main(["segment", "scan.hspy", "--labels", "l.png", "-o", "x.hspy", "--steps", "0"]) == 2
