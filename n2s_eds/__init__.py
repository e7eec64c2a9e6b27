"""n2s_eds: self-supervised (Noise2Self) denoising of EDS spectrum images.

The public API works on HyperSpy signals:

>>> import n2s_eds
>>> acq = n2s_eds.load("scan.bcf")  # doctest: +SKIP
>>> clean = n2s_eds.denoise(acq.eds, haadf=acq.haadf)  # doctest: +SKIP

See :func:`denoise`, :class:`Denoiser`, :func:`load` and :mod:`n2s_eds.baselines`.
"""

from __future__ import annotations

from .api import Denoiser, denoise
from .exceptions import InvalidInputError, MapQualityWarning
from .io import Acquisition, NonIntegerCountsWarning, load, load_guide, save

__all__ = [
    "Acquisition",
    "Denoiser",
    "InvalidInputError",
    "MapQualityWarning",
    "NonIntegerCountsWarning",
    "denoise",
    "load",
    "load_guide",
    "save",
    "__version__",
]

try:
    from importlib.metadata import version as _v

    __version__ = _v("n2s-eds")
except Exception:  # pragma: no cover
    __version__ = "unknown"
