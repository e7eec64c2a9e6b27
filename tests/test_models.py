import numpy as np
import pytest
import torch

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.inference import predict_cube
from n2s_eds.models import (
    MODEL_OPTIONS,
    MODELS,
    Autoencoder3DOptions,
    ConvAutoencoder3D,
    PriorMixture,
    PriorMixtureOptions,
    build_model,
)


def low_rank_cube(e=64, y=21, x=19, seed=0, dose=30.0):
    """Poisson counts of a smooth 3-phase scene (rank 3), and its truth."""
    rng = np.random.default_rng(seed)
    energies = np.arange(e)
    spectra = np.stack([np.exp(-0.5 * ((energies - c) / 2.0) ** 2) + 0.05 for c in (10, 30, 50)])
    yy, xx = np.mgrid[:y, :x]
    maps = np.stack(
        [
            1.0 + np.sin(yy / 4.0),
            np.exp(-((yy - y / 2) ** 2 + (xx - x / 2) ** 2) / 20.0),
            (xx > x / 2).astype(float),
        ]
    )
    truth = np.einsum("ke,kyx->eyx", spectra, maps)
    truth *= dose / truth.sum(axis=0).mean()
    return rng.poisson(truth).astype(np.float32), truth.astype(np.float32)


@pytest.mark.parametrize("guide", [False, True])
def test_autoencoder_shapes_and_positivity(guide):
    net = ConvAutoencoder3D(guide=guide, base_channels=4, depth=2)
    x = torch.rand(2, 2 if guide else 1, 37, 13, 11)
    out = net(x)
    assert out.shape == (2, 1, 37, 13, 11)
    assert torch.all(out >= 0)


def test_autoencoder_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 1, E, Y, X\)"):
        ConvAutoencoder3D(guide=False)(torch.rand(1, 2, 8, 8, 8))


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet")


def test_prior_mixture_needs_adapt():
    with pytest.raises(RuntimeError, match="adapt"):
        PriorMixture()(torch.rand(1, 1, 8, 10, 10))


def random_weights(net, shape, seed=0):
    """Random weights as ``mixing_weights`` gives them (each group sums to 1)."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.randn(1, net.n_bands, net.n_candidates, *shape, generator=g)
    coarse = torch.randn(1, net.n_bands, net.n_coarse, *shape, generator=g)
    return torch.cat([torch.softmax(fine, dim=2), torch.softmax(coarse, dim=2)], dim=2)


def guide_image(y=21, x=19, seed=0):
    """A guide with a sharp edge, a bright blob and noise: (1, 1, Y, X)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    g = (xx > x / 3).astype(float) + 2.0 * np.exp(-((yy - 5) ** 2 + (xx - 12) ** 2) / 6.0)
    g += 0.1 * rng.standard_normal((y, x))
    return torch.from_numpy(g.astype(np.float32))[None, None]


#: PriorMixture options of the coarse path: off, raw candidates only, raw and low-rank.
def mix_poked(net, x, w, g, voxel, add=50.0):
    """``net.mix`` of ``x``, and of ``x`` with ``add`` more counts at ``voxel`` (E, Y, X)."""
    x2 = x.clone()
    x2[(0, 0, *voxel)] += add
    with torch.no_grad():
        return net.mix(x, w, guide=g), net.mix(x2, w, guide=g)


COARSE = [{}, {"coarse_ev": 40.0}, {"coarse_ev": 40.0, "coarse_lowrank_sigmas": (1.0, 2.0)}]


@pytest.mark.parametrize("coarse", COARSE)
@pytest.mark.parametrize("residual_sigma", [0.0, 4.0])
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("voxel", [(30, 10, 9), (12, 0, 0), (40, 1, 18), (5, 20, 2)])
def test_mix_is_voxel_j_invariant(voxel, guided, residual_sigma, coarse):
    """No estimate of a voxel may depend on that voxel's own count (borders included)."""
    cube, _ = low_rank_cube()
    net = PriorMixture(rank=3, guide=guided, residual_sigma=residual_sigma, n_bands=3, **coarse)
    net.adapt(torch.from_numpy(cube), channel_ev=10.0)
    w = random_weights(net, cube.shape[1:])
    x = torch.from_numpy(cube)[None, None]
    g = guide_image() if guided else None
    e, y, xx = voxel
    a, b = mix_poked(net, x, w, g, voxel)
    assert abs(float(a[0, 0, e, y, xx] - b[0, 0, e, y, xx])) < 1e-3
    # ...while other voxels of the same pixel and the neighbours do see it
    diff = (b - a).abs()[0, 0]
    assert diff.sum() > 10.0


@pytest.mark.parametrize("coarse", COARSE)
@pytest.mark.parametrize("guided", [False, True])
def test_mix_conserves_total_counts(guided, coarse):
    cube, _ = low_rank_cube()
    net = PriorMixture(guide=guided, **coarse)
    net.adapt(torch.from_numpy(cube))
    w = random_weights(net, cube.shape[1:], seed=3)
    with torch.no_grad():
        out = net.mix(torch.from_numpy(cube)[None, None], w, guide=guide_image())
    assert abs(float(out.sum()) / cube.sum() - 1) < 0.005


def test_residual_path_keeps_channel_totals():
    """Weights that prefer the projection where it misses a channel move that channel's
    counts; spreading the projection residual back puts them back."""
    cube, _ = low_rank_cube()
    cube = cube.copy()
    cube[7, 5:9, 5:9] += 20.0  # a local line outside the rank-3 structure
    x = torch.from_numpy(cube)[None, None]
    errors = {}
    for sigma in (0.0, 4.0):
        net = PriorMixture(rank=3, residual_sigma=sigma)
        net.adapt(torch.from_numpy(cube))
        w = torch.zeros(1, net.n_bands, net.n_candidates, *cube.shape[1:])
        w[:, :, 0] = 1.0  # low rank everywhere...
        w[:, :, 0, :, 12:] = 0.0
        w[:, :, net.n_lowrank, :, 12:] = 1.0  # ...raw on the right
        with torch.no_grad():
            out = net.mix(x, w)[0, 0]
        errors[sigma] = float((out.sum(dim=(1, 2)) - x[0, 0].sum(dim=(1, 2))).abs().max())
    assert errors[4.0] < 0.2 * errors[0.0]


def test_coarse_path_keeps_energy_windows_of_the_raw_counts():
    """Where the fine estimate is the low-rank projection and misses a local line, the
    coarse path puts the line's counts back into its energy window (what a map sums)."""
    _, truth = low_rank_cube()
    cube = truth.copy()  # expected counts as input: the bias alone, no noise
    cube[6:9, 5:9, 5:9] += 8.0  # a local line outside the rank-3 structure
    x = torch.from_numpy(cube)[None, None]
    win = slice(3, 12)
    errors = {}
    for coarse_ev in (0.0, 20.0):
        net = PriorMixture(rank=3, coarse_ev=coarse_ev)
        net.adapt(torch.from_numpy(cube), channel_ev=10.0)
        w = torch.zeros(1, net.n_bands, net.n_candidates + net.n_coarse, *cube.shape[1:])
        w[:, :, 1] = 1.0  # the low-rank projection spread with sigma 2, everywhere
        if coarse_ev:
            w[:, :, net.n_candidates] = 1.0  # each pixel's own raw spectrum (sigma 0)
        with torch.no_grad():
            out = net.mix(x, w)[0, 0].numpy()
        errors[coarse_ev] = float(np.mean((out[win].sum(0) - cube[win].sum(0)) ** 2))
    assert errors[20.0] < 0.3 * errors[0.0]


def test_coarse_filter_width_is_set_in_ev():
    cube, _ = low_rank_cube()
    net = PriorMixture(rank=3, coarse_ev=40.0)
    band = net._band_of_channel(cube.shape[0], "cpu")
    widths = {}
    for ev in (5.0, 20.0):
        net.adapt(torch.from_numpy(cube), channel_ev=ev)
        cmat = net._coarse_operators(cube.shape[0], band, "cpu", torch.float32)[0]
        widths[ev] = float(torch.count_nonzero(cmat[32] > 1e-3))
    assert widths[5.0] > 3 * widths[20.0]  # 8 channels of 5 eV against 2 of 20 eV
    with pytest.raises(ValueError, match="channel_ev"):
        net.adapt(torch.from_numpy(cube), channel_ev=0.0)
    with pytest.raises(ValueError, match="coarse_ev"):
        PriorMixture(coarse_ev=-1.0)


def test_guided_filter_operator_is_symmetric_and_keeps_totals():
    """The guided filter's operator: symmetric, columns sum to 1, diagonal as computed."""
    from n2s_eds.models.prior_mixture import GuidedFilter

    g = guide_image(9, 8)
    op = GuidedFilter(g.double(), radius=2, eps=0.01)
    eye = torch.eye(72, dtype=torch.float64).reshape(72, 1, 9, 8)
    w = op(eye).reshape(72, 72)  # row j: the response to a delta at pixel j
    torch.testing.assert_close(w, w.T)
    torch.testing.assert_close(w.sum(dim=0), torch.ones(72, dtype=torch.float64))
    torch.testing.assert_close(torch.diagonal(w), op.diagonal.reshape(72))
    assert float(w.min()) < 0  # guide edges sharpen: not a plain smoother


@pytest.mark.parametrize(("residual_sigma", "coarse"), [(0.0, {}), (4.0, {}), (0.0, COARSE[2])])
@pytest.mark.parametrize("guided", [False, True])
def test_masked_forward_matches_full_mix(guided, residual_sigma, coarse):
    cube, _ = low_rank_cube()
    net = PriorMixture(guide=guided, residual_sigma=residual_sigma, **coarse)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=0.1)  # non-uniform weights
    x = torch.from_numpy(cube)[None, None]
    g = guide_image() if guided else None
    if guided:
        x = torch.cat([x, g[:, :, None].expand_as(x)], dim=1)
    mask = torch.rand(x[:, :1].shape, generator=torch.Generator().manual_seed(0)) < 0.05
    with torch.no_grad():
        full = net.mix(x[:, :1], net.mixing_weights(x[:, :1], g), guide=g)[mask]
        part = net(x, mask, masked=x)
    torch.testing.assert_close(part, full, atol=1e-4, rtol=1e-4)


def test_rank_selection_finds_the_low_rank_structure():
    cube, _ = low_rank_cube(dose=200.0)
    net = PriorMixture()
    net.adapt(torch.from_numpy(cube))
    assert 3 <= net.rank <= 6
    assert len(net.rank_errors) >= net.rank


def test_uniform_mix_beats_raw_against_truth():
    cube, truth = low_rank_cube()
    net = PriorMixture()
    net.adapt(torch.from_numpy(cube))
    with torch.no_grad():
        out = net(torch.from_numpy(cube)[None, None])[0, 0].numpy()  # untrained: uniform
    assert np.mean((out - truth) ** 2) < np.mean((cube - truth) ** 2) / 3


@pytest.mark.parametrize(("residual_sigma", "coarse"), [(0.0, {}), (4.0, {}), (0.0, COARSE[2])])
def test_tiled_inference_equals_single_pass(residual_sigma, coarse):
    cube, _ = low_rank_cube(y=40, x=37)
    net = PriorMixture(residual_sigma=residual_sigma, **coarse)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=0.1)
    whole = predict_cube(net, cube, tile=64)
    tiled = predict_cube(net, cube, tile=16)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4)


def test_guide_enters_the_weights():
    """The guide changes the mixing weights; the spreading itself never reads it."""
    cube, _ = low_rank_cube()
    net = PriorMixture(guide=True)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=1.0)
    x = torch.from_numpy(cube)[None, None]
    guide = torch.randn(1, 1, *cube.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = net.mixing_weights(x, guide)
        w0 = net.mixing_weights(x, torch.zeros_like(guide))
        out = net(torch.cat([x, guide[:, :, None].expand(1, 1, cube.shape[0], -1, -1)], dim=1))
    assert float((w - w0).abs().max()) > 1e-3
    assert out.shape == x.shape


def test_blind_forward_estimates_exclude_own_pixel_from_weights():
    """Inference hides each pixel from the weight network, as training does (without the
    blend, which adds back a share of the own counts on purpose)."""
    cube, _ = low_rank_cube()
    net = PriorMixture(rank=3, blend_ev=0.0)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=1.0)
    x = torch.from_numpy(cube)[None, None]
    e, y, xx = 30, 10, 9
    x2 = x.clone()
    x2[0, 0, e, y, xx] += 50.0
    with torch.no_grad():
        a, b = net(x), net(x2)
    assert abs(float(a[0, 0, e, y, xx] - b[0, 0, e, y, xx])) < 1e-3


@pytest.mark.parametrize("shape", [(40, 300), (300, 40)])
def test_leading_vectors_are_the_exact_singular_subspace(shape, monkeypatch):
    """The basis is the exact leading singular subspace, also when LAPACK's eigh fails."""
    from n2s_eds.models.prior_mixture.basis import leading_left_vectors

    g = torch.Generator().manual_seed(0)
    low = torch.randn(shape[0], 5, generator=g) @ torch.randn(5, shape[1], generator=g)
    m = low + 0.1 * torch.randn(*shape, generator=g)
    ref = torch.linalg.svd(m.double(), full_matrices=False)[0][:, :5]

    def same_subspace(u):
        proj = ref @ (ref.T @ u.double())
        return float((proj - u.double()).norm() / u.double().norm())

    assert same_subspace(leading_left_vectors(m, 5)) < 1e-6

    def failing_eigh(*args, **kwargs):
        raise torch.linalg.LinAlgError("failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", failing_eigh)
    assert same_subspace(leading_left_vectors(m, 5)) < 1e-6


def test_adapt_with_mostly_empty_channels():
    """A cube whose channels are mostly empty (the SiO2 file: 1287 of 1980) still adapts."""
    cube, truth = low_rank_cube(e=96)
    cube = cube.copy()
    cube[::3] = 0.0
    cube[1::3] = 0.0
    net = PriorMixture()
    net.adapt(torch.from_numpy(cube))
    gram = net.basis.T @ net.basis
    torch.testing.assert_close(gram, torch.eye(net.rank), atol=1e-4, rtol=0)
    with torch.no_grad():
        out = net(torch.from_numpy(cube)[None, None])[0, 0].numpy()
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("guided", [False, True])
def test_candidates_are_the_mix_with_one_weight(guided):
    cube, _ = low_rank_cube(e=40, y=12, x=15)
    c = torch.from_numpy(cube)[None, None]
    g = torch.rand(1, 1, 12, 15, generator=torch.Generator().manual_seed(3)) if guided else None
    net = PriorMixture(guide=guided)
    net.adapt(c[0, 0])
    cands = net._candidates(c[:, 0], g)
    assert len(cands) == net.n_candidates
    for i, cand in enumerate(cands):
        w = torch.zeros(1, net.n_bands, net.n_candidates, 12, 15)
        w[:, :, i] = 1.0
        torch.testing.assert_close(cand, net.mix(c, w, guide=g)[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guided", [False, True])
def test_init_weights_start_at_the_best_fixed_mixture(guided):
    cube, truth = low_rank_cube()
    c = torch.from_numpy(cube)
    g = torch.from_numpy(truth.sum(axis=0) / truth.sum(axis=0).max())[None, None]
    g = g if guided else None
    net = PriorMixture(guide=guided)
    net.adapt(c)
    fitted = net.init_weights(c, g)
    assert fitted.shape == (net.n_bands, net.n_candidates)
    assert torch.all(fitted >= 0)
    torch.testing.assert_close(fitted.sum(dim=1), torch.ones(net.n_bands))
    with torch.no_grad():
        start = net.mixing_weights(c[None, None], g)  # (B, G, n, Y, X): the same everywhere
        out = net(
            c[None, None]
            if g is None
            else torch.cat([c[None, None], g[:, :, None].expand(-1, -1, c.shape[0], -1, -1)], 1)
        )[0, 0]
        cands = net._candidates(c[None], g)
    assert torch.allclose(start, fitted[None, :, :, None, None], atol=0.02)

    # the fit minimises the self-supervised error (J-invariant candidates): on the
    # simplex it is no worse than any single candidate or the equal mixture, and that
    # carries over to the error against the truth
    def err(est, ref):
        return float(((est - ref) ** 2).mean())

    t = torch.from_numpy(truth)
    equal = sum(cands) / len(cands)
    assert err(out, c) <= min(err(f[0], c) for f in cands) + 1e-3 * err(equal[0], c)
    assert err(out, t) < err(equal[0], t)
    assert err(out, t) < 1.05 * min(err(f[0], t) for f in cands)


def test_init_weights_can_be_switched_off():
    cube, _ = low_rank_cube()
    c = torch.from_numpy(cube)
    net = PriorMixture(init_mixture=False)
    net.adapt(c)
    assert net.init_weights(c) is None
    assert torch.count_nonzero(net.head.bias) == 0
    coarse = PriorMixture(coarse_ev=40.0)
    coarse.adapt(c)
    assert coarse.init_weights(c) is None


RANKED = {"rank": 4, "rank_fractions": (1.0, 0.5, 0.25)}


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("voxel", [(30, 10, 9), (12, 0, 0), (5, 20, 2)])
def test_ranked_candidates_are_voxel_j_invariant_and_keep_totals(voxel, guided):
    cube, _ = low_rank_cube()
    net = PriorMixture(guide=guided, n_bands=3, **RANKED)
    net.adapt(torch.from_numpy(cube))
    assert net._candidate_ranks()[:: len(net._candidate_ranks()) // 3] == [4, 2, 1]
    w = random_weights(net, cube.shape[1:])
    x = torch.from_numpy(cube)[None, None]
    g = guide_image() if guided else None
    e, y, xx = voxel
    a, b = mix_poked(net, x, w, g, voxel)
    assert abs(float(a[0, 0, e, y, xx] - b[0, 0, e, y, xx])) < 1e-3
    assert (b - a).abs().sum() > 10.0
    # the first basis vector is the mean spectrum: every rank keeps the totals
    assert abs(float(a.sum()) / float(x.sum()) - 1) < 0.005


@pytest.mark.parametrize("guided", [False, True])
def test_ranked_masked_forward_and_candidates_match_the_full_mix(guided):
    cube, _ = low_rank_cube()
    net = PriorMixture(guide=guided, **RANKED)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=0.1)
    x = torch.from_numpy(cube)[None, None]
    g = guide_image() if guided else None
    xg = torch.cat([x, g[:, :, None].expand_as(x)], dim=1) if guided else x
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.05
    with torch.no_grad():
        full = net.mix(x, net.mixing_weights(x, g), guide=g)[mask]
        part = net(xg, mask, masked=xg)
        cands = net._candidates(x[:, 0], g)
    torch.testing.assert_close(part, full, atol=1e-4, rtol=1e-4)
    y, xx = cube.shape[1:]
    for i, cand in enumerate(cands):
        w = torch.zeros(1, net.n_bands, net.n_candidates, y, xx)
        w[:, :, i] = 1.0
        torch.testing.assert_close(cand, net.mix(x, w, guide=g)[:, 0], atol=1e-5, rtol=1e-5)


def test_rank_fractions_are_checked():
    with pytest.raises(ValueError, match="rank_fractions"):
        PriorMixture(rank_fractions=(0.0,))
    with pytest.raises(ValueError, match="do not combine"):
        PriorMixture(rank_fractions=(1.0, 0.5), residual_sigma=4.0)


@pytest.mark.parametrize("ranked", [False, True])
@pytest.mark.parametrize("guided", [False, True])
def test_own_window_hides_the_own_pixels_nearby_channels(guided, ranked):
    cube, _ = low_rank_cube()
    opts = RANKED if ranked else {"rank": 4}
    net = PriorMixture(guide=guided, n_bands=3, own_window=5, **opts)
    net.adapt(torch.from_numpy(cube))
    w = random_weights(net, cube.shape[1:])
    x = torch.from_numpy(cube)[None, None]
    g = guide_image() if guided else None
    e, y, xx = 30, 10, 9
    for de in (-5, -2, 0, 3, 5):
        a, b = mix_poked(net, x, w, g, (e + de, y, xx))
        assert abs(float(a[0, 0, e, y, xx] - b[0, 0, e, y, xx])) < 1e-3
    a, b = mix_poked(net, x, w, g, (e + 8, y, xx))  # farther than the window: it counts again
    assert abs(float(b[0, 0, e, y, xx] - a[0, 0, e, y, xx])) > 1e-3
    with torch.no_grad():
        mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.05
        xg = torch.cat([x, g[:, :, None].expand_as(x)], dim=1) if guided else x
        torch.nn.init.normal_(net.head.weight, std=0.1)
        full = net.mix(x, net.mixing_weights(x, g), guide=g)[mask]
        torch.testing.assert_close(net(xg, mask, masked=xg), full, atol=1e-4, rtol=1e-4)
        cands = net._candidates(x[:, 0], g)
    for i, cand in enumerate(cands):
        wi = torch.zeros(1, net.n_bands, net.n_candidates, *cube.shape[1:])
        wi[:, :, i] = 1.0
        torch.testing.assert_close(cand, net.mix(x, wi, guide=g)[:, 0], atol=1e-5, rtol=1e-5)
    assert abs(float(a.sum()) / float(x.sum()) - 1) < 0.005


def test_init_weights_with_window_loss_trade_voxel_for_window_error():
    from n2s_eds.ops import window_sums

    cube, _ = low_rank_cube()
    c = torch.from_numpy(cube)
    net = PriorMixture(n_bands=1, own_window=15)
    net.adapt(c)
    voxel = net.init_weights(c)[0].double()
    window = net.init_weights(c, window_loss=4.0, window_channels=16)[0].double()
    with torch.no_grad():
        cands = torch.stack([f[0].reshape(c.shape[0], -1) for f in net._candidates(c[None], None)])
    cands, t = cands.double(), c.reshape(c.shape[0], -1).double()

    def errors(wt):
        est = torch.einsum("i,iev->ev", wt, cands)
        return (
            float(((est - t) ** 2).mean()),
            float(((window_sums(est.T, 16) - window_sums(t.T, 16)) ** 2).mean()),
        )

    assert not torch.allclose(voxel, window, atol=0.02)  # the window term moves the optimum
    (v_vox, w_vox), (v_win, w_win) = errors(voxel), errors(window)
    assert v_vox <= v_win + 1e-9
    assert w_win <= w_vox + 1e-9


def _blend_output(net, x, beta, knots=None):
    """``net``'s output with the blend's shares set to ``beta`` (instead of fitted)."""
    shares = torch.as_tensor(beta, dtype=torch.float32).view(net.n_bands, -1)
    net._blend = (net._blend_key(), shares, knots, {})
    with torch.no_grad():
        return net(x)[0, 0].double()


@pytest.mark.parametrize("levels", [1, 3])
def test_blend_risk_estimates_are_unbiased(levels):
    """The blend's Poisson risk estimates (voxels and energy windows) average to the true
    squared errors over noise draws, at fixed shares, with per-pixel weights that vary."""
    from n2s_eds.models.prior_mixture.blend import blend_risks
    from n2s_eds.ops import window_sums

    cube, truth = low_rank_cube(dose=40.0)
    net = PriorMixture(rank=3, n_bands=2, blend_levels=levels)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=0.5)
    beta = np.linspace(0.3, 0.7, 2 * levels)
    mu = torch.from_numpy(truth).double()
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(24):
        draw = torch.from_numpy(rng.poisson(truth).astype(np.float32))
        net._store_blend_crop(draw, None)  # same basis and weights, new counts
        stats = net._blend_statistics()
        assert (stats["knots"] is not None) == (levels > 1)
        est = blend_risks(stats, beta)
        out = _blend_output(net, draw[None, None], beta, stats["knots"])
        w = stats["window_channels"]
        err_w = window_sums((out - mu).reshape(out.shape[0], -1).T, w)
        diffs.append([est[0] - float(((out - mu) ** 2).sum()), est[1] - float((err_w**2).sum())])
        if len(diffs) == 1:
            scale = [float(((draw - mu) ** 2).sum()), float(stats["raw_w"])]
    d = np.array(diffs)
    se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
    assert np.all(np.abs(d.mean(axis=0)) < 4 * se + 1e-3 * np.array(scale))
    # the estimate is informative: the draws' errors are well below the raw counts' noise
    assert np.all(se < 0.05 * np.array(scale))


def test_blend_risk_standard_errors_match_the_spread_over_noise_draws():
    cube, truth = low_rank_cube(dose=40.0)
    net = PriorMixture(rank=3, n_bands=2)
    net.adapt(torch.from_numpy(cube))
    torch.nn.init.normal_(net.head.weight, std=0.5)
    rng = np.random.default_rng(1)
    rec = []
    for _ in range(24):
        net._store_blend_crop(torch.from_numpy(rng.poisson(truth).astype(np.float32)), None)
        s = net._blend_statistics()
        rec.append([s["c0"], s["w0"], s["c0_se"], s["w0_se"]])
    r = np.array(rec)
    ratio = r[:, :2].std(axis=0, ddof=1) / r[:, 2:].mean(axis=0)
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_blend_with_an_unresolved_risk_floors_it_and_adds_little_noise():
    """A flat cube: the J-invariant estimate is as good as the counts can tell (its risk
    estimates are below two standard errors), so the fit counts them at that resolution
    limit and brings back almost none of the own counts' noise."""
    flat = np.random.default_rng(2).poisson(0.2, size=(64, 32, 32)).astype(np.float32)
    net = PriorMixture(rank=1, n_bands=2)
    net.adapt(torch.from_numpy(flat))
    beta = net.fit_blend()
    report = net.blend_report
    assert report["below_resolution"] == ["voxels", "windows"] and "why" not in report
    assert float(beta.max()) < 0.1
    assert np.isfinite(report["voxel_gain_db"]).all()


def test_blend_improves_a_high_count_cube_and_keeps_shapes():
    cube, truth = low_rank_cube(dose=400.0)
    x = torch.from_numpy(cube)[None, None]
    plain, blended = PriorMixture(rank=3, blend_ev=0.0), PriorMixture(rank=3)
    for net in (plain, blended):
        net.adapt(torch.from_numpy(cube))
    with torch.no_grad():
        a, b = plain(x)[0, 0].numpy(), blended(x)[0, 0].numpy()
    report = blended.blend_report
    assert b.shape == cube.shape and np.max(report["beta"]) > 0
    # the estimated gains are what the truth shows: the blend is better
    assert report["voxel_gain_db"][1] >= report["voxel_gain_db"][0]
    assert report["window_gain_db"][1] > report["window_gain_db"][0]
    assert np.mean((b - truth) ** 2) < np.mean((a - truth) ** 2)
    torch.testing.assert_close(torch.from_numpy(a), blended._blind(x, None)[0, 0])
    # pixel totals move towards the counts' by at most the blend's share
    assert abs(b.sum() / cube.sum() - 1.0) < 0.01


def test_blend_is_refitted_when_the_weights_or_cube_change():
    cube, _ = low_rank_cube(dose=200.0)
    net = PriorMixture(rank=3)
    net.adapt(torch.from_numpy(cube))
    first = net.fit_blend().clone()
    assert net.fit_blend() is net._blend[1]  # cached
    with torch.no_grad():
        net.head.bias.add_(torch.linspace(-2.0, 2.0, net.head.bias.numel()))
    assert not torch.equal(net.fit_blend(), first)
    net.adapt(torch.from_numpy(cube))
    assert net._blend is None


def test_blend_needs_whole_counts_and_the_guide():
    cube, _ = low_rank_cube(dose=200.0)
    net = PriorMixture(rank=3)
    net.adapt(torch.from_numpy(cube * 0.37))
    assert not net.fit_blend().any() and "whole" in net.blend_report["why"]
    guided = PriorMixture(rank=3, guide=True)
    guided.adapt(torch.from_numpy(cube))
    assert not guided.fit_blend().any() and "guide" in guided.blend_report["why"]
    guided.adapt(torch.from_numpy(cube), torch.from_numpy(cube.sum(axis=0) / cube.sum()))
    assert guided.fit_blend().any()


def test_blend_options():
    assert PriorMixture().blend_ev > 0
    assert PriorMixture(own_window=3).blend_ev == 0  # by default, off where it does not apply
    with pytest.raises(ValueError, match="blend_ev=0"):
        PriorMixture(own_window=3, blend_ev=60.0)
    with pytest.raises(ValueError, match="blend_ev"):
        PriorMixture(blend_ev=-1.0)


def test_window_own_terms_make_the_window_error_unbiased():
    """A low-rank candidate's window sums, scored against the counts and corrected by
    ``_window_own_terms``, average over noise draws to their error against the truth;
    uncorrected, the error is underestimated."""
    from n2s_eds.ops import window_sums

    cube, truth = low_rank_cube(dose=40.0)
    net = PriorMixture(rank=3, n_bands=1)
    net.adapt(torch.from_numpy(cube))
    e, y, x = cube.shape
    w, keep = 16, torch.arange(y * x)
    mu = window_sums(torch.from_numpy(truth).double().reshape(e, -1).T, w)
    rng = np.random.default_rng(3)
    diffs, plain = [], []
    for _ in range(20):
        draw = torch.from_numpy(rng.poisson(truth).astype(np.float32))
        cand = net._candidates(draw[None], None)[0][0].double().reshape(e, -1)  # sigma 1
        fw, xw = window_sums(cand.T, w), window_sums(draw.double().reshape(e, -1).T, w)
        own = float(net._window_own_terms(draw.reshape(e, -1), keep, (0, e), w, (y, x), None)[0])
        naive = float(((fw - xw) ** 2).sum() - xw.sum())
        true = float(((fw - mu) ** 2).sum())
        diffs.append(naive + 2.0 * own - true)
        plain.append(naive - true)
    d, p = np.array(diffs), np.array(plain)
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert abs(d.mean()) < 4 * se
    assert p.mean() < -8 * se  # without the correction: biased low


def test_blend_levels_interpolate_between_count_levels():
    """With count levels, pixels' shares interpolate between levels (weights sum to 1),
    the risk estimates stay unbiased in form, and one level is the plain per-band share."""
    from n2s_eds.models.prior_mixture.blend import level_weights

    cube, truth = low_rank_cube(dose=300.0)
    net = PriorMixture(rank=3, blend_levels=3)
    net.adapt(torch.from_numpy(cube))
    beta = net.fit_blend()
    assert beta.shape == (net.n_bands, 3)
    knots = net._blend[2]
    phi = level_weights(torch.from_numpy(cube)[None], knots)
    torch.testing.assert_close(phi.sum(dim=1), torch.ones(1, *cube.shape[1:]))
    assert float(phi.min()) >= 0 and len(net.blend_report["level_knots"]) == 3
    with torch.no_grad():
        out = net(torch.from_numpy(cube)[None, None])[0, 0].numpy()
    one = PriorMixture(rank=3)
    one.adapt(torch.from_numpy(cube))
    with torch.no_grad():
        ref = one(torch.from_numpy(cube)[None, None])[0, 0].numpy()
    # more freedom fitted by an unbiased criterion: not worse than one share per band
    assert np.mean((out - truth) ** 2) <= 1.02 * np.mean((ref - truth) ** 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_options_hold_the_constructor_defaults(name):
    """The options dataclass mirrors every constructor argument but ``guide``, with the
    same defaults: the constructors take theirs from it."""
    import dataclasses
    import inspect

    cls, opts = MODELS[name], MODEL_OPTIONS[name]
    params = dict(inspect.signature(cls.__init__).parameters)
    del params["self"], params["guide"]
    defaults = {f.name: f.default for f in dataclasses.fields(opts)}
    assert defaults == {k: p.default for k, p in params.items()}
    assert opts().to_dict() == defaults
    # the keyword arguments keep their types (LightningCLI builds the nets from init_args)
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())


def test_options_build_the_same_network():
    opts = PriorMixtureOptions(n_bands=3, rank=2)
    net = build_model("prior_mixture", guide=False, **opts.to_dict())
    assert net.n_bands == 3 and net.fixed_rank == 2
    assert set(net.state_dict()) == set(PriorMixture(n_bands=3, rank=2).state_dict())
    ae = build_model("autoencoder3d", **Autoencoder3DOptions(depth=1).to_dict())
    assert ae.depth == 1


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (PriorMixtureOptions, {"blend_ev": -1.0}, "blend_ev"),
        (PriorMixtureOptions, {"n_bands": 0}, "n_bands"),
        (PriorMixtureOptions, {"coarse_weights": "random"}, "coarse_weights"),
        (PriorMixtureOptions, {"guided_filters": ((0, 0.001),)}, "guided_filters"),
        (PriorMixtureOptions, {"own_window": 2, "blend_ev": 60.0}, "blend_ev"),
        (Autoencoder3DOptions, {"depth": 0}, "depth"),
        (Autoencoder3DOptions, {"base_channels": 0}, "base_channels"),
    ],
)
def test_invalid_options_name_the_field(cls, kwargs, field):
    with pytest.raises(InvalidInputError, match=field):
        cls(**kwargs)
    net_cls = PriorMixture if cls is PriorMixtureOptions else ConvAutoencoder3D
    with pytest.raises(InvalidInputError, match=field):  # the constructor runs the same checks
        net_cls(**kwargs)


def test_options_round_trip_through_json_and_name_unknown_keys():
    import json

    opts = PriorMixtureOptions(lowrank_sigmas=(1.0, 3.0), guided_filters=((2, 0.01),))
    again = PriorMixtureOptions.from_dict(json.loads(json.dumps(opts.to_dict())))
    assert again == opts  # JSON lists come back as tuples
    assert PriorMixtureOptions.from_dict(None) == PriorMixtureOptions()
    with pytest.raises(InvalidInputError, match="bogus"):
        PriorMixtureOptions.from_dict({"rank": 3, "bogus": 1})
    with pytest.raises(InvalidInputError, match="guide"):  # guide comes from the data
        Autoencoder3DOptions.from_dict({"guide": True})
    assert PriorMixtureOptions(own_window=2).resolved_blend_ev() == 0.0
    assert PriorMixtureOptions().resolved_blend_ev() == PriorMixture().blend_ev
