"""The phantoms' exact phase labels: form, names, determinism and the labelling rule."""

from __future__ import annotations

import numpy as np
import pytest

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.simulate import PHANTOM_LAYOUTS, phantom, phantom_maps, phantom_phases

SHAPE = (36, 40)
#: Phase densities (g/cm^3) of the phantoms, written out here so the rule is checked
#: against numbers independent of the simulator's own tables.
DENSITY = {
    "amorphous carbon": 2.0,
    "FePt": 15.1,
    "Fe3O4": 5.17,
    "siderite": 3.96,
    "quartz": 2.65,
    "K-feldspar": 2.56,
    "anorthite": 2.73,
    "hematite": 5.26,
    "andradite": 3.86,
}
FILM = "amorphous carbon"
CASES = [(kind, layout) for kind in ("tem", "sem") for layout in PHANTOM_LAYOUTS]


def _rule(kind: str, layout: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """The labels by the documented rule, from :func:`phantom_maps`'s phase amounts."""
    _, amounts = phantom_maps(kind, shape, seed=seed, layout=layout)
    names = list(amounts)
    mass = np.stack([DENSITY[n] * amounts[n] for n in names])
    if kind == "tem":
        film = names.index(FILM)
        others = np.delete(mass, film, axis=0)
        best = np.delete(np.arange(len(names)), film)[np.argmax(others, axis=0)]
        return np.where((others > 0).any(axis=0), best, film)
    return np.argmax(mass, axis=0)


@pytest.mark.parametrize(("kind", "layout"), CASES)
def test_form_and_names(kind: str, layout: str) -> None:
    labels, names = phantom_phases(kind, SHAPE, seed=1, layout=layout)
    assert labels.shape == SHAPE
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(names)
    noisy = phantom(kind, dose=5.0, shape=SHAPE, n_channels=64, seed=1, layout=layout).noisy
    assert names == tuple(noisy.metadata.Simulation.phases)


@pytest.mark.parametrize(("kind", "layout"), CASES)
def test_labels_follow_the_rule(kind: str, layout: str) -> None:
    labels, _ = phantom_phases(kind, SHAPE, seed=2, layout=layout)
    np.testing.assert_array_equal(labels, _rule(kind, layout, SHAPE, seed=2))


@pytest.mark.parametrize(("kind", "layout"), CASES)
def test_deterministic_per_seed(kind: str, layout: str) -> None:
    a, names_a = phantom_phases(kind, SHAPE, seed=4, layout=layout)
    b, names_b = phantom_phases(kind, SHAPE, seed=4, layout=layout)
    np.testing.assert_array_equal(a, b)
    assert names_a == names_b
    c, _ = phantom_phases(kind, SHAPE, seed=5, layout=layout)
    if layout == "boundary":
        np.testing.assert_array_equal(a, c)  # no randomness in a straight boundary
    else:
        assert np.any(a != c)


@pytest.mark.parametrize("layout", ["core_shell", "particles"])
def test_tem_film_only_where_nothing_else_lies(layout: str) -> None:
    labels, names = phantom_phases("tem", SHAPE, seed=0, layout=layout)
    _, amounts = phantom_maps("tem", SHAPE, seed=0, layout=layout)
    film = names.index(FILM)
    bare = np.all([amounts[n] == 0 for n in names if n != FILM], axis=0)
    assert bare.any() and (~bare).any()
    assert np.all(labels[bare] == film)
    assert np.all(labels[~bare] != film)
    # the film is thicker than a particle's thin rim, yet the rim pixel is the particle's
    rim = ~bare & (DENSITY[FILM] * amounts[FILM] > sum(DENSITY[n] * amounts[n] for n in names[1:]))
    assert rim.any()
    assert np.all(labels[rim] != film)


def test_tem_core_shell_cores_are_fept() -> None:
    labels, names = phantom_phases("tem", SHAPE, seed=0, layout="core_shell")
    _, amounts = phantom_maps("tem", SHAPE, seed=0, layout="core_shell")
    # where the chord through the FePt core outweighs the Fe3O4 shell's, the pixel is FePt
    fept = DENSITY["FePt"] * amounts["FePt"] > DENSITY["Fe3O4"] * amounts["Fe3O4"]
    assert fept.any()
    assert np.all(labels[fept] == names.index("FePt"))


@pytest.mark.parametrize("kind", ["tem", "sem"])
@pytest.mark.parametrize("width", [40, 41])
def test_boundary_left_half_is_the_left_phase(kind: str, width: int) -> None:
    labels, names = phantom_phases(kind, (12, width), seed=0, layout="boundary")
    left, right = ("FePt", "siderite") if kind == "tem" else ("K-feldspar", "andradite")
    half = width // 2
    assert np.all(labels[:, :half] == names.index(left))
    assert np.all(labels[:, half + width % 2 :] == names.index(right))
    if width % 2:
        # the middle column is half of each; the right phase is the denser by mass there
        assert np.all(labels[:, half] == names.index(right))
    if kind == "tem":
        assert not np.any(labels == names.index(FILM))


def test_sem_labels_are_argmax_of_density_times_fraction() -> None:
    labels, names = phantom_phases("sem", SHAPE, seed=3, layout="core_shell")
    _, amounts = phantom_maps("sem", SHAPE, seed=3, layout="core_shell")
    assert tuple(amounts) == names
    mass = np.stack([DENSITY[n] * amounts[n] for n in names])
    np.testing.assert_array_equal(labels, np.argmax(mass, axis=0))
    # every phase of the section is somewhere the label
    assert set(np.unique(labels)) == set(range(len(names)))
    # a mixed pixel goes to the larger mass, not the larger area
    fraction_winner = np.argmax(np.stack([amounts[n] for n in names]), axis=0)
    assert np.any(labels != fraction_winner)


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        phantom_phases("xrd", SHAPE)
    with pytest.raises(InvalidInputError):
        phantom_phases("tem", SHAPE, layout="stripes")
    with pytest.raises(InvalidInputError):
        phantom_phases("tem", (4, 40))
