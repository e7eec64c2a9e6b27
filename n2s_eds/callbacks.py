"""Lightning callbacks of the training that :meth:`n2s_eds.Denoiser.fit` runs.

:class:`HeldOutSelection` scores pixels that are never training targets, keeps the
weights that predict them best and stops training when the score no longer falls;
:class:`LossRecorder` records the loss of every step.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from .module import N2SModule

__all__ = ["HELD_OUT_Z", "HeldOutSelection", "LossRecorder"]

#: Standard errors by which a later held-out score must beat the kept one (see
#: :class:`HeldOutSelection`).
HELD_OUT_Z = 2.0


class HeldOutSelection(L.Callback):
    """Score the held-out pixels every ``every`` steps; keep the best weights, stop early.

    The held-out pixels' spectra are hidden exactly as in training and predicted;
    those pixels are never training targets (``CubeSample.trainable``), so the
    squared error of the predictions against their counts (or the target, when
    given) measures the network on data it was not fitted to. Later weights
    replace the kept ones only when their error is lower by more than
    :data:`HELD_OUT_Z` standard errors of the voxel-wise difference: a
    flat, noisy score keeps the earlier, simpler network. Training stops after
    ``patience`` scores in a row with no lower mean error than any before (a
    slow but steady fall keeps it going).
    """

    def __init__(
        self,
        counts: np.ndarray,
        guide: np.ndarray | None,
        target: np.ndarray | None,
        held_out: np.ndarray,
        every: int,
        patience: int,
        seed: int,
    ):
        self.batch = {"counts": torch.from_numpy(np.ascontiguousarray(counts))[None, None]}
        if guide is not None:
            self.batch["guide"] = torch.from_numpy(np.ascontiguousarray(guide))[None, None]
        if target is not None:
            self.batch["target"] = torch.from_numpy(np.ascontiguousarray(target))[None, None]
        self.mask = torch.from_numpy(held_out)[None, None, None].expand_as(self.batch["counts"])
        self.every, self.patience, self.seed = int(every), int(patience), int(seed)
        #: [step, mean squared error of the held-out voxels] of every score
        self.curve: list[list[float]] = []
        self.best_step = 0
        self._best: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._lowest = float("inf")
        self._waited = 0

    def _errors(self, module: N2SModule) -> torch.Tensor:
        """Per held-out pixel, the error of ``module``'s estimates of its spectrum as the
        training loss counts it: mean squared error of the channels, plus ``window_loss``
        times that of the energy-window sums (float64)."""
        dev = module.device
        batch = {k: v.to(dev) for k, v in self.batch.items()}
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            pred, ref = module.hidden_estimates(batch, self.mask.to(dev), generator=gen)
        module.train(was_training)
        n_channels = self.batch["counts"].shape[2]
        rows = (pred.double() - ref.double()).reshape(n_channels, -1).T  # (pixels, E)
        err = rows.pow(2).mean(dim=1)
        weight = float(module.hparams.get("window_loss", 0.0))
        if weight > 0:
            err = err + weight * module.window_errors(rows)
        return err.cpu()

    def _score(self, trainer, module) -> None:
        step = int(trainer.global_step)
        if self.curve and self.curve[-1][0] == step:
            return
        err = self._errors(module)
        self.curve.append([step, float(err.mean())])
        if self._best is None:
            better = True
        else:
            diff = err - self._best[0]
            se = float(diff.std()) / max(1.0, diff.numel()) ** 0.5
            better = float(diff.mean()) < -HELD_OUT_Z * se
        if better:
            state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            self._best, self.best_step = (err, state), step
        mean = float(err.mean())
        if mean < self._lowest:
            self._lowest, self._waited = mean, 0
        else:
            self._waited += 1
            if self._waited >= self.patience:
                trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        self._score(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._score(trainer, pl_module)
        if self._best is not None:
            pl_module.net.load_state_dict(self._best[1])


class LossRecorder(L.Callback):
    """Append every training step's loss to ``sink`` (a list of floats)."""

    def __init__(self, sink: list[float]):
        self.sink = sink

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.sink.append(float(loss))
