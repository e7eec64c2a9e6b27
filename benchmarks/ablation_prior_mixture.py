"""Ablation of the PriorMixture design on fept_core_shell_tem (count split p = 0.1, seed 0).

A bare training loop (no Lightning) so that one variant takes about a minute on 2 cores:
whole-spectrum Bernoulli masks (rate 0.1, local-mean replacement), masked MSE, Adam,
four random 32 x 32 patches per step; scores from the benchmark's protocol
(``n2s_eds.metrics.score_split``: cube and element-map gains in dB over the raw input).
It first scores each single spreading scale alone (fixed one-hot weights), then the trained
mixture every 100 steps, with the self-supervised loss on all voxels beside it.

    python benchmarks/ablation_prior_mixture.py --rank 12 --bands 8 --sigmas 1,2,4
"""

from __future__ import annotations

import argparse

import hyperspy.api as hs
import numpy as np
import torch

from n2s_eds.datasets import data_path
from n2s_eds.masking import BernoulliMasker
from n2s_eds.metrics import binomial_split, element_windows, score_split
from n2s_eds.models import PriorMixture
from n2s_eds.preprocess import processing_window, signal_to_cube


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", default="auto", help="spectral rank or 'auto'")
    ap.add_argument("--bands", type=int, default=8)
    ap.add_argument("--sigmas", default="1,2,4", help="low-rank spreading scales")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--mask-rate", type=float, default=0.1)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    s = hs.load(data_path("fept_core_shell_tem"))
    x, r = binomial_split(s.data, 0.1, seed=0)
    sx = s._deepcopy_with_new_data(x)
    w = processing_window(sx)
    wins = element_windows(sx, w)
    cube = torch.from_numpy(signal_to_cube(x, w))

    def scores(out: np.ndarray) -> str:
        d = np.array(x, dtype=np.float32)
        d[..., w.slice] = np.moveaxis(out, 0, -1)
        res = score_split(x, r, d, 0.1, window=w, windows=wins)
        return f"cube {res['cube_gain_db']:6.2f} dB  maps {res['maps_gain_db']:6.2f} dB"

    sigmas = tuple(float(v) for v in args.sigmas.split(","))
    rank = None if args.rank == "auto" else int(args.rank)
    net = PriorMixture(lowrank_sigmas=sigmas, n_bands=args.bands, rank=rank)
    net.adapt(cube)
    print(f"rank {net.rank}; candidates: low-rank {sigmas}, spatial {net.spatial_sigmas}")
    xb = cube[None, None]
    for i in range(net.n_candidates):
        onehot = torch.zeros(1, net.n_bands, net.n_candidates, *cube.shape[1:])
        onehot[:, :, i] = 1
        with torch.no_grad():
            out = net.mix(xb, onehot)[0, 0].numpy()
        selfsup = float(((out - cube.numpy()) ** 2).mean())
        print(f"single scale {i}: {scores(out)}  self-supervised {selfsup * 1e3:.4f}e-3")
    masker = BernoulliMasker(args.mask_rate, mode="spectrum")
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    ps = min(32, cube.shape[1], cube.shape[2])
    for it in range(1, args.steps + 1):
        patches = []
        for _ in range(4):
            y0 = int(rng.integers(0, cube.shape[1] - ps + 1))
            x0 = int(rng.integers(0, cube.shape[2] - ps + 1))
            patches.append(cube[:, y0 : y0 + ps, x0 : x0 + ps])
        batch = torch.stack(patches)[:, None]
        hidden, mask = masker(batch)
        loss = ((net(batch, mask, masked=hidden) - batch[mask]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0:
            with torch.no_grad():
                out = net(xb)[0, 0].numpy()
            selfsup = float(((out - cube.numpy()) ** 2).mean())
            print(f"step {it}: {scores(out)}  self-supervised {selfsup * 1e3:.4f}e-3")


if __name__ == "__main__":
    main()
