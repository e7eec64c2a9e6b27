"""Typed, documented options: the one source of defaults for the Python API and the CLI.

:class:`~n2s_eds.Denoiser` takes these options as keyword arguments whose defaults
are the fields below; :class:`~n2s_eds.module.N2SModule` and
:class:`~n2s_eds.data.CubeDataModule` (what ``n2s-eds fit`` configures) take theirs
from the same classes. The network's own options are
:class:`~n2s_eds.models.PriorMixtureOptions` and
:class:`~n2s_eds.models.Autoencoder3DOptions`.

Every class validates itself when built and raises
:class:`~n2s_eds.exceptions.InvalidInputError` naming the field to change;
``to_dict()`` gives a JSON-serialisable dict and ``print()`` shows every field.

Examples
--------
>>> from n2s_eds.options import TrainingOptions
>>> TrainingOptions(steps=100).steps
100
>>> TrainingOptions(steps=-1)
Traceback (most recent call last):
...
n2s_eds.exceptions.InvalidInputError: steps must be >= 0, got -1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .exceptions import InvalidInputError
from .models import MODEL_OPTIONS, MODELS, Autoencoder3DOptions, PriorMixtureOptions
from .models.options import OptionsMixin
from .preprocess import energy_binning

__all__ = [
    "TrainingOptions",
    "MaskingOptions",
    "ProcessingOptions",
    "RuntimeOptions",
    "PriorMixtureOptions",
    "Autoencoder3DOptions",
    "model_options",
    "LOSS_NAMES",
    "MASK_MODES",
    "REPLACEMENTS",
    "DEVICES",
]

#: Masked losses (:data:`n2s_eds.module.LOSSES`).
LOSS_NAMES = ("mse", "poisson")
#: What is hidden in a training step (``"auto"``: the network's choice).
MASK_MODES = ("auto", "voxel", "spectrum")
#: What a hidden voxel is replaced by in the network's input.
REPLACEMENTS = ("local_mean", "zero", "neighbor")
#: Where training and inference run.
DEVICES = ("auto", "cpu", "cuda", "gpu", "mps")


#: Plain field types that construction converts to (``steps=300.0`` becomes 300).
_CASTS = {"int": int, "float": float, "float | None": float, "bool": bool}


class _Options(OptionsMixin):
    """Conversion of plain numbers and validation on construction (``to_dict``,
    ``field_names`` and ``from_dict`` from :class:`~n2s_eds.models.options.OptionsMixin`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            cast = _CASTS.get(str(f.type))
            if cast is not None and value is not None:
                try:
                    if isinstance(value, str):
                        raise TypeError(value)
                    setattr(self, f.name, cast(value))
                except (TypeError, ValueError):
                    raise InvalidInputError(f"{f.name} must be {f.type}, got {value!r}") from None
        self.validate()

    def validate(self) -> None:  # pragma: no cover - every subclass overrides
        """Raise :class:`InvalidInputError` naming the first invalid field."""


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}; choose one of {list(choices)}")


@dataclass
class TrainingOptions(_Options):
    """How the network is trained on the scan (Noise2Self).

    Attributes
    ----------
    steps : int
        Training steps (0: the network's fitted start only). Default 300.
    patch_size : int
        Spatial side of the training patches, in pixels. Default 32.
    energy_patch : int, "auto" or None
        Channels per training patch (bins when ``bin_ev`` is set); ``None``:
        all; ``"auto"``: all for ``prior_mixture``, 128 for ``autoencoder3d``.
    batch_size : int
        Patches per step. Default 4.
    lr : float
        Adam learning rate. Default 1e-3.
    holdout : float
        Fraction of the scan's pixels, drawn at random with the seed, that are
        never training targets: every ``val_every`` steps (and before the
        first) the network predicts their hidden spectra; later weights replace
        the kept ones only when their error is lower by more than two standard
        errors, and training stops after ``patience`` scores in a row without a
        lower error. 0 trains every pixel for ``steps`` steps. Default 0.1.
    val_every : int
        Steps between held-out scores. Default 25.
    patience : int
        Scores without a lower held-out error before training stops. Default 4.
    pretrained : bool or None
        Start from the network shipped with the package, pretrained on simulated
        acquisitions (:mod:`n2s_eds.pretrained`), and fine-tune it on the scan;
        ``False`` starts from random weights; ``None`` (default): pretrained when
        the model has shipped weights (``autoencoder3d``), else from scratch.
    """

    steps: int = 300
    patch_size: int = 32
    energy_patch: int | str | None = "auto"
    batch_size: int = 4
    lr: float = 1e-3
    holdout: float = 0.1
    val_every: int = 25
    patience: int = 4
    pretrained: bool | None = None

    def validate(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 0:
            raise InvalidInputError(f"steps must be >= 0, got {self.steps}")
        _check_int("patch_size", self.patch_size, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.energy_patch not in ("auto", None):
            _check_int("energy_patch", self.energy_patch, 1)
        if not self.lr > 0:
            raise InvalidInputError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.holdout < 1:
            raise InvalidInputError(f"holdout must lie in [0, 1), got {self.holdout}")
        if self.pretrained not in (None, True, False):
            raise InvalidInputError(
                f"pretrained must be True, False or None, got {self.pretrained!r}"
            )
        if int(self.val_every) < 1 or int(self.patience) < 1:
            raise InvalidInputError(
                f"val_every and patience must be >= 1, got {self.val_every}, {self.patience}"
            )


@dataclass
class MaskingOptions(_Options):
    """What is hidden in a training step and how the hidden voxels are scored.

    Attributes
    ----------
    mask_rate : float
        Fraction of voxels (or spectra) hidden per step, in (0, 1). Default 0.1.
    mask_mode : {"auto", "voxel", "spectrum"}
        Hide single voxels or whole spectra; ``"auto"`` takes the network's
        choice (whole spectra for ``prior_mixture``, whose mixing weights must
        not see the hidden pixel; voxels for ``autoencoder3d``).
    replacement : {"local_mean", "zero", "neighbor"}
        What a hidden voxel is replaced by in the network's input.
    loss : {"mse", "poisson"}
        Masked mean squared error or masked Poisson negative log-likelihood.
    window_loss : float
        Weight of the squared error of the hidden voxels summed over sliding
        energy windows of ``window_channels`` channels (what element maps add
        up); 0 leaves it out. Default 0.
    window_channels : int
        Length of those energy windows, in channels. Default 16.
    """

    mask_rate: float = 0.1
    mask_mode: str = "auto"
    replacement: str = "local_mean"
    loss: str = "mse"
    window_loss: float = 0.0
    window_channels: int = 16

    def validate(self) -> None:
        if not 0 < self.mask_rate < 1:
            raise InvalidInputError(f"mask_rate must lie in (0, 1), got {self.mask_rate}")
        _check_choice("mask_mode", self.mask_mode, MASK_MODES)
        _check_choice("replacement", self.replacement, REPLACEMENTS)
        _check_choice("loss", self.loss, LOSS_NAMES)
        if self.window_loss < 0 or int(self.window_channels) < 1:
            raise InvalidInputError(
                f"window_loss must be >= 0 and window_channels >= 1, got {self.window_loss}, "
                f"{self.window_channels}"
            )


@dataclass
class ProcessingOptions(_Options):
    """Which channels are denoised, how they are binned, and the count-keeping clipping.

    Attributes
    ----------
    low_kev, high_kev : float
        Processing window in keV (``high_kev=None``: up to the last channel);
        channels outside it are returned unchanged. The upper edge is lowered
        to the beam energy when that is lower. Defaults 0.2 and 20.
    bin_ev : float or None
        Energy bin width in eV (``None``: no binning). The network then sees
        the window's channels summed into bins of ``round(bin_ev / channel
        width)`` whole channels, and its output is spread back onto the input's
        channels keeping every pixel's counts in every bin.
    clip_negative : bool
        Make the result non-negative, paying back the counts this adds from the
        same channel within a few pixels, so element maps keep their counts.
        Default True.
    refine_maps : bool
        Refine the element maps (windows of the metadata's X-ray lines, else of the
        strongest peaks) so that no phase borrows another's composition: each map is
        a non-local average of the raw counts over pixels with similar spectra,
        chosen by its Poisson risk estimate (:mod:`n2s_eds.refine`); the cube's
        channels in each window are then rescaled to those maps, and every pixel
        keeps its counts. ``metadata.Signal.Denoising`` then holds the estimated gain
        of each map. Default True.
    """

    low_kev: float = 0.2
    high_kev: float | None = 20.0
    bin_ev: float | None = None
    clip_negative: bool = True
    refine_maps: bool = True

    def validate(self) -> None:
        if self.high_kev is not None and not self.high_kev > self.low_kev:
            raise InvalidInputError(
                f"high_kev must be above low_kev, got {self.low_kev} and {self.high_kev}"
            )
        energy_binning(1, 1.0, self.bin_ev)  # raises for a bin width that is not > 0


@dataclass
class RuntimeOptions(_Options):
    """Where and how a run executes; none of these change a trained model.

    Attributes
    ----------
    tile : int
        Spatial tile side for inference, in pixels; a lazy cube is processed
        in blocks of this side, so peak memory follows ``tile``. Default 128.
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: a GPU when one is there.
    seed : int
        Seed of everything random (weights, patches, masks, held-out pixels).
    progress : bool
        Report progress: a progress bar on a terminal or in a notebook, and no
        bar when the output goes to a file or a pipe. Default True.
    strict : bool
        Non-integer counts raise instead of warning. Default False.
    """

    tile: int = 128
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    strict: bool = False

    def validate(self) -> None:
        _check_int("tile", self.tile, 1)
        _check_choice("device", self.device, DEVICES)


def model_options(model: str, values: Any = None) -> PriorMixtureOptions | Autoencoder3DOptions:
    """The typed options of network ``model`` from a dataclass, a dict or ``None``.

    Raises
    ------
    InvalidInputError
        For an unknown model, options of another model's class, or unknown keys.
    """
    if model not in MODELS:
        raise InvalidInputError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    cls = MODEL_OPTIONS[model]
    if isinstance(values, cls):
        return values
    if dataclasses.is_dataclass(values):
        raise InvalidInputError(
            f"model {model!r} takes {cls.__name__}, got {type(values).__name__}"
        )
    if values is not None and not isinstance(values, dict):
        raise InvalidInputError(
            f"model_options must be a {cls.__name__} or a dict, got {type(values).__name__}"
        )
    return cls.from_dict(values)  # the options classes turn JSON lists back into tuples
