"""Phase maps: segmentation from a few labelled pixels, clustering, per-phase composition.

* :class:`Segmenter` fine-tunes a network pretrained on denoising (or, for comparison, the
  same network from random weights) on sparse labels of one scan and predicts its phase
  map and per-pixel probabilities (:mod:`~n2s_eds.segment.segmenter`).
* :func:`cluster` finds phases without labels from the element maps;
  :func:`hyperspy_clusters` is HyperSpy's clustering of decomposition scores, the baseline
  users know (:mod:`~n2s_eds.segment.cluster`).
* :func:`phase_composition` quantifies each phase's summed spectrum by Cliff-Lorimer
  (:mod:`~n2s_eds.segment.composition`).
* :mod:`~n2s_eds.segment.labels` reads, writes, checks and draws labels;
  :mod:`~n2s_eds.segment.metrics` scores a phase map (mean IoU, boundary band).
"""

from .labels import UNLABELLED, check_labels, read_labels, sample_labels, write_labels
from .metrics import boundary_band, iou_per_phase, mean_iou
from .segmenter import Segmentation, Segmenter

__all__ = [
    "Segmenter",
    "Segmentation",
    "UNLABELLED",
    "check_labels",
    "read_labels",
    "write_labels",
    "sample_labels",
    "boundary_band",
    "iou_per_phase",
    "mean_iou",
]
