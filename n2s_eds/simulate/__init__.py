"""Simulated EDS acquisitions with exact truth.

:mod:`~n2s_eds.simulate.phantom` builds the fixed phantoms of the tests, the benchmark and
the demo (:func:`phantom`, :func:`phantom_maps`, :func:`phantom_phases`); :mod:`~n2s_eds.simulate.corpus` draws an
endless stream of varied acquisitions for pretraining (:func:`draw_acquisition`), from which
the phantoms' element sets and random streams are held out.
"""

from .corpus import (
    CANONICAL_BIN_EV,
    CORPUS_STREAM,
    HELD_OUT_ELEMENT_SETS,
    Acquisition,
    CorpusOptions,
    draw_acquisition,
)
from .phantom import (
    PHANTOM_ELEMENTS,
    PHANTOM_LAYOUTS,
    Phantom,
    PhaseLabels,
    phantom,
    phantom_maps,
    phantom_phases,
)

__all__ = [
    "PHANTOM_ELEMENTS",
    "PHANTOM_LAYOUTS",
    "Phantom",
    "phantom",
    "phantom_maps",
    "PhaseLabels",
    "phantom_phases",
    "CANONICAL_BIN_EV",
    "CORPUS_STREAM",
    "HELD_OUT_ELEMENT_SETS",
    "Acquisition",
    "CorpusOptions",
    "draw_acquisition",
]
