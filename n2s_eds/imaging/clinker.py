"""LA-ICP-MS line scans of a cement clinker (area 1) as 2D elemental maps, with phase masks.

The shared data folder ``laicpms_clinker_area1`` (see :func:`n2s_eds.datasets.data_dir`) holds
50 laser-ablation line scans of 700 points each, 11 isotopes, in counts/s, and three phase
masks (alite, belite, ferrite C4AF) as PNG images. :func:`read_clinker` returns the maps as a
HyperSpy stack of images, :func:`phase_masks` puts the masks on the same grid, and
:func:`clinker_report` compares an enhanced stack with the raw one: phase contrast
(:func:`phase_contrast`) and noise between lines (:func:`line_noise`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import data_path
from ..exceptions import InvalidInputError
from .validation import as_image_stack

__all__ = [
    "DWELL_S",
    "PHASES",
    "clinker_report",
    "contrast_pairs",
    "count_scale",
    "line_noise",
    "phase_contrast",
    "phase_masks",
    "read_clinker",
    "to_counts",
]

FOLDER = "laicpms_clinker_area1"
#: Dwell time per isotope (s). Not written in the ``.xl`` exports; derived from the data: with a
#: detector dead time of 30 ns, ``cps / (1 + cps * 30e-9) * dwell`` is a whole number for every
#: value below 2e6 cps (82 K39 values above it come from the detector's analog stage), with
#: these dwells and with no shorter one.
DWELL_S: dict[str, float] = {
    "Na23": 5e-3, "Mg24": 3e-3, "Al27": 3e-3, "K39": 5e-3, "Ti47": 7e-3, "V51": 7e-3,
    "Cr52": 7e-3, "Mn55": 7e-3, "Zn66": 7e-3, "Rb87": 7e-3, "Ba137": 7e-3,
}  # fmt: skip
DEAD_TIME_S = 30e-9
#: Line spacing (µm): the value measured on an SEM image of the ablated area by the authors of
#: the data (kleinerELM/LA-ICP-MS); the exports do not record it.
LINE_SPACING_UM = 7.0
#: Point spacing along a line (µm), from the same source (their spreadsheet export).
POINT_SPACING_UM = 0.579150579150579
PHASES = ("alite", "belite", "C4AF")
# Mask registration (see phase_masks): PNG row r is point r + 140, PNG column 7 * l is line l.
_MASK_SHAPE, _MASK_FIRST_POINT, _MASK_COLUMNS_PER_LINE = (519, 344), 140, 7


def _folder(folder: str | Path | None) -> Path:
    path = Path(folder) if folder is not None else data_path(FOLDER).parent
    if not path.is_dir():
        raise FileNotFoundError(
            f"the LA-ICP-MS clinker data folder {path} is absent; set N2S_EDS_DATA to the shared "
            f"data folder that holds {FOLDER}/."
        )
    return path


def _ablation_window(stack: np.ndarray) -> tuple[int, int]:
    """First and one-past-last point of the laser-on part of the lines (gas blank outside)."""
    means = stack.mean(axis=(1, 2))
    profile = (stack.mean(axis=1) / np.where(means > 0, means, 1.0)[:, None]).mean(axis=0)
    on = profile > 0.5 * (np.percentile(profile, 10) + np.percentile(profile, 90))
    return int(np.argmax(on)), int(on.size - np.argmax(on[::-1]))


def read_clinker(folder: str | Path | None = None) -> Any:
    """Read the clinker acquisition as a stack of 11 elemental maps of 50 x 700 points.

    Parameters
    ----------
    folder : str or pathlib.Path, optional
        The ``laicpms_clinker_area1`` folder; by default ``data_dir() / "laicpms_clinker_area1"``.

    Returns
    -------
    hyperspy.signals.Signal2D
        Data ``(11, 50, 700)`` float32 in counts/s (dead-time corrected, as exported). The
        navigation axis ``isotope`` indexes the isotopes; signal axis ``y`` is the line (scale
        7 µm) and ``x`` the point along the line (scale 0.5792 µm).
        ``metadata.Acquisition_instrument.LA_ICP_MS`` holds ``isotopes``, ``dwell_time_s``
        (per isotope, so counts = cps x dwell, see :func:`count_scale`), ``dead_time_s``,
        ``time_per_point_s`` (0.0744 s, from ``time_s``), ``line_spacing_um``,
        ``point_spacing_um``, ``scan_speed_um_s`` (point spacing / time per point) and
        ``ablation_points`` (first and one-past-last laser-on point; gas blank outside).

    Raises
    ------
    FileNotFoundError
        The folder or its ``area1_cps_lines.npz`` is absent.

    Notes
    -----
    The raw ``.xl`` headers record only "Intensity Vs Time, Counts Per Second" and the column
    names; neither spot size, scan speed nor line spacing. The µm scales are therefore the
    values used by the data's authors (line spacing from an SEM image, point spacing from
    their spreadsheet export), not read from the files: ``metadata.Signal.assumed_axes`` is
    True. The dwells are derived from the count quantisation (see :data:`DWELL_S`).
    """
    import hyperspy.api as hs

    path = _folder(folder) / "area1_cps_lines.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is absent (the LA-ICP-MS clinker data).")
    with np.load(path) as npz:
        data = np.ascontiguousarray(np.moveaxis(npz["cps"], -1, 0), dtype=np.float32)
        isotopes = [str(s) for s in npz["isotopes"]]
        time_s = np.asarray(npz["time_s"], dtype=float)
    signal = hs.signals.Signal2D(data)
    signal.axes_manager.navigation_axes[0].name = "isotope"
    x_axis, y_axis = signal.axes_manager.signal_axes
    x_axis.name, x_axis.units, x_axis.scale = "x", "µm", POINT_SPACING_UM
    y_axis.name, y_axis.units, y_axis.scale = "y", "µm", LINE_SPACING_UM
    time_per_point = float((time_s[-1] - time_s[0]) / (time_s.size - 1))
    md = signal.metadata
    md.General.title = "LA-ICP-MS clinker area 1: " + ", ".join(isotopes)
    md.set_item("Signal.quantity", "Intensity (counts/s)")
    md.set_item("Signal.assumed_axes", True)
    prefix = "Acquisition_instrument.LA_ICP_MS."
    md.set_item(prefix + "isotopes", isotopes)
    md.set_item(prefix + "dwell_time_s", [DWELL_S[i] for i in isotopes])
    md.set_item(prefix + "dead_time_s", DEAD_TIME_S)
    md.set_item(prefix + "time_per_point_s", time_per_point)
    md.set_item(prefix + "line_spacing_um", LINE_SPACING_UM)
    md.set_item(prefix + "point_spacing_um", POINT_SPACING_UM)
    md.set_item(prefix + "scan_speed_um_s", POINT_SPACING_UM / time_per_point)
    md.set_item(prefix + "ablation_points", list(_ablation_window(data)))
    return signal


def count_scale(signal: Any) -> np.ndarray:
    """Per-isotope factor from counts/s to counts: the dwell time in seconds, shape ``(n,)``.

    ``counts = cps * count_scale(signal)[:, None, None]``; InvalidInputError without them.
    """
    key = "Acquisition_instrument.LA_ICP_MS.dwell_time_s"
    if not hasattr(signal, "metadata") or not signal.metadata.has_item(key):
        raise InvalidInputError(f"the signal has no metadata.{key}; read it with read_clinker.")
    return np.asarray(signal.metadata.get_item(key), dtype=float)


def to_counts(signal: Any, *, detected: bool = False) -> np.ndarray:
    """Counts per point and isotope, ``(n, H, W)`` float64.

    With ``detected=False`` this is ``cps x dwell`` (dead-time corrected counts); with
    ``detected=True`` the dead-time correction is undone, ``cps / (1 + cps * tau) x dwell``,
    which gives the registered pulse counts (whole numbers for the raw data below 2e6 cps).
    """
    cps = np.asarray(signal.data, dtype=float)
    if detected:
        tau = float(signal.metadata.get_item("Acquisition_instrument.LA_ICP_MS.dead_time_s"))
        cps = cps / (1.0 + cps * tau)
    return cps * count_scale(signal)[:, None, None]


def phase_masks(
    folder: str | Path | None = None, shape: tuple[int, int] = (50, 700)
) -> dict[str, np.ndarray]:
    """The alite, belite and C4AF masks registered to the (line, point) grid of the maps.

    Registration: a PNG is 519 x 344 pixels, rows along the scan and columns across the
    lines. It is the map transposed (no flip), trimmed to points 140..658, with the 50 lines
    stretched to 344 columns (6 interpolated columns between lines, column ``7 * l`` on line
    ``l``). Each line gets the mean of the 7 columns centred on it (area averaging over the
    line spacing; the last line's band is padded with its edge column), a point takes its PNG
    row as is, points outside 140..658 are outside every mask. A point belongs to a phase
    where that mean exceeds half the PNG's range (> 127.5 of 255); where two phases exceed it
    the larger mean wins, so the masks never overlap. For another ``shape`` the fractions are
    resized (anti-aliased) before thresholding.

    Parameters
    ----------
    folder : str or pathlib.Path, optional
        The ``laicpms_clinker_area1`` folder; by default under :func:`data_dir`.
    shape : tuple of int
        ``(lines, points)`` of the grid.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"alite": bool (H, W), "belite": ..., "C4AF": ...}``, disjoint.

    Raises
    ------
    FileNotFoundError
        The folder or a PNG is absent.
    ValueError
        A PNG is not 519 x 344 pixels.
    """
    # Evidence (mean |Pearson r| between the 3 masks and the 11 log maps, over laser-on points
    # inside the masks' support): transposed, no flip, PNG rows 1:1 from point 140: 0.21 (0.25
    # with the 7-column band mean); lines flipped 0.07, points flipped 0.09, both 0.09 (each at
    # its best offset); plain resizes of the PNG to 50 x 700 in any of the 8 orientations at most
    # 0.14. The offset peaks at 140 (0.20 at 136 and 144); a row scale of 0.98 or 1.02 beats 1:1
    # by at most 0.002. The signs fit the chemistry: V, Rb, Ba, K, Na higher in belite, Mg
    # and Cr in alite, Al, Ti, Mn and Mg in the ferrite. 15 PNG pixels exceed half in two
    # masks; after the band mean no point does, the argmax only guards against it.
    from PIL import Image
    from scipy.ndimage import uniform_filter1d
    from skimage.transform import resize

    base = _folder(folder) / "phase_masks"
    n_lines = (_MASK_SHAPE[1] - 1) // _MASK_COLUMNS_PER_LINE + 1
    points = slice(_MASK_FIRST_POINT, _MASK_FIRST_POINT + _MASK_SHAPE[0])
    fractions = np.zeros((len(PHASES), n_lines, 700))
    for k, phase in enumerate(PHASES):
        path = base / f"aligned{phase}.png"
        if not path.is_file():
            raise FileNotFoundError(f"the phase mask {path} is absent.")
        with Image.open(path) as im:
            png = np.asarray(im.convert("L"), dtype=float) / 255.0
        if png.shape != _MASK_SHAPE:
            raise ValueError(f"{path.name}: expected {_MASK_SHAPE} pixels, got {png.shape}.")
        band = uniform_filter1d(png.T, _MASK_COLUMNS_PER_LINE, axis=0, mode="nearest")
        fractions[k, :, points] = band[::_MASK_COLUMNS_PER_LINE]
    if tuple(shape) != fractions.shape[1:]:
        fractions = resize(fractions, (len(PHASES), *shape), order=1, anti_aliasing=True)
    winner, inside = fractions.argmax(axis=0), fractions.max(axis=0) > 0.5
    return {phase: inside & (winner == k) for k, phase in enumerate(PHASES)}


def phase_contrast(image: Any, mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Mean intensity inside ``mask_a`` over the mean inside ``mask_b``.

    Returns NaN when a mask is empty or the mean inside ``mask_b`` is zero.
    """
    img = np.asarray(image, dtype=float)
    a, b = np.asarray(mask_a, bool), np.asarray(mask_b, bool)
    if a.shape != img.shape or b.shape != img.shape:
        raise InvalidInputError(
            f"image {img.shape} and masks {a.shape}, {b.shape} must have the same shape."
        )
    if not a.any() or not b.any():
        return float("nan")
    mean_b = img[b].mean()
    return float(img[a].mean() / mean_b) if mean_b != 0 else float("nan")


def _stack(signal: Any, name: str) -> tuple[np.ndarray, list[str]]:
    """Float64 ``(n, H, W)`` data and its isotope names (indices when the metadata lack them)."""
    data = signal.data if hasattr(signal, "axes_manager") else signal
    stack = as_image_stack(data, name=name)[0].astype(float)
    key = "Acquisition_instrument.LA_ICP_MS.isotopes"
    if hasattr(signal, "metadata") and signal.metadata.has_item(key):
        names = [str(s) for s in signal.metadata.get_item(key)]
        if len(names) == len(stack):
            return stack, names
    return stack, [str(i) for i in range(len(stack))]


def contrast_pairs(signal: Any, masks: dict[str, np.ndarray]) -> dict[str, tuple[str, str, float]]:
    """For each isotope, the two masks between which its mean differs most.

    Returns ``{isotope: (richer phase, poorer phase, ratio)}``, the pair with the largest
    ``|log ratio|`` of mean intensities, ratio >= 1. Isotopes whose ratios are all undefined
    (zero or empty means) are left out.
    """
    stack, names = _stack(signal, "signal")
    out: dict[str, tuple[str, str, float]] = {}
    phases = list(masks)
    for image, name in zip(stack, names, strict=True):
        best: tuple[str, str, float] | None = None
        for i, a in enumerate(phases):
            for b in phases[i + 1 :]:
                ratio = phase_contrast(image, masks[a], masks[b])
                if not np.isfinite(ratio) or ratio <= 0:
                    continue
                pair = (a, b, ratio) if ratio >= 1 else (b, a, 1.0 / ratio)
                if best is None or pair[2] > best[2]:
                    best = pair
        if best is not None:
            out[name] = best
    return out


def line_noise(
    image: Any, *, region: np.ndarray | None = None, robust: bool = True
) -> float | np.ndarray:
    """Noise standard deviation from differences between adjacent lines (rows).

    ``d = row[i + 1] - row[i]`` holds twice the noise variance plus the change of the scene
    from one line to the next: structure that is the same on both lines (for example a
    column pattern) cancels, structure that differs inflates the estimate, so it is an upper
    bound on the noise. ``robust=True`` gives ``1.4826 * MAD(d) / sqrt(2)``, which ignores
    the sharp changes at phase boundaries; for counting data of a few counts per point the MAD
    moves in steps of one count, ``robust=False`` (the standard deviation of ``d`` over
    ``sqrt(2)``) then resolves smaller changes.

    Parameters
    ----------
    image : array_like or hyperspy.signals.Signal2D
        One image ``(H, W)`` or a stack ``(n, H, W)``.
    region : numpy.ndarray of bool, optional
        ``(H, W)``: only pairs of points that are both inside are used.
    robust : bool
        MAD-based (True) or standard deviation (False).

    Returns
    -------
    float or numpy.ndarray
        A float for one image, an ``(n,)`` array for a stack.
    """
    data = image.data if hasattr(image, "axes_manager") else image
    stack, single = as_image_stack(data, name="image")
    diffs = np.diff(stack.astype(float), axis=1)
    if region is not None:
        inside = np.asarray(region, bool)
        if inside.shape != stack.shape[1:]:
            raise InvalidInputError(f"region {inside.shape} must be {stack.shape[1:]}.")
        keep = inside[1:] & inside[:-1]
        if not keep.any():
            raise InvalidInputError("region holds no two vertically adjacent points.")
        diffs = diffs[:, keep]
    diffs = diffs.reshape(len(stack), -1)
    if robust:
        mad = np.median(np.abs(diffs - np.median(diffs, axis=1, keepdims=True)), axis=1)
        sigma = 1.482602218505602 * mad / np.sqrt(2.0)
    else:
        sigma = diffs.std(axis=1) / np.sqrt(2.0)
    return float(sigma[0]) if single else sigma


def clinker_report(
    raw: Any,
    enhanced: Any,
    masks: dict[str, np.ndarray],
    *,
    region: np.ndarray | None = None,
    robust: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per isotope: the phase contrast and the line noise of an enhanced stack against the raw.

    The phase pair of each isotope is chosen on the raw stack (:func:`contrast_pairs`) and the
    enhanced contrast is measured on the same pair. The target "the contrast between phase
    masks stays within 5 % of the raw image's while the noise falls at least twofold" is
    ``|contrast_change_pct| <= 5`` and ``noise_ratio >= 2`` (``meets_target``).

    Parameters
    ----------
    raw, enhanced : hyperspy.signals.Signal2D or array_like
        Stacks ``(n, H, W)`` of the same shape (the same unit; a common scale cancels in the
        contrast but not in the noise).
    masks : dict of str to numpy.ndarray
        Phase masks ``(H, W)``, e.g. from :func:`phase_masks`.
    region : numpy.ndarray of bool, optional
        ``(H, W)`` where the noise is measured; by default the laser-on points of ``raw``
        (``metadata...ablation_points``, else estimated from ``raw``).
    robust : bool
        Passed to :func:`line_noise`.

    Returns
    -------
    dict
        ``{isotope: {"phase_a", "phase_b", "raw_contrast", "enhanced_contrast",
        "contrast_change_pct", "raw_noise", "enhanced_noise", "noise_ratio",
        "meets_target"}}``, where ``noise_ratio = raw_noise / enhanced_noise``.
    """
    raw_stack, names = _stack(raw, "raw")
    enh_stack, _ = _stack(enhanced, "enhanced")
    if enh_stack.shape != raw_stack.shape:
        raise InvalidInputError(
            f"enhanced {enh_stack.shape} and raw {raw_stack.shape} must have the same shape."
        )
    if region is None:
        key = "Acquisition_instrument.LA_ICP_MS.ablation_points"
        has_key = hasattr(raw, "metadata") and raw.metadata.has_item(key)
        first, stop = raw.metadata.get_item(key) if has_key else _ablation_window(raw_stack)
        region = np.zeros(raw_stack.shape[1:], bool)
        region[:, int(first) : int(stop)] = True
    raw_noise = line_noise(raw_stack, region=region, robust=robust)
    enh_noise = line_noise(enh_stack, region=region, robust=robust)
    pairs = contrast_pairs(raw_stack, masks)
    report: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        if str(k) not in pairs:
            continue
        a, b, _ = pairs[str(k)]
        raw_c = phase_contrast(raw_stack[k], masks[a], masks[b])  # as enh_c, not inverted
        enh_c = phase_contrast(enh_stack[k], masks[a], masks[b])
        change = 100.0 * (enh_c / raw_c - 1.0)
        ratio = raw_noise[k] / enh_noise[k] if enh_noise[k] > 0 else float("inf")
        report[name] = {
            "phase_a": a,
            "phase_b": b,
            "raw_contrast": raw_c,
            "enhanced_contrast": enh_c,
            "contrast_change_pct": change,
            "raw_noise": float(raw_noise[k]),
            "enhanced_noise": float(enh_noise[k]),
            "noise_ratio": float(ratio),
            "meets_target": bool(abs(change) <= 5.0 and ratio >= 2.0),
        }
    return report
