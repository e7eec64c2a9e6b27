"""The model file (weights + JSON description, one ``.pt``) and reading training checkpoints.

A model file holds a dict of two entries: ``"description"`` (a JSON string: the
format, the network and its options, the training and processing options, the
training history) and ``"state_dict"`` (plain tensors). It loads with
``torch.load(weights_only=True)``: nothing in it is unpickled as an object.
Files are written to a temporary file and renamed, so a crash leaves no
half-written model.

Format versions: 1 is the base; 2 adds ``options.bin_ev`` (energy binning in
eV); 3 adds ``options.refine_maps`` (the element-map stage, :mod:`n2s_eds.refine`); 4 adds
the conditioned 3D network (``model_options.conditioned``) and ``options.pretrained``
(written only when true: the network started from the shipped weights).
A model is written with the lowest version that holds its options, so that older
readers load what they can: one that neither bins nor refines its maps is format 1.
A file without ``refine_maps`` denoises as when it was written: without the stage.

:func:`read_checkpoint` reads a Lightning checkpoint of ``n2s-eds fit`` together
with the ``config.yaml`` LightningCLI saved for the run, and rebuilds its network;
:meth:`n2s_eds.Denoiser.from_checkpoint` wraps it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .exceptions import InvalidInputError
from .io.writers import atomic_file
from .models import MODELS
from .module import N2SModule
from .options import MaskingOptions, ProcessingOptions, TrainingOptions

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "package_version",
    "model_description",
    "write_model_file",
    "read_payload",
    "read_model_file",
    "load_weights",
    "model_name",
    "options_of_module",
    "plain",
    "CheckpointContents",
    "read_run_config",
    "read_checkpoint",
]

MODEL_FORMAT = "n2s_eds.model"
#: Newest model file format this version reads (see the module docstring).
MODEL_FORMAT_VERSION = 4
#: Hyperparameters of :class:`~n2s_eds.module.N2SModule` that a checkpoint carries over.
MODULE_HPARAMS = ("mask_rate", "mask_mode", "replacement", "loss", "window_loss", "window_channels")


def package_version() -> str:
    """The installed version of n2s-eds (``"unknown"`` when run from a bare source tree)."""
    try:
        from importlib.metadata import version

        return version("n2s-eds")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def model_description(
    model: str,
    model_options: dict[str, Any],
    guided: bool | None,
    options: dict[str, Any],
    seed: int,
    history: dict[str, Any],
) -> dict[str, Any]:
    """The JSON description of a trained denoiser that a model file holds beside the weights.

    A model that does not bin energies is written without a ``bin_ev`` entry and one
    without the element-map stage without a ``refine_maps`` entry; the format version is
    the lowest that holds the rest (1, 2 with ``bin_ev``, 3 with ``refine_maps``, 4 with a
    conditioned network or ``pretrained=True``), which older readers refuse.
    """
    version = 3 if options.get("refine_maps") else 1 if options.get("bin_ev") is None else 2
    if model_options.get("conditioned") or options.get("pretrained"):
        version = 4
    dropped = {"bin_ev": (None,), "refine_maps": (False,), "pretrained": (None, False)}
    return {
        "format": MODEL_FORMAT,
        "format_version": version,
        "package_version": package_version(),
        "model": model,
        "model_options": model_options,
        "guided": bool(guided),
        "options": {k: v for k, v in options.items() if k not in dropped or v not in dropped[k]},
        "seed": seed,
        "training": {k: v for k, v in history.items() if k != "loss_curve"},
    }


def write_model_file(
    path: str | os.PathLike, description: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> Path:
    """Write ``description`` (JSON) and the tensors of ``state_dict`` atomically to ``path``."""
    path = Path(path)
    payload = {
        "description": json.dumps(description),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_payload(
    path: str | os.PathLike, what: str = "model", maker: str = "Denoiser.save()"
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The parsed JSON description and the tensors of a file written by
    :func:`write_model_file`, read with ``weights_only=True``; not yet checked.

    Raises
    ------
    InvalidInputError
        When the file is missing or unreadable (``what`` and ``maker`` name it in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return json.loads(payload["description"]), payload["state_dict"]
    except Exception as exc:
        raise InvalidInputError(
            f"{str(path)!r} is not a readable n2s_eds {what} file ({type(exc).__name__}: "
            f"{exc}); it may be truncated or not made by {maker}"
        ) from None


def read_format(
    path: str | os.PathLike, fmt: str, version: int, what: str, maker: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """:func:`read_payload` of a file whose description must name format ``fmt`` at
    ``version`` or older (the enhancer's and the segmenter's files).

    Raises
    ------
    InvalidInputError
        A missing or unreadable file, another format, or a newer version.
    """
    desc, state = read_payload(path, what, maker)
    if not isinstance(desc, dict) or desc.get("format") != fmt:
        raise InvalidInputError(f"{str(path)!r} is not an n2s_eds {what} file (made by {maker})")
    if desc.get("format_version", 0) > version:
        raise InvalidInputError(f"{str(path)!r} needs a newer n2s_eds; upgrade to read it")
    return desc, state


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The description and the tensors of a model file, checked.

    Raises
    ------
    InvalidInputError
        When the file is missing, truncated, not a model file, or of a newer
        format than this version reads (the message names the format).
    """
    desc, state = read_payload(path)
    if not isinstance(desc, dict) or desc.get("format") != MODEL_FORMAT:
        raise InvalidInputError(f"{str(path)!r} is not an n2s_eds model file")
    if desc.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise InvalidInputError(
            f"{str(path)!r} was written by a newer n2s_eds (format "
            f"{desc['format_version']}); upgrade n2s_eds to read it"
        )
    # written before the element-map stage existed, or without it: denoise as written
    desc.setdefault("options", {}).setdefault("refine_maps", False)
    return desc, state


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], mismatch: str) -> None:
    """Load ``state`` into ``net``; weights that do not fit raise ``InvalidInputError(mismatch)``."""
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise InvalidInputError(f"{mismatch}: {exc}") from None


def model_name(net: nn.Module) -> str:
    """The :data:`n2s_eds.models.MODELS` name of a network instance."""
    for name, cls in MODELS.items():
        if type(net) is cls:
            return name
    raise InvalidInputError(
        f"the network {type(net).__name__} is not one of n2s_eds.models "
        f"({', '.join(sorted(MODELS))}); its weights are in the checkpoints, but no "
        "shareable model file can describe it."
    )


def options_of_module(
    module: N2SModule,
    datamodule: Any = None,
    *,
    lr: float | None = None,
    steps: int = 0,
) -> dict[str, Any]:
    """The :class:`~n2s_eds.Denoiser` keyword arguments that a trained module was run with.

    Masking and loss come from the module's hyperparameters; the patch shape and
    the processing window from ``datamodule`` (a data module or its
    hyperparameters, as a checkpoint stores them); what neither records takes
    the defaults of :mod:`n2s_eds.options`.
    """
    hp = module.hparams
    m = MaskingOptions()
    kwargs: dict[str, Any] = {
        "mask_rate": hp.get("mask_rate", m.mask_rate),
        "mask_mode": hp.get("mask_mode", m.mask_mode),
        "replacement": hp.get("replacement", m.replacement),
        "loss": hp.get("loss", m.loss),
        "window_loss": float(hp.get("window_loss", m.window_loss)),
        "window_channels": int(hp.get("window_channels", m.window_channels)),
        "steps": int(steps),
    }
    if lr is not None:
        kwargs["lr"] = float(lr)
    if datamodule is not None:
        dh = datamodule if isinstance(datamodule, dict) else datamodule.hparams
        t, p = TrainingOptions(), ProcessingOptions()
        kwargs.update(
            patch_size=dh.get("patch_size", t.patch_size),
            energy_patch=dh.get("energy_patch"),
            batch_size=dh.get("batch_size", t.batch_size),
            low_kev=dh.get("low_kev", p.low_kev),
            high_kev=dh.get("high_kev", p.high_kev),
        )
    return kwargs


def plain(value: Any) -> Any:
    """Turn jsonargparse namespaces and tuples into JSON-friendly values."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def read_run_config(ckpt: Path, config: str | Path | None) -> tuple[Path, dict[str, Any]]:
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


@dataclass
class CheckpointContents:
    """What :func:`read_checkpoint` rebuilds from a training checkpoint and its config.

    Attributes
    ----------
    module : N2SModule
        The module with the trained network (``module.net``).
    net_options : dict
        The network's configured constructor arguments.
    datamodule_hparams : dict
        The data module's hyperparameters (patch shape, processing window).
    lr : float or None
        The configured learning rate.
    steps : int
        Training steps done.
    seed : int
        The run's ``seed_everything``.
    """

    module: N2SModule
    net_options: dict[str, Any]
    datamodule_hparams: dict[str, Any]
    lr: float | None
    steps: int
    seed: int


def read_checkpoint(checkpoint: str | Path, config: str | Path | None = None) -> CheckpointContents:
    """Rebuild the trained network of a Lightning checkpoint written by ``n2s-eds fit``.

    The network is described by the run's ``config.yaml`` (found beside the
    ``checkpoints`` folder unless given), and only networks of
    :mod:`n2s_eds.models` are built from it. The checkpoint is read with
    ``weights_only=True``: a checkpoint from elsewhere cannot run code.

    Raises
    ------
    InvalidInputError
        When the checkpoint or its config is missing or unreadable, or the weights
        do not fit the configured network.
    """
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise InvalidInputError(f"checkpoint {ckpt} does not exist")
    cfg_path, cfg = read_run_config(ckpt, config)
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
        k: v for k, v in (payload.get("hyper_parameters") or {}).items() if k in MODULE_HPARAMS
    }
    module = N2SModule(net, **module_hp)
    load_weights(
        module, state, f"the weights in {ckpt} do not fit the network configured in {cfg_path}"
    )
    lr = (cfg["model"].get("optimizer") or {}).get("init_args", {}).get("lr")
    return CheckpointContents(
        module=module,
        net_options=init_args,
        datamodule_hparams=dict(payload.get("datamodule_hyper_parameters") or {}),
        lr=lr,
        steps=int(payload.get("global_step", 0)),
        seed=int(cfg.get("seed_everything") or 0),
    )
