"""The default keeps phases apart: element maps against a simulated truth at dose 20.

Three checks, each failing for a denoiser that averages across phase boundaries or pulls
every phase toward the scan's mean composition (the default without its map stage,
``refine_maps=False``, fails all three):

* leakage: where an element is absent from the truth, its denoised line-window map exceeds
  the truth's own window sum there by less than 2 % of its mean where it is present;
* quantification: line ratios summed over each phase region stay within
  ``max(5 %, |raw's bias| + 2 %)`` of the truth's;
* edges: across a straight boundary between two phases, every element map's 10-90 % width
  stays within one pixel of the truth's.

The default does not meet all of them yet: the checks it fails are marked ``xfail`` with the
values it reaches, and strict, so that they report as soon as it meets them.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

import n2s_eds
from n2s_eds.metrics import (
    absent_leakage,
    edge_width,
    element_maps,
    element_windows,
    line_presence,
)
from n2s_eds.simulate import phantom, phantom_maps

pytestmark = pytest.mark.slow

SHAPE = (48, 48)
CHANNELS = 512


def _run(layout: str, seed: int):
    ph = phantom("tem", dose=20.0, shape=SHAPE, n_channels=CHANNELS, seed=seed, layout=layout)
    out = n2s_eds.denoise(ph.noisy, seed=0, progress=False)
    windows = element_windows(ph.noisy)
    masses, _ = phantom_maps("tem", SHAPE, seed=seed, layout=layout)
    return {
        "windows": windows,
        "truth": element_maps(ph.truth.data, windows),
        "raw": element_maps(ph.noisy.data, windows),
        "denoised": element_maps(out.data, windows),
        "presence": line_presence(windows, masses, SHAPE),
    }


@pytest.fixture(scope="module")
def core_shell():
    return _run("core_shell", seed=4)


@pytest.fixture(scope="module")
def boundary():
    return _run("boundary", seed=4)


@pytest.mark.parametrize(
    "case",
    [
        "core_shell",
        pytest.param(
            "boundary",
            marks=pytest.mark.xfail(
                strict=True, reason="Pt Ma 3.1 % and Pt La 2.5 % leak into the siderite side"
            ),
        ),
    ],
)
def test_no_element_leaks_into_pixels_where_it_is_absent(case, request):
    m = request.getfixturevalue(case)
    leak = absent_leakage(m["denoised"], m["truth"], m["presence"])
    checked = np.isfinite(leak)
    assert checked.sum() >= 2  # the phantom has elements absent somewhere
    names = [w.name for w in m["windows"]]
    assert np.all(leak[checked] < 0.02), dict(zip(names, np.round(100 * leak, 2), strict=True))


def _region_ratio_bias(maps: np.ndarray, truth: np.ndarray) -> list[float]:
    """Bias (%) of each weaker line over the strongest, summed over each line's phase region
    (Otsu threshold of the smoothed truth map), as the benchmark's quant_bias_pct."""
    order = np.argsort(truth.sum(axis=(1, 2)))[::-1][:3]
    regions = [gaussian_filter(truth[i], 1.0) for i in order]
    regions = [r > threshold_otsu(r) for r in regions]
    out = []
    for i in order[1:]:
        for reg in regions:
            r_true = truth[i][reg].sum() / truth[order[0]][reg].sum()
            r_est = maps[i][reg].sum() / maps[order[0]][reg].sum()
            out.append(100 * (r_est / r_true - 1))
    return out


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            "core_shell",
            marks=pytest.mark.xfail(
                strict=True, reason="a line ratio is off by 7.34 % where the raw's limit is 7.28 %"
            ),
        ),
        "boundary",
    ],
)
def test_phase_compositions_stay_as_in_the_raw_counts(case, request):
    m = request.getfixturevalue(case)
    raw = _region_ratio_bias(m["raw"], m["truth"])
    den = _region_ratio_bias(m["denoised"], m["truth"])
    for b_raw, b_den in zip(raw, den, strict=True):
        assert abs(b_den) <= max(5.0, abs(b_raw) + 2.0), (raw, den)


@pytest.mark.xfail(strict=True, reason="the C Ka map's edge is 2.6 px wide (truth: 0.1 px)")
def test_a_straight_phase_boundary_stays_sharp_in_every_map(boundary):
    names = [w.name for w in boundary["windows"]]
    for name, t, d in zip(names, boundary["truth"], boundary["denoised"], strict=True):
        w_true = edge_width(t, axis=-1, method="erf")
        w_den = edge_width(d, axis=-1, method="erf")
        assert abs(w_den - w_true) <= 1.0, (name, w_true, w_den)
