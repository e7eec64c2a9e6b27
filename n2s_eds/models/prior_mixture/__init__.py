"""The default network, :class:`PriorMixture`: a learned, spatially adaptive mixture
of J-invariant spatial-spectral priors.

One concept per module:

* :mod:`.module` -- the ``nn.Module`` itself: options, ``adapt``, the mixing
  network, ``forward`` and the blend's wiring;
* :mod:`.mixing` -- the candidate estimates and their mixing by per-pixel weights;
* :mod:`.spreading` -- energy bands and spreading by the candidates' operators;
* :mod:`.filters` -- Gaussian, box and guided filters (linear, known diagonal);
* :mod:`.basis` -- the low-rank spectral basis and the choice of its rank;
* :mod:`.coarse` -- the coarse energy path (``coarse_ev``);
* :mod:`.blend` -- the fitted blend with the pixel's own counts (``blend_ev``);
* :mod:`.mixture_fit` -- the closed-form fit of the starting mixture.
"""

from __future__ import annotations

from ..options import DEFAULT_BLEND_EV
from .basis import EXACT_GRAM_MAX
from .filters import GuidedFilter, gaussian_kernel1d, smooth2d, smoothing_diagonal
from .module import ASSUMED_CHANNEL_EV, PriorMixture

__all__ = [
    "ASSUMED_CHANNEL_EV",
    "DEFAULT_BLEND_EV",
    "EXACT_GRAM_MAX",
    "GuidedFilter",
    "PriorMixture",
    "gaussian_kernel1d",
    "smooth2d",
    "smoothing_diagonal",
]
