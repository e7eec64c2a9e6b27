"""The composition of every phase: its pixels' spectra summed and quantified (Cliff–Lorimer).

>>> from n2s_eds.segment.composition import phase_composition
>>> comp = phase_composition(signal, phases, {"Fe_Ka": 1.0, "Pt_La": 2.1})  # doctest: +SKIP
>>> print(comp.to_markdown())  # doctest: +SKIP

Summing the spectra of a phase before quantifying gathers all its counts into one spectrum,
so even a noisy scan gives a usable composition per phase. The line intensities are the
counts in each line's window (exspy's ``get_lines_intensity``, no background subtraction),
quantified by exspy's ``EDSTEMSpectrum.quantification(method="CL")``: a thin-film method;
for a bulk (SEM) specimen the numbers are a k-factor approximation without ZAF corrections.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from exspy.signals import EDSTEMSpectrum

from ..exceptions import InvalidInputError
from ..io.signals import describe_signal, is_lazy, is_signal
from .features import spectrum_image_shape
from .labels import integer_map

__all__ = ["PhaseComposition", "phase_composition", "composition_error"]


@dataclass(frozen=True)
class PhaseComposition:
    """The quantified composition of every phase.

    Attributes
    ----------
    phase_names : tuple of str
        One name per phase.
    lines : tuple of str
        The X-ray lines quantified (e.g. ``"Fe_Ka"``), one column each.
    atomic_percent : numpy.ndarray
        float ``(n_phases, n_lines)``: atomic percent per phase and line (each row sums to
        100 over the lines); NaN rows for phases without pixels.
    pixels : tuple of int
        Number of pixels of each phase.
    """

    phase_names: tuple[str, ...]
    lines: tuple[str, ...]
    atomic_percent: np.ndarray
    pixels: tuple[int, ...]

    @property
    def elements(self) -> tuple[str, ...]:
        """The element of each line (``"Fe_Ka"`` -> ``"Fe"``)."""
        return tuple(line.split("_")[0] for line in self.lines)

    def to_markdown(self, digits: int = 1) -> str:
        """A Markdown table: one row per phase, its pixel count and atomic percent per
        line (``n/a`` for a phase without pixels)."""
        header = ["phase", "pixels", *(f"{line} (at.%)" for line in self.lines)]
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, n, values in zip(self.phase_names, self.pixels, self.atomic_percent, strict=True):
            cells = ["n/a" if not np.isfinite(v) else f"{v:.{digits}f}" for v in values]
            rows.append("| " + " | ".join([name, str(n), *cells]) + " |")
        return "\n".join(rows)


@contextmanager
def _no_progressbar() -> Iterator[None]:
    """HyperSpy's progress bars off (exspy's ``weight_to_atomic`` shows one otherwise)."""
    import hyperspy.api as hs

    general = hs.preferences.General
    old = general.show_progressbar
    general.show_progressbar = False
    try:
        yield
    finally:
        general.show_progressbar = old


def _phase_array(phases: Any, shape: tuple[int, int]) -> tuple[np.ndarray, Any]:
    """Phase indices as int64 ``(Y, X)`` (``< 0``: left out) and the names in the signal's
    ``metadata.Segmentation`` (or None)."""
    names = None
    if is_signal(phases):
        names = phases.metadata.get_item("Segmentation.phase_names")
        data = phases.data
        if hasattr(data, "compute"):
            data = data.compute()
        arr = np.asarray(data)
    else:
        arr = np.asarray(phases)
    return integer_map(arr, shape, "phase indices", "pass the phase map"), names


def _check_signal(signal: Any) -> tuple[int, int]:
    shape = spectrum_image_shape(signal)
    if not hasattr(signal, "get_lines_intensity"):
        raise InvalidInputError(
            f"{describe_signal(signal)} is not an EDS signal: convert it with "
            "signal.set_signal_type('EDS_TEM') (or 'EDS_SEM') and name its X-ray lines."
        )
    if not signal.metadata.has_item("Sample.xray_lines"):
        raise InvalidInputError(
            "the spectrum image names no X-ray lines: the k-factors go with its lines. Call "
            "signal.set_lines([...]) (or signal.add_lines()) first."
        )
    return shape


def _k_factors(k_factors: Any, lines: list[str]) -> tuple[list[str], list[float]]:
    """The lines to quantify and their k-factors."""
    if isinstance(k_factors, Mapping):
        chosen = [str(line) for line in k_factors]
        unknown = [line for line in chosen if line not in lines]
        if unknown:
            raise InvalidInputError(
                f"k-factors for {unknown}, which are not X-ray lines of the spectrum image "
                f"({lines}); add them with signal.add_lines or leave them out."
            )
        chosen = [line for line in lines if line in chosen]
        factors = [k_factors[line] for line in chosen]
    elif isinstance(k_factors, Sequence | np.ndarray) and not isinstance(k_factors, str):
        factors = list(np.asarray(k_factors, dtype=object).ravel())
        if len(factors) != len(lines):
            raise InvalidInputError(
                f"{len(factors)} k-factors for {len(lines)} X-ray lines {lines}: pass one "
                "factor per line in this order, or a dict line -> factor."
            )
        chosen = list(lines)
    else:
        raise InvalidInputError(
            f"k_factors must be a sequence (one per X-ray line) or a dict line -> factor, "
            f"got {type(k_factors).__name__}."
        )
    try:
        values = [float(f) for f in factors]
    except (TypeError, ValueError):
        raise InvalidInputError(f"k-factors must be numbers, got {factors!r}.") from None
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise InvalidInputError(f"k-factors must be positive finite numbers, got {values}.")
    if len(chosen) < 2:
        raise InvalidInputError(
            f"Cliff–Lorimer needs at least two X-ray lines; got k-factors for {chosen}."
        )
    return chosen, values


def _phase_sums(signal: Any, phases: np.ndarray, n_phases: int) -> np.ndarray:
    """float64 ``(n_phases, E)``: each phase's spectra summed."""
    if is_lazy(signal):
        import dask
        import dask.array as da

        data = da.asarray(signal.data)
        sums = [
            (data * (phases == k)[..., None]).sum(axis=(0, 1), dtype=np.float64)
            for k in range(n_phases)
        ]
        return np.stack(dask.compute(*sums)).astype(np.float64)
    data = np.asarray(signal.data)
    return np.stack([data[phases == k].sum(axis=0, dtype=np.float64) for k in range(n_phases)])


def phase_composition(
    signal: Any,
    phases: Any,
    k_factors: Sequence[float] | Mapping[str, float],
    *,
    phase_names: Sequence[str] | None = None,
) -> PhaseComposition:
    """Atomic percent of every phase, from its pixels' summed spectrum (Cliff–Lorimer).

    For each phase ``k``, the spectra of the pixels where ``phases == k`` are summed into
    one spectrum (same energy axis and metadata), the counts in its X-ray line windows are
    taken (exspy's ``get_lines_intensity``, no background subtraction) and quantified with
    ``EDSTEMSpectrum.quantification(intensities, method="CL", factors=k_factors,
    composition_units="atomic")``. An SEM spectrum image is quantified the same way (as a
    thin film, no ZAF correction).

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        The spectrum image (raw or denoised counts) with its X-ray lines in
        ``metadata.Sample.xray_lines``. Not modified.
    phases : array_like or hyperspy.signals.Signal2D
        ``(Y, X)`` integer phase indices on the scan (negative values: pixels left out), or
        the phase map of :func:`~n2s_eds.segment.cluster.cluster` or the segmenter.
    k_factors : sequence of float or dict of str to float
        One Cliff–Lorimer k-factor per line of ``metadata.Sample.xray_lines``, in that
        order; or a dict line -> factor, which quantifies only those lines (at least two),
        e.g. one line per element.
    phase_names : sequence of str, optional
        The phase names; by default those in ``phases.metadata.Segmentation.phase_names``,
        else ``"phase 0"``, ``"phase 1"``, ... up to the largest index.

    Returns
    -------
    PhaseComposition

    Raises
    ------
    InvalidInputError
        Not an EDS spectrum image or no X-ray lines in its metadata; a phase map of another
        shape or of non-integer values, or indices beyond the phase names; k-factors missing,
        too many, not positive or for lines the signal lacks; fewer than two lines.
    """
    shape = _check_signal(signal)
    arr, meta_names = _phase_array(phases, shape)
    lines = [str(line) for line in signal.metadata.Sample.xray_lines]
    chosen, factors = _k_factors(k_factors, lines)
    names = phase_names if phase_names is not None else meta_names
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) < 1:
            raise InvalidInputError("phase_names is empty.")
    n_phases = len(names) if names is not None else max(int(arr.max()) + 1, 1)
    if arr.max() >= n_phases:
        raise InvalidInputError(
            f"the phase map reaches phase {int(arr.max())} but only {n_phases} phase names "
            "were given."
        )
    if names is None:
        names = tuple(f"phase {k}" for k in range(n_phases))
    pixels = tuple(int(np.count_nonzero(arr == k)) for k in range(n_phases))

    energy = signal.axes_manager.signal_axes[0]
    axes = [
        {"name": "phase", "size": n_phases, "units": ""},
        {
            "name": energy.name,
            "size": energy.size,
            "scale": energy.scale,
            "offset": energy.offset,
            "units": energy.units,
        },
    ]
    metadata = signal.metadata.as_dictionary()
    # EDSTEMSpectrum moves SEM acquisition metadata to TEM: quantification is TEM-only.
    summed = EDSTEMSpectrum(_phase_sums(signal, arr, n_phases), axes=axes, metadata=metadata)
    with warnings.catch_warnings(), _no_progressbar():
        warnings.simplefilter("ignore")
        intensities = summed.get_lines_intensity(xray_lines=chosen, show_progressbar=False)
        quantified = summed.quantification(
            intensities,
            method="CL",
            factors=factors,
            composition_units="atomic",
            navigation_mask=None,
            show_progressbar=False,
        )
    percent = np.stack([np.asarray(q.data, dtype=np.float64).ravel() for q in quantified], 1)
    percent[np.asarray(pixels) == 0] = np.nan
    return PhaseComposition(names, tuple(chosen), percent, pixels)


def composition_error(estimate: Any, reference: Any) -> np.ndarray:
    """Relative error ``|estimate - reference| / reference`` per phase and line.

    Parameters
    ----------
    estimate, reference : PhaseComposition or array_like
        Compositions of the same phases and lines (``PhaseComposition``: their lines must
        agree), or ``(n_phases, n_lines)`` arrays.

    Returns
    -------
    numpy.ndarray
        float ``(n_phases, n_lines)``; NaN where the reference is 0 or NaN.

    Raises
    ------
    InvalidInputError
        Different lines or shapes.
    """
    if isinstance(estimate, PhaseComposition) and isinstance(reference, PhaseComposition):
        if estimate.lines != reference.lines:
            raise InvalidInputError(
                f"the compositions quantify different lines: {estimate.lines} and "
                f"{reference.lines}."
            )
    est = np.asarray(getattr(estimate, "atomic_percent", estimate), dtype=np.float64)
    ref = np.asarray(getattr(reference, "atomic_percent", reference), dtype=np.float64)
    if est.shape != ref.shape:
        raise InvalidInputError(f"compositions differ in shape: {est.shape} and {ref.shape}.")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref != 0, np.abs(est - ref) / np.abs(ref), np.nan)
