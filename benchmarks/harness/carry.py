"""Rows carried from a previous table instead of computed (``--carry``, ``--carry-from``).

BM3D and BM4D rows take hours; when their cache is absent, a run can copy them, every column,
from the ``bench.csv`` of an earlier run. A carried row's ``cached`` column says ``carried``;
its quantification detail comes from the ``quant_bias.csv`` beside that file when there is one.
Nothing is checked against the current code: the report says which rows were carried and from
which file, and the figures draw no maps for them (no cube).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CARRIED", "Carried", "parse_value", "read_carried"]

#: The ``cached`` value of a carried row.
CARRIED = "carried"


def parse_value(text: str) -> Any:
    """A CSV cell as the value the runner had: bool, float (empty -> NaN) or text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return text


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as f:
        rows = [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:  # an empty flag (phantom rows leave it out) is False, not NaN
        for key, value in row.items():
            if key.endswith("_is_bound") and not isinstance(value, bool):
                row[key] = False
    return rows


@dataclass
class Carried:
    """Rows of earlier runs, by ``(case, method)``.

    Attributes
    ----------
    source : pathlib.Path
        The ``bench.csv`` they come from.
    methods : tuple of str
        The methods carried.
    rows : dict
        ``(case, method) -> row`` (every column of the CSV).
    quant : dict
        ``(case, method) -> quantification detail rows`` (from ``quant_bias.csv`` beside it).
    quant_source : pathlib.Path or None
        That ``quant_bias.csv``, when it exists.
    cases : tuple of str or None
        The cases whose rows are carried (``None``: all).
    """

    source: Path
    methods: tuple[str, ...]
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    quant: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    quant_source: Path | None = None
    cases: tuple[str, ...] | None = None

    def row(self, case: str, method: str) -> dict[str, Any] | None:
        """The carried row of a case and method (``cached`` set to ``carried``), or ``None``."""
        row = self.rows.get((case, method))
        if row is None:
            return None
        row = dict(row)
        row["case"], row["method"] = case, method
        row["cached"] = CARRIED
        return row

    def quant_rows(self, case: str, method: str) -> list[dict[str, Any]]:
        """The quantification detail rows of a carried row (may be empty)."""
        out = []
        for q in self.quant.get((case, method), []):
            q = dict(q)
            if isinstance(q.get("pixels"), float) and math.isfinite(q["pixels"]):
                q["pixels"] = int(q["pixels"])
            out.append(q)
        return out


def read_carried(path: Path, methods: Sequence[str], cases: Sequence[str] | None = None) -> Carried:
    """Read the rows of ``methods`` (of ``cases``; ``None``: all) from a ``bench.csv``
    written by an earlier run. A row of another case is not carried: it is computed, or
    skipped when its method is read from the cache only.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When it is not a benchmark table (no ``case`` / ``method`` columns).
    """
    path = Path(path)
    rows = _read(path)
    if rows and not {"case", "method"} <= set(rows[0]):
        raise ValueError(f"{path} is not a benchmark table (no case/method columns)")
    carried = Carried(path, tuple(methods), cases=None if cases is None else tuple(cases))
    for row in rows:
        if row["method"] in methods and (cases is None or row["case"] in cases):
            carried.rows[(str(row["case"]), str(row["method"]))] = row
    quant_path = path.with_name("quant_bias.csv")
    if quant_path.is_file():
        carried.quant_source = quant_path
        for q in _read(quant_path):
            if q.get("method") in methods and (cases is None or q.get("case") in cases):
                carried.quant.setdefault((str(q["case"]), str(q["method"])), []).append(q)
    return carried
