"""Full-cube prediction: tiles with halos, so memory follows the tile, not the cube.

A tile is predicted with a margin (halo) of context around it that is then
cropped away; with a halo at least the network's receptive radius, the tiled
result equals a single pass on the whole cube. :func:`denoise_window` adds the
post-processing (count-keeping clipping, un-binning) of an eager cube;
:func:`denoise_lazy` builds the same computation as a dask graph of independent
blocks for a lazy (dask-backed) spectrum image.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .postprocess import (
    UNBIN_RADIUS,
    clip_keeping_counts,
    clip_reach,
    summed_spectrum,
    unbin_energy,
)
from .preprocess import EnergyBinning, EnergyWindow, bin_energy

__all__ = ["predict_cube", "denoise_window", "denoise_lazy", "block_sizes", "split_sizes"]


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
        if getattr(net, "conditioned", False):  # the energies of the adapted cube's channels
            en = net.energy_kev[lo[0] : hi[0]].to(device, torch.float32)
            block = torch.cat([block, en[None, None, :, None, None].expand_as(block[:, :1])], 1)
        pred = net(block)[0, 0].float().cpu().numpy()
        out[e0:e1, y0:y1, x0:x1] = pred[
            e0 - lo[0] : e1 - lo[0], y0 - lo[1] : y1 - lo[1], x0 - lo[2] : x1 - lo[2]
        ]
    return out


def denoise_window(
    net: nn.Module,
    counts: np.ndarray,
    raw: np.ndarray,
    guide: np.ndarray | None,
    binning: EnergyBinning,
    *,
    clip: bool,
    profile: np.ndarray | None = None,
    tile: int = 128,
    energy_tile: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Denoise the processing window of an eager cube: predict, clip, un-bin.

    Parameters
    ----------
    net : torch.nn.Module
        A network already adapted to this cube (and its blend fitted).
    counts : numpy.ndarray
        The window's counts binned as the network sees them (``bin_energy(raw, binning)``).
    raw : numpy.ndarray
        The window's counts, (E, Y, X) float32.
    guide : numpy.ndarray or None
        Normalised guide image (Y, X) when the network takes one.
    binning : EnergyBinning
        Energy bins of the window.
    clip : bool
        Apply :func:`~n2s_eds.postprocess.clip_keeping_counts`.
    profile : numpy.ndarray, optional
        Summed spectrum of the window for un-binning (default: ``raw``'s).
    tile, energy_tile, device, progress
        As :func:`predict_cube`.

    Returns
    -------
    numpy.ndarray
        float32 (E, Y, X) expected counts on the window's channels.
    """
    out = predict_cube(
        net,
        counts,
        guide,
        tile=tile,
        device=device,
        energy_tile=energy_tile,
        progress=progress,
    )
    if clip:
        clip_keeping_counts(out)
    if binning.factor > 1:
        if profile is None:
            profile = summed_spectrum(raw, 0)
        out = unbin_energy(out, raw, binning, profile=profile, radius=UNBIN_RADIUS)
    return out


def block_sizes(n: int, side: int) -> tuple[int, ...]:
    """Sizes of consecutive blocks of ``side`` pixels covering ``n`` (the last may be shorter)."""
    return tuple(min(side, n - i) for i in range(0, n, side))


def split_sizes(blocks: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Split every block into nearly equal parts of about ``target`` pixels.

    No part straddles two blocks, so rechunking blocks into these parts only
    splits: every output chunk depends on a single block.
    """
    out: list[int] = []
    for size in blocks:
        parts = max(1, round(size / max(int(target), 1)))
        base, extra = divmod(size, parts)
        out.extend(base + (k < extra) for k in range(parts))
    return tuple(out)


def denoise_lazy(
    net: nn.Module,
    src: Any,
    window: EnergyWindow,
    binning: EnergyBinning,
    guide: np.ndarray | None,
    *,
    clip: bool,
    profile: np.ndarray,
    tile: int = 128,
    energy_tile: int | None = None,
    device: str = "cpu",
) -> Any:
    """A lazy denoised (Y, X, E) dask array: blocks of ``tile`` pixels, each with a halo.

    Nothing here holds the whole cube: the per-cube data (the network's
    adaptation, the within-bin ``profile``) come from the caller, and every
    block of the result is one independent task that reads its pixels plus a
    halo straight from ``src`` (a small dask computation of its own), runs the
    network once and keeps its interior. No task shares input chunks with
    another, so dask never keeps input chunks, or halo strips cut from them,
    waiting for a neighbouring block (with ``map_overlap``, peak memory grew
    with the scan width); the price is that a halo, with the input chunks it
    cuts through, is read again for every block that needs it.

    Parameters
    ----------
    net : torch.nn.Module
        A network already adapted (and its blend fitted); the tasks only read it.
    src : dask.array.Array
        The signal's (Y, X, E) data.
    window : EnergyWindow
        Processing window; channels outside it are passed through.
    binning : EnergyBinning
        Energy bins of the window.
    guide : numpy.ndarray or None
        Normalised guide image of the whole scan (Y, X), when the network takes one.
    clip : bool
        Apply :func:`~n2s_eds.postprocess.clip_keeping_counts`.
    profile : numpy.ndarray
        Summed spectrum of the window (from a central region) for un-binning.
    tile, energy_tile, device
        As :func:`predict_cube`.

    Returns
    -------
    dask.array.Array
        float32 (Y, X, E), chunked about like ``src``.
    """
    import dask.array as da

    ny, nx, ne = src.shape
    step = int(getattr(net, "tile_multiple", 1))
    # context of an interior pixel: the network's, then the clipping's, then unbinning's
    reach = (clip_reach() if clip else 0) + (UNBIN_RADIUS if binning.factor > 1 else 0)
    halo = -(-(int(getattr(net, "receptive_radius", 16)) + reach) // step) * step
    # one block = one network tile, on the network's pixel grid (as predict_cube tiles an
    # eager cube, so both give the same result)
    side = -(-max(int(tile), 1) // step) * step

    def block_task(block_info: dict | None = None) -> np.ndarray:
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        hy0, hy1 = max(y0 - halo, 0), min(y1 + halo, ny)
        hx0, hx1 = max(x0 - halo, 0), min(x1 + halo, nx)
        block = np.asarray(src[hy0:hy1, hx0:hx1].compute(scheduler="synchronous"))
        iy, ix = slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0)
        out = block[iy, ix].astype(np.float32)  # channels outside the window: as they are
        raw = np.moveaxis(block[..., window.slice], -1, 0)  # (E, Y, X), input dtype
        g = None if guide is None else guide[hy0:hy1, hx0:hx1]
        res = predict_cube(
            net,
            bin_energy(raw, binning),
            g,
            tile=max(raw.shape[1:]),
            device=device,
            energy_tile=energy_tile,
        )
        # the interior, with the margins that clipping and the within-bin profile need
        r = UNBIN_RADIUS if binning.factor > 1 else 0
        if clip:
            m = r + clip_reach()
            ky = slice(max(iy.start - m, 0), min(iy.stop + m, raw.shape[1]))
            kx = slice(max(ix.start - m, 0), min(ix.stop + m, raw.shape[2]))
            part = clip_keeping_counts(np.ascontiguousarray(res[:, ky, kx]))
            res[:, ky, kx] = part
        cy = slice(max(iy.start - r, 0), min(iy.stop + r, raw.shape[1]))
        cx = slice(max(ix.start - r, 0), min(ix.stop + r, raw.shape[2]))
        res = np.ascontiguousarray(res[:, cy, cx])
        if binning.factor > 1:
            res = unbin_energy(res, raw[:, cy, cx], binning, profile=profile, radius=UNBIN_RADIUS)
        oy, ox = iy.start - cy.start, ix.start - cx.start
        res = res[:, oy : oy + y1 - y0, ox : ox + x1 - x0]
        out[..., window.slice] = np.moveaxis(res, 0, -1)
        return out

    blocks = [block_sizes(n, side) for n in (ny, nx)]
    den = da.map_blocks(
        block_task,
        chunks=(blocks[0], blocks[1], (ne,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        # a unique name: dask need not tokenize (pickle) the closure with net and graph
        name=f"n2s-eds-denoise-{uuid.uuid4().hex}",
    )
    # output chunks about the input's, each inside one block: a pure split, no merging
    chunks = tuple(split_sizes(b, c) for b, c in zip(blocks, src.chunksize[:2], strict=True))
    return den.rechunk((*chunks, src.chunks[2]))
