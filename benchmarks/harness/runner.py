"""Running the benchmark: every method on every case, each denoised cube scored.

:func:`run_bench` builds each case, runs (or reads from the cache, or carries from an
earlier table) each method and scores the result; it returns a :class:`BenchResult` that
:mod:`harness.report` writes out.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2s_eds.metrics import ElementWindow, element_maps

from .cache import cache_file, cache_key, cache_load, cache_save
from .carry import Carried
from .cases import Case, CaseSkipped, build_case
from .methods import METHODS, Method
from .scores import full_cube, score, score_maps

__all__ = ["FIGURE_MAPS", "BenchResult", "say", "figure_windows", "denoise", "run_bench"]

#: Element maps drawn per case in the figures (the strongest ones).
FIGURE_MAPS = 4


@dataclass
class BenchResult:
    """Everything one benchmark run produced.

    Attributes
    ----------
    rows : list of dict
        The table rows (:data:`harness.scores.COLUMNS`).
    quant : list of dict
        Quantification-bias detail rows (with ``case`` and ``method``).
    skipped : list of tuple
        ``(case, method or "", reason)``.
    maps : dict
        Per case: ``{"names": [...], "reference": maps, "methods": {method: maps}}`` for the
        figures.
    seconds : dict
        Wall time per case (load, all methods and scores).
    descriptions : dict
        One line per case.
    carried : list of tuple
        ``(case, method)`` of the rows carried from an earlier table (no cube, no maps).
    carried_from : pathlib.Path or None
        The table they come from.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    quant: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    carried: list[tuple[str, str]] = field(default_factory=list)
    carried_from: Path | None = None


def say(text: str) -> None:
    """Print a progress line at once."""
    print(text, flush=True)


def figure_windows(case: Case) -> list[ElementWindow]:
    """The :data:`FIGURE_MAPS` strongest element-map windows of a case (figure columns)."""
    totals = element_maps(case.reference, case.windows).sum(axis=(1, 2))
    keep = sorted(np.argsort(totals)[::-1][:FIGURE_MAPS])
    return [case.windows[i] for i in keep]


def denoise(
    case: Case,
    method: Method,
    seed: int,
    options: dict[str, Any],
    cache_dir: Path | None,
    cache_only: bool = False,
) -> tuple[np.ndarray, float, bool]:
    """The denoised window channels, the seconds it took and whether it came from the cache.

    For a maps-only method (``method.maps_only``) the first item is its element maps
    ``(n_maps, Y, X)`` of the case's windows instead. With ``cache_only``, a row that is not in
    the cache raises :class:`CaseSkipped`.
    """
    key = path = None
    if method.cached and cache_dir is not None:
        key = cache_key(case, method, seed, options)
        path = cache_file(cache_dir, key)
        hit = cache_load(path, key)
        if hit is not None:
            return hit[0], hit[1], True
    if cache_only:
        raise CaseSkipped("not in the cache (--cache-only); run it without --cache-only")
    if method.needs_truth:
        if case.truth is None:
            raise CaseSkipped("needs the truth, which only the phantoms have")
        options = {**options, "target": case.truth}
    if method.needs_case:
        options = {**options, "case": case}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = method.run(case.signal, case.guide, seed, options)
    if method.maps_only:
        window_cube = np.asarray(out, dtype=np.float32)  # the maps
        seconds = time.perf_counter() - t0
        if key is not None and path is not None:
            cache_save(path, key, window_cube, seconds)
        return window_cube, seconds, False
    data = out.data
    if hasattr(data, "compute"):
        data = data.compute()
    seconds = time.perf_counter() - t0
    window_cube = np.asarray(data[..., case.window.slice], dtype=np.float32)
    if key is not None and path is not None:
        cache_save(path, key, window_cube, seconds)
    return window_cube, seconds, False


def _why_not(case: Case, method: Method) -> str:
    if method.guided and case.guide is None:
        return "no guide image for this case"
    if method.needs_truth and case.truth is None:
        return "needs the truth, which only the phantoms have"
    return ""


def _say_row(row: dict[str, Any], seconds: float, note: str = "") -> None:
    def db(value: float) -> str:  # a maps-only row has no cube gain
        return f"{value:6.2f}" if np.isfinite(value) else f"{'–':>6}"

    say(
        f"  {row['method']:<13} cube {db(row['cube_gain_db'])} dB  maps "
        f"{db(row['maps_gain_db'])} dB  {seconds:7.1f} s" + (f"  ({note})" if note else "")
    )


def run_bench(
    cases: Sequence[str],
    methods: Sequence[str],
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    cache_only: Sequence[str] = (),
    carried: Carried | None = None,
) -> BenchResult:
    """Run methods on cases and score them.

    Parameters
    ----------
    cases, methods : sequence of str
        Keys of :data:`harness.cases.CASES` and :data:`harness.methods.METHODS`.
    seed : int
        Seed of the splits, the phantoms and the networks.
    options : dict, optional
        Run options (``steps`` for the networks).
    cache_dir : pathlib.Path or None
        Cache of the slow rows; ``None`` computes everything afresh and stores nothing.
    cache_only : sequence of str
        Methods whose rows are only read from the cache (skipped when absent).
    carried : Carried, optional
        Rows of earlier runs (:func:`harness.carry.read_carried`): the rows of its methods are
        copied from it, never computed (skipped when it has none for the case).

    Returns
    -------
    BenchResult
    """
    options = dict(options or {})
    result = BenchResult(carried_from=carried.source if carried is not None else None)
    carry_methods = set(carried.methods) if carried is not None else set()
    for mname in methods:  # snapshot the code versions before anything runs
        if mname not in carry_methods:
            METHODS[mname].code_version()
    for name in cases:
        t_case = time.perf_counter()
        try:
            case = build_case(name, seed)
        except CaseSkipped as exc:
            result.skipped.append((name, "", str(exc)))
            say(f"SKIPPED case {name}: {exc}")
            continue
        result.descriptions[name] = case.description
        say(f"case {name}: {case.description} (built in {time.perf_counter() - t_case:.1f} s)")
        fig_windows = figure_windows(case)
        result.maps[name] = {
            "names": [w.name for w in fig_windows],
            "reference": element_maps(case.reference, fig_windows),
            "reference_scale": float(case.raw[..., case.window.slice].sum())
            / max(float(case.reference[..., case.window.slice].sum()), 1e-12),
            "reference_label": "truth" if case.truth is not None else "full dose (scaled)",
            "methods": {},
        }
        for mname in methods:
            method = METHODS[mname]
            reason = _why_not(case, method)
            if reason:
                result.skipped.append((name, mname, reason))
                say(f"  {mname:<13} skipped: {reason}")
                continue
            if carried is not None and mname in carry_methods:
                row = carried.row(name, mname)
                if row is None:
                    reason = f"not in {carried.source} (--carry)"
                    if carried.cases is not None and name not in carried.cases:
                        reason = "not carried for this case (--carry-cases): not computed"
                    result.skipped.append((name, mname, reason))
                    say(f"  {mname:<13} skipped: {reason}")
                    continue
                result.rows.append(row)
                result.carried.append((name, mname))
                result.quant.extend(carried.quant_rows(name, mname))
                _say_row(
                    row, float(row.get("seconds", float("nan"))), f"carried from {carried.source}"
                )
                continue
            try:
                window_cube, seconds, cached = denoise(
                    case, method, seed, options, cache_dir, cache_only=mname in cache_only
                )
            except CaseSkipped as exc:
                result.skipped.append((name, mname, str(exc)))
                say(f"  {mname:<13} skipped: {exc}")
                continue
            except Exception as exc:  # one failing method must not stop the benchmark
                reason = f"{type(exc).__name__}: {exc}"
                result.skipped.append((name, mname, reason))
                say(f"  {mname:<13} FAILED: {reason}")
                continue
            if method.maps_only:  # window_cube holds the maps of case.windows
                scores, quant = score_maps(case, window_cube)
                fig_maps = window_cube[[case.windows.index(w) for w in fig_windows]]
            else:
                scores, quant = score(case, window_cube)
                fig_maps = element_maps(full_cube(case, window_cube), fig_windows)
            row = {"case": name, "method": mname, **scores}
            row["seconds"] = 0.0 if mname == "raw" else seconds
            row["cached"] = cached
            result.rows.append(row)
            result.quant.extend({"case": name, "method": mname, **q} for q in quant)
            result.maps[name]["methods"][mname] = fig_maps
            _say_row(row, seconds, "cached" if cached else "")
        result.seconds[name] = time.perf_counter() - t_case
        say(f"case {name} done in {result.seconds[name]:.1f} s")
    return result
