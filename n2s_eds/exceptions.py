"""The exception n2s_eds raises for bad input, and the warning about element maps."""

from __future__ import annotations

__all__ = ["InvalidInputError", "MapQualityWarning"]


class InvalidInputError(ValueError):
    """Input that n2s_eds cannot denoise, with what was wrong and what to do.

    Raised before any expensive work starts; nothing has been modified or
    written when it is raised. It subclasses :class:`ValueError`, so code that
    already catches ``ValueError`` keeps working.
    """


class MapQualityWarning(UserWarning):
    """An element map of a denoised signal may be worse than the raw counts' map, by the
    lower confidence bound of its estimated gain (see ``metadata.Signal.Denoising``)."""
