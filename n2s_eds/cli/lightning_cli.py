"""The LightningCLI of n2s_eds: ``n2s-eds fit / validate / test / predict``.

Built on :class:`~n2s_eds.module.N2SModule` and any LightningDataModule
(:class:`~n2s_eds.data.CubeDataModule` unless ``data.class_path`` names
another, such as :class:`~n2s_eds.data.CorpusDataModule`). ``fit`` ends by
writing a shareable model file beside the checkpoints; ``predict`` writes the
denoised spectrum image. Progress bars are on only on a terminal or in a
notebook (``--trainer.enable_progress_bar`` overrides).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import ArgsType, LightningCLI

from ..api import Denoiser
from ..data import CubeDataModule
from ..exceptions import InvalidInputError
from ..io import load, load_guide, save
from ..module import N2SModule
from ..training import interactive_output

__all__ = [
    "PROG",
    "MODEL_FILE",
    "N2SLightningCLI",
    "cli_main",
    "find_last_checkpoint",
    "tensorboard_available",
]

PROG = "n2s-eds"

#: Name of the model file ``fit`` writes in the run's log folder.
MODEL_FILE = "model.pt"

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.CSVLogger",
    "init_args": {"save_dir": "runs", "name": "n2s_eds"},
}


# --------------------------------------------------------------------------- model export


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def find_last_checkpoint(trainer: Any) -> Path | None:
    """The newest last checkpoint of the runs a trainer's configuration writes.

    Lightning resolves ``ckpt_path="last"`` in the checkpoint folder of the
    current run only, which a versioned logger makes a new, empty one. This
    also looks in the other runs of the logger's folder
    (``<save_dir>/<name>/*/checkpoints/last*.ckpt``), in the checkpoint
    callbacks' explicit ``dirpath`` and, inside a SLURM job (requeued after
    Lightning's ``SIGUSR1`` save), at its ``hpc_ckpt_*.ckpt`` in
    ``default_root_dir``.

    Parameters
    ----------
    trainer : lightning.pytorch.Trainer
        The trainer of the run to resume (loggers and callbacks configured).

    Returns
    -------
    pathlib.Path or None
        The most recently written candidate, or ``None`` when there is none.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.callbacks import ModelCheckpoint

    candidates: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            candidates += Path(cb.dirpath).glob(f"{cb.CHECKPOINT_NAME_LAST}*{cb.FILE_EXTENSION}")
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger is not None else None
    if root is not None:
        candidates += Path(root).glob("*/checkpoints/last*.ckpt")
    else:
        candidates += Path(trainer.default_root_dir).glob("checkpoints/last*.ckpt")
    if SLURMEnvironment.detect():
        candidates += Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")
    files = [c for c in candidates if c.is_file()]
    return max(files, key=lambda c: c.stat().st_mtime) if files else None


class N2SLightningCLI(LightningCLI):
    """LightningCLI for n2s_eds: CSVLogger by default, model file after ``fit``.

    Extra options: ``--model_file`` (``fit``: where to write the shareable
    model, default ``model.pt`` in the run's log folder), ``--tensorboard``
    (also log to TensorBoard when it is installed; default true) and
    ``--output`` / ``--overwrite`` (``predict``: the denoised spectrum image
    to write). ``fit --ckpt_path last`` looks for the last checkpoint in the
    earlier runs too (:func:`find_last_checkpoint`).
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--model_file",
            type=str | None,
            default=None,
            help="fit: shareable model file to write at the end (Denoiser.save format); "
            f"default: {MODEL_FILE} in the run's log folder, beside the checkpoints",
        )
        parser.add_argument(
            "--output",
            type=str | None,
            default=None,
            help="predict: file to write the denoised spectrum image to "
            "(default: <input name>_denoised.hspy in the current folder)",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="predict: replace an existing output file",
        )
        parser.add_argument(
            "--tensorboard",
            type=bool,
            default=True,
            help="fit/validate/test: when tensorboard or tensorboardX is installed, also log "
            "to TensorBoard, in a 'tensorboard' folder of the CSV logger's run folder",
        )
        parser.set_defaults({"trainer.logger": DEFAULT_LOGGER})
        # piped into a file or a CI log, a bar writes a line per step: none there
        parser.set_defaults({"trainer.enable_progress_bar": interactive_output()})
        # any LightningDataModule via data.class_path (configs/corpus.yaml: CorpusDataModule);
        # without one, data.* are the options of CubeDataModule
        parser.set_defaults({"data": {"class_path": "n2s_eds.data.CubeDataModule"}})

    def _add_tensorboard(self) -> None:
        """Log to TensorBoard beside a single CSVLogger, when TensorBoard is installed."""
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        if not self.config[self.subcommand].get("tensorboard", True):
            return
        loggers = self.trainer.loggers
        if len(loggers) != 1 or not isinstance(loggers[0], CSVLogger):
            return
        if not tensorboard_available():
            return
        csv = loggers[0]
        tb = TensorBoardLogger(
            save_dir=csv.save_dir,
            name=csv.name,
            version=csv.version,  # the same run folder as the CSV logs and checkpoints
            sub_dir="tensorboard",
            default_hp_metric=False,
        )
        self.trainer.loggers = [csv, tb]

    def _check_guide(self) -> None:
        """The network's ``guide`` flag must agree with the data's guide image."""
        net_guide = bool(getattr(self.model.net, "guide", False))
        hp = self.datamodule.hparams
        data_guide = bool(hp.get("use_guide")) or hp.get("haadf") is not None
        if net_guide and not data_guide:
            raise InvalidInputError(
                "the network takes a guide image (model.net.init_args.guide: true) but the "
                "data gives none: set data.use_guide: true (image inside data.path) or "
                "data.haadf: FILE, or set model.net.init_args.guide: false"
            )
        if data_guide and not net_guide:
            raise InvalidInputError(
                "the data gives a guide image (data.use_guide / data.haadf) but the network "
                "takes none: set model.net.init_args.guide: true, or drop data.use_guide and "
                "data.haadf"
            )

    def before_validate(self) -> None:
        self._check_guide()
        self._add_tensorboard()

    before_test = before_validate

    # ------------------------------------------------------------------ fit
    def before_fit(self) -> None:
        self._check_guide()
        self._add_tensorboard()
        self._fit_t0 = time.perf_counter()

    def fit(self, model: N2SModule, **kwargs: Any) -> None:
        """``Trainer.fit``, with ``ckpt_path="last"`` found across the earlier runs.

        Used by LightningCLI instead of ``Trainer.fit``. With no earlier
        checkpoint, ``"last"`` goes on to Lightning, which warns and starts
        afresh.
        """
        if kwargs.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                kwargs["ckpt_path"] = str(found)
                if self.trainer.is_global_zero:
                    print(f"{PROG}: resuming from {found}", file=sys.stderr)
        with warnings.catch_warnings():
            if type(self.datamodule).__module__.startswith("n2s_eds."):
                # their PatchKeySampler skips the patches used before a mid-epoch checkpoint
                warnings.filterwarnings("ignore", message="You're resuming from a checkpoint")
            self.trainer.fit(model, **kwargs)

    def after_fit(self) -> None:
        cfg = self.config[self.subcommand]
        trainer = self.trainer
        if getattr(trainer, "interrupted", False):
            return
        target = cfg.get("model_file")
        if target is None:
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            target = folder / MODEL_FILE
        net_cfg = cfg["model"]["net"]
        init_args = net_cfg.get("init_args") if hasattr(net_cfg, "get") else None
        opt_cfg = cfg["model"].get("optimizer")
        lr = None
        if opt_cfg is not None and hasattr(opt_cfg, "get") and opt_cfg.get("init_args"):
            lr = opt_cfg["init_args"].get("lr")
        den = Denoiser.from_module(
            self.model,
            self.datamodule,
            net_options=init_args,
            lr=lr,
            steps=int(trainer.global_step),
            seed=int(cfg.get("seed_everything") or 0),
            train_seconds=round(time.perf_counter() - getattr(self, "_fit_t0", 0.0), 3),
        )
        den.history.update(
            world_size=int(trainer.world_size),
            num_nodes=int(trainer.num_nodes),
            strategy=type(trainer.strategy).__name__,
            accelerator=type(trainer.accelerator).__name__,
            resumed_from=None if trainer.ckpt_path is None else str(trainer.ckpt_path),
        )
        if trainer.is_global_zero:
            path = den.save(target)
            print(f"{PROG}: model written to {path}", file=sys.stderr)
        self.model_file = Path(target)

    # ------------------------------------------------------------------ predict
    def predict(self, model: N2SModule, datamodule: CubeDataModule, **kwargs: Any) -> Any:
        """Denoise the data module's file with the (checkpointed) network and save it.

        Used by LightningCLI instead of ``Trainer.predict``: the result is a
        spectrum image of the input's class and axes, not a list of batches.
        """
        import torch

        self._check_guide()
        cfg = self.config[self.subcommand]
        if not isinstance(datamodule, CubeDataModule):
            raise InvalidInputError(
                "predict denoises the spectrum-image file of a CubeDataModule's data.path; "
                "to denoise a cube with a model trained on a corpus, run `n2s-eds denoise IN "
                "-o OUT --model model.pt` with the model file that fit wrote"
            )
        hp = datamodule.hparams
        if hp.get("path") is None:
            raise InvalidInputError("predict needs a data file: set --data.path")
        output = cfg.get("output") or f"{Path(hp.path).stem}_denoised.hspy"
        if Path(output).exists() and not cfg.get("overwrite"):
            raise InvalidInputError(
                f"{output} already exists; pass --overwrite true to replace it, or choose "
                "another --output."
            )
        ckpt_path = kwargs.get("ckpt_path")
        if ckpt_path is None:
            raise InvalidInputError(
                "predict needs the trained weights: pass --ckpt_path (e.g. the last.ckpt "
                "written by fit), or use `n2s-eds denoise IN --model model.pt`."
            )
        if not Path(ckpt_path).is_file():
            raise InvalidInputError(f"checkpoint {ckpt_path} does not exist")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        net_cfg = cfg["model"]["net"]
        init_args = net_cfg.get("init_args") if hasattr(net_cfg, "get") else None
        den = Denoiser.from_module(
            model, datamodule, net_options=init_args, seed=int(cfg.get("seed_everything") or 0)
        )
        den.progress = bool(self.trainer.progress_bar_callback is not None)
        acq = load(hp.path)
        guide = None
        if hp.get("haadf") is not None:
            guide = load_guide(hp.haadf, acq.eds)
        elif hp.get("use_guide"):
            guide = acq.haadf
        result = den.denoise(acq.eds, guide)
        path = save(result, output, overwrite=bool(cfg.get("overwrite")))
        print(f"{PROG}: denoised spectrum image written to {path}", file=sys.stderr)
        self.output_file = path
        return result


def cli_main(args: ArgsType = None, *, run: bool = True) -> N2SLightningCLI:
    """Run the LightningCLI of n2s_eds (``fit``, ``validate``, ``test``, ``predict``).

    Parameters
    ----------
    args : list of str, dict or None
        Command-line style arguments (``["fit", "--config", "configs/quick_cpu.yaml"]``),
        a dict (``{"fit": {"trainer": {...}, "model": {...}, "data": {...}}}``), or
        ``None`` for ``sys.argv``.
    run : bool
        Run the subcommand (``False``: only instantiate trainer, model and data;
        ``args`` then has no subcommand).

    Returns
    -------
    N2SLightningCLI
        The CLI object, with ``trainer``, ``model``, ``datamodule``, ``config``
        and, after ``fit``, ``model_file``.
    """
    with warnings.catch_warnings():
        # `args` given while sys.argv holds other words (pytest, notebooks): intended here
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return N2SLightningCLI(
            N2SModule,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": PROG},
            args=args,
            run=run,
        )
