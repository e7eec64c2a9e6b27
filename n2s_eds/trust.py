"""The trust report of a denoised spectrum image, and the element-map stage that feeds it.

:func:`refine_signal` (eager) and :func:`refine_signal_lazy` run :mod:`n2s_eds.refine` on
a denoised signal's element windows: the X-ray lines of ``metadata.Sample.xray_lines``,
else the strongest peaks of the sum spectrum. :func:`record_trust` writes what the risk
estimates say into ``metadata.Signal.Denoising``:

* ``cube_estimated_gain_db``: the network's estimated gain on the voxels, from the
  Poisson risk estimates of its energy blend (when it has one);
* ``maps``: per element map, its estimated gain over the raw counts, a lower bound at
  about 97.5 % confidence and the parameters chosen for it;
* ``map_names`` and ``map_estimated_gains_db``: the same gains as plain lists.

A :class:`MapQualityWarning` is issued when a map's lower bound is below 0 dB: that map
may be worse than the raw counts' map.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import InvalidInputError, MapQualityWarning
from .metrics.windows import ElementWindow, element_windows
from .preprocess import EnergyWindow
from .refine import FEATURE_PEAKS, MapRefinement, refine_cube, refine_lazy

__all__ = ["MapsReport", "record_trust", "refine_signal", "refine_signal_lazy"]


@dataclass
class MapsReport:
    """What the element-map stage did for one signal.

    Attributes
    ----------
    refinement : MapRefinement or None
        The refined maps and their risk estimates; ``None`` when the stage was skipped.
    reason : str
        Why it was skipped (empty otherwise).
    """

    refinement: MapRefinement | None
    reason: str = ""


def _windows(signal: Any, window: EnergyWindow) -> tuple[list[ElementWindow], list[ElementWindow]]:
    maps = element_windows(signal, window)
    try:
        peaks = element_windows(signal, window, source="peaks", n_peaks=FEATURE_PEAKS)
    except InvalidInputError:
        peaks = []
    return maps, peaks


def refine_signal(
    signal: Any, data: np.ndarray, window: EnergyWindow, guide: np.ndarray | None, enabled: bool
) -> MapsReport | None:
    """Refine the element maps of the denoised ``data`` (Y, X, E) of ``signal`` in place
    (see :func:`n2s_eds.refine.refine_cube`); ``None`` when not ``enabled``."""
    if not enabled:
        return None
    try:
        windows, peaks = _windows(signal, window)
    except InvalidInputError as err:
        return MapsReport(None, str(err))
    raw = np.asarray(signal.data)
    result = refine_cube(raw, data, windows, peaks, guide, channels=window.slice)
    return MapsReport(result)


def refine_signal_lazy(
    signal: Any, data: Any, window: EnergyWindow, guide: np.ndarray | None, enabled: bool
) -> tuple[Any, MapsReport | None]:
    """The lazy counterpart of :func:`refine_signal`: returns the refined dask array."""
    if not enabled:
        return data, None
    try:
        windows, peaks = _windows(signal, window)
    except InvalidInputError as err:
        return data, MapsReport(None, str(err))
    out, result = refine_lazy(signal.data, data, windows, peaks, guide, channels=window.slice)
    return out, MapsReport(result)


def _cube_gain(net: Any) -> float | None:
    report = getattr(net, "blend_report", None) or {}
    gains = report.get("voxel_gain_db")
    if not gains:
        return None
    value = gains[-1]
    return None if value is None or not np.isfinite(value) else round(float(value), 2)


def record_trust(out: Any, net: Any, maps: MapsReport | None) -> None:
    """Write the trust report into ``out.metadata.Signal.Denoising`` and warn about maps
    that may have got worse (:class:`MapQualityWarning`)."""
    md = out.metadata
    cube_gain = _cube_gain(net)
    if cube_gain is not None:
        md.set_item("Signal.Denoising.cube_estimated_gain_db", cube_gain)
    if maps is None:
        md.set_item("Signal.Denoising.maps_refined", False)
        return
    if maps.refinement is None:
        md.set_item("Signal.Denoising.maps_refined", False)
        md.set_item("Signal.Denoising.maps_not_refined_because", maps.reason)
        return
    ref = maps.refinement
    report = ref.report()
    md.set_item("Signal.Denoising.maps_refined", True)
    md.set_item("Signal.Denoising.maps", json.dumps(report))
    md.set_item("Signal.Denoising.map_names", list(report))
    md.set_item(
        "Signal.Denoising.map_estimated_gains_db",
        [r["estimated_gain_db"] for r in report.values()],
    )
    worse = [
        f"{name} ({r['gain_lower_bound_db']:+.1f} dB)"
        for name, r in report.items()
        if r["gain_lower_bound_db"] is not None and r["gain_lower_bound_db"] < 0
    ]
    if worse:
        warnings.warn(
            "these element maps may be worse than the raw counts' maps (lower bound of the "
            f"estimated gain below 0 dB): {', '.join(worse)}. Check them against the raw "
            "maps, e.g. summed over larger regions, before quantifying.",
            MapQualityWarning,
            stacklevel=3,
        )
