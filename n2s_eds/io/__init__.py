"""Reading and writing spectrum images, pairing the guide image, and input validation.

:func:`load` reads any file HyperSpy/RosettaSciIO reads and picks, by
dimensions and signal type (never by position in the returned list), the EDS
spectrum image and the image (HAADF, BSE, SE) recorded on the same scan.
:func:`check_spectrum_image` refuses, before any expensive work, the input the
denoiser cannot use, with a message saying what was wrong and what to do.
:func:`match_guide` puts a guide image onto the spectrum image's scan grid, and
:func:`save` writes any format HyperSpy writes without ever leaving a
half-written file behind.

Modules
-------
readers
    :func:`load`, :func:`load_guide`, :class:`Acquisition`.
guide
    :func:`match_guide`: a guide image on the scan grid.
validation
    :func:`check_spectrum_image`, :class:`NonIntegerCountsWarning`.
writers
    :func:`save` (atomic) and :func:`result_signal`.
signals
    Small queries on HyperSpy signals shared by the others.
"""

from __future__ import annotations

from .guide import match_guide
from .readers import Acquisition, load, load_guide
from .validation import NonIntegerCountsWarning, check_spectrum_image
from .writers import result_signal, save

__all__ = [
    "Acquisition",
    "result_signal",
    "NonIntegerCountsWarning",
    "load",
    "load_guide",
    "check_spectrum_image",
    "match_guide",
    "save",
]
