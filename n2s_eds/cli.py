"""The ``n2s-eds`` command: a small dispatcher in front of LightningCLI.

Trainer commands go to a :class:`~lightning.pytorch.cli.LightningCLI` built on
:class:`~n2s_eds.module.N2SModule` and :class:`~n2s_eds.data.CubeDataModule`::

    n2s-eds fit --config configs/quick_cpu.yaml [--trainer.max_steps 50 ...]
    n2s-eds validate --config configs/quick_cpu.yaml --ckpt_path runs/.../last.ckpt
    n2s-eds predict --config configs/quick_cpu.yaml --ckpt_path runs/.../last.ckpt \\
        --output denoised.hspy
    n2s-eds test ...   (once the module and data module define test steps)

The data module is :class:`~n2s_eds.data.CubeDataModule` (one spectrum-image
file) unless ``data.class_path`` names another, such as
:class:`~n2s_eds.data.CorpusDataModule` (patches of an HDF5 corpus of many cubes
written by ``n2s-eds pack``; ``configs/corpus.yaml``).

``fit`` ends by writing a shareable model file (:meth:`n2s_eds.Denoiser.save`
format) beside the checkpoints; LightningCLI saves the resolved
``config.yaml`` there too. ``fit --ckpt_path last`` resumes from the newest
``last.ckpt`` of the earlier runs of the same logger folder (each run logs
into a new ``version_N``), or starts afresh when there is none. Logs go to
CSV (the presets' logger) and, when ``tensorboard`` or ``tensorboardX`` is
installed, to TensorBoard as well (``version_N/tensorboard``; turn off with
``--tensorboard false``). The other commands need no Trainer::

    n2s-eds denoise IN -o OUT [--haadf FILE | --guide] [--model FILE.pt | --checkpoint CKPT]
                    [--steps N]
    n2s-eds demo [--output DIR] [--steps N] [--dose D]
    n2s-eds pack OUT.h5 IN [IN ...] [--low-kev E] [--high-kev E] [--no-guide]
    n2s-eds bench ...   (forwarded to ``n2s_eds.bench.main``)

Input errors (:class:`n2s_eds.InvalidInputError`) end the command with exit
code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import ArgsType, LightningCLI

from .data import CubeDataModule
from .exceptions import InvalidInputError
from .module import N2SModule

__all__ = [
    "main",
    "cli_main",
    "N2SLightningCLI",
    "denoiser_from_module",
    "denoiser_from_checkpoint",
    "find_last_checkpoint",
    "tensorboard_available",
]

PROG = "n2s-eds"
#: Commands handled by LightningCLI.
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
#: Default model file name written by ``fit`` beside the checkpoints.
MODEL_FILE = "model.pt"

_DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.CSVLogger",
    "init_args": {"save_dir": "runs", "name": "n2s_eds"},
}


# --------------------------------------------------------------------------- model export


def _plain(value: Any) -> Any:
    """Turn jsonargparse namespaces and tuples into JSON-friendly values."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _model_name(net: Any) -> str:
    from .models import MODELS

    for name, cls in MODELS.items():
        if type(net) is cls:
            return name
    raise InvalidInputError(
        f"the network {type(net).__name__} is not one of n2s_eds.models "
        f"({', '.join(sorted(MODELS))}); its weights are in the checkpoints, but no "
        "shareable model file can describe it."
    )


def denoiser_from_module(
    module: N2SModule,
    datamodule: LightningDataModule | dict[str, Any] | None = None,
    *,
    net_options: dict[str, Any] | None = None,
    lr: float | None = None,
    steps: int = 0,
    seed: int = 0,
    train_seconds: float | None = None,
) -> Any:
    """Wrap the trained network of an :class:`N2SModule` in a :class:`n2s_eds.Denoiser`.

    Parameters
    ----------
    module : N2SModule
        The trained module; its ``net`` must be a model of :mod:`n2s_eds.models`.
    datamodule : LightningDataModule or dict, optional
        Gives the patch shape and the processing window (keV): a data module, or its
        hyperparameters (as a checkpoint stores them).
    net_options : dict, optional
        Constructor arguments of the network (without ``guide``), as configured.
    lr : float, optional
        Learning rate, recorded only.
    steps : int
        Training steps done, recorded only.
    seed : int
        Seed of the run.
    train_seconds : float, optional
        Training time, recorded only.

    Returns
    -------
    n2s_eds.Denoiser
        Ready for :meth:`~n2s_eds.Denoiser.denoise` and :meth:`~n2s_eds.Denoiser.save`.
    """
    from .api import Denoiser

    net = module.net
    name = _model_name(net)
    options = {k: v for k, v in _plain(net_options or {}).items() if k != "guide"}
    hp = module.hparams
    kwargs: dict[str, Any] = {
        "mask_rate": hp.get("mask_rate", 0.1),
        "mask_mode": hp.get("mask_mode", "auto"),
        "replacement": hp.get("replacement", "local_mean"),
        "loss": hp.get("loss", "mse"),
        "window_loss": float(hp.get("window_loss", 0.0)),
        "window_channels": int(hp.get("window_channels", 16)),
        "steps": int(steps),
    }
    if lr is not None:
        kwargs["lr"] = float(lr)
    if datamodule is not None:
        dh = datamodule if isinstance(datamodule, dict) else datamodule.hparams
        kwargs.update(
            patch_size=dh.get("patch_size", 32),
            energy_patch=dh.get("energy_patch"),
            batch_size=dh.get("batch_size", 4),
            low_kev=dh.get("low_kev", 0.2),
            high_kev=dh.get("high_kev", 20.0),
        )
    den = Denoiser(model=name, model_options=options, seed=int(seed), **kwargs)
    den.net = net.cpu().eval()
    den.guided = bool(getattr(net, "guide", False))
    den.history = {"steps": int(steps), "train_seconds": train_seconds, "final_loss": None}
    return den


def _run_config(ckpt: Path, config: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The ``config.yaml`` LightningCLI saved for the run of a checkpoint, read as a dict."""
    import yaml

    if config is not None:
        candidates = [Path(config)]
    else:  # <run>/checkpoints/x.ckpt with <run>/config.yaml, or a checkpoint beside its config
        candidates = [ckpt.parent.parent / "config.yaml", ckpt.parent / "config.yaml"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise InvalidInputError(
            f"no config.yaml of the training run found for {ckpt} (looked for "
            f"{', '.join(str(c) for c in candidates)}); pass --config with the config.yaml "
            "that `n2s-eds fit` saved in the run folder, or use --model with the model.pt "
            "it wrote"
        )
    try:
        cfg = yaml.safe_load(found.read_text())
        if not isinstance(cfg["model"]["net"]["class_path"], str):
            raise TypeError("model.net.class_path is not a string")
    except Exception as exc:
        raise InvalidInputError(
            f"{found} is not the config.yaml of an `n2s-eds fit` run ({type(exc).__name__}: {exc})"
        ) from None
    return found, cfg


def denoiser_from_checkpoint(
    checkpoint: str | Path,
    config: str | Path | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
) -> Any:
    """A :class:`n2s_eds.Denoiser` holding the network of a Lightning training checkpoint.

    The network is described by the ``config.yaml`` that LightningCLI saved for
    the run (found beside the ``checkpoints`` folder unless given), and only
    networks of :mod:`n2s_eds.models` are built from it. The checkpoint is read
    with ``weights_only=True``: a checkpoint from elsewhere cannot run code.

    Parameters
    ----------
    checkpoint : str or Path
        A ``.ckpt`` written by ``n2s-eds fit`` (e.g. ``runs/.../checkpoints/last.ckpt``).
    config : str or Path, optional
        The run's ``config.yaml`` when it is not in the checkpoint's run folder.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : bool
        Progress bar during denoising.

    Returns
    -------
    n2s_eds.Denoiser

    Raises
    ------
    InvalidInputError
        When the checkpoint or its config is missing or unreadable, or the weights
        do not fit the configured network.
    """
    import torch

    from .models import MODELS

    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise InvalidInputError(f"checkpoint {ckpt} does not exist")
    cfg_path, cfg = _run_config(ckpt, config)
    net_cfg = cfg["model"]["net"]
    class_path = str(net_cfg["class_path"])
    accepted = {
        path: n
        for n, cls in MODELS.items()
        for path in (f"n2s_eds.models.{cls.__name__}", f"{cls.__module__}.{cls.__name__}")
    }
    name = accepted.get(class_path)
    if name is None:
        raise InvalidInputError(
            f"{cfg_path} configures the network {class_path}, which is not one of "
            f"n2s_eds.models ({', '.join(sorted(MODELS))}); only those can be rebuilt"
        )
    try:
        payload = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = payload["state_dict"]
    except Exception as exc:
        raise InvalidInputError(
            f"{ckpt} is not a readable Lightning checkpoint ({type(exc).__name__}: {exc}); "
            "it may be truncated"
        ) from None
    init_args = dict(net_cfg.get("init_args") or {})
    for key, value in init_args.items():  # YAML lists where the models take tuples
        if isinstance(value, list):
            init_args[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    try:
        net = MODELS[name](**init_args)
    except TypeError as exc:
        raise InvalidInputError(
            f"{cfg_path}: the network options do not fit {name}: {exc}"
        ) from None
    module_hp = {
        k: v
        for k, v in (payload.get("hyper_parameters") or {}).items()
        if k in ("mask_rate", "mask_mode", "replacement", "loss", "window_loss", "window_channels")
    }
    module = N2SModule(net, **module_hp)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise InvalidInputError(
            f"the weights in {ckpt} do not fit the network configured in {cfg_path}: {exc}"
        ) from None

    lr = (cfg["model"].get("optimizer") or {}).get("init_args", {}).get("lr")
    den = denoiser_from_module(
        module,
        dict(payload.get("datamodule_hyper_parameters") or {}),
        net_options=init_args,
        lr=lr,
        steps=int(payload.get("global_step", 0)),
        seed=int(cfg.get("seed_everything") or 0),
    )
    den.device = device
    den.progress = bool(progress)
    return den


# --------------------------------------------------------------------------- LightningCLI


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
        parser.set_defaults({"trainer.logger": _DEFAULT_LOGGER})
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
        den = denoiser_from_module(
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

        from .io import load, load_guide, save

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
        den = denoiser_from_module(
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


# --------------------------------------------------------------------------- other commands


def _denoise(ns: argparse.Namespace) -> int:
    import n2s_eds

    out = Path(ns.output).expanduser()
    if out.suffix == "":
        out = out.with_suffix(".hspy")
    if out.exists() and not ns.overwrite:
        raise InvalidInputError(
            f"{out} already exists; pass --overwrite to replace it, or choose another -o."
        )
    if ns.model is not None and ns.steps is not None:
        raise InvalidInputError(
            "--steps sets the training of a new model; it cannot be used with --model "
            "(a trained model file)"
        )
    if ns.haadf is not None and ns.guide:
        raise InvalidInputError("give either --haadf FILE or --guide, not both")
    if ns.model is not None and ns.checkpoint is not None:
        raise InvalidInputError("give either --model FILE.pt or --checkpoint CKPT, not both")
    if ns.checkpoint is not None and ns.steps is not None:
        raise InvalidInputError(
            "--steps sets the training of a new model; it cannot be used with --checkpoint"
        )
    if ns.config is not None and ns.checkpoint is None:
        raise InvalidInputError("--config is the run config of a --checkpoint; give both")
    den = None
    # read the model first: a bad model file or checkpoint fails before the data is loaded
    if ns.model is not None:
        den = n2s_eds.Denoiser.load(ns.model, device=ns.device, progress=not ns.quiet)
    elif ns.checkpoint is not None:
        den = denoiser_from_checkpoint(
            ns.checkpoint, ns.config, device=ns.device, progress=not ns.quiet
        )
    acq = n2s_eds.load(ns.input)
    guide = None
    if ns.haadf is not None:
        guide = n2s_eds.load_guide(ns.haadf, acq.eds)
    elif ns.guide:
        if acq.haadf is None:
            raise InvalidInputError(
                f"{ns.input} holds no image of the same scan to use as a guide; pass "
                "--haadf FILE or leave out --guide."
            )
        guide = acq.haadf
    if den is not None:
        result = den.denoise(acq.eds, guide)
    else:
        options: dict[str, Any] = {"device": ns.device}
        if ns.steps is not None:
            options["steps"] = ns.steps
        if ns.model_type is not None:
            options["model"] = ns.model_type
        result = n2s_eds.denoise(acq.eds, guide, seed=ns.seed, progress=not ns.quiet, **options)
    path = n2s_eds.save(result, out, overwrite=ns.overwrite)
    print(f"{PROG}: denoised spectrum image written to {path}", file=sys.stderr)
    return 0


def _demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo

    res = run_demo(ns.output, steps=ns.steps, dose=ns.dose, seed=ns.seed, progress=not ns.quiet)
    if ns.quiet:  # run_demo prints the table itself when not quiet
        print(res["table"])
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as exc:
        if getattr(exc, "name", None) not in ("n2s_eds.bench", None):
            raise
        print(
            f"{PROG} bench: the benchmark module n2s_eds.bench is not available in this "
            "installation",
            file=sys.stderr,
        )
        return 2
    rc = bench.main(argv)
    return int(rc or 0)


def _pack(ns: argparse.Namespace) -> int:
    from .data import pack_corpus, read_corpus

    path = pack_corpus(
        ns.inputs,
        ns.output,
        low_kev=ns.low_kev,
        high_kev=ns.high_kev,
        include_guides=not ns.no_guide,
        energy_tolerance=ns.energy_tolerance,
        compression=None if ns.compression == "none" else ns.compression,
        overwrite=ns.overwrite,
    )
    info = read_corpus(path)
    e0 = float(info.attrs["energy_offset_kev"])
    e1 = e0 + (info.n_channels - 1) * float(info.attrs["energy_scale_kev"])
    guides = sum(c.has_guide for c in info.cubes)
    print(
        f"{PROG}: packed {len(info.cubes)} cubes ({info.n_channels} channels, {e0:.3f}-{e1:.3f} "
        f"keV; {guides} with a guide image) into {path} "
        f"({path.stat().st_size / 2**20:.1f} MiB)",
        file=sys.stderr,
    )
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the commands that need no Trainer (and the top-level help)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-supervised (Noise2Self) denoising of EDS spectrum images.",
        epilog=(
            "Trainer commands (LightningCLI; see `n2s-eds fit --help`): "
            "fit, validate, test, predict, e.g. `n2s-eds fit --config configs/quick_cpu.yaml`."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in TRAINER_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI `{name}` (see `{PROG} {name} --help`)")

    p = sub.add_parser(
        "denoise",
        help="denoise a spectrum-image file",
        description="Denoise an EDS spectrum image file. Without --model, a network is "
        "trained on the file itself (Noise2Self); with --model (a saved model) or --checkpoint "
        "(a training checkpoint), a trained network is applied without retraining.",
    )
    p.add_argument("input", help="spectrum-image file (.bcf, .emd, .hspy, .pts, .rpl, ...)")
    p.add_argument("-o", "--output", required=True, help="output file (.hspy if no extension)")
    p.add_argument("--haadf", metavar="FILE", help="guide image file (HAADF/BSE) of the scan")
    p.add_argument(
        "--guide",
        action="store_true",
        help="use the image found in the input file as the guide",
    )
    p.add_argument("--model", metavar="FILE.pt", help="trained model file (from fit or save)")
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="Lightning checkpoint of an `n2s-eds fit` run (e.g. runs/.../checkpoints/last.ckpt);"
        " the network is described by the run's config.yaml",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the run's config.yaml, when it is not in the checkpoint's run folder",
    )
    p.add_argument(
        "--model-type",
        choices=("prior_mixture", "autoencoder3d"),
        default=None,
        help="network to train when no --model is given (default: prior_mixture)",
    )
    p.add_argument(
        "--steps", type=_non_negative_int, default=None, help="training steps (default 300)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_denoise)

    p = sub.add_parser(
        "demo",
        help="denoise a simulated phantom and compare with baselines",
        description="Simulate a low-dose TEM phantom (64 x 64 pixels, 1024 channels), "
        "denoise it with raw / Gaussian / PCA / n2s_eds, and write a table of PSNR/SSIM "
        "against the truth (demo_table.md) and a figure (demo_figure.png).",
    )
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--steps", type=_non_negative_int, default=300, help="training steps")
    p.add_argument("--dose", type=_positive_float, default=10.0, help="counts per pixel")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and training")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "pack",
        help="pack spectrum images into one HDF5 corpus for training",
        description="Pack EDS spectrum images (with the image of the same scan as a guide, "
        "and their metadata) into one HDF5 corpus: the counts of the processing window, "
        "chunked for fast patch reads. Train on it with `n2s-eds fit --config "
        "configs/corpus.yaml --data.init_args.path OUT.h5`. The files must share one energy "
        "axis (channel width and offset); nothing is written when any input is refused.",
    )
    p.add_argument("output", metavar="OUT.h5", help="corpus file to write")
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="spectrum-image files (.bcf, .emd, .hspy, ...)"
    )
    p.add_argument(
        "--low-kev", type=float, default=0.2, help="lower edge of the window (default 0.2 keV)"
    )
    p.add_argument(
        "--high-kev", type=float, default=20.0, help="upper edge of the window (default 20 keV)"
    )
    p.add_argument("--no-guide", action="store_true", help="leave the guide images out")
    p.add_argument(
        "--energy-tolerance",
        type=float,
        default=0.25,
        metavar="CHANNELS",
        help="largest misalignment of two files' energy channels accepted anywhere in the "
        "window, in channels (default 0.25)",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="gzip",
        help="HDF5 compression of the counts (default gzip)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus file")
    p.set_defaults(func=_pack)

    sub.add_parser(
        "bench",
        help="quality and speed benchmarks (arguments go to n2s_eds.bench)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``n2s-eds`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    int
        Exit code: 0 on success, 2 on invalid input (one-line message on stderr).
    """
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in TRAINER_COMMANDS:
            cli_main(None if from_sys else argv)
            return 0
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        parser = build_parser()
        ns = parser.parse_args(argv)
        if ns.command is None:
            parser.print_help()
            return 2
        return int(ns.func(ns))
    except (InvalidInputError, MisconfigurationException) as exc:
        # MisconfigurationException: e.g. `test` while the module defines no test_step
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse/jsonargparse: --help (0) or a usage error (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
