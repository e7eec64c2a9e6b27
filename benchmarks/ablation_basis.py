"""The spectral basis of PriorMixture: exact eigenvectors against a randomised SVD.

``python benchmarks/ablation_basis.py CASES [RANKS]``

For each benchmark case (comma list) and rank (comma list, default ``4,8,12,24``), the
Poisson-normalised principal spectra of the noisy input are computed two ways, as
:meth:`n2s_eds.models.PriorMixture._fit_basis` does (the mean spectrum's direction first):

* ``exact``: the eigenvectors of the smaller Gram matrix (the current code);
* ``svd_lowrank``: ``torch.svd_lowrank(q=k + 8, niter=4)``, the code before 2026-12-01.

Each pixel's spectrum is projected on the basis, the abundances are smoothed with a Gaussian
of 1 px, and the cube is scored with the benchmark's protocol (cube and element-map gain in dB
over the raw input: against the split's remainder on real data, against the truth on phantoms).
No training: this isolates the basis. Prints one Markdown row per case, rank and basis.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

warnings.simplefilter("ignore")

from n2s_eds import bench  # noqa: E402
from n2s_eds.metrics import ElementWindow, element_maps, umse  # noqa: E402
from n2s_eds.models.prior_mixture import PriorMixture, smooth2d  # noqa: E402


def _randomised(model: PriorMixture, flat: torch.Tensor, k: int) -> torch.Tensor:
    """The basis as it was computed before: a randomised SVD with 4 power iterations."""
    a = flat.mean(dim=0) + 1e-3 * flat.mean().clamp_min(1e-6)
    norm = flat / model.channel_scale[:, None] / torch.sqrt(a)[None, :]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, _, _ = torch.svd_lowrank(norm, q=min(k + 8, min(norm.shape)), niter=4)
    mean_dir = model.channel_scale / model.channel_scale.norm()
    basis, _ = torch.linalg.qr(torch.cat([mean_dir[:, None], u[:, : k - 1]], dim=1))
    return (basis * torch.sign(basis[:1, :1])).contiguous()


def _gains(case, x: np.ndarray, d: np.ndarray, wins: list[ElementWindow]) -> tuple[float, float]:
    """Cube and map gains (dB) of ``d`` over ``x`` (window channels, (Y, X, E))."""
    sl = case.window.slice
    mx, md = element_maps(x, wins), element_maps(d, wins)
    if case.truth is not None:
        t = case.truth[..., sl]
        mt = element_maps(t, wins)
        return (
            bench._mse_gain_db(x.astype(np.float64), d.astype(np.float64), t),
            bench._mse_gain_db(mx, md, mt),
        )
    r = case.remainder[..., sl]
    mr = element_maps(r, wins)
    cube = umse(x, r, case.p, scale=case.scale) / umse(d, r, case.p, scale=case.scale)
    maps = umse(mx, mr, case.p, scale=case.scale) / umse(md, mr, case.p, scale=case.scale)
    return 10 * np.log10(cube), 10 * np.log10(maps)


def run(cases: list[str], ranks: list[int], command: str) -> list[tuple]:
    """Print the table; returns its rows as (case, rank, basis, cube dB, maps dB)."""
    print(f"`{command}`")
    print()
    print("| case | rank | basis | cube (dB) | maps (dB) |")
    print("|---|---|---|---|---|")
    rows = []
    for name in cases:
        case = bench.build_case(name, 0)
        sl = case.window.slice
        x = case.raw[..., sl].astype(np.float32)
        cube = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))
        wins = [
            ElementWindow(w.name, w.energy_kev, w.start - sl.start, w.stop - sl.start)
            for w in case.windows
        ]
        model = PriorMixture()
        model.adapt(cube)
        flat = cube.reshape(cube.shape[0], -1)
        for k in ranks:
            for label in ("exact", "svd_lowrank"):
                if label == "exact":
                    model.basis = model._fit_basis(flat, k, flat.shape[1])
                else:
                    model.basis = _randomised(model, flat, k)
                z = smooth2d(model._abundances(cube[None]), 1.0)
                vd = model.basis * model.channel_scale[:, None]
                d = torch.einsum("ek,bkyx->beyx", vd, z)[0].numpy()
                cube_db, maps_db = _gains(case, x, np.moveaxis(d, 0, -1), wins)
                rows.append((name, k, label, cube_db, maps_db))
                print(f"| {name} | {k} | {label} | {cube_db:.2f} | {maps_db:.2f} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    ranks = [int(v) for v in argv[1].split(",")] if len(argv) > 1 else [4, 8, 12, 24]
    run(argv[0].split(","), ranks, "python benchmarks/ablation_basis.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
