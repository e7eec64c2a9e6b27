"""The LightningModule: wires an injected network, masker and loss.

It holds no data-specific state of its own: the network's per-cube data
(input scale, spectral basis) are set by ``net.adapt`` from the datamodule
at ``setup``.

The training masks of a step are drawn from a generator seeded by
``(mask_seed, global_step, rank)``, not from the global random state, so a
run resumed from a checkpoint draws the same masks as an uninterrupted one,
and the ranks of a distributed run draw different ones.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from .losses import masked_mse, masked_poisson_nll
from .masking import BernoulliMasker, replace_masked
from .ops import window_sums
from .options import MaskingOptions, TrainingOptions

__all__ = ["N2SModule", "LOSSES"]

LOSSES = {"mse": masked_mse, "poisson": masked_poisson_nll}


def default_optimizer(params) -> torch.optim.Optimizer:
    """Adam with the default learning rate of :class:`~n2s_eds.options.TrainingOptions`."""
    return torch.optim.Adam(params, lr=TrainingOptions.lr)


class N2SModule(L.LightningModule):
    """Noise2Self training of a denoising network on hidden voxels.

    Parameters
    ----------
    net : torch.nn.Module
        A network from :mod:`n2s_eds.models`, mapping (B, C, E, Y, X) to
        (B, 1, E, Y, X); C = 2 when ``net.guide`` is true.
    mask_rate : float
        Fraction of voxels hidden in each training step.
    mask_mode : {"auto", "voxel", "spectrum"}
        Hide single voxels or whole spectra; ``"auto"`` takes the network's
        ``default_mask_mode`` (whole spectra for ``PriorMixture``, voxels
        otherwise).
    replacement : {"local_mean", "zero", "neighbor"}
        What a hidden voxel is replaced by in the network's input.
    loss : {"mse", "poisson"}
        Masked MSE or masked Poisson negative log-likelihood.
    optimizer : callable
        Builds the optimizer from the parameters (LightningCLI's
        ``OptimizerCallable``); Adam with lr 1e-3 by default.
    window_loss : float
        Weight of a second self-supervised term: the squared error of the
        hidden voxels' residuals summed over sliding energy windows of
        ``window_channels`` channels (stride half a window), divided by the
        window length. Element maps are such sums, so this term scores what
        the maps see (errors that add up coherently along energy) and not only
        single voxels. The term is an unbiased estimate of the windowed error
        (plus a constant) only if the estimate of a hidden voxel uses none of
        the hidden pixel's counts in the same window. ``PriorMixture`` does use
        them, slightly, through the projection of the pixel's own spectrum (the
        voxel loss allows it: only the voxel's own count is excluded), so the
        term is biased towards copying those counts (``benchmarks/ablations.md``).
        0 (the default) leaves it out.
    window_channels : int
        Length of those energy windows, in channels.
    val_seed : int
        Seed of the validation masks.
    mask_seed : int or None
        Seed of the training masks; ``None`` takes the seed of torch's global
        random generator when the module is built (the one
        ``seed_everything`` sets, the same on every rank).
    """

    def __init__(
        self,
        net: nn.Module,
        mask_rate: float = MaskingOptions.mask_rate,
        mask_mode: str = MaskingOptions.mask_mode,
        replacement: str = MaskingOptions.replacement,
        loss: str = MaskingOptions.loss,
        optimizer: OptimizerCallable = default_optimizer,
        window_loss: float = MaskingOptions.window_loss,
        window_channels: int = MaskingOptions.window_channels,
        val_seed: int = 1234,
        mask_seed: int | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if window_loss < 0 or int(window_channels) < 1:
            raise ValueError(
                f"window_loss must be >= 0 and window_channels >= 1, got {window_loss}, "
                f"{window_channels}"
            )
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        if mask_mode == "auto":
            mask_mode = getattr(net, "default_mask_mode", "voxel")
        self.masker = BernoulliMasker(mask_rate, mask_mode, replacement)
        self.loss_fn = LOSSES[loss]
        self.optimizer_factory = optimizer
        self._mask_seed = int(torch.initial_seed() if mask_seed is None else mask_seed)
        self._adapted = False

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not self._adapted and dm is not None and hasattr(dm, "adapt_data"):
            cube, guide = dm.adapt_data()
            # a resumed run loads its trained weights after setup: the start is then replaced
            self.adapt(cube, guide, channel_ev=getattr(dm, "channel_ev", None), init=stage == "fit")

    def adapt(
        self,
        cube: Tensor,
        guide: Tensor | None = None,
        channel_ev: float | None = None,
        init: bool = False,
        energy_kev: Tensor | None = None,
    ) -> None:
        """Set the network's per-cube data from a (E, Y, X) count cube.

        ``channel_ev`` is the width of one channel of ``cube`` in eV, when known;
        ``energy_kev`` (E,) the energy of each of its channels (a conditioned
        network needs it, see :class:`~n2s_eds.models.ConvAutoencoder3D`).
        With ``init=True`` (before training from scratch), a network that has an
        ``init_weights(cube, guide)`` method also sets its starting weights from the
        cube (see :meth:`n2s_eds.models.PriorMixture.init_weights`).
        """
        cube = cube.to(self.device)
        guide = None if guide is None else guide.to(self.device)
        if hasattr(self.net, "adapt"):
            conditioned = energy_kev is not None and getattr(self.net, "conditioned", False)
            extra = {"energy_kev": energy_kev} if conditioned else {}
            self.net.adapt(cube, guide, channel_ev=channel_ev, **extra)
        if init and hasattr(self.net, "init_weights"):
            self.net.init_weights(
                cube,
                guide,
                window_loss=float(self.hparams.get("window_loss", 0.0)),
                window_channels=int(self.hparams.get("window_channels", 16)),
            )
        self._adapted = True

    def _inputs(self, counts: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The network's input: counts, the guide broadcast along energy when the network
        takes one, and the channel energies when it is conditioned: the batch's
        ``"energy"`` (B, E), or the patch's channels (``"e0"``, its first channel) of
        the energies the network was adapted to."""
        parts = [counts]
        b, _, e, y, x = counts.shape
        if getattr(self.net, "guide", False):
            guide = batch.get("guide")
            if guide is None:
                raise ValueError("this network expects a guide image but the batch has none")
            parts.append(guide[:, :, None].expand(-1, -1, e, -1, -1).to(counts.dtype))
        if getattr(self.net, "conditioned", False):
            energy = batch.get("energy")
            if energy is None:
                table = self.net.energy_kev
                if table.numel() == 0:
                    raise ValueError("this network needs the channel energies: adapt it first")
                e0 = batch.get("e0", torch.zeros(b, dtype=torch.long, device=counts.device))
                idx = e0.to(torch.long).reshape(-1, 1) + torch.arange(e, device=counts.device)
                energy = table.to(counts.device)[idx.clamp_max(table.numel() - 1)]
            parts.append(energy.to(counts.dtype)[:, None, :, None, None].expand(b, 1, e, y, x))
        return torch.cat(parts, dim=1) if len(parts) > 1 else counts

    def masked_loss(self, batch: dict[str, Tensor], generator=None) -> Tensor:
        """Hide voxels, predict them, and return the loss on the hidden ones.

        The hidden voxels are scored against their counts, or, when the batch
        holds a ``"target"`` (expected counts, known for simulated data),
        against it: the same network, masks and estimates trained with
        supervision, the upper bound that Noise2Self training approaches.
        When the batch holds ``"trainable"`` ((B, 1, Y, X) booleans), only
        those pixels are hidden: the others (held out to choose the stopping
        step, see :class:`n2s_eds.api.Denoiser`) are never training targets;
        :meth:`hidden_estimates` predicts a given set of voxels instead.
        """
        counts = batch["counts"]
        masked, mask = self.masker(counts, generator=generator)
        trainable = batch.get("trainable")
        if trainable is not None:
            keep = mask & trainable[:, :, None].to(torch.bool)
            masked = torch.where(mask & ~keep, counts, masked)
            mask = keep
        if not bool(mask.any()):  # nothing hidden in this batch: a zero that keeps the graph
            return sum(p.sum() for p in self.net.parameters()) * 0.0
        pred, target = self._predict_hidden(batch, masked, mask)
        loss = self.loss_fn(pred, target, torch.ones_like(target, dtype=torch.bool))
        if self.hparams.get("window_loss", 0.0) > 0:
            loss = loss + self.hparams.window_loss * self._window_error(pred - target, mask)
        return loss

    def _predict_hidden(
        self, batch: dict[str, Tensor], masked: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Estimates of the hidden voxels and their reference, both 1-D (``mask`` order)."""
        counts = batch["counts"]
        reference = batch.get("target", counts)
        inputs = self._inputs(masked, batch)
        if getattr(self.net, "supports_masked_forward", False):
            original = self._inputs(counts, batch)
            pred = self.net(original, mask, masked=inputs)
        elif "scale" in batch:  # patches of several cubes: each its own count scale
            pred = self.net(inputs, scale=batch["scale"])[mask]
        else:
            pred = self.net(inputs)[mask]
        return pred, reference[mask]

    def hidden_estimates(
        self, batch: dict[str, Tensor], mask: Tensor, generator=None
    ) -> tuple[Tensor, Tensor]:
        """Estimates of exactly the voxels of ``mask`` (hidden as in training) and their
        reference (the counts, or the batch's ``"target"``), both 1-D in ``mask`` order."""
        masked = replace_masked(batch["counts"], mask, self.masker.replacement, generator=generator)
        return self._predict_hidden(batch, masked, mask)

    def _window_error(self, resid: Tensor, mask: Tensor) -> Tensor:
        """Mean squared sum of hidden residuals over sliding energy windows, per channel."""
        m = mask[:, 0]  # (B, E, Y, X)
        dense = torch.zeros(m.shape, dtype=resid.dtype, device=resid.device)
        dense[m] = resid  # boolean indexing walks the mask in nonzero() order
        rows = dense.permute(0, 2, 3, 1)[m.any(dim=1)]  # (hidden pixels, E)
        if rows.numel() == 0:
            return resid.sum() * 0
        return self.window_errors(rows).mean()

    def window_errors(self, rows: Tensor) -> Tensor:
        """Per row of (N, E) residual spectra: the mean squared sum over sliding energy
        windows of ``window_channels`` (half overlapping), divided by the window width."""
        w = min(int(self.hparams.window_channels), rows.shape[1])
        return window_sums(rows, w).pow(2).mean(dim=1) / w

    def forward(self, counts: Tensor, guide: Tensor | None = None) -> Tensor:
        return self.net(self._inputs(counts, {} if guide is None else {"guide": guide}))

    def training_generator(
        self, device: torch.device | str, micro_batch: int = 0
    ) -> torch.Generator:
        """The generator of a training step's masks.

        Seeded by ``(mask_seed, global_step, rank, micro_batch)``: a function
        of the step, not of how the run got there (resumed or not).

        Parameters
        ----------
        device : torch.device or str
            Device of the batch.
        micro_batch : int
            Index of the batch within a gradient-accumulation step.

        Returns
        -------
        torch.Generator
        """
        step = self.trainer.global_step if self._trainer is not None else 0
        words = [self._mask_seed, int(step), int(self.global_rank), int(micro_batch)]
        seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        gen = self.training_generator(batch["counts"].device, batch_idx % max(1, accumulate))
        loss = self.masked_loss(batch, generator=gen)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["counts"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Masked-voxel loss on the fixed validation patches, with fixed masks.

        Logged as ``val_loss``, averaged over the batches and, in a
        distributed run, over the ranks.
        """
        gen = torch.Generator(device=batch["counts"].device)
        gen.manual_seed(self.hparams.val_seed + batch_idx)
        loss = self.masked_loss(batch, generator=gen)
        self.log(
            "val_loss", loss, prog_bar=True, batch_size=batch["counts"].shape[0], sync_dist=True
        )
        return loss

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        gen = torch.Generator(device=batch["counts"].device)
        gen.manual_seed(self.hparams.val_seed + 10_000 + batch_idx)
        loss = self.masked_loss(batch, generator=gen)
        self.log("test_loss", loss, batch_size=batch["counts"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())
