"""Networks: ``nn.Module``s mapping (B, C, E, Y, X) inputs to (B, 1, E, Y, X) counts.

Every model has a ``guide`` flag (whether channel 1 carries a guide image
broadcast along energy) and an ``adapt(cube, guide=None)`` method that sets
per-cube data (input scale, spectral basis) before training or inference.
Its other options, with their defaults and checks, are the fields of its
options dataclass (:data:`MODEL_OPTIONS`).
"""

from __future__ import annotations

from torch import nn

from .autoencoder3d import ConvAutoencoder3D
from .options import Autoencoder3DOptions, PriorMixtureOptions
from .prior_mixture import PriorMixture

__all__ = [
    "ConvAutoencoder3D",
    "PriorMixture",
    "Autoencoder3DOptions",
    "PriorMixtureOptions",
    "MODELS",
    "MODEL_OPTIONS",
    "build_model",
]

#: Models by the name used in options, configs and saved model files.
MODELS: dict[str, type[nn.Module]] = {
    "prior_mixture": PriorMixture,
    "autoencoder3d": ConvAutoencoder3D,
}

#: Each model's options dataclass (every constructor argument but ``guide``), by name.
MODEL_OPTIONS: dict[str, type[PriorMixtureOptions] | type[Autoencoder3DOptions]] = {
    "prior_mixture": PriorMixtureOptions,
    "autoencoder3d": Autoencoder3DOptions,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a model by name.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    **kwargs
        Passed to the model's constructor (``guide`` and the fields of its
        :data:`MODEL_OPTIONS` dataclass).
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kwargs)
