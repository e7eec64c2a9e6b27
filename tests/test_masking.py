import pytest
import torch

from n2s_eds.masking import BernoulliMasker, bernoulli_mask, replace_masked


def test_voxel_mask_rate_and_dtype():
    g = torch.Generator().manual_seed(0)
    mask = bernoulli_mask((2, 1, 40, 30, 30), 0.1, generator=g)
    assert mask.dtype == torch.bool
    assert mask.shape == (2, 1, 40, 30, 30)
    # 72,000 Bernoulli(0.1) draws: standard deviation of the rate is about 0.0011
    assert abs(mask.float().mean().item() - 0.1) < 0.005


def test_spectrum_mask_hides_whole_spectra():
    mask = bernoulli_mask((1, 1, 16, 20, 20), 0.2, "spectrum", generator=torch.Generator())
    per_pixel = mask.float().mean(dim=2)
    assert set(per_pixel.unique().tolist()) <= {0.0, 1.0}
    assert 0.05 < per_pixel.mean().item() < 0.4


def test_mask_never_empty():
    mask = bernoulli_mask((1, 1, 2, 2, 2), 1e-9)
    assert mask.sum().item() == 1


def test_masker_is_reproducible_with_generator():
    x = torch.rand(1, 1, 8, 9, 10)
    a = BernoulliMasker(0.3)(x, torch.Generator().manual_seed(5))
    b = BernoulliMasker(0.3)(x, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("replacement", ["zero", "local_mean", "neighbor"])
def test_masked_input_does_not_depend_on_hidden_values(replacement):
    """Changing a hidden voxel's count must not change the masked input (Noise2Self)."""
    x = torch.poisson(torch.full((1, 1, 6, 12, 12), 2.0))
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 0, 3, 5, 6] = True
    x2 = x.clone()
    x2[0, 0, 3, 5, 6] += 100
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = replace_masked(x, mask, replacement, generator=g1)
    b = replace_masked(x2, mask, replacement, generator=g2)
    assert torch.equal(a, b)
    assert torch.equal(a[~mask], x[~mask])


def test_local_mean_is_mean_of_eight_neighbours():
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 1, 5, 5)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., 2, 2] = True
    out = replace_masked(x, mask, "local_mean")
    neighbours = [6, 7, 8, 11, 13, 16, 17, 18]
    assert out[0, 0, 0, 2, 2].item() == pytest.approx(sum(neighbours) / 8)


def test_masker_keeps_masked_zeros_in_mask():
    """Hidden zero-count voxels stay in the explicit mask (they are most EDS voxels)."""
    x = torch.zeros(1, 1, 10, 10, 10)
    masked, mask = BernoulliMasker(0.2, replacement="zero")(x, torch.Generator().manual_seed(0))
    assert mask.sum() > 0
    assert torch.equal(masked, x)  # nothing changed, yet the mask says what was hidden


def test_masker_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        BernoulliMasker(1.5)
    with pytest.raises(ValueError, match="mode"):
        BernoulliMasker(0.1, mode="pixel")
    with pytest.raises(ValueError, match="B, 1, E, Y, X"):
        BernoulliMasker(0.1)(torch.zeros(3, 4, 5))
