"""What a benchmark run writes: the tables (printed, CSV, Markdown) and the figures.

Outputs in the output folder: ``bench.csv``, ``bench.md`` (the printed table with the case
descriptions, "n2s minus the best baseline", the supervised gaps, the carried rows
and the skips), ``quant_bias.csv`` (line-ratio bias per phase region), one PNG of element maps
per case (``maps_<case>.png``) and ``n2s_vs_best_baseline.png``.
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .methods import BASELINES, GUIDED_BASELINES
from .runner import BenchResult, say
from .scores import COLUMNS

__all__ = [
    "QUANT_COLUMNS",
    "fmt",
    "is_bound",
    "markdown_table",
    "csv_value",
    "comparisons",
    "supervised_gaps",
    "carried_note",
    "write_outputs",
]

#: Columns of ``quant_bias.csv``.
QUANT_COLUMNS = (
    "case",
    "method",
    "ratio",
    "region",
    "pixels",
    "ratio_full",
    "ratio_denoised",
    "bias_pct",
)


def fmt(value: Any, column: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column == "seconds":
        return f"{value:.1f}"
    if column in (
        "cube_ssim",
        "maps_ssim",
        "count_ratio",
        "worst_map_count_ratio",
        "value",
        "unguided",
        "ratio_or_diff",
    ):
        return f"{value:.3f}"
    return f"{value:.2f}"


def is_bound(row: dict[str, Any], column: str) -> bool:
    """Whether a gain column (``cube_gain_db``) of a row holds only a lower bound."""
    return bool(row.get(column.removesuffix("_db") + "_is_bound", False))


def _cell(row: dict[str, Any], column: str) -> str:
    text = fmt(row.get(column), column)
    # a split gain the estimator cannot resolve is shown as its lower bound
    return ("≥" + text) if is_bound(row, column) else text


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """The rows as a Markdown table (unresolved split gains as lower bounds, ``≥``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, c) for c in columns) + " |")
    return "\n".join(lines)


def csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def comparisons(
    rows: Sequence[dict[str, Any]],
    method: str = "n2s",
    baselines: Sequence[str] = BASELINES,
) -> list[dict[str, Any]]:
    """Per case, ``method`` minus the best baseline (cube and maps gains, in dB).

    A baseline without a cube (``fused``, cube gain NaN) takes part in the maps comparison only.

    Gains the split cannot resolve (lower bounds) are left out of the comparison.
    """
    out = []
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        by = {r["method"]: r for r in rows if r["case"] == case}
        if method not in by:
            continue
        base = [by[m] for m in baselines if m in by]
        if not base:
            continue
        entry: dict[str, Any] = {"case": case}
        for col in ("cube_gain_db", "maps_gain_db"):
            # lower bounds (gains beyond the split's resolution) cannot be compared
            def usable(r: dict[str, Any], col: str = col) -> bool:
                return bool(np.isfinite(r[col])) and not is_bound(r, col)

            vals = [(b[col], b["method"]) for b in base if usable(b)]
            if not vals or not usable(by[method]):
                entry[col] = float("nan")
                entry[col + "_best"] = ""
                continue
            best, who = max(vals)
            entry[col] = by[method][col] - best
            entry[col + "_best"] = who
        out.append(entry)
    return out


def supervised_gaps(
    rows: Sequence[dict[str, Any]], method: str = "n2s", bound: str = "n2s_supervised"
) -> list[dict[str, Any]]:
    """Per phantom, ``method`` minus its supervised bound (cube and maps gains, in dB).

    Issue #5 asks the self-supervised default to come within 1 dB of the same network
    trained against the truth; a value of -0.4 means 0.4 dB short of the bound.
    """
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["method"]: r for r in rows if r["case"] == case}
        if method in by and bound in by:
            out.append(
                {
                    "case": case,
                    "cube_gain_db": by[method]["cube_gain_db"] - by[bound]["cube_gain_db"],
                    "maps_gain_db": by[method]["maps_gain_db"] - by[bound]["maps_gain_db"],
                }
            )
    return out


def _plot_maps(result: BenchResult, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for case, info in result.maps.items():
        methods = info["methods"]
        if not methods:
            continue
        names = info["names"]
        ref = info["reference"] * info["reference_scale"]
        rows = [(info["reference_label"], ref)] + list(methods.items())
        nr, nc = len(rows), len(names)
        fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc + 0.8, 2.0 * nr + 0.6), squeeze=False)
        scores = {r["method"]: r for r in result.rows if r["case"] == case}
        for j in range(nc):
            vmax = float(np.percentile(ref[j], 99.5)) or float(ref[j].max()) or 1.0
            for i, (label, maps) in enumerate(rows):
                ax = axes[i, j]
                ax.imshow(maps[j], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(names[j], fontsize=9)
                if j == 0:
                    text = label
                    if label in scores:
                        s = scores[label]
                        cube, maps_ = (
                            ("≥" if is_bound(s, c) else "") + f"{s[c]:.1f}"
                            for c in ("cube_gain_db", "maps_gain_db")
                        )
                        if np.isfinite(s["cube_gain_db"]):
                            text += f"\ncube {cube} dB"
                        text += f"\nmaps {maps_} dB"  # maps-only rows have no cube
                    ax.set_ylabel(text, fontsize=8)
        desc = textwrap.fill(result.descriptions.get(case, ""), width=12 * nc + 10)
        title = f"{case}: element maps\n{desc}"
        carried = [m for c, m in result.carried if c == case]
        if carried:  # carried rows have scores but no cube, so no maps to draw
            title += f"\nno maps for {', '.join(carried)} (rows carried from an earlier table)"
        fig.suptitle(title, fontsize=8)
        # keep the title's lines (8 pt, ~1.4 line spacing) clear of the column titles
        title_in = (title.count("\n") + 1) * 8 * 1.4 / 72 + 0.1
        fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - title_in / fig.get_figheight()))
        path = outdir / f"maps_{case}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_differences(comp: Sequence[dict[str, Any]], outdir: Path) -> Path | None:
    if not comp:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, title in zip(
        axes, ("cube_gain_db", "maps_gain_db"), ("cube", "element maps"), strict=True
    ):
        pairs = [(c[col], c["case"]) for c in comp if np.isfinite(c[col])]
        if not pairs:
            ax.set_title(f"{title}: no finite value")
            continue
        vals = np.array([v for v, _ in pairs])
        ax.hist(vals, bins=max(5, len(vals)), color="0.7", edgecolor="k")
        ax.axvline(0.0, color="k", lw=1, ls=":")
        best, worst = max(pairs), min(pairs)
        for (v, name), colour, tag in ((best, "tab:green", "best"), (worst, "tab:red", "worst")):
            ax.axvline(v, color=colour, lw=2)
            ax.annotate(
                f"{tag}: {name}\n{v:+.2f} dB",
                xy=(v, ax.get_ylim()[1] * (0.9 if tag == "best" else 0.7)),
                fontsize=8,
                color=colour,
                ha="center",
            )
        ax.set_title(f"{title}: n2s minus best baseline (dB)")
        ax.set_xlabel("gain difference (dB), > 0: n2s better")
        ax.set_ylabel("cases")
    fig.tight_layout()
    path = outdir / "n2s_vs_best_baseline.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def carried_note(result: BenchResult) -> str:
    """The Markdown note under the table that names the carried rows and their file."""
    if not result.carried:
        return ""
    rows = ", ".join(f"`{c}` / {m}" for c, m in result.carried)
    return (
        f"Carried rows (`cached` = carried): {rows}. They were not computed in this run: every "
        f"column is copied from `{result.carried_from}` (an earlier run, possibly of older "
        "code), their quantification detail from the `quant_bias.csv` beside it when present, "
        "and the maps figures have no panel for them (no denoised cube)."
    )


def write_outputs(result: BenchResult, outdir: Path, header: str = "") -> dict[str, Path]:
    """Write the CSV and Markdown tables, the quantification detail and the figures.

    Returns
    -------
    dict
        Name -> path of what was written.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    path = outdir / "bench.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        columns = (*COLUMNS, "cube_gain_is_bound", "maps_gain_is_bound")
        w.writerow(columns)
        for row in result.rows:
            w.writerow([csv_value(row.get(c, "")) for c in columns])
    written["csv"] = path
    path = outdir / "quant_bias.csv"
    qcols = QUANT_COLUMNS
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(qcols)
        for q in result.quant:
            w.writerow([csv_value(q.get(c)) for c in qcols])
    written["quant"] = path

    comp = comparisons(result.rows)
    md = [header, "", markdown_table(result.rows), ""]
    note = carried_note(result)
    if note:
        md += [note, ""]
    if result.descriptions:
        md += ["Cases:", ""]
        md += [
            f"- `{k}`: {v} ({result.seconds.get(k, 0):.0f} s)"
            for k, v in result.descriptions.items()
        ]
        md.append("")
    comp_cols = ("case", "cube_gain_db", "cube_gain_db_best", "maps_gain_db", "maps_gain_db_best")
    if comp:
        md += ["n2s minus the best baseline, classical or espm (dB):", ""]
        md += [markdown_table(comp, comp_cols), ""]
    comp_guided = comparisons(result.rows, "n2s_guided", GUIDED_BASELINES)
    if comp_guided:
        md += [
            "n2s_guided minus the best baseline, guided filter and (maps) fused included (dB):",
            "",
        ]
        md += [markdown_table(comp_guided, comp_cols), ""]
    gaps = supervised_gaps(result.rows)
    if gaps:
        md += ["n2s minus its supervised bound `n2s_supervised` (dB; target: > -1):", ""]
        md += [markdown_table(gaps, ("case", "cube_gain_db", "maps_gain_db")), ""]
    if result.skipped:
        md += ["Skipped:", ""]
        md += [f"- `{c}`{' / ' + m if m else ''}: {why}" for c, m, why in result.skipped]
        md.append("")
    path = outdir / "bench.md"
    path.write_text("\n".join(md).lstrip("\n"))
    written["md"] = path
    try:
        for p in _plot_maps(result, outdir):
            written[p.stem] = p
        p = _plot_differences(comp, outdir)
        if p is not None:
            written["differences"] = p
    except Exception as exc:  # figures are a bonus; the tables are written already
        say(f"figures not drawn: {type(exc).__name__}: {exc}")
    return written
