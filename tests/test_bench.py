"""Tests of the benchmark harness (benchmarks/harness) on a small phantom, with cheap methods."""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from n2s_eds import baselines

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the harness lives outside the installed package
    sys.path.insert(0, str(BENCHMARKS))

from harness import cache, cases, cli, methods, reference, report, runner, scores  # noqa: E402
from harness.versions import code_sources, code_version  # noqa: E402

CASE = "phantom_tem_dose20"
METHODS = "raw,gaussian1,pca,n2s"


@pytest.fixture
def small_phantoms(monkeypatch):
    """Shrink the phantom cases so that the whole benchmark runs in seconds."""
    monkeypatch.setattr(cases, "PHANTOM_SHAPE", (24, 22))
    monkeypatch.setattr(cases, "PHANTOM_CHANNELS", 400)


def _run(tmp_path, *extra: str) -> int:
    argv = [
        "--cases",
        CASE,
        "--methods",
        METHODS,
        "--steps",
        "3",
        "--output",
        str(tmp_path / "out"),
    ]
    return cli.main([*argv, *extra])


def _rows(tmp_path) -> list[dict[str, str]]:
    with (tmp_path / "out" / "bench.csv").open() as f:
        return list(csv.DictReader(f))


def test_bench_writes_tables_and_reuses_cache(tmp_path, monkeypatch, small_phantoms, capsys):
    assert _run(tmp_path) == 0
    out = tmp_path / "out"
    assert (out / "bench.csv").is_file()
    md = (out / "bench.md").read_text()
    assert (out / f"maps_{CASE}.png").is_file()
    assert (out / "n2s_vs_best_baseline.png").is_file()
    printed = capsys.readouterr().out
    assert "| case | method |" in printed

    rows = _rows(tmp_path)
    assert [r["method"] for r in rows] == METHODS.split(",")
    assert list(rows[0]) == [*scores.COLUMNS, "cube_gain_is_bound", "maps_gain_is_bound"]
    for column in scores.COLUMNS:
        assert column in md
    for row in rows:
        assert row["case"] == CASE
        for column in scores.COLUMNS[2:-1]:
            assert math.isfinite(float(row[column])), (row["method"], column)
    raw = rows[0]
    assert float(raw["cube_gain_db"]) == 0.0
    assert float(raw["maps_gain_db"]) == 0.0
    assert float(raw["count_ratio"]) == pytest.approx(1.0)
    assert float(rows[1]["cube_gain_db"]) > 0  # Gaussian smoothing helps at 20 counts/px
    assert (out / "quant_bias.csv").read_text().count(CASE) > 0
    cached = list((tmp_path / "cache").glob(f"{CASE}__n2s__*.npz"))
    assert len(cached) == 1

    # Second run: the network row must come from the cache, not from training.
    def refuse(*args, **kwargs):
        raise AssertionError("n2s was recomputed although its cached cube is valid")

    monkeypatch.setattr("n2s_eds.api.denoise", refuse)
    assert _run(tmp_path) == 0
    rows2 = _rows(tmp_path)
    n2s = [r for r in rows2 if r["method"] == "n2s"][0]
    assert n2s["cached"] == "True"
    assert float(n2s["cube_gain_db"]) == pytest.approx(
        float([r for r in rows if r["method"] == "n2s"][0]["cube_gain_db"]), abs=1e-4
    )

    # A changed code version invalidates the cached row.
    calls = []

    def changed_n2s(signal, guide, seed, options):
        calls.append(1)
        return baselines.gaussian(signal, sigma=1.5)

    method = dataclasses.replace(methods.METHODS["n2s"], run=changed_n2s)
    assert method.code_version() != methods.METHODS["n2s"].code_version()
    monkeypatch.setitem(methods.METHODS, "n2s", method)
    assert _run(tmp_path) == 0
    assert calls == [1]
    n2s = [r for r in _rows(tmp_path) if r["method"] == "n2s"][0]
    assert n2s["cached"] == "False"

    # --cache-only never computes: a row whose code changed again is skipped, with the reason.
    calls.clear()
    method2 = dataclasses.replace(method, sources=(baselines.pca,))
    monkeypatch.setitem(methods.METHODS, "n2s", method2)
    assert _run(tmp_path, "--cache-only", "n2s") == 0
    assert calls == []
    assert "n2s" not in [r["method"] for r in _rows(tmp_path)]
    assert "not in the cache" in (tmp_path / "out" / "bench.md").read_text()
    monkeypatch.setitem(methods.METHODS, "n2s", method)

    # --no-cache never reads the cache.
    calls.clear()
    assert _run(tmp_path, "--no-cache") == 0
    assert calls == [1]


def test_code_version_follows_helpers():
    sources = code_sources([baselines.bm4d])
    assert "n2s_eds.baselines.bm4d" in sources
    assert "n2s_eds.baselines._anscombe_denoise" in sources
    assert "n2s_eds.baselines.inverse_anscombe" in sources
    assert code_version([baselines.bm4d]) != code_version([baselines.bm3d])


def test_missing_data_is_reported_as_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("N2S_EDS_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    argv = ["--cases", "fept_core_shell_tem", "--methods", "raw", "--output", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "SKIPPED case fept_core_shell_tem" in printed
    assert "not found" in printed
    assert "fept_core_shell_tem" in (tmp_path / "o" / "bench.md").read_text()


def test_bad_arguments_exit_2(capsys):
    assert cli.main(["--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_quant_bias_is_zero_for_the_reference(small_phantoms):
    case = cases.build_case(CASE, seed=1)
    assert case.has_lines
    rows = scores.quant_bias(case, case.truth.astype(np.float32))
    assert rows
    assert all(abs(r["bias_pct"]) < 1e-3 for r in rows)


def test_case_without_a_split_has_a_cache_key():
    """A case scored without a split (the hallucination checks) still gets a cache key."""
    import exspy

    from n2s_eds.preprocess import processing_window

    sig = exspy.signals.EDSTEMSpectrum(np.ones((4, 5, 6), dtype=np.uint16))
    window = processing_window(sig)
    case = cases.Case("plain", sig, window, [], reference=np.ones((4, 5, 6)))
    assert case.split == "none"
    key = cache.cache_key(case, methods.METHODS["n2s"], 0, {})
    assert key["split"] == "none" and len(key["input"]) == 16


def test_unresolved_split_gains_shown_as_bounds_and_left_out():
    """A gain the split cannot resolve is printed as ``≥ G`` and never compared."""
    rows = [
        {
            "case": "c",
            "method": "pca",
            "cube_gain_db": 22.2,
            "maps_gain_db": 0.7,
            "cube_gain_is_bound": True,
            "maps_gain_is_bound": False,
        },
        {
            "case": "c",
            "method": "gaussian1",
            "cube_gain_db": 11.0,
            "maps_gain_db": -0.2,
            "cube_gain_is_bound": False,
            "maps_gain_is_bound": False,
        },
        {
            "case": "c",
            "method": "n2s",
            "cube_gain_db": 22.3,
            "maps_gain_db": 0.1,
            "cube_gain_is_bound": True,
            "maps_gain_is_bound": False,
        },
    ]
    table = report.markdown_table(rows, ["case", "method", "cube_gain_db", "maps_gain_db"])
    assert "| c | pca | ≥22.20 | 0.70 |" in table
    assert "| c | gaussian1 | 11.00 | -0.20 |" in table
    (cmp,) = report.comparisons(rows, "n2s", ("pca", "gaussian1"))
    assert np.isnan(cmp["cube_gain_db"])  # n2s's own cube gain is only a bound
    assert cmp["maps_gain_db"] == pytest.approx(0.1 - 0.7) and cmp["maps_gain_db_best"] == "pca"


def test_supervised_bound_row_and_gap(tmp_path, monkeypatch, small_phantoms, capsys):
    """``n2s_supervised`` trains 4x the steps against the truth; the gap to n2s is reported."""
    from n2s_eds import api

    seen = []
    fit = api.Denoiser.fit

    def spy(self, signal, haadf=None, *, target=None):
        seen.append((self.options["steps"], target is not None))
        return fit(self, signal, haadf, target=target)

    monkeypatch.setattr(api.Denoiser, "fit", spy)
    argv = ["--cases", CASE, "--methods", "raw,n2s,n2s_supervised", "--steps", "3"]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert (3, False) in seen and (3 * methods.SUPERVISED_STEPS_FACTOR, True) in seen
    rows = {r["method"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"raw", "n2s", "n2s_supervised"}
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "supervised bound" in md
    (gap,) = report.supervised_gaps(
        [
            {
                **r,
                "cube_gain_db": float(r["cube_gain_db"]),
                "maps_gain_db": float(r["maps_gain_db"]),
            }
            for r in rows.values()
        ]
    )
    assert gap["cube_gain_db"] == pytest.approx(
        float(rows["n2s"]["cube_gain_db"]) - float(rows["n2s_supervised"]["cube_gain_db"])
    )
    assert "n2s minus supervised bound" in capsys.readouterr().out
    # the truth enters the cache key of the supervised row only
    case = cases.build_case(CASE)
    other = dataclasses.replace(case, truth=case.truth * 1.01)
    sup, plain = methods.METHODS["n2s_supervised"], methods.METHODS["n2s"]
    assert cache.cache_key(case, sup, 0, {}) != cache.cache_key(other, sup, 0, {})
    assert cache.cache_key(case, plain, 0, {}) == cache.cache_key(other, plain, 0, {})
    # without a truth (real data) the row is skipped with the reason
    with pytest.raises(cases.CaseSkipped, match="truth"):
        runner.denoise(dataclasses.replace(case, truth=None), sup, 0, {}, None)


def test_ablation_script_splits_options_and_prints_rows(small_phantoms, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "ablations"))
    import ablation_options

    assert ablation_options.parse_spec("steps=2,window_loss=0.25,residual_sigma=8") == (
        {"steps": 2, "window_loss": 0.25},
        {"residual_sigma": 8},
    )
    assert ablation_options.parse_spec("default") == ({}, {})
    assert ablation_options.parse_spec("lowrank_sigmas=1:2.5,max_rank=8") == (
        {},
        {"lowrank_sigmas": (1.0, 2.5), "max_rank": 8},
    )
    assert ablation_options.main([CASE, "steps=2", "steps=2,residual_sigma=4"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {CASE}")]
    assert len(rows) == 2 and "residual_sigma=4" in rows[1]
    cells = rows[1].split("|")
    assert float(cells[3]) != 0.0 and 0.9 < float(cells[5]) < 1.1


def test_carry_copies_rows_from_an_earlier_table(tmp_path, monkeypatch, small_phantoms, capsys):
    """--carry copies a method's rows (every column) from an earlier bench.csv, never runs it,
    marks them ``carried``, names them and their file under the table and draws no maps."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    fake = {
        "case": CASE,
        "method": "bm4d",
        **{c: "1.5" for c in scores.COLUMNS[2:-1]},
        "seconds": "1234.5",
        "cached": "True",
        "cube_gain_is_bound": "False",
        "maps_gain_is_bound": "False",
    }
    fake["cube_gain_db"], fake["maps_gain_db"] = "17.25", "3.125"
    with (earlier / "bench.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fake))
        w.writeheader()
        w.writerow(fake)
        w.writerow({**fake, "case": "other_case"})
    quant = "case,method,ratio,region,pixels,ratio_full,ratio_denoised,bias_pct\n"
    quant += f"{CASE},bm4d,Fe_Ka/Pt_La,Pt_La-rich,40,0.5,0.6,20\n"
    (earlier / "quant_bias.csv").write_text(quant)

    def refuse(*args, **kwargs):
        raise AssertionError("a carried method was computed")

    monkeypatch.setattr(baselines, "bm4d", refuse)
    monkeypatch.setattr(baselines, "bm3d", refuse)
    carry = ["--carry", "bm4d,bm3d", "--carry-from", str(earlier / "bench.csv")]
    argv = ["--cases", CASE, "--methods", "raw,gaussian1,bm4d,bm3d", "--no-cache"]
    assert cli.main([*argv, *carry, "--output", str(tmp_path / "out")]) == 0
    rows = {r["method"]: r for r in _rows(tmp_path)}
    assert list(rows) == ["raw", "gaussian1", "bm4d"]  # bm3d: not in the earlier table
    bm4d = rows["bm4d"]
    assert bm4d["cached"] == "carried"
    assert bm4d["cube_gain_db"] == "17.25" and bm4d["maps_gain_db"] == "3.125"
    assert bm4d["seconds"] == "1234.5" and bm4d["quant_bias_pct"] == "1.5"
    assert rows["gaussian1"]["cached"] == "False"
    md = (tmp_path / "out" / "bench.md").read_text()
    assert f"| {CASE} | bm4d | 17.25 | 3.12 |" in md and "| carried |" in md
    assert "Carried rows" in md and str(earlier / "bench.csv") in md
    assert f"`{CASE}` / bm3d: not in {earlier / 'bench.csv'} (--carry)" in md
    assert (
        f"{CASE},bm4d,Fe_Ka/Pt_La,Pt_La-rich,40,0.5,0.6,20"
        in (tmp_path / "out" / "quant_bias.csv").read_text()
    )
    assert (tmp_path / "out" / f"maps_{CASE}.png").is_file()  # drawn, without a bm4d panel
    assert "carried from" in capsys.readouterr().out
    # the carried table may be the one the run overwrites: it is read before anything is written
    carry_same = ["--carry", "bm4d", "--carry-from", str(tmp_path / "out" / "bench.csv")]
    again = ["--cases", CASE, "--methods", "raw,bm4d", "--no-cache", *carry_same]
    assert cli.main([*again, "--output", str(tmp_path / "out")]) == 0
    assert _rows(tmp_path)[1]["cube_gain_db"] == "17.25"
    # --carry needs --carry-from
    assert cli.main(["--carry", "bm4d"]) == 2


def test_check_notes_compares_every_baseline_and_skips_missing_extras(
    tmp_path, monkeypatch, capsys
):
    """--check-notes passes within the tolerance, fails outside it, reads the slow rows from
    the cache it is given, and reports a baseline whose optional package is absent as SKIP."""
    calls = []
    offset = {"pca": 0.4}  # within 0.5 dB of the notes; changed below to fail

    def fake_run_bench(case_names, method_names, *, seed, cache_dir):
        calls.append((tuple(case_names), tuple(method_names), cache_dir))
        result = runner.BenchResult()
        notes = reference.read_reference_gains()[case_names[0]]
        for m in method_names:
            result.rows.append({"method": m, "cube_gain_db": notes[m] + offset.get(m, 0.0)})
        return result

    monkeypatch.setattr(reference, "run_bench", fake_run_bench)
    real_versions = reference.package_versions

    def versions_without_bm3d(names):
        return {n: "absent" if n == "bm3d" else v for n, v in real_versions(names).items()}

    monkeypatch.setattr(reference, "package_versions", versions_without_bm3d)
    assert reference.check_notes(cache_dir=tmp_path)
    out = capsys.readouterr().out
    assert "SKIP fept_core_shell_tem bm3d: the optional package bm3d is not installed" in out
    assert "PASS bruker_sem_30x30_highcount bm4d" in out
    assert all(cache == tmp_path for *_, cache in calls)
    asked = {case[0]: set(methods) for case, methods, _ in calls}
    assert "bm3d" not in asked["fept_core_shell_tem"]
    assert {"bm4d", "pca_gaussian"} <= asked["fept_core_shell_tem"]
    offset["pca"] = 0.6
    assert not reference.check_notes()
    assert "FAIL fept_core_shell_tem pca" in capsys.readouterr().out


def test_reference_gains_file_holds_the_notes_numbers_with_their_source():
    gains = reference.read_reference_gains()
    assert gains["fept_core_shell_tem"] == {
        "gaussian1": 10.7,
        "gaussian2": 15.8,
        "pca": 9.1,
        "pca_gaussian": 16.9,
        "bm3d": 16.6,
        "bm4d": 18.2,
    }
    assert gains["bruker_sem_30x30_highcount"]["bm4d"] == 17.8
    with reference.REFERENCE_FILE.open() as f:
        assert all(row["source"] for row in csv.DictReader(f))


def test_harness_modules_share_no_private_names():
    """One concept per file: the harness modules import only public names of each other."""
    import re

    for path in (BENCHMARKS / "harness").glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 600, path.name
        for names in re.findall(r"^from \.\w* import \(?([^)]*?)\)?$", text, re.M | re.S):
            assert not [n for n in re.split(r"[,\s]+", names) if n.startswith("_")], path.name


def test_carried_rows_without_bound_flags_are_not_bounds(tmp_path):
    """Phantom rows leave the bound flags empty: carried, they must print as plain numbers."""
    from harness.carry import read_carried

    table = tmp_path / "bench.csv"
    table.write_text(
        "case,method,cube_gain_db,maps_gain_db,cached,cube_gain_is_bound,maps_gain_is_bound\n"
        "phantom_tem_dose5,bm4d,17.3747,8.26069,True,,\n"
        "fept_core_shell_tem,bm4d,17.863,7.52916,True,True,False\n"
    )
    carried = read_carried(table, ["bm4d"])
    phantom = carried.row("phantom_tem_dose5", "bm4d")
    assert phantom["cube_gain_is_bound"] is False and phantom["maps_gain_is_bound"] is False
    assert report.is_bound(phantom, "cube_gain_db") is False
    assert carried.row("fept_core_shell_tem", "bm4d")["cube_gain_is_bound"] is True
