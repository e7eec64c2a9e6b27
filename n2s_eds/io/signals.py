"""Small queries on HyperSpy signals shared by the readers, the guide matching and the checks."""

from __future__ import annotations

from typing import Any

__all__: list[str] = []


def is_signal(obj: Any) -> bool:
    """Whether ``obj`` is a HyperSpy signal."""
    from hyperspy.signal import BaseSignal

    return isinstance(obj, BaseSignal)


def signal_dims(signal: Any) -> tuple[int, int]:
    """(navigation dimension, signal dimension) of a signal."""
    am = signal.axes_manager
    return am.navigation_dimension, am.signal_dimension


def describe_signal(signal: Any) -> str:
    """Class, title and dimensions of a signal, for messages."""
    title = signal.metadata.get_item("General.title", "") or ""
    return f"{type(signal).__name__} {title!r} {signal.axes_manager._get_dimension_str()}"


def is_lazy(signal: Any) -> bool:
    """Whether a signal is lazy (dask-backed)."""
    return bool(getattr(signal, "_lazy", False))


def scan_shape_of(eds: Any) -> tuple[int, int]:
    """(Y, X) of a spectrum image's scan, from its first two navigation axes."""
    nav = eds.axes_manager.navigation_axes
    return int(nav[1].size), int(nav[0].size)


def scan_axes_of(eds: Any) -> tuple[Any, Any]:
    """(x, y) navigation axes of a spectrum image."""
    nav = eds.axes_manager.navigation_axes
    return nav[0], nav[1]


def image_axes(image: Any) -> tuple[Any, Any] | None:
    """(x, y) axes of a 2-D image signal, or ``None`` when it is not one."""
    nav_dim, sig_dim = signal_dims(image)
    am = image.axes_manager
    if sig_dim == 2 and nav_dim == 0:
        return am.signal_axes[0], am.signal_axes[1]
    if nav_dim == 2 and sig_dim == 0:
        return am.navigation_axes[0], am.navigation_axes[1]
    return None
