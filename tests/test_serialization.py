"""Model files and training runs written by earlier versions still load and give the same result.

``tests/data`` keeps two small model files (format 1 with a guide image, format 2 with energy
binning), a training checkpoint of ``n2s-eds fit`` with the run's ``config.yaml``, and what
each denoised from one seeded phantom when it was written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from n2s_eds import Denoiser, InvalidInputError
from n2s_eds.serialization import (
    MODEL_FORMAT_VERSION,
    model_description,
    read_model_file,
    write_model_file,
)
from n2s_eds.simulate import phantom

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def stored():
    ph = phantom("tem", dose=20.0, shape=(16, 16), n_channels=96, channel_width_ev=50.0, seed=5)
    return ph, np.load(DATA / "model_files_expected.npz")


@pytest.mark.parametrize(
    ("name", "key", "guided"),
    [("model_format1_guided.pt", "guided", True), ("model_format2_binned.pt", "binned", False)],
)
def test_stored_model_files_load_and_denoise_as_when_written(stored, name, key, guided):
    ph, expected = stored
    den = Denoiser.load(DATA / name, progress=False)
    assert den.guided is guided
    out = den.denoise(ph.noisy, ph.haadf if guided else None).data
    np.testing.assert_allclose(out, expected[key], rtol=0, atol=1e-5 * expected[key].max())


def test_a_stored_training_run_loads_from_its_checkpoint_and_config(stored):
    ph, expected = stored
    den = Denoiser.from_checkpoint(DATA / "fit_run" / "checkpoints" / "last.ckpt", progress=False)
    assert den.options["patch_size"] == 24 and den.options["batch_size"] == 2
    # a training run holds no processing options: it denoises with today's defaults,
    # the element-map stage included; the network's own output is as when written
    assert den.options["refine_maps"] is True
    den.processing = dataclasses.replace(den.processing, refine_maps=False)
    out = den.denoise(ph.noisy).data
    ref = expected["checkpoint"]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * ref.max())


def test_a_newer_format_is_refused_naming_it(tmp_path):
    src = DATA / "model_format1_guided.pt"
    desc, state = read_model_file(src)
    desc["format_version"] = MODEL_FORMAT_VERSION + 1
    newer = write_model_file(tmp_path / "newer.pt", desc, state)
    with pytest.raises(InvalidInputError, match=f"format {MODEL_FORMAT_VERSION + 1}"):
        Denoiser.load(newer)


def test_a_model_file_holds_only_tensors_and_json(tmp_path):
    path = write_model_file(
        tmp_path / "m.pt",
        model_description("prior_mixture", {}, False, {"bin_ev": None}, 0, {"loss_curve": [1]}),
        {"w": torch.ones(2)},
    )
    payload = torch.load(path, weights_only=True)
    desc = json.loads(payload["description"])
    assert desc["format_version"] == 1 and "bin_ev" not in desc["options"]
    assert "loss_curve" not in desc["training"]
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file, renamed


def test_a_checkpoint_without_its_config_is_refused(tmp_path):
    ckpt = tmp_path / "alone.ckpt"
    shutil.copy(DATA / "fit_run" / "checkpoints" / "last.ckpt", ckpt)
    with pytest.raises(InvalidInputError, match="config.yaml"):
        Denoiser.from_checkpoint(ckpt)
