"""Scores, paired comparison, report files and invented-structure measures of 2D images."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.imaging.compare import (
    PSNR_CAP_DB,
    compare,
    edge_and_texture_excess,
    edge_positions,
    edge_straightness,
    image_scores,
    slug,
    straight_edge_image,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _truths(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(24, 32), (32, 32), (20, 28)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w]
        out.append(np.sin(x / 4 + i) + np.cos(y / 5) + 0.2 * rng.standard_normal((h, w)))
    return out


def _noisy(truth: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [t + sigma * rng.standard_normal(t.shape) for t in truth]


@pytest.fixture
def report():
    truth = _truths(12)
    cats = ["simulated maps"] * 6 + ["electron images / BSE"] * 6
    results = {
        "enhancer": _noisy(truth, 0.05, 1),
        "gaussian": _noisy(truth, 0.3, 2),
        "raw": _noisy(truth, 0.6, 3),
    }
    inputs = [t[::2, ::2] for t in truth]
    return compare(results, truth, cats, inputs=inputs)


def test_perfect_estimate_scores():
    t = _truths(1)[0]
    p, s = image_scores(t, t)
    assert p == PSNR_CAP_DB
    assert s == pytest.approx(1.0)
    p2, s2 = image_scores(t + 0.1, t)
    assert p2 < p and s2 <= 1.0
    # data range is the truth's: scaling both images leaves the scores unchanged
    p3, s3 = image_scores(10 * (t + 0.1), 10 * t)
    assert p3 == pytest.approx(p2) and s3 == pytest.approx(s2, abs=1e-6)


def test_better_method_wins_the_t_test(report):
    assert report.reference == "enhancer"
    assert report.baselines == ["gaussian", "raw"]
    assert report.categories == ["simulated maps", "electron images / BSE"]
    for c in report.comparisons:
        assert c.n == 6
        assert c.psnr.mean > 0 and c.ssim.mean > 0
        assert c.psnr.p_two_sided < 1e-3
        assert c.psnr.p_reference_better == pytest.approx(c.psnr.p_two_sided / 2)
        assert c.psnr.wins == 6
    # judged the other way round, the one-sided p for "reference better" is large
    flipped = compare(
        {"raw": report.estimates["raw"], "enhancer": report.estimates["enhancer"]},
        report.truth,
        "all",
    )
    (c,) = [c for c in flipped.comparisons if c.baseline == "enhancer"]
    assert c.psnr.p_reference_better > 0.99 and c.psnr.wins == 0


def test_tie_gives_large_p():
    truth = _truths(30, seed=5)
    a = _noisy(truth, 0.3, 11)
    b = _noisy(truth, 0.3, 12)
    rep = compare({"a": a, "b": b}, truth, "maps")
    (c,) = rep.comparisons
    assert c.psnr.p_two_sided > 0.05 and c.ssim.p_two_sided > 0.05
    same = compare({"a": a, "copy": a}, truth, "maps").comparisons[0]
    assert same.psnr.p_two_sided == 1.0 and same.psnr.wins == 0


def test_counts_and_rows_per_category(report):
    rows = report.summary_rows()
    assert len(rows) == 2 * 3
    assert all(r["n"] == 6 for r in rows)
    ref_rows = [r for r in rows if r["role"] == "reference"]
    assert len(ref_rows) == 2 and all(r["psnr_p_two_sided"] is None for r in ref_rows)
    base = [r for r in rows if r["method"] == "raw" and r["category"] == "simulated maps"][0]
    assert base["psnr_reference_wins"] == 6 and base["psnr_diff_mean"] > 0
    assert len(report.per_image_rows()) == 12 * 3
    other = compare(
        report.estimates, report.truth, report.image_categories, reference="gaussian"
    ).summary_rows()
    assert [r["method"] for r in other if r["role"] == "reference"] == ["gaussian"] * 2


def test_markdown_names_categories_and_methods(report):
    md = report.to_markdown()
    for word in ("simulated maps", "electron images / BSE", "enhancer", "gaussian", "raw"):
        assert word in md
    assert "e-" in md  # p-values in scientific notation


def test_write_creates_tables_report_and_pngs(report, tmp_path):
    files = report.write(tmp_path / "out", prefix="run1")
    names = {f.name for f in files}
    expected = {
        "run1_per_image.csv",
        "run1_summary.csv",
        "run1.md",
        "run1_hist_simulated_maps.png",
        "run1_hist_electron_images_bse.png",
        "run1_gallery_simulated_maps.png",
        "run1_gallery_electron_images_bse.png",
    }
    assert names == expected
    for f in files:
        assert f.is_file() and f.stat().st_size > 0
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == PNG
    with (tmp_path / "out" / "run1_per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36 and set(rows[0]) == {"image", "category", "method", "psnr", "ssim"}
    with pytest.raises(InvalidInputError):
        report.write(tmp_path, prefix="../x")


def test_slug_is_file_name_safe():
    assert slug("Element maps: Fe/Ni (x4)") == "element_maps_fe_ni_x4"
    assert slug("***") == "category"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"results": {}}, "non-empty"),
        ({"truth": []}, "empty"),
        ({"categories": ["a"]}, "categories"),
        ({"names": ["x", "x"]}, "names"),
        ({"names": ["x"]}, "names"),
        ({"reference": "nope"}, "reference"),
        ({"results": {"m": [np.zeros((16, 16)), np.zeros((16, 16))]}}, "shape"),
        ({"results": {"m": [np.zeros((16, 16))]}}, "1 images for 2"),
        ({"results": {"m": [np.full((16, 16), np.nan), np.zeros((20, 18))]}}, "NaN"),
        ({"truth": [np.zeros((16, 16)), np.zeros((4, 4))]}, "too small"),
        ({"inputs": [np.zeros((8, 8))]}, "inputs"),
    ],
)
def test_invalid_input(kwargs, match):
    args = {
        "results": {"m": [np.zeros((16, 16)), np.zeros((20, 18))]},
        "truth": [np.ones((16, 16)), np.ones((20, 18))],
        "categories": ["a", "b"],
    }
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        compare(args.pop("results"), args.pop("truth"), args.pop("categories"), **args)


def test_image_scores_rejects_shape_mismatch():
    with pytest.raises(InvalidInputError):
        image_scores(np.zeros((16, 16)), np.zeros((16, 17)))


@pytest.mark.parametrize("angle", [0.0, 8.0, -20.0])
def test_straight_edge_is_straight(angle):
    img = straight_edge_image((48, 64), angle, low=2.0, high=5.0)
    rows, cols = edge_positions(img)
    assert rows.size == 48
    expected = (64 - 1) / 2 + (rows - 47 / 2) * np.tan(np.deg2rad(angle))
    assert np.max(np.abs(cols - expected)) < 0.1
    assert edge_straightness(img) < 0.08
    assert edge_straightness(5.0 - img) < 0.08  # a falling edge


def test_wavy_edge_is_not_straight():
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w]
    edge = 31.5 + 1.5 * np.sin(2 * np.pi * y / 12)
    img = np.clip(0.5 + x - edge, 0, 1)
    assert edge_straightness(img) > 0.5
    with pytest.raises(InvalidInputError):
        edge_straightness(np.zeros((16, 16)))


def test_flat_texture_grows_with_noise():
    truth = straight_edge_image((40, 40), 10.0, low=1.0, high=3.0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(truth.shape)
    values = [edge_and_texture_excess(truth + s * noise, truth) for s in (0.0, 0.05, 0.2)]
    assert values[0].flat_std == 0 and values[0].flat_gradient == 0
    assert values[0].n_flat > 0.5 * truth.size
    assert values[0].flat_std < values[1].flat_std < values[2].flat_std
    assert values[1].flat_gradient < values[2].flat_gradient
    # the two levels on either side of the edge are not counted as texture
    assert values[1].flat_std == pytest.approx(0.05 / 2, rel=0.2)


def test_invented_edges():
    truth = straight_edge_image((40, 40), 0.0, low=0.0, high=1.0)
    own = edge_and_texture_excess(truth, truth)
    assert own.invented_edge_fraction == 0.0 and own.n_checked > 0
    blurred = (truth + np.roll(truth, 1, axis=1) + np.roll(truth, -1, axis=1)) / 3
    blurred[:, [0, -1]] = truth[:, [0, -1]]
    assert edge_and_texture_excess(blurred, truth).invented_edge_fraction == 0.0
    spurious = truth.copy()
    spurious[10:20, 5:12] += 0.4  # a square in the flat low side
    ex = edge_and_texture_excess(spurious, truth)
    assert ex.invented_edge_fraction > 0.02
    assert ex.flat_std > own.flat_std
    with pytest.raises(InvalidInputError):
        edge_and_texture_excess(truth, truth, flat_mask=np.ones((3, 3), bool))
