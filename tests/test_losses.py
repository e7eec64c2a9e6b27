import pytest
import torch

from n2s_eds.losses import masked_mse, masked_poisson_nll


def _case():
    target = torch.tensor([[0.0, 0.0, 3.0, 1.0]])
    pred = torch.tensor([[0.5, 9.0, 2.0, 1.0]])
    mask = torch.tensor([[True, False, True, False]])
    return pred, target, mask


def test_mse_ignores_unmasked_voxels_and_counts_masked_zeros():
    pred, target, mask = _case()
    # masked voxels: (0.5 - 0)^2 and (2 - 3)^2; the zero-count masked voxel counts
    assert masked_mse(pred, target, mask).item() == pytest.approx((0.25 + 1.0) / 2)
    pred2 = pred.clone()
    pred2[0, 1] = -100.0  # unmasked voxel: no effect
    assert masked_mse(pred2, target, mask).item() == pytest.approx((0.25 + 1.0) / 2)


def test_poisson_nll_on_masked_voxels():
    pred, target, mask = _case()
    expected = ((0.5 - 0.0) + (2.0 - 3.0 * torch.log(torch.tensor(2.0)))) / 2
    assert masked_poisson_nll(pred, target, mask).item() == pytest.approx(expected.item())
    pred2 = pred.clone()
    pred2[0, 3] = 50.0
    assert masked_poisson_nll(pred2, target, mask) == masked_poisson_nll(pred, target, mask)


def test_poisson_nll_minimised_at_the_mean():
    torch.manual_seed(0)
    target = torch.poisson(torch.full((20000,), 0.7))
    mask = torch.ones_like(target, dtype=torch.bool)
    rates = torch.linspace(0.3, 1.2, 91)
    losses = torch.stack(
        [masked_poisson_nll(torch.full_like(target, r), target, mask) for r in rates]
    )
    assert rates[losses.argmin()].item() == pytest.approx(target.mean().item(), abs=0.02)


def test_gradient_flows_only_through_masked_voxels():
    pred, target, mask = _case()
    pred.requires_grad_(True)
    masked_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[~mask] == 0)
    assert torch.all(pred.grad[mask] != 0)


def test_shape_and_dtype_checks():
    pred, target, mask = _case()
    with pytest.raises(ValueError, match="shape"):
        masked_mse(pred, target[:, :3], mask)
    with pytest.raises(TypeError, match="boolean"):
        masked_mse(pred, target, mask.float())


def test_window_error_sums_residuals_over_energy_windows():
    """The window term of N2SModule: errors that add up along energy cost more than ones
    that cancel, and only hidden pixels count."""
    from n2s_eds.models import PriorMixture
    from n2s_eds.module import N2SModule

    module = N2SModule(PriorMixture(), window_loss=1.0, window_channels=16)
    mask = torch.zeros(1, 1, 32, 3, 3, dtype=torch.bool)
    mask[0, 0, :, 1, 2] = True  # one hidden pixel, whole spectrum
    same_sign = torch.ones(32)
    # windows of 16 channels, stride 8 (3 windows): each sums to 16 -> 16^2 / 16 = 16
    assert module._window_error(same_sign, mask).item() == pytest.approx(16.0)
    alternating = torch.tensor([1.0, -1.0] * 16)
    assert module._window_error(alternating, mask).item() == pytest.approx(0.0)
    # the voxel MSE cannot tell them apart
    assert (same_sign**2).mean() == (alternating**2).mean()
    with pytest.raises(ValueError, match="window_loss"):
        N2SModule(PriorMixture(), window_loss=-1.0)


def test_window_loss_enters_the_training_loss():
    from n2s_eds.models import PriorMixture
    from n2s_eds.module import N2SModule

    counts = torch.poisson(torch.full((1, 1, 40, 12, 12), 2.0, dtype=torch.float32))
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        module = N2SModule(PriorMixture(max_rank=4), window_loss=weight)
        module.adapt(counts[0, 0])
        gen = torch.Generator().manual_seed(3)
        losses[weight] = module.masked_loss({"counts": counts}, generator=gen)
    assert losses[1.0] > losses[0.0] > 0


@pytest.mark.parametrize("model", ["prior", "autoencoder"])
def test_a_target_replaces_the_counts_as_reference_of_the_hidden_voxels(model):
    """The supervised bound: same masks and network, hidden voxels scored against a target."""
    from n2s_eds.models import ConvAutoencoder3D, PriorMixture
    from n2s_eds.module import N2SModule

    counts = torch.poisson(torch.full((1, 1, 24, 12, 12), 2.0, dtype=torch.float32))
    torch.manual_seed(0)
    net = (
        PriorMixture(max_rank=4)
        if model == "prior"
        else ConvAutoencoder3D(base_channels=4, depth=1)
    )
    module = N2SModule(net)
    if model == "prior":
        module.adapt(counts[0, 0])

    def loss(batch):
        return module.masked_loss(batch, generator=torch.Generator().manual_seed(3)).item()

    plain = loss({"counts": counts})
    assert loss({"counts": counts, "target": counts.clone()}) == pytest.approx(plain, rel=1e-6)
    # a target far from every prediction gives a larger loss on the same hidden voxels
    assert loss({"counts": counts, "target": counts + 50.0}) > plain + 1000.0
