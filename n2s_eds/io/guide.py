"""Matching a guide image (HAADF, BSE, SE) onto a spectrum image's scan grid.

:func:`match_guide` compares the image's axes (scale, offset, units) with the
scan's (:func:`grid_relation`): on the same grid the image is used as it is;
on another grid covering the scan's area it is resampled onto the scan's
pixel centres; otherwise it is refused.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import InvalidInputError
from .signals import describe_signal, image_axes, is_lazy, is_signal, scan_axes_of, scan_shape_of

__all__ = ["match_guide"]

logger = logging.getLogger(__name__)

#: Length units HyperSpy readers write, as a factor to nanometres.
_LENGTH_TO_NM: dict[str, float] = {
    "pm": 1e-3,
    "Å": 0.1,
    "A": 0.1,
    "nm": 1.0,
    "µm": 1e3,
    "μm": 1e3,
    "um": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}
_UNDEFINED_UNITS = ("", "<undefined>", "none", "undefined")

#: Relative pixel-size difference tolerated between an image and a cube of the same shape.
#: RosettaSciIO's Bruker reader gives the spectrum image the y pixel size on both axes while
#: the image keeps its own x pixel size (7.8 % apart in ``bcf_v2_50x50px.bcf``): both are
#: still the same scan, pixel for pixel.
_SAME_SHAPE_SCALE_TOLERANCE = 0.1


def _units(axis: Any) -> str:
    units = axis.units
    text = "" if units is None else str(units).strip()
    return "" if text.lower() in _UNDEFINED_UNITS else text


class GridRelation(NamedTuple):
    """How an image grid relates to a scan grid (:func:`grid_relation`)."""

    kind: str  # "same", "resample" or "none"
    note: str


def _extent_text(shape: tuple[int, int], axes: tuple[Any, Any]) -> str:
    (ny, nx), (ax, ay) = shape, axes
    parts = []
    for name, n, a in (("x", nx, ax), ("y", ny, ay)):
        lo = a.offset - a.scale / 2
        hi = a.offset + (n - 0.5) * a.scale
        parts.append(f"{name} {lo:.6g} to {hi:.6g} {_units(a) or 'px'}")
    return ", ".join(parts)


def grid_relation(
    guide_axes: tuple[Any, Any], guide_shape: tuple[int, int], eds: Any
) -> GridRelation:
    """How an image grid relates to a spectrum image's scan grid."""
    scan_shape = scan_shape_of(eds)
    same_shape = tuple(guide_shape) == scan_shape
    sizes_g = (guide_shape[1], guide_shape[0])
    sizes_c = (scan_shape[1], scan_shape[0])
    exact = True
    near = True
    covers = True
    for ag, ac, ng, nc in zip(guide_axes, scan_axes_of(eds), sizes_g, sizes_c, strict=True):
        ug, uc = _units(ag), _units(ac)
        calibrated_alike = (ug, ag.scale, ag.offset) == (uc, ac.scale, ac.offset)
        if same_shape and (not ug or not uc) and not calibrated_alike:
            # An uncalibrated image of the scan's shape: the shape decides.
            return GridRelation("same", "units undefined: taken pixel for pixel")
        if ug == uc:
            fg = fc = 1.0
        elif ug in _LENGTH_TO_NM and uc in _LENGTH_TO_NM:
            fg, fc = _LENGTH_TO_NM[ug], _LENGTH_TO_NM[uc]
        elif same_shape:
            return GridRelation(
                "same", f"units {ug or 'undefined'!r} vs {uc or 'undefined'!r} not comparable"
            )
        else:
            return GridRelation("none", f"units {ug or 'undefined'!r} vs {uc or 'undefined'!r}")
        sg, og = ag.scale * fg, ag.offset * fg
        sc, oc = ac.scale * fc, ac.offset * fc
        px = abs(sc) if sc else 1.0
        exact &= math.isclose(sg, sc, rel_tol=1e-3) and abs(og - oc) <= 0.01 * px
        near &= abs(sg - sc) <= _SAME_SHAPE_SCALE_TOLERANCE * abs(sc) and abs(og - oc) <= px
        lo_g, hi_g = og - sg / 2, og + (ng - 0.5) * sg
        lo_c, hi_c = oc - sc / 2, oc + (nc - 0.5) * sc
        covers &= abs(lo_g - lo_c) <= 1.01 * px and abs(hi_g - hi_c) <= 1.01 * px
    if same_shape and exact:
        return GridRelation("same", "")
    if same_shape and near:
        return GridRelation("same", "pixel size or offset differs slightly from the scan's")
    if covers:
        return GridRelation("resample", "")
    return GridRelation("none", "covers another area")


def _factors(ag: Any, ac: Any) -> tuple[float, float]:
    """Factors bringing a guide axis and a scan axis to one length unit."""
    ug, uc = _units(ag), _units(ac)
    if ug == uc or ug not in _LENGTH_TO_NM or uc not in _LENGTH_TO_NM:
        return 1.0, 1.0
    return _LENGTH_TO_NM[ug], _LENGTH_TO_NM[uc]


def _resample(data: np.ndarray, guide_axes: tuple[Any, Any], eds: Any) -> np.ndarray:
    """Linear interpolation of an image onto the scan's pixel centres.

    A finer image is first averaged over about one scan pixel (box filter) so
    that it is not aliased; the half-sample shift of an even box is undone.
    """
    from scipy import ndimage

    coords, sizes = [], []
    for ag, ac, n in zip(guide_axes, scan_axes_of(eds), scan_shape_of(eds)[::-1], strict=True):
        fg, fc = _factors(ag, ac)
        centres = (ac.offset + ac.scale * np.arange(n)) * fc
        idx = (centres - ag.offset * fg) / (ag.scale * fg)
        size = max(1, int(round(abs(ac.scale * fc) / abs(ag.scale * fg))))
        if size % 2 == 0:
            idx = idx + 0.5
        coords.append(idx)
        sizes.append(size)
    x_idx, y_idx = coords
    src = np.asarray(data, dtype=np.float64)
    if max(sizes) > 1:
        src = ndimage.uniform_filter(src, size=sizes[::-1], mode="nearest")
    yy, xx = np.meshgrid(y_idx, x_idx, indexing="ij")
    out = ndimage.map_coordinates(src, [yy, xx], order=1, mode="nearest")
    return out.astype(np.float32)


def match_guide(guide: Any, eds: Any) -> np.ndarray:
    """Put a guide image onto a spectrum image's scan grid.

    Parameters
    ----------
    guide : hyperspy.signals.Signal2D or numpy.ndarray
        The HAADF/BSE/SE image. A numpy array must have exactly the scan shape
        (Y, X). A signal is compared on its axes' scale, offset and units: on
        the same grid its data are used as they are; with another pixel size or
        offset but covering the scan's area (within about one scan pixel) it is
        resampled onto the scan grid. A signal whose axes have undefined units
        is accepted when its shape equals the scan shape.
    eds : hyperspy.signals.BaseSignal
        The spectrum image (two navigation axes first).

    Returns
    -------
    numpy.ndarray
        float32 array of shape (Y, X) on the scan grid.

    Raises
    ------
    InvalidInputError
        When the guide is not a 2-D image, does not cover the scan, or holds
        NaN/inf.
    """
    if not is_signal(eds) or eds.axes_manager.navigation_dimension < 2:
        raise InvalidInputError(
            "match_guide needs the spectrum image (a HyperSpy signal with two navigation "
            "axes) as `eds`; check the order of the arguments."
        )
    scan_shape = scan_shape_of(eds)
    if is_signal(guide):
        axes = image_axes(guide)
        if axes is None:
            raise InvalidInputError(
                f"the guide image must be a 2-D image (Signal2D), got {describe_signal(guide)}. "
                "Pass the HAADF/BSE/SE image of the scan, e.g. `signal.T` for a map with "
                "two navigation axes."
            )
        data = guide.data
        if is_lazy(guide):
            data = data.compute()
        data = np.asarray(data)
        shape = (int(data.shape[0]), int(data.shape[1]))
        rel = grid_relation(axes, shape, eds)
        if rel.kind == "none":
            raise InvalidInputError(
                f"the guide image ({shape[0]} x {shape[1]} px: "
                f"{_extent_text(shape, axes)}) does not cover the spectrum image's scan "
                f"({scan_shape[0]} x {scan_shape[1]} px: "
                f"{_extent_text(scan_shape, scan_axes_of(eds))}); {rel.note}. Pass the image "
                "recorded with this scan, or fix its axes scale/offset/units."
            )
        if rel.kind == "resample":
            logger.info(
                "guide image %s x %s resampled onto the %s x %s scan grid", *shape, *scan_shape
            )
            out = _resample(data, axes, eds)
        else:
            if rel.note.startswith("units"):
                logger.info("guide image on the %s x %s scan: %s", *scan_shape, rel.note)
            elif rel.note:
                logger.warning(
                    "guide image taken pixel for pixel on the %s x %s scan (%s): %s vs %s",
                    *scan_shape,
                    rel.note,
                    _extent_text(shape, axes),
                    _extent_text(scan_shape, scan_axes_of(eds)),
                )
            out = data.astype(np.float32)
    else:
        try:
            out = np.asarray(guide, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"the guide must be a Signal2D or a numpy array, got {type(guide).__name__}."
            ) from exc
        if out.shape != scan_shape:
            raise InvalidInputError(
                f"the guide array has shape {out.shape} but the spectrum image's scan is "
                f"{scan_shape} (Y, X). Pass an array of exactly the scan shape, or a Signal2D "
                "with calibrated axes so that it can be resampled."
            )
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(
            f"the guide image holds {int(np.count_nonzero(~np.isfinite(out)))} NaN/inf "
            "pixels. Replace them (e.g. by the neighbouring values) before using it as a guide."
        )
    return np.ascontiguousarray(out)
