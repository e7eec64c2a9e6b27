"""The demonstration: simulate, denoise, score against the truth, write table and figure."""

from __future__ import annotations

from n2s_eds.cli import main
from n2s_eds.demo import METHODS, run_demo


def test_run_demo_writes_table_and_figure(tmp_path):
    res = run_demo(tmp_path, steps=5, progress=False, shape=(24, 24), n_channels=256)
    table = (tmp_path / "demo_table.md").read_text()
    assert res["table_path"] == tmp_path / "demo_table.md"
    for method in METHODS:
        assert f"| {method} |" in table
    png = tmp_path / "demo_figure.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == set(METHODS)
    # smoothing the raw counts must bring them closer to the truth
    assert rows["gaussian sigma=1"]["psnr_cube"] > rows["raw"]["psnr_cube"]
    assert res["denoised"].data.shape == (24, 24, 256)


def test_demo_command_help(capsys):
    assert main(["demo", "--help"]) == 0
    assert "--dose" in capsys.readouterr().out


def test_demo_output_stays_readable_when_piped(tmp_path, capfd):
    """Written to a file or a pipe (as here), the demo prints its table and no progress bars."""
    import sys

    assert not sys.stderr.isatty()
    rc = main(["demo", "--output", str(tmp_path), "--steps", "10", "--dose", "5"])
    out, err = capfd.readouterr()
    assert rc == 0
    assert "\r" not in out + err  # no carriage-return updates of a progress bar
    assert "| n2s_eds |" in out
    assert len((out + err).splitlines()) < 100
