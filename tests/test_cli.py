"""The ``n2s-eds`` command: LightningCLI fit/validate/predict, denoise, demo/bench help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from n2s_eds import Denoiser
from n2s_eds.cli import cli_main, main

REPO = Path(__file__).resolve().parent.parent
#: The presets of `n2s-eds pretrain` (simulated data, no file).
PRETRAIN_CONFIGS = sorted((REPO / "configs").glob("pretrain*.yaml"))
CONFIGS = sorted(set((REPO / "configs").glob("*.yaml")) - set(PRETRAIN_CONFIGS))


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory) -> Path:
    """A tiny phantom spectrum image (with its HAADF) saved as .hspy."""
    from n2s_eds.simulate import phantom

    ph = phantom(shape=(16, 16), n_channels=128, channel_width_ev=80.0, dose=30.0, seed=1)
    folder = tmp_path_factory.mktemp("cube")
    path = folder / "cube.hspy"
    ph.noisy.save(path)
    ph.haadf.save(folder / "haadf.hspy")
    return path


def _fit_args(cube: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "quick_cpu.yaml"),
        "--data.path",
        str(cube),
        "--data.patch_size",
        "12",
        "--data.train_patches",
        "6",
        "--data.val_patches",
        "2",
        "--trainer.max_steps",
        "4",  # a multiple of the checkpoint interval: last.ckpt holds the final weights
        "--trainer.val_check_interval",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(root),
        "--trainer.callbacks.init_args.every_n_train_steps",
        "2",
        *extra,
    ]


@pytest.fixture(scope="module")
def fitted(cube_file, tmp_path_factory):
    """One short ``fit`` run shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    cli = cli_main(_fit_args(cube_file, root))
    return cli, Path(cli.trainer.log_dir)


def test_fit_writes_checkpoint_config_and_model(fitted, cube_file):
    cli, log_dir = fitted
    assert cli.trainer.global_step == 4
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert (log_dir / "config.yaml").is_file()
    assert (log_dir / "metrics.csv").is_file()  # CSVLogger
    model_file = log_dir / "model.pt"
    assert model_file.is_file() and cli.model_file == model_file
    payload = torch.load(model_file, weights_only=True)
    desc = json.loads(payload["description"])
    assert desc["model"] == "prior_mixture" and desc["options"]["steps"] == 4
    den = Denoiser.load(model_file, progress=False)
    import hyperspy.api as hs

    s = hs.load(cube_file)
    out = den.denoise(s)
    assert out.data.shape == s.data.shape and np.isfinite(out.data).all()


def test_validate_runs(fitted, cube_file):
    _, log_dir = fitted
    args = _fit_args(cube_file, log_dir / "val")
    args[0] = "validate"
    args += ["--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt")]
    cli = cli_main(args)
    assert "val_loss" in cli.trainer.callback_metrics


def test_predict_writes_denoised_cube(fitted, cube_file, tmp_path):
    _, log_dir = fitted
    out = tmp_path / "pred.hspy"
    args = _fit_args(cube_file, tmp_path / "logs")
    args[0] = "predict"
    args += ["--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"), "--output", str(out)]
    assert main(args) == 0
    import hyperspy.api as hs

    s, d = hs.load(cube_file), hs.load(out)
    assert type(d) is type(s) and d.data.shape == s.data.shape


def _same_signal(a, b) -> None:
    assert type(a) is type(b)
    assert a.data.shape == b.data.shape
    for ax, bx in zip(a.axes_manager._axes, b.axes_manager._axes, strict=True):
        assert (ax.name, ax.units, ax.size) == (bx.name, bx.units, bx.size)
        assert ax.scale == pytest.approx(bx.scale) and ax.offset == pytest.approx(bx.offset)


def test_denoise_trains_on_the_file(cube_file, tmp_path, capsys):
    import hyperspy.api as hs

    out = tmp_path / "den.hspy"
    assert main(["denoise", str(cube_file), "-o", str(out), "--steps", "2", "-q"]) == 0
    _same_signal(hs.load(cube_file), hs.load(out))
    # refuses to overwrite, before training
    assert main(["denoise", str(cube_file), "-o", str(out), "--steps", "2", "-q"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["denoise", str(cube_file), "-o", str(out), "--steps", "0", "-q", "--overwrite"]) == 0
    )


def test_denoise_with_model_file(fitted, cube_file, tmp_path):
    import hyperspy.api as hs

    _, log_dir = fitted
    out = tmp_path / "den_model.hspy"
    rc = main(["denoise", str(cube_file), "-o", str(out), "--model", str(log_dir / "model.pt")])
    assert rc == 0
    _same_signal(hs.load(cube_file), hs.load(out))


def test_denoise_with_checkpoint(fitted, cube_file, tmp_path, capsys):
    """A training checkpoint is applied without retraining, like the model file of the run."""
    import hyperspy.api as hs

    _, log_dir = fitted
    ckpts = log_dir / "checkpoints"
    outs = {}
    for name in ("last.ckpt", "epoch=0-step=2.ckpt"):
        out = tmp_path / f"{name}.hspy"
        assert (
            main(
                ["denoise", str(cube_file), "-o", str(out), "--checkpoint", str(ckpts / name), "-q"]
            )
            == 0
        )
        outs[name] = hs.load(out)
    _same_signal(hs.load(cube_file), outs["last.ckpt"])
    via_model = tmp_path / "model.hspy"
    assert (
        main(
            [
                "denoise",
                str(cube_file),
                "-o",
                str(via_model),
                "--model",
                str(log_dir / "model.pt"),
                "-q",
            ]
        )
        == 0
    )
    # the last checkpoint holds the weights fit exported; the step-2 one holds earlier weights
    np.testing.assert_allclose(outs["last.ckpt"].data, hs.load(via_model).data, rtol=1e-6)
    assert not np.allclose(outs["last.ckpt"].data, outs["epoch=0-step=2.ckpt"].data)

    # the run config given explicitly, from a copy of the checkpoint outside its run folder
    lone = tmp_path / "elsewhere" / "last.ckpt"
    lone.parent.mkdir()
    lone.write_bytes((ckpts / "last.ckpt").read_bytes())
    out = tmp_path / "explicit.hspy"
    assert main(["denoise", str(cube_file), "-o", str(out), "--checkpoint", str(lone), "-q"]) == 2
    assert "config.yaml" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "denoise",
                str(cube_file),
                "-o",
                str(out),
                "--checkpoint",
                str(lone),
                "--config",
                str(log_dir / "config.yaml"),
                "-q",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(hs.load(out).data, outs["last.ckpt"].data, rtol=1e-6)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda ckpt, d: d / "missing.ckpt", "does not exist"),
        (lambda ckpt, d: _truncated(ckpt, d), "not a readable Lightning checkpoint"),
    ],
)
def test_denoise_bad_checkpoint(fitted, cube_file, tmp_path, make, needle, capsys):
    _, log_dir = fitted
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_bytes((log_dir / "config.yaml").read_bytes())
    bad = make(log_dir / "checkpoints" / "last.ckpt", run / "checkpoints")
    out = tmp_path / "x.hspy"
    assert main(["denoise", str(cube_file), "-o", str(out), "--checkpoint", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def _truncated(ckpt: Path, folder: Path) -> Path:
    bad = folder / "truncated.ckpt"
    data = ckpt.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad


def test_checkpoint_of_a_foreign_network_is_refused(fitted, cube_file, tmp_path, capsys):
    _, log_dir = fitted
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    text = (log_dir / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("n2s_eds.models.PriorMixture", "os.system"))
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes((log_dir / "checkpoints" / "last.ckpt").read_bytes())
    rc = main(
        ["denoise", str(cube_file), "-o", str(tmp_path / "x.hspy"), "--checkpoint", str(ckpt), "-q"]
    )
    assert rc == 2
    assert "not one of n2s_eds.models" in capsys.readouterr().err


def test_denoise_with_haadf_guide(cube_file, tmp_path):
    out = tmp_path / "guided.hspy"
    haadf = cube_file.parent / "haadf.hspy"
    rc = main(
        ["denoise", str(cube_file), "-o", str(out), "--haadf", str(haadf), "--steps", "1", "-q"]
    )
    assert rc == 0 and out.is_file()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["denoise", "missing.hspy", "-o", "x.hspy"], "file not found"),
        (["denoise", "IN.hspy", "-o", "x.hspy", "--model", "nope.pt"], "does not exist"),
        (
            [
                "fit",
                "--data.path",
                "missing.hspy",
                "--model.net",
                "n2s_eds.models.PriorMixture",
                "--trainer.max_steps",
                "1",
                "--trainer.logger",
                "false",
            ],
            "file not found",
        ),
    ],
)
def test_bad_input_exit_code_2(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0  # one line


def test_usage_error_exit_code_2(capsys):
    assert main(["denoise"]) == 2
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize(
    "command", [[], ["fit"], ["validate"], ["predict"], ["test"], ["denoise"], ["demo"]]
)
def test_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_the_benchmark_is_not_a_command_of_the_installed_package(capsys):
    """The benchmark harness lives in the source checkout (``make bench``), not in the wheel."""
    assert main(["bench"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_configs_parse_and_point_to_existing_data(config, monkeypatch):
    """Every preset parses and instantiates; its data file exists relative to the repo."""
    import yaml

    monkeypatch.chdir(REPO)
    data = yaml.safe_load(config.read_text())
    section = data["data"].get("init_args", data["data"])  # data.class_path presets
    assert (REPO / section["path"]).exists() or pytest.skip(f"{section['path']} absent")
    assert "seed_everything" in data
    cli = cli_main(
        ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.precision", "32"],
        run=False,
    )
    assert cli.model.net is not None
    assert any(type(c).__name__ == "ModelCheckpoint" for c in cli.trainer.callbacks)
    assert type(cli.trainer.logger).__name__ == "CSVLogger"


@pytest.mark.parametrize("config", PRETRAIN_CONFIGS, ids=[c.stem for c in PRETRAIN_CONFIGS])
def test_pretrain_configs_parse_and_export_the_weights(config, monkeypatch):
    """Every pretraining preset builds a conditioned guided network, the simulated data and
    a callback that writes the weights."""
    from n2s_eds.cli.pretrain import pretrain_main
    from n2s_eds.data import SimulatedDataModule

    monkeypatch.chdir(REPO)
    cli = pretrain_main(
        ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.precision", "32"],
        run=False,
    )
    assert cli.model.net.conditioned and cli.model.net.guide
    assert isinstance(cli.datamodule, SimulatedDataModule)
    assert any(type(c).__name__ == "ExportPretrained" for c in cli.trainer.callbacks)
    assert type(cli.trainer.logger).__name__ == "CSVLogger"


def test_guide_mismatch_names_the_field(cube_file, tmp_path, capsys):
    args = _fit_args(cube_file, tmp_path, "--model.net.init_args.guide", "true")
    assert main(args) == 2
    assert "data.use_guide" in capsys.readouterr().err


def test_fit_guided_with_haadf_file(cube_file, tmp_path):
    haadf = cube_file.parent / "haadf.hspy"
    args = _fit_args(cube_file, tmp_path, "--model.net.init_args.guide", "true")
    args += ["--data.haadf", str(haadf), "--trainer.max_steps", "1"]
    cli = cli_main(args)
    den = Denoiser.load(cli.model_file, progress=False)
    assert den.guided is True
