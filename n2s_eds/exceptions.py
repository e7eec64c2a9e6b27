"""The one exception type n2s_eds raises for bad input."""

from __future__ import annotations

__all__ = ["InvalidInputError"]


class InvalidInputError(ValueError):
    """Input that n2s_eds cannot denoise, with what was wrong and what to do.

    Raised before any expensive work starts; nothing has been modified or
    written when it is raised. It subclasses :class:`ValueError`, so code that
    already catches ``ValueError`` keeps working.
    """
