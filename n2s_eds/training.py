"""Training a network on one scan, as :meth:`n2s_eds.Denoiser.fit` does.

:func:`train_on_cube` wires a :class:`~n2s_eds.module.N2SModule` (network,
masking, loss, optimizer) to the patches of one cube and a Lightning
``Trainer`` without logger, checkpoints or validation loop; the held-out
pixels, when there are any, are scored by
:class:`~n2s_eds.callbacks.HeldOutSelection`, which keeps the best weights and
stops training. Progress bars appear only where they can be seen
(:func:`interactive_output`).
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch

from .callbacks import HeldOutSelection, LossRecorder
from .data import CubeDataModule, CubeSample
from .exceptions import InvalidInputError
from .module import N2SModule
from .options import TrainingOptions

__all__ = [
    "interactive_output",
    "quiet_lightning",
    "accelerator",
    "fit_quietly",
    "held_out_pixels",
    "check_target",
    "train_on_cube",
]

#: Seed stream of the held-out pixels (beside the run's seed).
HELD_OUT_STREAM = 0x401D


def interactive_output() -> bool:
    """Whether progress bars can be seen: stderr is a terminal, or this runs in a notebook.

    Piped into a file or a CI log, a progress bar writes a carriage-return
    update per step; there none is shown.
    """
    if "ipykernel" in sys.modules:
        try:
            from IPython import get_ipython

            if get_ipython() is not None:
                return True
        except Exception:  # pragma: no cover - IPython absent or broken
            pass
    try:
        return bool(sys.stderr.isatty())
    except Exception:  # pragma: no cover - a closed or replaced stream
        return False


@contextmanager
def quiet_lightning():
    """Lightning's info messages (GPU available, ...) off inside the block."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def accelerator(device: str) -> str:
    """Lightning's accelerator name for a ``device`` option (``"auto"``: a GPU if there)."""
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return {"cuda": "gpu"}.get(device, device)


def fit_quietly(
    module: L.LightningModule,
    loader: Any,
    max_steps: int,
    device: str,
    callbacks: list[L.Callback] | None = None,
) -> None:
    """Train ``module`` on ``loader`` for ``max_steps`` on one device, with no logger, no
    checkpoints, no model summary and Lightning's info messages off (the 2D networks' fits:
    the enhancer, the segmenter, the Pix2Pix pretraining)."""
    with quiet_lightning():
        trainer = L.Trainer(
            max_steps=max_steps,
            accelerator=accelerator(device),
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=interactive_output(),
            callbacks=callbacks,
            log_every_n_steps=max(max_steps // 20, 1),
        )
        trainer.fit(module, train_dataloaders=loader)


def held_out_pixels(scan: tuple[int, int], fraction: float, seed: int) -> np.ndarray | None:
    """(Y, X) booleans of ``fraction`` of the pixels, drawn with ``seed`` (``None`` for none)."""
    n = int(round(fraction * scan[0] * scan[1]))
    if n < 1:
        return None
    rng = np.random.default_rng([seed, HELD_OUT_STREAM])
    flat = np.zeros(scan[0] * scan[1], dtype=bool)
    flat[rng.choice(flat.size, n, replace=False)] = True
    return flat.reshape(scan)


def check_target(signal: Any, target: Any) -> np.ndarray:
    """``target`` (expected counts) as a (Y, X, E) array checked against ``signal``.

    Raises
    ------
    InvalidInputError
        For a lazy signal, another shape, or values that are not finite and >= 0.
    """
    if getattr(signal, "_lazy", False):
        raise InvalidInputError(
            "a training target needs an eager signal; call `signal.compute()` first"
        )
    data = np.asarray(getattr(target, "data", target), dtype=np.float64)
    shape = tuple(np.shape(signal.data))
    if data.shape != shape:
        raise InvalidInputError(
            f"target shape {data.shape} does not match the signal's data {shape}; pass "
            "the expected counts of the same spectrum image"
        )
    if not np.all(np.isfinite(data)) or data.min() < 0:
        raise InvalidInputError("target must hold finite, non-negative expected counts")
    return data


def train_on_cube(
    module: N2SModule,
    counts: np.ndarray,
    guide: np.ndarray | None,
    truth: np.ndarray | None,
    options: TrainingOptions,
    *,
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Train ``module`` on one (E, Y, X) cube for ``options.steps`` steps, in place.

    Parameters
    ----------
    module : N2SModule
        The wired network, already adapted to the cube.
    counts : numpy.ndarray
        float32 counts (E, Y, X), as the network sees them (binned).
    guide : numpy.ndarray or None
        Normalised guide image (Y, X).
    truth : numpy.ndarray or None
        Expected counts to score the hidden voxels against (simulations only).
    options : TrainingOptions
        Patches, batch, steps and the held-out rule (``energy_patch`` resolved).
    seed : int
        Seed of the patches and the held-out pixels.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    progress : bool
        Show a progress bar (only where :func:`interactive_output`).

    Returns
    -------
    dict
        ``loss_curve`` (every step's loss) and, with held-out pixels,
        ``held_out_curve`` ([step, error] of every score) and ``best_step``.
    """
    losses: list[float] = []
    history: dict[str, Any] = {"loss_curve": losses}
    if options.steps <= 0:
        return history
    held_out = held_out_pixels(counts.shape[1:], options.holdout, seed)
    callbacks: list[L.Callback] = [LossRecorder(losses)]
    selection = None
    if held_out is not None:
        selection = HeldOutSelection(
            counts,
            guide,
            truth,
            held_out,
            every=options.val_every,
            patience=options.patience,
            seed=seed,
        )
        callbacks.append(selection)
    sample = CubeSample(counts, guide, truth, trainable=None if held_out is None else ~held_out)
    dm = CubeDataModule(
        samples=[sample],
        patch_size=options.patch_size,
        energy_patch=options.energy_patch,
        batch_size=options.batch_size,
        train_patches=options.steps * options.batch_size,
        seed=seed,
    )
    with quiet_lightning():
        trainer = L.Trainer(
            max_steps=int(options.steps),
            max_epochs=-1,
            accelerator=accelerator(device),
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=bool(progress) and interactive_output(),
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=callbacks,
        )
        trainer.fit(module, datamodule=dm)
    if selection is not None:
        history["held_out_curve"] = selection.curve
        history["best_step"] = selection.best_step
    return history
