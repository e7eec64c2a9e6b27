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
