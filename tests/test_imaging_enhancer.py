"""The 2D enhancer: networks, loss, training pairs, MapEnhancer, shipped weights, `enhance`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from n2s_eds import InvalidInputError
from n2s_eds.imaging import AblationSettings, MapEnhancer, image_scores, virtual_ablation
from n2s_eds.imaging.baselines import gaussian
from n2s_eds.imaging.enhancer import shipped_enhancer_path
from n2s_eds.imaging.losses import EnhancerLoss, FilterBankFeatures, ssim_map
from n2s_eds.imaging.networks import build_network
from n2s_eds.imaging.structure import (
    edge_and_texture_excess,
    edge_straightness,
    straight_edge_image,
)
from n2s_eds.imaging.training import AblationPairs, network_input


def discs(size: int = 48, seed: int = 0) -> np.ndarray:
    """A clean test image: a few flat discs on a flat background, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    im = np.full((size, size), 0.2, dtype=np.float32)
    for _ in range(4):
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(4, 9)]
        im[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0.5, 1.0)
    return im


@pytest.fixture(scope="module")
def tiny_enhancer() -> MapEnhancer:
    """An enhancer trained for a few steps (behaviour, not quality)."""
    torch.set_num_threads(2)
    return MapEnhancer("unet_small", 2, steps=4, batch_size=2, patch=32).fit(
        [discs(48, s) for s in range(3)]
    )


@pytest.mark.parametrize("arch", ["unet_small", "drln"])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_networks_start_at_bicubic_and_keep_any_size(arch: str, scale: int) -> None:
    net = build_network(arch, scale).eval()
    x = torch.rand(2, 2, 13, 22)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 1, 13 * scale, 22 * scale)
    bicubic = torch.nn.functional.interpolate(
        x[:, :1], scale_factor=scale, mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(y, bicubic if scale > 1 else x[:, :1])


def test_resnet34_unet_needs_smp_or_says_how_to_get_it() -> None:
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception:
        with pytest.raises(InvalidInputError, match="segmentation-models-pytorch"):
            build_network("unet_resnet34", 2)
        return
    y = build_network("unet_resnet34", 2)(torch.rand(1, 2, 20, 36))
    assert y.shape == (1, 1, 40, 72)


def test_loss_is_zero_for_identical_images_and_sees_texture() -> None:
    loss = EnhancerLoss()
    y = torch.from_numpy(discs(40))[None, None]
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(ssim_map(y, y).mean()) == pytest.approx(1.0, abs=1e-5)
    feats = FilterBankFeatures()(torch.full((1, 1, 20, 20), 3.0))
    assert all(float(f.abs().max()) < 1e-5 for f in feats)  # no response to a flat image
    torch.manual_seed(0)
    noise = torch.randn_like(y)
    weak, strong = loss.terms(y + 0.05 * noise, y), loss.terms(y + 0.2 * noise, y)
    for term in ("perceptual", "gram"):  # both grow with the texture added by the noise
        assert float(strong[term]) > float(weak[term]) > 0


def test_training_pairs_are_seeded_and_normalised() -> None:
    ims = [discs(48, 1), discs(20, 2)]
    a = iter(AblationPairs(ims, AblationSettings(), scale=2, patch=32, seed=4))
    b = iter(AblationPairs(ims, AblationSettings(), scale=2, patch=32, seed=4))
    pa, pb = next(a), next(b)
    assert pa["x"].shape == (2, 16, 16) and pa["y"].shape == (1, 32, 32)
    torch.testing.assert_close(pa["x"], pb["x"])
    assert float(pa["x"][1].min()) >= 0.0  # the noise-level map
    with pytest.raises(ValueError, match="weights"):
        AblationPairs(ims, AblationSettings(), weights=[1.0])


def test_network_input_undoes_its_scale() -> None:
    stack = np.stack([discs(32, 0) * 7, discs(32, 1) * 900])
    x, scale = network_input(stack)
    np.testing.assert_allclose(x[:, 0].numpy() * scale[:, None, None], stack, rtol=1e-5)


def test_enhance_shapes_ranks_and_units(tiny_enhancer: MapEnhancer) -> None:
    im = discs(24, 5) * 50
    one = tiny_enhancer.enhance(im)
    assert one.shape == (48, 48) and one.dtype == np.float32 and one.min() >= 0
    stack = tiny_enhancer.enhance(np.stack([im, im * 2]))
    assert stack.shape == (2, 48, 48)
    np.testing.assert_allclose(stack[0], one, rtol=1e-4, atol=1e-4)
    # the network is scale-equivariant: units follow the input
    np.testing.assert_allclose(stack[1], 2 * one, rtol=1e-3, atol=1e-3)


def test_enhance_signal_rescales_axes_and_keeps_the_input(tiny_enhancer: MapEnhancer) -> None:
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal2D(np.stack([discs(20, 1), discs(20, 2)]) * 10)
    for ax, scale in zip(s.axes_manager.signal_axes, (0.5, 7.0), strict=True):
        ax.scale, ax.offset, ax.units = scale, 3.0, "µm"
    s.metadata.General.title = "Mg24"
    before = s.data.copy()
    out = tiny_enhancer.enhance(s)
    assert type(out) is type(s) and out.data.shape == (2, 40, 40)
    np.testing.assert_array_equal(s.data, before)
    x_in, x_out = s.axes_manager.signal_axes[0], out.axes_manager.signal_axes[0]
    assert x_out.scale == pytest.approx(0.25) and x_out.units == "µm"
    # the first fine pixel's centre lies a quarter of a coarse pixel before the coarse centre
    assert x_out.offset == pytest.approx(x_in.offset - 0.125)
    assert out.axes_manager.signal_axes[1].scale == pytest.approx(3.5)
    assert out.metadata.Signal.Enhancement.scale == 2
    assert "Mg24" in out.metadata.General.title


def test_save_load_roundtrip(tiny_enhancer: MapEnhancer, tmp_path) -> None:
    path = tiny_enhancer.save(tmp_path / "enh.pt")
    back = MapEnhancer.load(path)
    im = discs(16, 3)
    np.testing.assert_array_equal(back.enhance(im), tiny_enhancer.enhance(im))
    assert back.describe()["options"] == tiny_enhancer.describe()["options"]
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(InvalidInputError, match="not a readable"):
        MapEnhancer.load(tmp_path / "bad.pt")
    with pytest.raises(InvalidInputError, match="does not exist"):
        MapEnhancer.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 5)), "empty"),
        (np.full((8, 8), np.nan), "NaN"),
        (-np.ones((8, 8)), "negative"),
        ([np.ones((8, 8)), np.ones((9, 8))], "mixed sizes"),
        (np.ones((2, 2, 8, 8)), "stack"),
    ],
)
def test_bad_images_are_refused(tiny_enhancer: MapEnhancer, bad, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        tiny_enhancer.enhance(bad)


def test_bad_options_are_refused_before_training() -> None:
    with pytest.raises(InvalidInputError, match="architecture"):
        MapEnhancer("vgg")
    with pytest.raises(InvalidInputError, match="scale"):
        MapEnhancer(scale=3)
    with pytest.raises(InvalidInputError, match="patch"):
        MapEnhancer(scale=4, patch=30)
    with pytest.raises(InvalidInputError, match="not trained"):
        MapEnhancer().enhance(np.ones((8, 8)))
    with pytest.raises(InvalidInputError, match="negative"):
        MapEnhancer(steps=1).fit([-np.ones((16, 16))])
    with pytest.raises(InvalidInputError, match="weights"):
        MapEnhancer(steps=1).fit([np.ones((16, 16))], weights=[1.0, 2.0])
    with pytest.raises(InvalidInputError, match="shipped"):
        MapEnhancer.pretrained(3)


def shipped(scale: int) -> MapEnhancer:
    if not shipped_enhancer_path(scale).is_file():
        pytest.fail(f"no shipped enhancer weights for x{scale}")
    return MapEnhancer.pretrained(scale)


@pytest.mark.parametrize("scale", [1, 2])
def test_shipped_weights_beat_the_classical_methods_on_unseen_images(scale: int) -> None:
    enh = shipped(scale)
    settings = AblationSettings()
    gains = []
    for seed in range(3):
        clean = discs(64, 100 + seed)
        noisy = virtual_ablation(clean, **dataclasses.asdict(settings), scale=scale, seed=seed)
        est = enh.enhance(noisy)
        smooth = gaussian(noisy, 1.0, scale=scale)
        gains.append(image_scores(est, clean)[0] - image_scores(smooth, clean)[0])
    assert np.mean(gains) > 1.0, gains


def test_shipped_enhancer_invents_no_edge_or_texture() -> None:
    """A straight edge beside a flat region: the enhanced image stays flat where the clean
    one is flat, has no edge the clean one lacks, and keeps the edge straight."""
    enh = shipped(1)
    clean = straight_edge_image((64, 64), angle_deg=20.0, low=0.2, high=0.8)
    settings = dataclasses.asdict(AblationSettings())
    noisy = virtual_ablation(clean, **settings, seed=3)
    est = enh.enhance(noisy)
    ex_est = edge_and_texture_excess(est, clean)
    ex_noisy = edge_and_texture_excess(noisy, clean)
    assert ex_est.invented_edge_fraction <= 0.01
    assert ex_est.flat_std < 0.5 * ex_noisy.flat_std
    assert edge_straightness(est) < 0.5


def test_shipped_weights_are_package_data_with_a_model_card() -> None:
    for scale in (1, 2, 4):
        path = shipped_enhancer_path(scale)
        assert path.is_file()
    folder = shipped_enhancer_path(1).parent
    total = sum(p.stat().st_size for p in folder.glob("*.pt"))
    assert total < 30e6
    card = (folder / "MODEL_CARD.md").read_text()
    assert "enhancer_x1.pt" in card and "virtual_ablation" in card


def test_textures_are_seeded_normalised_and_varied() -> None:
    from n2s_eds.imaging.textures import texture_image, texture_images

    ims = texture_images(range(12), size=32)
    assert all(im.shape == (32, 32) and im.dtype == np.float32 for im in ims)
    assert all(im.min() == 0.0 and im.max() == pytest.approx(1.0) for im in ims)
    np.testing.assert_array_equal(texture_image(5, 32), ims[5])
    assert not np.array_equal(ims[0], ims[1])
    # some are grains (few distinct levels), some smooth fields (many)
    levels = [len(np.unique(np.round(im, 2))) for im in ims]
    assert min(levels) < 30 < max(levels)


def test_vary_settings_takes_per_image_values_as_one() -> None:
    from n2s_eds.imaging.ablation import CLINKER_SETTINGS
    from n2s_eds.imaging.training import vary_settings

    s = vary_settings(CLINKER_SETTINGS, np.random.default_rng(0))
    assert np.ndim(s.counts_per_unit) == 0 and np.ndim(s.dwell_s) == 0
    out = virtual_ablation(discs(32), **dataclasses.asdict(s), seed=0)
    assert out.shape == (32, 32)
