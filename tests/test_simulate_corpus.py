"""Behaviour of the simulated pretraining corpus and of the data module that streams it."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from n2s_eds.data import SimulatedDataModule, SimulatedPatches
from n2s_eds.data import simulated as simulated_module
from n2s_eds.exceptions import InvalidInputError
from n2s_eds.simulate import PHANTOM_ELEMENTS
from n2s_eds.simulate import corpus as corpus_module
from n2s_eds.simulate.corpus import (
    CANONICAL_BIN_EV,
    CORPUS_LAYOUTS,
    CORPUS_STREAM,
    HELD_OUT_ELEMENT_SETS,
    Acquisition,
    CorpusOptions,
    draw_acquisition,
    draw_elements,
    eligible_elements,
)

SMALL = CorpusOptions(shape=(16, 12))
TINY = CorpusOptions(shape=(8, 8))
INFO_KEYS = {
    "kind", "layout", "elements", "phases", "dose", "channel_ev", "factor", "offset_kev",
    "resolution_ev", "beam_kev", "zero_peak", "has_guide", "artefacts", "seed", "index",
}  # fmt: skip
NOT_DRAWN = {"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Tc", "Pm"}


def test_shapes_dtypes_and_info() -> None:
    acq = draw_acquisition(0, 1, SMALL)
    assert isinstance(acq, Acquisition)
    n_bins = acq.energy_kev.size
    assert n_bins >= SMALL.min_bins()
    assert acq.counts.shape == acq.truth.shape == (n_bins, 16, 12)
    assert acq.guide.shape == (16, 12)
    for array in (acq.counts, acq.truth, acq.guide, acq.energy_kev):
        assert array.dtype == np.float32
    assert np.all(acq.counts == np.round(acq.counts)) and acq.counts.min() >= 0
    assert np.isfinite(acq.truth).all() and acq.truth.min() >= 0
    assert set(acq.info) == INFO_KEYS
    assert json.loads(json.dumps(acq.info)) == acq.info
    assert acq.info["seed"] == 0 and acq.info["index"] == 1


def test_determinism_per_seed_and_index() -> None:
    a, b = draw_acquisition(5, 3, TINY), draw_acquisition(5, 3, TINY)
    for x, y in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.info == b.info and a.bin_ev == b.bin_ev
    for other in (draw_acquisition(5, 4, TINY), draw_acquisition(6, 3, TINY)):
        assert other.info != a.info
        assert other.counts.shape != a.counts.shape or not np.array_equal(other.truth, a.truth)


def test_seeded_by_three_words_not_the_phantom_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = np.random.default_rng

    def spy(seed=None):
        calls.append(seed)
        return real(seed)

    monkeypatch.setattr(corpus_module.np.random, "default_rng", spy)
    draw_acquisition(7, 11, TINY)
    assert calls == [[7, 11, CORPUS_STREAM]]
    assert not np.array_equal(real(7).random(8), real([7, 11, CORPUS_STREAM]).random(8))
    assert not np.array_equal(real(7).random(8), real([7, 0, CORPUS_STREAM]).random(8))


def test_counts_are_poisson_of_truth() -> None:
    options = CorpusOptions(shape=(24, 24), dose=(40.0, 40.0))
    for index in range(3):
        acq = draw_acquisition(1, index, options)
        truth = acq.truth.astype(np.float64)
        total = truth.sum()
        assert abs(acq.counts.sum() - total) < 5.0 * np.sqrt(total)
        # Poisson: the squared residuals average the expectation.
        ratio = ((acq.counts - truth) ** 2).sum() / total
        assert 0.9 < ratio < 1.1


def test_dose() -> None:
    for index in range(6):
        acq = draw_acquisition(2, index, TINY)
        assert TINY.dose[0] <= acq.info["dose"] <= TINY.dose[1]
        per_pixel = acq.truth.astype(np.float64).sum(axis=0).mean()
        assert per_pixel == pytest.approx(acq.info["dose"], rel=1e-3)
    fixed = draw_acquisition(2, 0, CorpusOptions(shape=(8, 8), dose=(30.0, 30.0)))
    assert fixed.truth.astype(np.float64).sum(axis=0).mean() == pytest.approx(30.0, rel=1e-3)


def test_energy_axis_of_whole_channel_bins() -> None:
    widths = set()
    for index in range(30):
        acq = draw_acquisition(3, index, TINY)
        info = acq.info
        factor = max(1, round(CANONICAL_BIN_EV / info["channel_ev"]))
        assert info["factor"] == factor
        assert acq.bin_ev == pytest.approx(factor * info["channel_ev"])
        assert 13.3 <= acq.bin_ev <= 26.7
        step = np.diff(acq.energy_kev.astype(np.float64))
        np.testing.assert_allclose(step, acq.bin_ev / 1000.0, rtol=1e-3)
        assert acq.energy_kev[0] >= TINY.low_kev - 1e-6
        # The last bin's last channel lies inside the window (only full bins are kept).
        last_channel = acq.energy_kev[-1] + (factor - 1) / 2.0 * info["channel_ev"] / 1000.0
        assert last_channel <= min(TINY.high_kev, info["beam_kev"]) + 1e-4
        assert acq.energy_kev.size >= TINY.min_bins()
        widths.add(factor)
    assert len(widths) > 1


def test_element_sets_are_never_held_out() -> None:
    assert HELD_OUT_ELEMENT_SETS == {frozenset(PHANTOM_ELEMENTS[k]) for k in ("tem", "sem")}
    options = CorpusOptions(shape=(8, 8), n_elements=(2, 8))
    sizes = set()
    for index in range(200):
        info = draw_acquisition(4, index, options).info
        elements = set(info["elements"])
        drawn = {el for p in info["phases"] if p["role"] != "support" for el in p["formula"]}
        assert frozenset(elements) not in HELD_OUT_ELEMENT_SETS
        assert frozenset(drawn) not in HELD_OUT_ELEMENT_SETS
        eligible = eligible_elements(info["beam_kev"], options.low_kev, min(20.0, info["beam_kev"]))
        assert drawn <= set(eligible)
        assert 2 <= len(drawn) <= 8
        sizes.add(len(drawn))
    assert len(sizes) >= 5


def test_eligible_elements() -> None:
    from exspy.material import elements as db

    for beam, high in ((10.0, 10.0), (300.0, 20.0)):
        symbols = eligible_elements(beam, 0.2, high)
        assert not NOT_DRAWN & set(symbols)
        zs = [int(db[s]["General_properties"]["Z"]) for s in symbols]
        assert min(zs) >= 5 and max(zs) <= 83 and len(symbols) > 60
    assert "B" not in eligible_elements(300.0, 0.2, 20.0)  # B Ka (0.18 keV) lies below 0.2 keV
    assert "Fe" in eligible_elements(10.0, 0.2, 10.0) and "Pt" in eligible_elements(10.0, 0.2, 10.0)


def test_draw_elements_redraws_held_out_sets() -> None:
    rng = np.random.default_rng(0)
    pool = ("C", "O", "Fe", "Pt", "Si")
    seen = set()
    for _ in range(100):
        picked = draw_elements(rng, 4, pool)
        assert len(set(picked)) == 4
        seen.add(frozenset(picked))
        # With a carbon film, {O, Fe, Pt} completes the TEM set: never drawn either.
        assert frozenset(draw_elements(rng, 3, pool, present=("C",))) != {"O", "Fe", "Pt"}
    assert frozenset(PHANTOM_ELEMENTS["tem"]) not in seen and len(seen) == 4
    with pytest.raises(InvalidInputError):
        draw_elements(rng, 4, PHANTOM_ELEMENTS["tem"])
    with pytest.raises(InvalidInputError):
        draw_elements(rng, 6, pool)


@pytest.mark.parametrize(("kind", "layout"), itertools.product(("tem", "sem"), CORPUS_LAYOUTS))
def test_every_kind_and_layout(kind: str, layout: str) -> None:
    options = CorpusOptions(shape=(16, 16), kinds=(kind,), layouts=(layout,), n_elements=(3, 3))
    for index in range(2):
        acq = draw_acquisition(9, index, options)
        info = acq.info
        assert info["kind"] == kind and info["layout"] == layout
        beams = (80, 120, 200, 300) if kind == "tem" else (10, 15, 20, 25, 30)
        assert info["beam_kev"] in beams
        roles = [p["role"] for p in info["phases"]]
        assert ("matrix" in roles) == (kind == "sem" and layout in ("particles", "core_shell"))
        assert "support" not in roles or kind == "tem"
        drawn = [el for el in info["elements"] if any(
            el in p["formula"] for p in info["phases"] if p["role"] != "support")]  # fmt: skip
        assert len(drawn) == 3
        assert acq.truth.sum() > 0
        # The field is not uniform: the phases form a layout.
        assert np.ptp(acq.truth.sum(axis=0)) > 0


def test_guide_presence() -> None:
    none = CorpusOptions(shape=(8, 8), guide=0.0)
    always = CorpusOptions(shape=(8, 8), guide=1.0)
    for index in range(4):
        acq = draw_acquisition(0, index, none)
        assert not acq.info["has_guide"] and not acq.guide.any()
        acq = draw_acquisition(0, index, always)
        assert acq.info["has_guide"] and acq.guide.any() and np.isfinite(acq.guide).all()


def test_artefacts() -> None:
    names = {"line_intensity", "line_jitter", "drift"}
    for index in range(4):
        on = draw_acquisition(0, index, CorpusOptions(shape=(8, 8), artefacts=1.0)).info
        off = draw_acquisition(0, index, CorpusOptions(shape=(8, 8), artefacts=0.0)).info
        assert on["artefacts"] and set(on["artefacts"]) <= names
        assert off["artefacts"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shape", (4, 16)),
        ("shape", (16,)),
        ("kinds", ("xray",)),
        ("kinds", ()),
        ("n_elements", (3, 2)),
        ("n_elements", (0, 2)),
        ("dose", (0.0, 1.0)),
        ("channel_ev", (-1.0, 5.0)),
        ("zero_peak", 1.5),
        ("guide", -0.1),
        ("high_kev", 0.1),
        ("bin_ev", -20.0),
        ("layouts", ("spiral",)),
    ],
)
def test_invalid_options(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        CorpusOptions(**{field: value})


def test_negative_seed_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        draw_acquisition(-1, 0, TINY)


# ---------------------------------------------------------------------- data module
CORPUS = {"shape": [20, 20], "n_elements": [2, 4]}


def _module(**kwargs) -> SimulatedDataModule:
    settings = dict(batch_size=3, patch_size=12, energy_patch=40, patches_per_draw=2)
    settings.update(kwargs)
    return SimulatedDataModule(corpus=CORPUS, **settings)


def _batches(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def test_datamodule_batches() -> None:
    dm = _module(seed=1)
    assert dm.options == CorpusOptions(shape=(20, 20), n_elements=(2, 4))
    for batch in _batches(dm.train_dataloader(), 2):
        assert batch["counts"].shape == batch["target"].shape == (3, 1, 40, 12, 12)
        assert batch["guide"].shape == (3, 1, 12, 12)
        assert batch["energy"].shape == (3, 40)
        assert batch["bin_ev"].shape == batch["scale"].shape == (3,)
        for value in batch.values():
            assert value.dtype == torch.float32
        assert torch.all(batch["scale"] >= 1e-6)
        assert torch.all(batch["energy"].diff(dim=1) > 0)


def test_datamodule_is_seeded() -> None:
    first = _batches(_module(seed=2).train_dataloader(), 3)
    again = _batches(_module(seed=2).train_dataloader(), 3)
    other = _batches(_module(seed=3).train_dataloader(), 3)
    for a, b in zip(first, again, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
    assert not all(torch.equal(a["counts"], c["counts"]) for a, c in zip(first, other, strict=True))


def test_datamodule_validation_is_fixed() -> None:
    dm = _module(seed=4, val_draws=4)
    first, again = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == 2 and first[0]["counts"].shape == (3, 1, 40, 12, 12)
    for a, b in zip(first, again, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
    fresh = list(_module(seed=4, val_draws=4).val_dataloader())
    assert torch.equal(fresh[1]["target"], first[1]["target"])


def test_datamodule_energy_length_and_options() -> None:
    dm = _module(energy_patch=None)
    assert dm.energy_length == CorpusOptions(**{"shape": (20, 20)}).min_bins()
    batch = next(iter(dm.train_dataloader()))
    assert batch["counts"].shape[2] == dm.energy_length
    for bad in (dict(energy_patch=10_000), dict(patch_size=32), dict(batch_size=0)):
        with pytest.raises(InvalidInputError):
            _module(**bad)
    with pytest.raises(InvalidInputError, match="unknown"):
        SimulatedDataModule(corpus={"colour": "red"})


def _fake_draw(seen: list[int]):
    def draw(seed, index, options):
        seen.append(index)
        shape = (50, *options.shape)
        zeros = np.zeros(shape, dtype=np.float32)
        guide = np.zeros(options.shape, dtype=np.float32)
        energy = np.arange(50, dtype=np.float32)
        return Acquisition(zeros, zeros, guide, energy, 20.0, {})

    return draw


def test_indices_never_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    options = CorpusOptions(shape=(16, 16))
    indices = {}
    for rank, worker, epoch in itertools.product(range(2), range(3), range(2)):
        seen: list[int] = []
        monkeypatch.setattr(simulated_module, "draw_acquisition", _fake_draw(seen))
        monkeypatch.setattr(
            simulated_module,
            "get_worker_info",
            lambda worker=worker: SimpleNamespace(id=worker, num_workers=3),
        )
        stream = SimulatedPatches(0, options, 8, 16, 2, rank=rank, world_size=2, epoch=epoch)
        list(itertools.islice(iter(stream), 20))
        assert len(seen) == 10
        indices[rank, worker, epoch] = set(seen)
    groups = list(indices.values())
    assert sum(len(g) for g in groups) == len(set().union(*groups))
