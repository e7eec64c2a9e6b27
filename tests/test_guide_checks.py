"""The guide image must not invent chemistry (hallucination tests of guided denoising)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hyperspy.signals import Signal2D

from n2s_eds import Denoiser
from n2s_eds.metrics import element_maps, element_windows
from n2s_eds.preprocess import processing_window
from n2s_eds.simulate import phantom

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the harness lives outside the installed package
    sys.path.insert(0, str(BENCHMARKS))

from harness import hallucination as G  # noqa: E402


def test_shifted_guide_moves_the_image_and_keeps_its_shape():
    img = Signal2D(np.arange(30.0).reshape(5, 6))
    out = G.shifted(img, 2)
    assert out.data.shape == (5, 6)
    np.testing.assert_array_equal(out.data[2:, 2:], img.data[:3, :4])
    np.testing.assert_array_equal(img.data, np.arange(30.0).reshape(5, 6))  # input untouched


def test_correlation_of_maps_with_an_image():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 9))
    maps = np.stack([image * 2 + 1, -image, rng.normal(size=(8, 9))])
    corr = G.correlation(maps, image)
    assert corr == pytest.approx(
        (1.0 - 1.0 + np.corrcoef(maps[2].ravel(), image.ravel())[0, 1]) / 3
    )


@pytest.mark.slow
def test_thickness_step_in_the_guide_is_not_painted_into_the_maps():
    """Check 1: a HAADF-only thickness step; guided map error there <= 110 % of unguided."""
    ph = phantom(
        "tem",
        dose=5.0,
        shape=(36, 33),
        n_channels=256,
        channel_width_ev=40.0,
        seed=2,
        haadf_thickness_step=True,
    )
    y0, y1, x0, x1 = ph.haadf.metadata.Simulation.thickness_step_region
    window = processing_window(ph.noisy)
    windows = element_windows(ph.noisy, window)
    truth = element_maps(np.asarray(ph.truth.data, dtype=np.float64), windows)

    def region_error(haadf):
        den = Denoiser(steps=40, progress=False, seed=0).fit(ph.noisy, haadf)
        maps = element_maps(np.asarray(den.denoise(ph.noisy, haadf).data, np.float64), windows)
        return float(np.sqrt(np.mean((maps - truth)[:, y0:y1, x0:x1] ** 2)))

    unguided, guided = region_error(None), region_error(ph.haadf)
    assert guided <= G.MAX_REGION_ERROR_RATIO * unguided


def test_hallucination_option_writes_the_table(tmp_path, monkeypatch):
    """``run_bench.py --hallucination`` writes the checks' table (checks stubbed: fast)."""
    from harness import cli

    row = {c: "" for c in G.COLUMNS}
    row.update(check="thickness_step", method="n2s_guided", value=0.1, passed="PASS")

    def fake_checks(seed, options, cache_dir):
        assert cache_dir is None and options == {"steps": None}
        return [row], ["lowcount_check: data file absent"]

    monkeypatch.setattr(cli, "run_checks", fake_checks)
    argv = ["--hallucination", "--no-cache", "--output", str(tmp_path)]
    assert cli.main(argv) == 0
    md = (tmp_path / "hallucination.md").read_text()
    assert "python benchmarks/run_bench.py --hallucination" in md
    assert "| thickness_step | n2s_guided |" in md and "data file absent" in md
    assert (tmp_path / "hallucination.csv").read_text().startswith(",".join(G.COLUMNS))
