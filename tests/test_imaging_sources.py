"""Clean training and test images of the 2D enhancer: format, categories, split, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_data

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.imaging import sources
from n2s_eds.imaging.sources import (
    CATEGORIES,
    MIN_SNR,
    CleanImage,
    available,
    crops,
    imaging_dataset,
    simulated_maps,
    split_manifest,
)

#: Real files the dataset reads.
REAL = (
    "bruker_sem_30x30_highcount",
    "bruker_sem_50x50",
    "sio2_particles_stem_haadf",
    "sio2_particles_stem_haadf_image",
    "bruker_stem_haadf_lowcount",
    "fept_core_shell_tem",
    "velox_20frames",
    "velox_4detectors",
    "eels_cuzn_si_haadf_image",
)


@pytest.fixture(scope="module")
def real_data():
    """Every real file the split names (skips when absent, fails on CI)."""
    for name in REAL:
        require_data(name)


def check_clean(images: list[CleanImage], category: str) -> None:
    assert images, f"no {category} images"
    for im in images:
        assert im.category == category
        assert im.image.dtype == np.float32 and im.image.ndim == 2, im.name
        assert im.image.shape[0] % 4 == 0 and im.image.shape[1] % 4 == 0, im.name
        assert min(im.image.shape) >= sources.MIN_SIDE, im.name
        assert im.image.min() == 0.0 and im.image.max() == 1.0, im.name
        assert not im.image.flags.writeable
        assert im.scale > 0 and np.isfinite(im.offset)
        np.testing.assert_allclose(
            (im.original() - im.offset) / im.scale, im.image, rtol=0, atol=1e-6
        )
    names = [im.name for im in images]
    assert len(set(names)) == len(names), "names are not unique"


@pytest.mark.parametrize("split", ["train", "test"])
def test_simulated_maps_are_normalised_and_not_constant(split):
    images = imaging_dataset(split, ["simulated maps"])
    check_clean(images, "simulated maps")
    for im in images:
        assert im.noise == 0.0
        assert im.image.std() > 0.01, f"{im.name} is near constant"
    kinds = {im.source.split(":")[0] for im in images}
    assert kinds == {"phantom", "corpus"}
    assert {im.image.shape for im in images} == {(64, 64)}


def test_simulated_test_maps_are_at_least_30():
    assert len(imaging_dataset("test", ["simulated maps"])) >= 30


def test_simulated_maps_are_deterministic_and_follow_the_seed():
    first = [im.image.copy() for im in simulated_maps([3], size=32)]
    sources._simulated.cache_clear()  # build again rather than return the cached maps
    again = simulated_maps([3], size=32)
    assert len(first) == len(again) >= 5
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b.image)
    other = simulated_maps([4], size=32)
    assert not np.array_equal(first[0], other[0].image)


def test_simulated_maps_reject_a_size_that_is_not_a_multiple_of_4():
    with pytest.raises(InvalidInputError, match="multiple of 4"):
        simulated_maps([0], size=30)


def test_the_manifest_keeps_train_and_test_sources_apart():
    manifest = split_manifest()
    assert set(manifest) == set(CATEGORIES)
    train = {s for sides in manifest.values() for s in sides["train"]}
    test = {s for sides in manifest.values() for s in sides["test"]}
    assert train and test
    assert not train & test, f"sources on both sides: {sorted(train & test)}"
    for sides in manifest.values():
        assert sides["train"] and sides["test"]


def test_crops_are_renormalised_and_named():
    values = np.arange(12 * 16, dtype=np.float64).reshape(12, 16)
    top = float(values.max())
    image = (values / top).astype(np.float32)
    parent = CleanImage(image, "electron images", "demo", "demo:image", top, 0.0, 2.0 / top)
    cut = crops(parent, 8, stride=4)
    assert [c.name for c in cut] == [
        "demo:image:crop(0,0)",
        "demo:image:crop(0,4)",
        "demo:image:crop(0,8)",
        "demo:image:crop(4,0)",
        "demo:image:crop(4,4)",
        "demo:image:crop(4,8)",
    ]
    for c in cut:
        assert c.image.shape == (8, 8) and c.image.min() == 0 and c.image.max() == 1
        assert c.source == "demo" and c.category == "electron images"
        assert c.noise * c.scale == pytest.approx(2.0)
    y, x = 4, 8
    np.testing.assert_allclose(cut[-1].original(), values[y : y + 8, x : x + 8], atol=1e-4)
    assert len(crops(parent, 4)) == 12
    for size, stride in ((6, None), (16, None), (8, 0)):
        with pytest.raises(InvalidInputError):
            crops(parent, size, stride)


def test_unknown_split_or_category_is_refused():
    with pytest.raises(InvalidInputError, match="split"):
        imaging_dataset("validation")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="categories"):
        imaging_dataset("test", ["photos"])


@pytest.mark.data
def test_every_real_file_of_the_split_is_available(real_data):
    found = available()
    missing = [name for name, ok in found.items() if not ok and name != "eels_cuzn_si_haadf"]
    assert not missing


@pytest.mark.data
@pytest.mark.parametrize("category", ["electron images", "element maps"])
def test_real_images_are_clean_and_near_noise_free(real_data, category):
    for split in ("train", "test"):
        images = imaging_dataset(split, [category])
        check_clean(images, category)
        for im in images:
            assert im.snr >= MIN_SNR, im.name


@pytest.mark.data
def test_each_test_category_holds_at_least_30_images(real_data):
    test = imaging_dataset("test")
    for category in CATEGORIES:
        assert sum(im.category == category for im in test) >= 30, category
    tiles = [im for im in test if im.category == "electron images"]
    assert {im.image.shape for im in tiles} == {(64, 64)}
    assert {im.source for im in tiles} == {"bruker_sem_50x50"}
    maps = [im for im in test if im.category == "element maps"]
    assert {im.image.shape for im in maps} == {(24, 24)}


@pytest.mark.data
def test_train_and_test_images_never_share_a_source(real_data):
    manifest = split_manifest()
    used = {}
    for split in ("train", "test"):
        images = imaging_dataset(split)
        used[split] = {im.source for im in images}
        for im in images:
            assert im.source in manifest[im.category][split], im.name
    assert not used["train"] & used["test"]
    train = imaging_dataset("train")
    for category in ("electron images", "element maps"):
        assert any(im.category == category for im in train), category


@pytest.mark.data
def test_element_maps_hold_counts(real_data):
    for im in imaging_dataset("train", ["element maps"]) + imaging_dataset(
        "test", ["element maps"]
    ):
        counts = im.original()
        assert counts.min() >= 0
        np.testing.assert_allclose(counts, np.round(counts), atol=0.02 + 1e-6 * im.scale)
        assert counts.mean() >= sources.MIN_MEAN_COUNTS * 0.5, im.name


@pytest.mark.data
def test_real_images_are_deterministic(real_data):
    first = {im.name: im.image.copy() for s in ("train", "test") for im in imaging_dataset(s)}
    # Empty the in-process caches so that the second build reads the files again.
    for cached in (sources._dataset, sources._electron, sources._elements, sources._load):
        cached.cache_clear()
    again = {im.name: im.image for s in ("train", "test") for im in imaging_dataset(s)}
    assert first.keys() == again.keys()
    for name, image in first.items():
        np.testing.assert_array_equal(image, again[name], err_msg=name)
