"""``--check-notes``: the classical baselines' cube gains against published reference numbers.

The reference numbers are in ``benchmarks/reference_gains.csv`` (columns ``case``, ``method``,
``cube_gain_db`` and ``source``: where each number comes from). The check reruns those rows
(BM3D/BM4D from the cache when one is given) and passes when every gain is within
:data:`TOLERANCE_DB` of its reference.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .methods import METHODS
from .runner import run_bench, say
from .versions import package_versions

__all__ = ["REFERENCE_FILE", "TOLERANCE_DB", "read_reference_gains", "check_notes"]

#: The reference cube gains (dB) of the classical baselines.
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "reference_gains.csv"
#: Tolerance of ``--check-notes`` in dB.
TOLERANCE_DB = 0.5


def read_reference_gains(path: Path = REFERENCE_FILE) -> dict[str, dict[str, float]]:
    """Reference cube gains by case and method, in the order of the file.

    Parameters
    ----------
    path : pathlib.Path
        A CSV with the columns ``case``, ``method``, ``cube_gain_db`` (and ``source``).

    Returns
    -------
    dict
        ``case -> {method: cube gain in dB}``.
    """
    out: dict[str, dict[str, float]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] not in METHODS:
                raise ValueError(f"{path}: unknown method {row['method']!r}")
            out.setdefault(row["case"], {})[row["method"]] = float(row["cube_gain_db"])
    return out


def check_notes(
    seed: int = 0,
    tolerance_db: float = TOLERANCE_DB,
    cache_dir: Path | None = None,
    reference: Path = REFERENCE_FILE,
) -> bool:
    """Compare the baselines' cube gains with the reference file; print PASS/FAIL.

    Parameters
    ----------
    seed : int
        Seed of the count splits.
    tolerance_db : float
        Largest difference (dB) that passes.
    cache_dir : pathlib.Path or None
        Cache of the slow rows (BM3D, BM4D take many minutes each); ``None`` computes
        every row afresh.
    reference : pathlib.Path
        The reference gains (:func:`read_reference_gains`).

    Returns
    -------
    bool
        ``True`` when every number agrees within ``tolerance_db`` (skipped cases count as
        failures: nothing was checked). A baseline whose optional package (``bm3d``,
        ``bm4d``) is not installed is reported as SKIP and does not fail the check.
    """
    ok = True
    for case_name, notes in read_reference_gains(reference).items():
        expected = {}
        for method, want in notes.items():
            versions = package_versions(METHODS[method].packages)
            missing = [p for p, v in versions.items() if v == "absent"]
            if missing:
                say(
                    f"SKIP {case_name} {method}: the optional package {missing[0]} is not installed"
                )
            else:
                expected[method] = want
        result = run_bench([case_name], list(expected), seed=seed, cache_dir=cache_dir)
        if not result.rows:
            say(f"FAIL {case_name}: not run ({'; '.join(s[2] for s in result.skipped)})")
            ok = False
            continue
        got = {r["method"]: r["cube_gain_db"] for r in result.rows}
        for method, want in expected.items():
            value = got.get(method, float("nan"))
            good = bool(np.isfinite(value) and abs(value - want) <= tolerance_db)
            ok &= good
            say(
                f"{'PASS' if good else 'FAIL'} {case_name} {method}: cube gain {value:.2f} dB, "
                f"reference {want:.1f} dB (tolerance {tolerance_db} dB)"
            )
    say("check-notes: " + ("all PASS" if ok else "FAIL"))
    return ok
