"""Networks shipped with the package, pretrained on the simulated corpus.

A shipped network is a model file (:mod:`n2s_eds.serialization`) inside the
package's ``weights`` folder, written by ``n2s-eds pretrain``
(:mod:`n2s_eds.pretraining`); ``weights/MODEL_CARD.md`` says how it was trained
and how it scores. :class:`~n2s_eds.Denoiser` starts from it when
``pretrained`` is true (or ``None`` and the model has shipped weights) and then
fine-tunes it on the scan by Noise2Self.

The shipped network takes a guide-image channel; it was pretrained with the
channel set to zero on the acquisitions without an image, so for a scan without
one the channel's input weights are dropped (:func:`load_pretrained`), which is
the same network fed a zero guide.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .exceptions import InvalidInputError
from .models import build_model
from .serialization import load_weights, read_model_file

__all__ = [
    "SHIPPED",
    "WEIGHTS_DIR",
    "shipped_weights",
    "pretrained_description",
    "use_pretrained",
    "load_pretrained",
]

#: Folder of the shipped weights (package data).
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Model name -> its shipped weights file in :data:`WEIGHTS_DIR`.
SHIPPED: dict[str, str] = {"autoencoder3d": "dcae.pt"}


def shipped_weights(model: str) -> Path | None:
    """The shipped weights file of ``model``, or ``None`` when it has none."""
    name = SHIPPED.get(model)
    if name is None:
        return None
    path = WEIGHTS_DIR / name
    return path if path.is_file() else None


@cache
def _read(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    return read_model_file(path)


def pretrained_description(model: str) -> dict[str, Any]:
    """The description (network options, canonical ``bin_ev``, training record) of the
    shipped weights of ``model``.

    Raises
    ------
    InvalidInputError
        When ``model`` has no shipped weights.
    """
    path = shipped_weights(model)
    if path is None:
        have = sorted(m for m in SHIPPED if shipped_weights(m) is not None)
        raise InvalidInputError(
            f"model {model!r} has no pretrained weights in this package (models with "
            f"shipped weights: {have or 'none'}); pass pretrained=False to train it from "
            "scratch on the scan"
        )
    return _read(str(path))[0]


def use_pretrained(
    model: str, pretrained: bool | None, model_options: dict[str, Any], bin_ev: float | None
) -> bool:
    """Whether a denoiser starts from the shipped weights, checking that it can.

    Parameters
    ----------
    model : str
        The network's name.
    pretrained : bool or None
        The option: ``None`` means "when the model has shipped weights".
    model_options : dict
        The network options the user gave (empty for the defaults); a pretrained
        network takes the shipped ones, so any other value is refused.
    bin_ev : float or None
        The energy bin width the user gave; a pretrained network works on its
        canonical bins (``None`` takes them).

    Raises
    ------
    InvalidInputError
        ``pretrained=True`` for a model without shipped weights, or options that
        do not fit the shipped network.
    """
    if pretrained is None:
        pretrained = shipped_weights(model) is not None
    if not pretrained:
        return False
    desc = pretrained_description(model)
    shipped = desc["model_options"]
    other = {k: v for k, v in model_options.items() if shipped.get(k) != v}
    if other:
        raise InvalidInputError(
            f"model_options {other} differ from those of the pretrained {model} network "
            f"({shipped}); leave them out, or pass pretrained=False to train that network "
            "from scratch"
        )
    canonical = desc["options"].get("bin_ev")
    if bin_ev is not None and canonical is not None and abs(float(bin_ev) - canonical) > 1e-9:
        raise InvalidInputError(
            f"the pretrained {model} network works on {canonical:g} eV energy bins, got "
            f"bin_ev={bin_ev}; leave bin_ev out, or pass pretrained=False"
        )
    return True


def load_pretrained(model: str, guide: bool) -> nn.Module:
    """A new network of ``model`` holding the shipped weights (float32).

    Parameters
    ----------
    model : str
        A model with shipped weights.
    guide : bool
        Whether the scan has a guide image; without one, the guide channel's
        input weights of the first convolution are dropped.

    Returns
    -------
    torch.nn.Module
    """
    desc = pretrained_description(model)
    _, state = _read(str(shipped_weights(model)))
    state = {k: v.float() for k, v in state.items()}
    if bool(desc["guided"]) and not guide:
        stem = "stem.0.weight"
        w = state[stem]
        state[stem] = torch.cat([w[:, :1], w[:, 2:]], dim=1)  # input channel 1 is the guide
    elif guide and not bool(desc["guided"]):
        raise InvalidInputError(
            f"the pretrained {model} network takes no guide image; pass pretrained=False to "
            "train a guided network from scratch, or leave the guide out"
        )
    net = build_model(model, guide=guide, **desc["model_options"])
    load_weights(net, state, f"the shipped weights of {model!r} do not fit the network")
    return net
