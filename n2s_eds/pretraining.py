"""Pretraining the 3D network on simulated acquisitions (``n2s-eds pretrain``).

:class:`PretrainModule` trains a network on the batches of
:class:`~n2s_eds.data.SimulatedDataModule`: patches drawn from many simulated
acquisitions, each with its own count scale, channel energies and exact truth.
The same Bernoulli masks as Noise2Self hide voxels; the hidden voxels are scored
against

* ``"supervised"``: the simulator's expected counts (the truth);
* ``"n2s"``: the counts themselves (Noise2Self, as on a real scan);
* ``"both"``: the mean of the two losses.

Every loss is a mean squared error of counts divided by each sample's count scale
``s`` (its mean count per voxel), so that doses from 1 to 500 counts per pixel weigh
alike. The Noise2Self term's noise floor is about ``1 / s`` per voxel (Poisson
variance over ``s**2``): thousands at 1 count per pixel, where its gradients would be
mostly noise. Each sample's Noise2Self term is therefore weighted by ``min(s, 1)``,
which leaves it an unbiased estimate of that sample's supervised error (plus a
constant) and makes its noise floor about 1. Validation always reports the
supervised error (``val_loss``), so the objectives compare on one scale.

:class:`ExportPretrained` writes the trained network at the end of the run as a
model file (:mod:`n2s_eds.serialization`, optionally stored as float16) that
:mod:`n2s_eds.pretrained` loads.
"""

from __future__ import annotations

import platform
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from .models import MODEL_OPTIONS
from .module import N2SModule, default_optimizer
from .options import MaskingOptions
from .serialization import model_description, model_name, write_model_file

__all__ = ["OBJECTIVES", "PretrainModule", "ExportPretrained"]

#: What the hidden voxels are scored against.
OBJECTIVES = ("supervised", "n2s", "both")


class PretrainModule(N2SModule):
    """Masked-voxel training of a network on simulated batches.

    Parameters
    ----------
    net : torch.nn.Module
        A conditioned :class:`~n2s_eds.models.ConvAutoencoder3D` (it takes the
        channel energies and a count scale per sample).
    objective : {"supervised", "n2s", "both"}
        What the hidden voxels are scored against (see the module docstring).
    mask_rate, replacement, optimizer, val_seed
        As in :class:`~n2s_eds.module.N2SModule` (voxel masks, MSE).
    """

    def __init__(
        self,
        net: nn.Module,
        objective: str = "both",
        mask_rate: float = MaskingOptions.mask_rate,
        replacement: str = MaskingOptions.replacement,
        optimizer: OptimizerCallable = default_optimizer,
        val_seed: int = 1234,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        super().__init__(
            net,
            mask_rate=mask_rate,
            mask_mode="voxel",
            replacement=replacement,
            loss="mse",
            optimizer=optimizer,
            val_seed=val_seed,
        )
        self.hparams["objective"] = objective  # beside N2SModule's (checkpoints keep both)
        self.objective = objective

    def setup(self, stage: str) -> None:  # every batch carries its own cube's data
        self._adapted = True

    def _scaled_losses(self, batch: dict[str, Tensor], generator=None) -> dict[str, Tensor]:
        counts = batch["counts"]
        masked, mask = self.masker(counts, generator=generator)
        scale = batch["scale"].to(counts.dtype).reshape(-1, 1, 1, 1, 1)
        pred = self.net(self._inputs(masked, batch), scale=batch["scale"])
        pred = (pred / scale)[mask]
        weight = scale.clamp_max(1.0).expand_as(counts)[mask]
        out = {"n2s": (weight * (pred - (counts / scale)[mask]) ** 2).mean()}
        if "target" in batch:
            out["supervised"] = ((pred - (batch["target"] / scale)[mask]) ** 2).mean()
        return out

    def masked_loss(self, batch: dict[str, Tensor], generator=None) -> Tensor:
        losses = self._scaled_losses(batch, generator)
        if self.objective == "n2s":
            return losses["n2s"]
        if "supervised" not in losses:
            raise ValueError(f"objective {self.objective!r} needs the batches' 'target'")
        if self.objective == "supervised":
            return losses["supervised"]
        return 0.5 * (losses["n2s"] + losses["supervised"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """The supervised error of the hidden voxels (``val_loss``) with fixed masks,
        whatever the objective, and the Noise2Self loss (``val_n2s_loss``)."""
        gen = torch.Generator(device=batch["counts"].device)
        gen.manual_seed(self.hparams.val_seed + batch_idx)
        losses = self._scaled_losses(batch, gen)
        n = batch["counts"].shape[0]
        self.log("val_loss", losses["supervised"], prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_n2s_loss", losses["n2s"], batch_size=n, sync_dist=True)
        return losses["supervised"]


class ExportPretrained(L.Callback):
    """Write the trained network as a model file when training ends.

    Parameters
    ----------
    path : str
        The file to write (e.g. ``n2s_eds/weights/dcae.pt`` to ship it).
    bin_ev : float
        The canonical energy bin width the network was trained on (recorded so
        that :class:`~n2s_eds.Denoiser` bins a scan the same way).
    half : bool
        Store the weights as float16 (half the size; they load as float32).
    """

    def __init__(self, path: str, bin_ev: float = 20.0, half: bool = True):
        self.path = str(path)
        self.bin_ev = float(bin_ev)
        self.half = bool(half)
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or getattr(trainer, "interrupted", False):
            return
        net = pl_module.net
        data = getattr(trainer.datamodule, "hparams", {})
        record: dict[str, Any] = {
            "pretraining": {
                "objective": getattr(pl_module, "objective", None),
                "steps": int(trainer.global_step),
                "wall_seconds": round(time.perf_counter() - self._t0, 1),
                **{k: data.get(k) for k in ("batch_size", "patch_size", "energy_patch", "seed")},
                "accelerator": type(trainer.accelerator).__name__,
                "devices": int(trainer.num_devices),
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "threads": torch.get_num_threads(),
                "python": sys.version.split()[0],
                "torch": torch.__version__,
            }
        }
        module_opts = {k: pl_module.hparams.get(k) for k in ("mask_rate", "replacement")}
        options = {**module_opts, "mask_mode": "voxel", "bin_ev": self.bin_ev}
        name = model_name(net)
        desc = model_description(
            name,
            {k: getattr(net, k) for k in MODEL_OPTIONS[name].field_names()},
            bool(getattr(net, "guide", False)),
            options,
            int(data.get("seed") or 0),
            record,
        )
        state = {k: (v.half() if self.half and v.is_floating_point() else v) for k, v in
                 net.state_dict().items()}  # fmt: skip
        write_model_file(self.path, desc, state)
        print(f"n2s-eds: pretrained weights written to {self.path}", file=sys.stderr)
