"""Full-cube prediction: tiles with halos, so memory follows the tile, not the cube.

A tile is predicted with a margin (halo) of context around it that is then
cropped away; with a halo at least the network's receptive radius, the tiled
result equals a single pass on the whole cube.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["predict_cube"]


def _starts(size: int, tile: int) -> list[int]:
    return list(range(0, size, tile)) if size > tile else [0]


@torch.no_grad()
def predict_cube(
    net: nn.Module,
    cube: np.ndarray,
    guide: np.ndarray | None = None,
    *,
    tile: int = 128,
    energy_tile: int | None = None,
    halo: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Denoise a whole (E, Y, X) count cube with a trained network.

    Parameters
    ----------
    net : torch.nn.Module
        A network from :mod:`n2s_eds.models`, already adapted to this cube.
    cube : numpy.ndarray
        Counts, (E, Y, X).
    guide : numpy.ndarray, optional
        Guide image (Y, X), required when ``net.guide`` is true.
    tile : int
        Spatial tile side (pixels) predicted at once.
    energy_tile : int, optional
        Channels per tile; ``None`` for all (the spectral-prior model needs
        all channels; the 3D autoencoder can tile the energy axis).
    halo : int, optional
        Context margin; defaults to the network's ``receptive_radius``.
    device : str or torch.device
        Where to run.
    progress : bool
        Show a progress bar over the tiles (tqdm), when there are several and
        the output is a terminal or a notebook (not a log file).

    Returns
    -------
    numpy.ndarray
        float32 (E, Y, X) expected counts.
    """
    if cube.ndim != 3:
        raise ValueError(f"cube must be (E, Y, X), got shape {cube.shape}")
    uses_guide = bool(getattr(net, "guide", False))
    if uses_guide and guide is None:
        raise ValueError("this network was trained with a guide image; pass `guide`")
    e, y, x = cube.shape
    if halo is None:
        halo = int(getattr(net, "receptive_radius", 16))
    # tiles (and their halos) start on the network's pixel grid, if it has one
    step = int(getattr(net, "tile_multiple", 1))
    tile = -(-int(tile) // step) * step
    halo = -(-int(halo) // step) * step
    net = net.eval().to(device)
    out = np.empty((e, y, x), dtype=np.float32)
    e_tile = e if energy_tile is None else int(energy_tile)
    tiles = [
        (e0, y0, x0)
        for e0 in _starts(e, e_tile)
        for y0 in _starts(y, tile)
        for x0 in _starts(x, tile)
    ]
    # disable=None: tqdm's own test, off when stderr is not a terminal
    bar_off = True if not progress or len(tiles) < 2 else None
    for e0, y0, x0 in tqdm(tiles, disable=bar_off, desc="denoising", unit="tile"):
        e1, y1, x1 = min(e0 + e_tile, e), min(y0 + tile, y), min(x0 + tile, x)
        he = 0 if e_tile >= e else halo
        lo = (max(e0 - he, 0), max(y0 - halo, 0), max(x0 - halo, 0))
        hi = (min(e1 + he, e), min(y1 + halo, y), min(x1 + halo, x))
        block = torch.from_numpy(
            np.ascontiguousarray(cube[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], np.float32)
        )[None, None].to(device)
        if uses_guide:
            g = torch.from_numpy(np.ascontiguousarray(guide[lo[1] : hi[1], lo[2] : hi[2]]))
            g = g.to(device, torch.float32)[None, None, None].expand(1, 1, block.shape[2], -1, -1)
            block = torch.cat([block, g], dim=1)
        pred = net(block)[0, 0].float().cpu().numpy()
        out[e0:e1, y0:y1, x0:x1] = pred[
            e0 - lo[0] : e1 - lo[0], y0 - lo[1] : y1 - lo[1], x0 - lo[2] : x1 - lo[2]
        ]
    return out
