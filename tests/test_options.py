"""Tests of n2s_eds.options: one source of defaults, validation that names the field."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from n2s_eds import Denoiser, InvalidInputError
from n2s_eds.data import CubeDataModule
from n2s_eds.models import Autoencoder3DOptions, PriorMixtureOptions
from n2s_eds.module import N2SModule
from n2s_eds.options import (
    MaskingOptions,
    ProcessingOptions,
    RuntimeOptions,
    TrainingOptions,
    model_options,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SECTIONS = (TrainingOptions, MaskingOptions, ProcessingOptions, RuntimeOptions)


def defaults_of(func) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_denoiser_takes_every_option_with_the_dataclass_default():
    sig = defaults_of(Denoiser.__init__)
    for cls in SECTIONS:
        for name, value in cls().to_dict().items():
            assert sig[name] == value, f"Denoiser({name}=...) default differs from {cls.__name__}"
    named = {n for cls in SECTIONS for n in cls.field_names()}
    assert set(sig) == named | {"model", "model_options"}


def test_lightning_classes_take_their_defaults_from_the_options():
    module, data = defaults_of(N2SModule.__init__), defaults_of(CubeDataModule.__init__)
    for name, value in MaskingOptions().to_dict().items():
        assert module[name] == value
    for name in ("patch_size", "batch_size"):
        assert data[name] == getattr(TrainingOptions, name)
    assert (data["low_kev"], data["high_kev"]) == (
        ProcessingOptions.low_kev,
        ProcessingOptions.high_kev,
    )


def test_the_default_preset_is_the_api_default():
    """configs/default.yaml says it is the training of denoise(): its values are the defaults."""
    cfg = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    model, data = cfg["model"], cfg["data"]
    for name in ("mask_rate", "mask_mode", "replacement", "loss"):
        assert model[name] == getattr(MaskingOptions, name), name
    assert model["optimizer"]["init_args"]["lr"] == TrainingOptions.lr
    assert cfg["trainer"]["max_steps"] == TrainingOptions.steps
    assert data["train_patches"] == TrainingOptions.steps * TrainingOptions.batch_size
    for name in ("patch_size", "batch_size"):
        assert data[name] == getattr(TrainingOptions, name), name
    assert (
        (data["low_kev"], data["high_kev"])
        == (0.2, 20.0)
        == (
            ProcessingOptions.low_kev,
            ProcessingOptions.high_kev,
        )
    )
    assert model["net"]["class_path"] == "n2s_eds.models.PriorMixture"
    assert set(model["net"]["init_args"]) <= {"guide", *PriorMixtureOptions.field_names()}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": -1}, "steps"),
        ({"patch_size": 0}, "patch_size"),
        ({"holdout": 1.0}, "holdout"),
        ({"mask_rate": 0.0}, "mask_rate"),
        ({"loss": "l1"}, "loss"),
        ({"replacement": "noise"}, "replacement"),
        ({"window_channels": 0}, "window_channels"),
        ({"bin_ev": -5}, "bin_ev"),
        ({"high_kev": 0.1}, "high_kev"),
        ({"tile": 0}, "tile"),
        ({"device": "tpu"}, "device"),
        ({"steps": "many"}, "steps"),
    ],
)
def test_a_bad_option_is_refused_naming_it(kwargs, field):
    with pytest.raises(InvalidInputError, match=field):
        Denoiser(**kwargs)


def test_model_options_from_a_dict_a_dataclass_or_nothing():
    assert model_options("prior_mixture", None) == PriorMixtureOptions()
    typed = model_options("prior_mixture", {"blend_ev": 0.0, "guided_filters": [[1, 0.01]]})
    assert typed.blend_ev == 0.0 and typed.guided_filters == ((1, 0.01),)
    assert model_options("autoencoder3d", Autoencoder3DOptions()) == Autoencoder3DOptions()
    with pytest.raises(InvalidInputError, match="blend_evv"):
        model_options("prior_mixture", {"blend_evv": 0})
    with pytest.raises(InvalidInputError, match="takes PriorMixtureOptions"):
        model_options("prior_mixture", Autoencoder3DOptions())
    with pytest.raises(InvalidInputError, match="unknown model"):
        model_options("unet", None)


def test_a_denoiser_prints_every_option():
    den = Denoiser(steps=7, bin_ev=40, model_options=PriorMixtureOptions(blend_ev=0.0))
    text = repr(den)
    for name in ("blend_ev=0.0", "steps=7", "bin_ev=40.0", "mask_mode='spectrum'", "untrained"):
        assert name in text
    assert den.options["energy_patch"] is None  # "auto" resolved for prior_mixture
    assert Denoiser(model="autoencoder3d").training.energy_patch == 128


def test_plain_numbers_are_converted_and_round_trip():
    opts = TrainingOptions(steps=12.0, lr=1)
    assert opts.steps == 12 and isinstance(opts.steps, int) and isinstance(opts.lr, float)
    assert TrainingOptions.from_dict(opts.to_dict()) == opts
    with pytest.raises(InvalidInputError, match="unknown TrainingOptions"):
        TrainingOptions.from_dict({"step": 3})
