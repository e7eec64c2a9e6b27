"""Networks: ``nn.Module``s mapping (B, C, E, Y, X) inputs to (B, 1, E, Y, X) counts.

Every model has a ``guide`` flag (whether channel 1 carries a guide image
broadcast along energy) and an ``adapt(cube, guide=None)`` method that sets
per-cube data (input scale, spectral basis) before training or inference.
"""

from __future__ import annotations

from torch import nn

from .autoencoder3d import ConvAutoencoder3D
from .prior_mixture import PriorMixture

__all__ = ["ConvAutoencoder3D", "PriorMixture", "MODELS", "build_model"]

#: Models by the name used in options, configs and saved model files.
MODELS: dict[str, type[nn.Module]] = {
    "prior_mixture": PriorMixture,
    "autoencoder3d": ConvAutoencoder3D,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a model by name.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    **kwargs
        Passed to the model's constructor.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kwargs)
