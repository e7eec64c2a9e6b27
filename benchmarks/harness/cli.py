"""The command line of the benchmark: ``python benchmarks/run_bench.py [options]``.

See ``benchmarks/README.md`` and ``--help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .carry import read_carried
from .cases import CASES
from .hallucination import COLUMNS as CHECK_COLUMNS
from .hallucination import run_checks, write_checks
from .methods import BASELINES, GUIDED_BASELINES, METHODS
from .reference import REFERENCE_FILE, check_notes
from .report import comparisons, markdown_table, supervised_gaps, write_outputs
from .runner import run_bench, say

__all__ = ["PROG", "DEFAULT_OUTPUT", "build_parser", "main"]

#: How the harness is started (printed in the tables' headers).
PROG = "python benchmarks/run_bench.py"
#: Default output folder: ``benchmarks/results/``.
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "results"


def _comma_list(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``benchmarks/run_bench.py``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run every denoiser on the benchmark cases and print one table.",
    )
    parser.add_argument(
        "--cases",
        type=lambda t: _comma_list(t, CASES, "case"),
        default=list(CASES),
        help=f"comma list of cases (default all: {','.join(CASES)})",
    )
    parser.add_argument(
        "--methods",
        type=lambda t: _comma_list(t, METHODS, "method"),
        default=list(METHODS),
        help=f"comma list of methods (default all: {','.join(METHODS)})",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="output folder (default benchmarks/results/)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache of the slow rows (default: 'cache' beside the output folder)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, phantoms, networks")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps of n2s (default: its own)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="compute every row afresh; read and write no cache"
    )
    parser.add_argument(
        "--check-notes",
        action="store_true",
        help=f"check the baselines' cube gains against {REFERENCE_FILE.name} (exit 1 on FAIL)",
    )
    parser.add_argument(
        "--cache-only",
        type=lambda t: _comma_list(t, METHODS, "method"),
        default=[],
        help="comma list of cached methods (e.g. bm3d,bm4d) read from the cache only: "
        "a row not in the cache is skipped instead of computed",
    )
    parser.add_argument(
        "--carry",
        type=lambda t: _comma_list(t, METHODS, "method"),
        default=[],
        help="comma list of methods (e.g. bm3d,bm4d) whose rows are copied from --carry-from "
        "instead of computed; their 'cached' column says 'carried'",
    )
    parser.add_argument(
        "--carry-from",
        type=Path,
        default=None,
        help="the bench.csv of an earlier run that --carry copies rows from",
    )
    parser.add_argument(
        "--carry-cases",
        type=lambda t: _comma_list(t, CASES, "case"),
        default=None,
        help="comma list of the cases whose --carry rows are copied (default all): leave out "
        "cases whose inputs or element windows differ from the earlier run's",
    )
    parser.add_argument(
        "--hallucination",
        action="store_true",
        help="run the guide-image hallucination checks instead (see harness/hallucination.py)",
    )
    parser.add_argument("--list", action="store_true", help="list cases and methods and exit")
    return parser


def _command(argv: list[str] | None) -> str:
    return (PROG + " " + " ".join(sys.argv[1:] if argv is None else argv)).strip()


def _main_hallucination(
    args: argparse.Namespace,
    argv: list[str] | None,
    outdir: Path,
    cache_dir: Path | None,
    options: dict[str, Any],
    t0: float,
) -> int:
    rows, skipped = run_checks(seed=args.seed, options=options, cache_dir=cache_dir)
    total = time.perf_counter() - t0
    header = (
        f"# n2s_eds hallucination checks\n\n`{_command(argv)}`: seed {args.seed}, "
        f"{total:.0f} s in all. See benchmarks/harness/hallucination.py for the checks and limits."
    )
    paths = write_checks(rows, skipped, outdir, header)
    say("")
    say(markdown_table(rows, CHECK_COLUMNS))
    say(f"\nwrote {', '.join(str(p) for p in paths.values())} ({total:.0f} s)")
    return 0


def _print_summary(result: Any) -> None:
    say("")
    say(markdown_table(result.rows))
    for method, base in (("n2s", BASELINES), ("n2s_guided", GUIDED_BASELINES)):
        comp = comparisons(result.rows, method, base)
        if comp:
            say(f"\n{method} minus best baseline (dB):")
        for c in comp:
            say(
                f"  {c['case']:<28} cube {c['cube_gain_db']:+6.2f} (vs {c['cube_gain_db_best']})"
                f"  maps {c['maps_gain_db']:+6.2f} (vs {c['maps_gain_db_best']})"
            )
    for g in supervised_gaps(result.rows):
        say(
            f"  {g['case']:<28} n2s minus supervised bound: cube {g['cube_gain_db']:+6.2f}"
            f"  maps {g['maps_gain_db']:+6.2f} dB"
        )
    if result.carried:
        say(
            f"\ncarried from {result.carried_from}: "
            + ", ".join("/".join(k) for k in result.carried)
        )
    for case, method, why in result.skipped:
        say(f"SKIPPED {case}{' / ' + method if method else ''}: {why}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``benchmarks/run_bench.py``.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when ``--check-notes`` fails, 2 for bad arguments.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if bool(args.carry) != (args.carry_from is not None):
            parser.error("--carry and --carry-from go together")
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        for name, spec in CASES.items():
            say(f"case   {name}" + (f" (data: {', '.join(spec.data)})" if spec.data else ""))
        for name in METHODS:
            say(f"method {name}")
        return 0
    if args.check_notes:
        notes_cache = None if args.no_cache else args.cache_dir
        return 0 if check_notes(seed=args.seed, cache_dir=notes_cache) else 1

    outdir = args.output if args.output is not None else DEFAULT_OUTPUT
    cache_dir = None
    if not args.no_cache:
        cache_dir = args.cache_dir if args.cache_dir is not None else outdir.parent / "cache"
    options = {"steps": args.steps}
    t0 = time.perf_counter()
    if args.hallucination:
        return _main_hallucination(args, argv, outdir, cache_dir, options, t0)
    # read before anything is written: --carry-from may be the table this run replaces
    carried = (
        read_carried(args.carry_from, args.carry, cases=args.carry_cases) if args.carry else None
    )
    result = run_bench(
        args.cases,
        args.methods,
        seed=args.seed,
        options=options,
        cache_dir=cache_dir,
        cache_only=args.cache_only,
        carried=carried,
    )
    total = time.perf_counter() - t0
    header = (
        f"# n2s_eds benchmark\n\n`{_command(argv)}`: seed {args.seed}, "
        f"n2s steps {args.steps if args.steps is not None else 'default'}, {total:.0f} s in all."
        " Real cases: split gains (unbiased split MSE against the remainder); phantoms: gains "
        "and scores against the truth. See benchmarks/README.md."
    )
    written = write_outputs(result, outdir, header)
    _print_summary(result)
    say(f"\nwrote {', '.join(str(p) for p in written.values())} ({total:.0f} s)")
    return 0
