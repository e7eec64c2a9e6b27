"""Real ``n2s-eds fit`` runs: resume after SIGKILL, DDP on two CPU ranks, seeds, saved config.

Runs on a tiny phantom with a handful of steps, configured by ``configs/quick_cpu.yaml``
plus an override file per test. Where the process matters (SIGKILL, DDP) they are
subprocesses of the installed command (``n2s-eds fit ...``), as a user would run them;
elsewhere they run in-process through :func:`n2s_eds.cli.cli_main`.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from n2s_eds.cli import cli_main, tensorboard_available
from n2s_eds.data import (
    TRAIN_STREAM,
    CubeSample,
    PatchDataset,
    PatchKeySampler,
)
from n2s_eds.data.patches import resume_position

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "configs" / "quick_cpu.yaml"
TIMEOUT = 600  # seconds per subprocess: generous, the machine may be shared

# 20 steps, batches of 2 from 10 patches per epoch: epochs end at steps 5, 10, 15, 20;
# checkpoints and validation every 4 steps, so the checkpoint of step 8 is mid-epoch.
STEPS, EVERY, PATCHES, BATCH = 20, 4, 10, 2


class RankProbe(L.Callback):
    """Test helper: every rank saves its identity, first batch, losses and final weights.

    It also saves the spectral basis the rank computes from the data on its own (DDP
    broadcasts rank 0's buffers, which would hide a basis that differs between ranks).

    Imported by the ``fit`` subprocesses (``tests`` is put on their ``PYTHONPATH``).

    Parameters
    ----------
    folder : str
        Where ``rank<N>.pt`` is written at the end of training.
    """

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.losses: list[float] = []
        self.first_batch: torch.Tensor | None = None
        self.own_basis: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = copy.deepcopy(pl_module.net)
        net.adapt(*trainer.datamodule.adapt_data())
        self.own_basis = net.basis.detach().cpu().clone()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        if self.first_batch is None:
            self.first_batch = batch["counts"].detach().cpu().clone()
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dist = torch.distributed
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "pid": os.getpid(),
                "backend": dist.get_backend() if dist.is_initialized() else None,
                "strategy": type(trainer.strategy).__name__,
                "first_batch": self.first_batch,
                "own_basis": self.own_basis,
                "losses": self.losses,
                "state_dict": {
                    k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()
                },
                "buffers": {k: v.detach().cpu().clone() for k, v in pl_module.named_buffers()},
            },
            self.folder / f"rank{trainer.global_rank}.pt",
        )


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tensors are tiny, and threads that spin-wait for each other on
    busy shared cores cost ten times more than they bring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory) -> Path:
    """A tiny phantom spectrum image saved as .hspy."""
    from n2s_eds.simulate import phantom

    ph = phantom(shape=(16, 16), n_channels=128, channel_width_ev=80.0, dose=30.0, seed=1)
    path = tmp_path_factory.mktemp("cube") / "cube.hspy"
    ph.noisy.save(path)
    return path


def _overrides(
    folder: Path,
    cube: Path,
    name: str,
    *,
    callbacks: list[dict] | None = None,
    tensorboard: bool = False,
    **trainer: Any,
) -> Path:
    """Write a config file that shrinks the quick_cpu preset to a few-second run."""
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": EVERY, "save_last": True, "save_top_k": -1},
    }
    config = {
        "trainer": {
            "max_steps": STEPS,
            "val_check_interval": EVERY,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(folder), "name": name},
            },
            "callbacks": [checkpoint, *(callbacks or [])],
            **trainer,
        },
        "data": {
            "path": str(cube),
            "patch_size": 12,
            "batch_size": BATCH,
            "train_patches": PATCHES,
            "val_patches": 4,
        },
        "model": {"optimizer": {"init_args": {"lr": 0.003}}},
        "tensorboard": tensorboard,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _argv(config: Path, *extra: str) -> list[str]:
    """``n2s-eds fit`` (the installed command, else ``python -m n2s_eds.cli``) with a config."""
    script = Path(sys.executable).parent / "n2s-eds"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "n2s_eds.cli"]
    return [
        *command,
        "fit",
        "--config",
        str(PRESET),
        "--config",
        str(config),
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "tests"), str(REPO), env.get("PYTHONPATH")) if p
    )
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"  # see _one_thread
    return env


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stderr[-4000:]}"
    return proc


def _cli_fit(
    cube: Path, folder: Path, name: str, seed: int = 0, *extra: str, **options: Any
) -> Any:
    """An in-process ``fit`` (faster than a subprocess where the process does not matter)."""
    config = _overrides(folder, cube, name, **options)
    return cli_main(
        ["fit", "--config", str(PRESET), "--config", str(config), "--seed_everything", str(seed)]
        + list(extra)
    )


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of a CSVLogger's metrics.csv, numbers only."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _val_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), r["val_loss"]) for r in _metrics(run_dir) if "val_loss" in r]


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _description(run_dir: Path) -> dict[str, Any]:
    return json.loads(torch.load(run_dir / "model.pt", weights_only=True)["description"])


def _wait_for_checkpoint(proc: subprocess.Popen, folder: Path, step: int) -> None:
    """Wait until the checkpoint of ``step`` and a last.ckpt written after it exist."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        found = list(folder.glob(f"*-step={step}.ckpt"))
        last = folder / "last.ckpt"
        if found and last.is_file() and last.stat().st_mtime >= found[0].stat().st_mtime:
            return
        time.sleep(0.01)
    pytest.fail(f"no checkpoint of step {step} in {folder} after {TIMEOUT} s")


def test_resume_after_sigkill_matches_uninterrupted_run(cube_file, tmp_path):
    """SIGKILL mid-epoch, ``--ckpt_path last``: same trajectory as a run never stopped."""
    ref_dir = Path(_cli_fit(cube_file, tmp_path, "ref").trainer.log_dir)  # in-process: faster

    config = _overrides(tmp_path, cube_file, "run")
    ckpt_dir = tmp_path / "run" / "version_0" / "checkpoints"
    proc = subprocess.Popen(
        _argv(config),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_checkpoint(proc, ckpt_dir, 2 * EVERY)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not list(ckpt_dir.glob(f"*-step={STEPS}.ckpt"))  # killed before the end
    assert not (tmp_path / "run" / "version_0" / "model.pt").exists()
    killed_at = _ckpt(ckpt_dir / "last.ckpt")["global_step"]
    assert killed_at >= 2 * EVERY and killed_at % EVERY == 0 and killed_at < STEPS
    assert killed_at % (PATCHES // BATCH) != 0  # a mid-epoch checkpoint: the hard case

    resumed = _run(_argv(config, "--ckpt_path", "last"), tmp_path)
    run_dir = tmp_path / "run" / "version_1"  # a new run folder; "last" found in version_0
    assert f"resuming from {ckpt_dir / 'last.ckpt'}" in resumed.stderr
    desc = _description(run_dir)
    assert desc["training"]["resumed_from"] == str(ckpt_dir / "last.ckpt")
    assert desc["training"]["steps"] == STEPS
    # it went on from the checkpoint: no step before it was trained again
    train_steps = [int(r["step"]) for r in _metrics(run_dir) if "train_loss" in r]
    assert min(train_steps) == killed_at and max(train_steps) == STEPS - 1
    assert len(train_steps) == STEPS - killed_at
    assert _ckpt(run_dir / "checkpoints" / "last.ckpt")["global_step"] == STEPS

    ref_val = _val_losses(ref_dir)
    res_val = _val_losses(run_dir)
    assert ref_val[-1][0] == res_val[-1][0] == STEPS - 1
    assert abs(res_val[-1][1] - ref_val[-1][1]) <= 0.02 * ref_val[-1][1]
    # same patches, masks and optimizer state after the restart: the same weights
    ref_w = _ckpt(ref_dir / "checkpoints" / "last.ckpt")["state_dict"]
    res_w = _ckpt(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in ref_w.items():
        torch.testing.assert_close(res_w[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_ddp_two_cpu_ranks(cube_file, tmp_path):
    """``--trainer.strategy=ddp`` on two CPU processes: two ranks, equal weights, lower loss."""
    probe = {"class_path": "test_training_runs.RankProbe", "init_args": {"folder": "probe"}}
    config = _overrides(tmp_path, cube_file, "ddp", callbacks=[probe])
    argv = _argv(
        config,
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        f"--trainer.max_steps={2 * EVERY}",
        "--trainer.val_check_interval=2",
    )
    _run(argv, tmp_path)
    ranks = [torch.load(tmp_path / "probe" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [p["rank"] for p in ranks] == [0, 1]
    assert all(p["world_size"] == 2 and p["backend"] == "gloo" for p in ranks)
    assert all(p["strategy"] == "DDPStrategy" for p in ranks)
    assert ranks[0]["pid"] != ranks[1]["pid"]  # two processes
    # each rank trained on its own shard of the patches
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    assert len(ranks[0]["losses"]) == len(ranks[1]["losses"]) == 2 * EVERY
    # identical weights and buffers (the data-dependent spectral basis included) at the end
    for name in ("state_dict", "buffers"):
        a, b = ranks[0][name], ranks[1][name]
        assert a.keys() == b.keys() and len(a) > 0
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}[{key}] differs between ranks"
    assert ranks[0]["buffers"]["net.basis"].numel() > 0
    assert torch.equal(ranks[0]["own_basis"], ranks[1]["own_basis"])
    assert torch.equal(ranks[1]["own_basis"], ranks[1]["buffers"]["net.basis"])
    # the masked-voxel validation loss (averaged over both ranks) fell
    val = _val_losses(tmp_path / "ddp" / "version_0")
    assert len(val) == EVERY
    assert val[-1][1] < val[0][1]
    assert _description(tmp_path / "ddp" / "version_0")["training"]["world_size"] == 2


def test_same_seed_same_weights_and_config_saved(cube_file, tmp_path):
    """Two CPU fits with one seed give identical weights; another seed does not."""
    weights = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cli = _cli_fit(cube_file, tmp_path, name, seed, max_steps=6)
        weights.append({k: v.detach().clone() for k, v in cli.model.state_dict().items()})
        run_dir = Path(cli.trainer.log_dir)
        # the resolved config beside the checkpoints, with what this run was given
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert saved["seed_everything"] == seed
        assert saved["trainer"]["max_steps"] == 6
        data = saved["data"].get("init_args", saved["data"])  # subclass mode or not
        assert data["path"] == str(cube_file) and data["train_patches"] == PATCHES
        assert saved["model"]["net"]["class_path"] == "n2s_eds.models.PriorMixture"
    a, b, c = weights
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.skipif(not tensorboard_available(), reason="neither tensorboard nor tensorboardX")
def test_tensorboard_beside_csv_when_installed(cube_file, tmp_path):
    """With TensorBoard installed, its logs go into the CSV logger's run folder."""
    cli = _cli_fit(cube_file, tmp_path, "tb", tensorboard=True, max_steps=2, val_check_interval=2)
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger", "TensorBoardLogger"]
    run_dir = Path(cli.trainer.log_dir)
    assert run_dir == tmp_path / "tb" / "version_0"  # one run folder for both
    assert [r["val_loss"] for r in _metrics(run_dir) if "val_loss" in r]
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and any(b"val_loss" in e.read_bytes() for e in events)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_csv_only_without_tensorboard(cube_file, tmp_path, monkeypatch):
    """Without TensorBoard, the run goes on with the CSV logger alone."""
    from n2s_eds.cli import lightning_cli

    monkeypatch.setattr(lightning_cli, "tensorboard_available", lambda: False)
    cli = _cli_fit(cube_file, tmp_path, "csv", tensorboard=True, max_steps=1)
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger"]
    assert not (Path(cli.trainer.log_dir) / "tensorboard").exists()


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def adapted_net(small_phantom) -> tuple[torch.nn.Module, Any]:
    """A small untrained PriorMixture adapted to a 48-channel, 20 x 8 pixel cube."""
    from n2s_eds.models import PriorMixture
    from n2s_eds.preprocess import prepare_cube

    cube = prepare_cube(small_phantom.noisy, None).cube[:48, :, :8].copy()
    net = PriorMixture(max_rank=4, width=8, depth=2)
    net.adapt(torch.from_numpy(cube))
    return net, cube


@pytest.mark.parametrize(
    ("progress", "terminal", "shown"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_inference_progress_bar(progress, terminal, shown, adapted_net, monkeypatch):
    """A tile bar on a terminal when asked; none in logs or when turned off."""
    from n2s_eds.inference import predict_cube

    net, cube = adapted_net
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    out = predict_cube(net, cube, tile=12, progress=progress)  # two tiles
    assert out.shape == cube.shape
    text = stream.getvalue()
    assert ("denoising" in text and "tile" in text) if shown else text == ""


def test_ckpt_path_last_starts_afresh_then_finds_the_earlier_run(cube_file, tmp_path):
    """``--ckpt_path last``: nothing to resume starts at 0; a second run goes on from it."""
    first = _cli_fit(cube_file, tmp_path, "last", 0, "--ckpt_path", "last", max_steps=2)
    assert first.trainer.global_step == 2 and first.trainer.ckpt_path is None
    assert _description(tmp_path / "last" / "version_0")["training"]["resumed_from"] is None
    second = _cli_fit(cube_file, tmp_path, "last", 0, "--ckpt_path", "last", max_steps=3)
    expected = tmp_path / "last" / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(second.trainer.log_dir) == tmp_path / "last" / "version_1"
    assert second.trainer.ckpt_path == str(expected)
    assert second.trainer.global_step == 3
    steps = [int(r["step"]) for r in _metrics(tmp_path / "last" / "version_1") if "train_loss" in r]
    assert steps == [2]  # one step, the third


def test_patch_key_sampler_epochs_shards_and_skips():
    """Keys ``epoch * length + i``: new patches each epoch, disjoint shards, a resumed start."""
    ds = PatchDataset([CubeSample(np.ones((6, 8, 8)))], 4, None, 10, seed=0, stream=TRAIN_STREAM)
    assert list(PatchKeySampler(ds, epoch=2)) == list(range(20, 30))
    r0 = list(PatchKeySampler(ds, num_replicas=2, rank=0, epoch=1))
    r1 = list(PatchKeySampler(ds, num_replicas=2, rank=1, epoch=1))
    assert len(r0) == len(r1) == 5 and sorted(r0 + r1) == list(range(10, 20))
    resumed = PatchKeySampler(ds, epoch=1, skip=4)
    assert len(resumed) == 10  # Lightning counts the whole epoch
    assert list(resumed) == list(range(14, 20))
    resumed.set_epoch(1)  # Lightning sets the resumed epoch again: still skipped
    assert list(resumed) == list(range(14, 20))
    resumed.set_epoch(2)
    assert list(resumed) == list(range(20, 30))
    # a key is always the same patch, the train stream is not the validation set
    counts = np.random.default_rng(0).poisson(3.0, (6, 8, 8))
    ds = PatchDataset([CubeSample(counts)], 4, None, 10, seed=0, stream=TRAIN_STREAM)
    val = PatchDataset([CubeSample(counts)], 4, None, 10, seed=0)
    assert torch.equal(ds[123]["counts"], ds[123]["counts"])
    assert not all(torch.equal(ds[i]["counts"], val[i]["counts"]) for i in range(10))


@pytest.mark.parametrize(
    ("epoch", "step", "accumulate", "limit", "expected"),
    [
        (0, 0, 1, 1.0, (0, 0)),  # a fresh run
        (1, 8, 1, 1.0, (1, 3)),  # 5 batches per epoch: 3 done in epoch 1
        (1, 10, 1, 1.0, (2, 0)),  # saved on the last batch of epoch 1: epoch 2 starts
        (1, 4, 2, 1.0, (1, 2)),  # 3 steps per epoch (2 + 2 + 1 batches)
        (1, 4, 1, 3, (1, 1)),  # limit_train_batches=3
        (0, 2, 1, 0.5, (1, 0)),  # limit_train_batches=0.5: 2 batches per epoch
    ],
)
def test_resume_position(epoch, step, accumulate, limit, expected):
    """Epoch and batches done in it, from a restored trainer's counters (5 batches/epoch)."""
    trainer = SimpleNamespace(
        current_epoch=epoch,
        global_step=step,
        accumulate_grad_batches=accumulate,
        limit_train_batches=limit,
    )
    assert resume_position(trainer, 5) == expected
    assert resume_position(None, 5) == (0, 0)


def test_patches_crop_the_target_exactly_like_the_counts():
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (12, 10, 9)).astype(np.float32)
    target = np.arange(counts.size, dtype=np.float32).reshape(counts.shape)
    ds = PatchDataset([CubeSample(counts, target=target)], 4, 6, 8, seed=0)
    for i in range(8):
        item = ds[i]
        t = item["target"][0].numpy()
        assert t.shape == item["counts"][0].shape == (6, 4, 4)
        # the arange target tells where the patch came from: the counts must match there
        e0, y0, x0 = np.unravel_index(int(t[0, 0, 0]), counts.shape)
        np.testing.assert_array_equal(
            item["counts"][0].numpy(), counts[e0 : e0 + 6, y0 : y0 + 4, x0 : x0 + 4]
        )
    with pytest.raises(ValueError, match="target shape"):
        CubeSample(counts, target=target[:-1])
    with pytest.raises(ValueError, match="every cube has a target"):
        PatchDataset([CubeSample(counts, target=target), CubeSample(counts)], 4, 6, 8, seed=0)
