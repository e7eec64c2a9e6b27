"""Pretraining the 3D network and starting a denoiser from shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n2s_eds import Denoiser, InvalidInputError, pretrained, simulate
from n2s_eds.cli import main
from n2s_eds.inference import predict_cube
from n2s_eds.models import ConvAutoencoder3D
from n2s_eds.pretraining import ExportPretrained, PretrainModule


def _batch(b: int = 2, e: int = 64, side: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rate = torch.rand(b, 1, e, side, side, generator=gen) * 0.3
    return {
        "counts": torch.poisson(rate, generator=gen),
        "target": rate,
        "guide": torch.randn(b, 1, side, side, generator=gen),
        "energy": (0.2 + 0.02 * torch.arange(e, dtype=torch.float32)).expand(b, e).clone(),
        "scale": torch.full((b,), 0.15),
    }


@pytest.mark.parametrize("objective", ["supervised", "n2s", "both"])
def test_pretrain_objectives_give_finite_losses_with_gradients(objective):
    torch.manual_seed(0)
    module = PretrainModule(
        ConvAutoencoder3D(guide=True, base_channels=4, conditioned=True), objective=objective
    )
    loss = module.masked_loss(_batch())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in module.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_supervised_objective_needs_the_truth():
    module = PretrainModule(
        ConvAutoencoder3D(guide=True, base_channels=4, conditioned=True), objective="supervised"
    )
    batch = _batch()
    del batch["target"]
    with pytest.raises(ValueError, match="target"):
        module.masked_loss(batch)
    with pytest.raises(ValueError, match="objective"):
        PretrainModule(ConvAutoencoder3D(base_channels=4, conditioned=True), objective="x")


def test_conditioned_network_reads_the_channel_energies():
    torch.manual_seed(0)
    net = ConvAutoencoder3D(base_channels=4, conditioned=True)
    for p in net.parameters():  # a visible response to every input channel
        torch.nn.init.normal_(p, std=0.3)
    counts = torch.poisson(torch.full((1, 1, 32, 8, 8), 0.5))
    energy = (1.0 + 0.02 * torch.arange(32.0))[None, None, :, None, None].expand_as(counts)
    a = net(torch.cat([counts, energy], 1), scale=torch.tensor([0.5]))
    b = net(torch.cat([counts, energy + 3.0], 1), scale=torch.tensor([0.5]))
    c = net(torch.cat([counts, energy], 1), scale=torch.tensor([5.0]))
    assert a.shape == (1, 1, 32, 8, 8)
    assert not torch.allclose(a, b)  # another place on the energy axis
    assert not torch.allclose(a / 0.5, c / 5.0)  # the count level is an input too
    with pytest.raises(ValueError, match="energy"):
        net(counts)


def test_tiled_prediction_of_a_conditioned_network_equals_one_pass():
    """Energy tiles take the channel energies of their own channels."""
    torch.manual_seed(1)
    net = ConvAutoencoder3D(base_channels=4, depth=1, conditioned=True)
    cube = np.random.default_rng(0).poisson(0.4, (96, 20, 20)).astype(np.float32)
    energy = torch.linspace(0.2, 2.1, 96)
    net.adapt(torch.from_numpy(cube), energy_kev=energy)
    whole = predict_cube(net, cube, tile=64, energy_tile=None)
    tiled = predict_cube(net, cube, tile=8, energy_tile=32)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-5)


def _export(tmp_path, guide: bool = True) -> None:
    """A tiny conditioned network written as shipped weights into tmp_path/dcae.pt."""
    torch.manual_seed(0)
    net = ConvAutoencoder3D(guide=guide, base_channels=4, depth=1, conditioned=True)
    module = PretrainModule(net)

    class _Trainer:  # what ExportPretrained reads of a Trainer
        is_global_zero = True
        interrupted = False
        global_step = 3
        num_devices = 1
        accelerator = object()
        datamodule = None

    cb = ExportPretrained(str(tmp_path / "dcae.pt"), bin_ev=20.0, half=True)
    cb.on_train_start(_Trainer(), module)
    cb.on_train_end(_Trainer(), module)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Shipped weights replaced by a tiny exported network (the tests do not depend on the
    package's own weights)."""
    _export(tmp_path)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    pretrained._read.cache_clear()
    yield tmp_path
    pretrained._read.cache_clear()


def test_exported_weights_are_float16_and_describe_the_network(shipped):
    state = torch.load(shipped / "dcae.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    desc = pretrained.pretrained_description("autoencoder3d")
    assert desc["format_version"] == 4
    assert desc["model_options"]["conditioned"] is True
    assert desc["options"]["bin_ev"] == 20.0
    assert desc["training"]["pretraining"]["steps"] == 3


def test_autoencoder3d_starts_from_shipped_weights_and_fine_tunes(shipped):
    ph = simulate.phantom(shape=(16, 16), n_channels=256, channel_width_ev=10.0, dose=20)
    den = Denoiser(model="autoencoder3d", steps=3, progress=False, refine_maps=False)
    assert den.training.pretrained is True
    assert den.processing.bin_ev == 20.0  # the shipped network's canonical bins
    assert den.model_options.base_channels == 4  # the shipped network's options
    start = {k: v.clone() for k, v in pretrained.load_pretrained("autoencoder3d", False)
             .state_dict().items()}  # fmt: skip
    out = den.fit(ph.noisy).denoise(ph.noisy)
    assert out.data.shape == ph.noisy.data.shape
    assert np.isfinite(out.data).all()
    moved = [k for k, v in den.net.state_dict().items() if k in start and v.is_floating_point()
             and not torch.equal(v, start[k])]  # fmt: skip
    assert moved  # fine-tuned, not only loaded
    params = out.metadata.Signal.Denoising.parameters
    assert params.pretrained is True
    # with the scan's image: the guide channel of the shipped network is used
    guided = Denoiser(model="autoencoder3d", steps=0, progress=False, refine_maps=False)
    res = guided.fit(ph.noisy, ph.haadf).denoise(ph.noisy, ph.haadf)
    assert guided.net.guide and np.isfinite(res.data).all()


def test_dropping_the_guide_channel_equals_a_zero_guide(shipped):
    with_guide = pretrained.load_pretrained("autoencoder3d", True).eval()
    without = pretrained.load_pretrained("autoencoder3d", False).eval()
    x = torch.poisson(torch.full((1, 1, 32, 8, 8), 0.3))
    energy = torch.linspace(0.3, 1.0, 32)[None, None, :, None, None].expand_as(x)
    zero = torch.zeros_like(x)
    a = with_guide(torch.cat([x, zero, energy], 1), scale=torch.tensor([0.3]))
    b = without(torch.cat([x, energy], 1), scale=torch.tensor([0.3]))
    torch.testing.assert_close(a, b)


def test_fine_tuned_model_file_round_trips(shipped, tmp_path):
    ph = simulate.phantom(shape=(16, 16), n_channels=256, dose=20)
    den = Denoiser(model="autoencoder3d", steps=2, progress=False, refine_maps=False)
    den.fit(ph.noisy)
    path = den.save(tmp_path / "tuned.pt")
    back = Denoiser.load(path, progress=False)
    assert back.training.pretrained is True and back.processing.bin_ev == 20.0
    np.testing.assert_allclose(back.denoise(ph.noisy).data, den.denoise(ph.noisy).data)


def test_pretrained_choices_refused_before_any_work(shipped, tmp_path, monkeypatch):
    with pytest.raises(InvalidInputError, match="pretrained=False"):
        Denoiser(model="prior_mixture", pretrained=True)
    with pytest.raises(InvalidInputError, match="model_options"):
        Denoiser(model="autoencoder3d", model_options={"base_channels": 32})
    with pytest.raises(InvalidInputError, match="bin_ev"):
        Denoiser(model="autoencoder3d", bin_ev=40.0)
    # other options train that network from scratch
    assert (
        Denoiser(model="autoencoder3d", pretrained=False, bin_ev=40.0).training.pretrained is False
    )
    # no shipped weights at all: autoencoder3d trains from scratch, pretrained=True is refused
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "none")
    assert Denoiser(model="autoencoder3d").training.pretrained is False
    with pytest.raises(InvalidInputError, match="no pretrained weights"):
        Denoiser(model="autoencoder3d", pretrained=True)


def test_cli_refuses_pretrained_for_a_model_without_weights_before_reading(tmp_path, capsys):
    code = main(
        [
            "denoise",
            str(tmp_path / "missing.hspy"),
            "-o",
            str(tmp_path / "out.hspy"),
            "--model-type",
            "prior_mixture",
            "--pretrained",
            "yes",
        ]  # fmt: skip
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no pretrained weights" in err and not (tmp_path / "out.hspy").exists()


def test_lazy_result_of_a_pretrained_network_equals_the_eager_one(shipped):
    ph = simulate.phantom(shape=(20, 20), n_channels=256, dose=20)
    den = Denoiser(model="autoencoder3d", steps=0, progress=False, refine_maps=False, tile=8)
    den.fit(ph.noisy)
    eager = den.denoise(ph.noisy).data
    lazy = den.denoise(ph.noisy.as_lazy()).data.compute()
    np.testing.assert_allclose(lazy, eager, rtol=1e-4, atol=1e-4)


def test_shipped_weights_are_package_data_within_the_size_limit():
    """The weights the package ships (all together at most 30 MB) and their model card."""
    from n2s_eds.pretrained import SHIPPED, WEIGHTS_DIR

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    files = [WEIGHTS_DIR / name for name in SHIPPED.values()]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in WEIGHTS_DIR.glob("*.pt")) <= 30 * 2**20
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    for word in ("Training data", "Steps", "Hardware", "Wall time", "Benchmark"):
        assert word in card
    root = WEIGHTS_DIR.parents[1]
    with open(root / "pyproject.toml", "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["n2s_eds.weights"]
    assert "*.pt" in data and "*.md" in data
    desc = pretrained.pretrained_description("autoencoder3d")
    assert desc["training"]["pretraining"]["steps"] > 0
