"""Shared fixtures: a seeded small phantom, and access to the real shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from n2s_eds.datasets import data_path


def require_data(name: str) -> Path:
    """Path of a real data file; skip when absent, except on CI where absence fails."""
    path = data_path(name)
    if not path.exists():
        message = f"real data file {path} is absent (set N2S_EDS_DATA to the data folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def small_phantom():
    """A seeded 20 x 18 pixel, 160-channel TEM phantom (odd, unequal sides on purpose)."""
    from n2s_eds.simulate import phantom

    return phantom("tem", dose=30.0, shape=(20, 18), n_channels=160, channel_width_ev=50.0, seed=3)


@pytest.fixture(scope="session")
def fept_signal():
    """The real FePt core-shell spectrum image (skips when the shared data is absent)."""
    import hyperspy.api as hs

    return hs.load(require_data("fept_core_shell_tem"))
