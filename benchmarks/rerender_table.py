"""Re-render a committed benchmark table from its CSV with the current table code.

``python benchmarks/rerender_table.py benchmarks/results/NAME.md``

Reads ``NAME.csv`` beside it (the rows the run wrote, with ``cube_gain_is_bound`` /
``maps_gain_is_bound``), and rewrites the main table and the "minus the best classical
baseline" tables of ``NAME.md`` with :func:`n2s_eds.bench.markdown_table` and
:func:`n2s_eds.bench.comparisons`. The numbers are not recomputed; the command line, the
"Cases" and "Skipped" sections are kept, and a line saying that the file was re-rendered is
added. Used after a fix of how unresolved split gains are shown (lower bounds, ``≥``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from n2s_eds import bench


def _value(text: str):
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text if text else float("nan")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    md_path = Path(argv[0])
    with md_path.with_suffix(".csv").open() as f:
        rows = [
            {k: (v if k in ("case", "method") else _value(v)) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]
    lines = md_path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| case | method"))
    header = lines[:start]
    rest = lines[start:]
    keep: list[str] = []
    section = None
    for line in rest:
        if line in ("Cases:", "Skipped:"):
            section = line
        elif line.startswith("n2s") and line.endswith("(dB):"):
            section = None
        if section:
            keep.append(line)
    comp_cols = ("case", "cube_gain_db", "cube_gain_db_best", "maps_gain_db", "maps_gain_db_best")
    out = [*header, bench.markdown_table(rows), ""]
    out += (
        [line for line in keep if not line.startswith("Skipped:")]
        if "Skipped:" not in keep
        else keep[: keep.index("Skipped:")]
    )
    comp = bench.comparisons(rows)
    if comp:
        out += [
            "n2s minus the best classical baseline (dB):",
            "",
            bench.markdown_table(comp, comp_cols),
            "",
        ]
    comp_g = bench.comparisons(rows, "n2s_guided", bench.GUIDED_BASELINES)
    if comp_g:
        out += [
            "n2s_guided minus the best classical baseline, guided filter included (dB):",
            "",
            bench.markdown_table(comp_g, comp_cols),
            "",
        ]
    if "Skipped:" in keep:
        out += keep[keep.index("Skipped:") :]
    out += [
        "",
        f"(Re-rendered from `{md_path.with_suffix('.csv').name}` by `python "
        "benchmarks/rerender_table.py` after the fix that shows unresolved split gains as lower "
        "bounds `≥` and leaves them out of the comparisons; the numbers are those of the run.)",
    ]
    md_path.write_text("\n".join(out).rstrip("\n") + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
