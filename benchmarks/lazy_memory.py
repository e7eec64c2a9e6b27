"""Peak memory of denoising a lazy (dask-backed) spectrum image: it follows the chunk, not the cube.

For each scan side N, a fresh Python process builds a lazy N x N x 2048
channel EDS cube of sparse Poisson counts (uint16, about 100 X-ray counts per
pixel plus a zero peak), generated chunk by chunk from a seeded generator (the
cube never exists whole, in memory or on disk), trains a :class:`n2s_eds.Denoiser`
on its central region, denoises it lazily and writes the result to an ``.hspy``
file chunk by chunk with :func:`n2s_eds.save`. The process's peak resident set
size (``resource.getrusage``) after the imports, after training and at the end
is reported with the wall times, as a markdown table.

Run from the project root::

    python benchmarks/lazy_memory.py --sides 256 512 --output benchmarks/results/lazy_memory.md

``--child`` runs one measurement in the current process (used internally).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Channel width (keV) and first channel centre of the synthetic cube.
SCALE_KEV = 0.01
OFFSET_KEV = 0.005
#: Characteristic lines (keV, relative weight) of the two phases and of both.
PHASE_A = ((0.705, 0.3), (6.40, 1.0), (7.06, 0.14), (0.525, 0.5))  # iron oxide
PHASE_B = ((2.05, 1.0), (9.44, 0.5), (11.07, 0.2), (1.74, 0.6))  # Pt M/L, Si
COMMON = ((0.277, 0.4), (8.04, 0.3))  # C film, Cu grid


def _gb(kib: int) -> float:
    return kib * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB."""
    return _gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def spectra(n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected counts per channel of phase A, phase B and of everything else (per pixel)."""
    from n2s_eds.preprocess import detector_fwhm_kev

    e = OFFSET_KEV + SCALE_KEV * np.arange(n_channels)

    def lines(table: tuple[tuple[float, float], ...], counts: float) -> np.ndarray:
        out = np.zeros(n_channels)
        for energy, weight in table:
            sigma = float(detector_fwhm_kev(energy)) / 2.355
            out += weight * np.exp(-0.5 * ((e - energy) / sigma) ** 2)
        return counts * out / out.sum()

    brems = np.exp(-e / 5.0) * (1 - np.exp(-((e / 0.8) ** 3)))
    brems = 30.0 * brems / brems.sum()
    zero = np.exp(-0.5 * (e / 0.03) ** 2)
    zero = 25.0 * zero / zero.sum()
    return lines(PHASE_A, 60.0), lines(PHASE_B, 60.0), lines(COMMON, 10.0) + brems + zero


def lazy_cube(side: int, n_channels: int = 2048, chunk: int = 64, seed: int = 0) -> Any:
    """A lazy ``LazyEDSTEMSpectrum`` of Poisson counts, each chunk drawn on demand.

    Chunk (i, j) is drawn from ``numpy.random.default_rng([seed, i, j])``, so
    the cube is the same whatever order (or how often) its chunks are computed.
    """
    import dask.array as da
    import exspy

    spec_a, spec_b, common = (s.astype(np.float32) for s in spectra(n_channels))

    def block(block_info=None) -> np.ndarray:
        info = block_info[None]
        (y0, y1), (x0, x1), _ = info["array-location"]
        iy, ix, _ = info["chunk-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        frac = 0.5 + 0.5 * np.sin(2 * np.pi * yy / 37.0) * np.cos(2 * np.pi * xx / 53.0)
        lam = frac[..., None] * spec_a + (1 - frac[..., None]) * spec_b + common
        return np.random.default_rng([seed, iy, ix]).poisson(lam).astype(np.uint16)

    # without input arrays, map_blocks needs the full chunk layout
    data = da.map_blocks(
        block,
        dtype=np.uint16,
        chunks=(
            tuple(min(chunk, side - i) for i in range(0, side, chunk)),
            tuple(min(chunk, side - i) for i in range(0, side, chunk)),
            (n_channels,),
        ),
        meta=np.empty((0, 0, 0), np.uint16),
    )
    s = exspy.signals.LazyEDSTEMSpectrum(data)
    for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y"), strict=True):
        ax.name, ax.units, ax.scale = name, "nm", 0.5
    e = s.axes_manager.signal_axes[0]
    e.name, e.units, e.scale, e.offset = "Energy", "keV", SCALE_KEV, OFFSET_KEV
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    s.metadata.set_item("General.title", f"synthetic lazy {side} x {side}")
    return s


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: build, train, denoise lazily, write."""
    import dask
    import h5py
    import torch

    import n2s_eds

    t_start = time.perf_counter()
    rss_imports = peak_rss_gb()
    sig = lazy_cube(args.side, args.channels, args.chunk, args.seed)
    den = n2s_eds.Denoiser(
        steps=args.steps, bin_ev=args.bin_ev, tile=args.tile, progress=False, seed=args.seed
    )
    t0 = time.perf_counter()
    den.fit(sig)
    fit_s = time.perf_counter() - t0
    rss_fit = peak_rss_gb()
    t0 = time.perf_counter()
    out = den.denoise(sig)
    assert out._lazy
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = n2s_eds.save(
            out, Path(tmp) / "denoised.hspy", compression=None, show_progressbar=False
        )
        write_s = time.perf_counter() - t0
        rss_end = peak_rss_gb()
        # spot check, reading back one corner: same shape, counts kept in the window
        params = out.metadata.Signal.Denoising.parameters
        lo, hi = params.energy_window_channels
        with h5py.File(path, "r") as f:
            dset = next(
                d
                for d in (f[k] for k in _datasets(f))
                if d.shape == (args.side, args.side, args.channels)
            )
            corner = np.asarray(dset[:32, :32, lo:hi], np.float64)
            size_gb = os.path.getsize(path) / 1e9
        raw = np.asarray(sig.data[:32, :32, lo:hi].compute(), np.float64)
    return {
        "side": args.side,
        "channels": args.channels,
        "chunk": args.chunk,
        "tile": args.tile,
        "steps": args.steps,
        "bin_ev": args.bin_ev,
        "nominal_gb": args.side * args.side * args.channels * 4 / 1e9,
        "file_gb": round(size_gb, 3),
        "rss_imports_gb": round(rss_imports, 3),
        "rss_fit_gb": round(rss_fit, 3),
        "rss_peak_gb": round(rss_end, 3),
        "fit_s": round(fit_s, 1),
        "denoise_write_s": round(write_s, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
        "corner_count_ratio": round(float(corner.sum() / raw.sum()), 4),
        "dask_workers": int(dask.config.get("num_workers", None) or os.cpu_count() or 1),
        "torch_threads": torch.get_num_threads(),
    }


def _datasets(group: Any, prefix: str = "") -> list[str]:
    import h5py

    names = []
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            names.append(prefix + key)
        else:
            names.extend(_datasets(item, prefix + key + "/"))
    return names


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the measurements."""
    head = (
        "| cube (y, x, E) | nominal size, float32 (GB) | block side (px) | peak RSS after "
        "imports (GB) | peak RSS after fit (GB) | peak RSS, whole run (GB) | fit (s) | "
        "denoise + write (s) | total (s) | counts kept (32 x 32 corner) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['side']} x {r['side']} x {r['channels']} | {r['nominal_gb']:.2f} | {r['tile']} | "
        f"{r['rss_imports_gb']:.2f} | {r['rss_fit_gb']:.2f} | {r['rss_peak_gb']:.2f} | "
        f"{r['fit_s']:.0f} | {r['denoise_write_s']:.0f} | {r['total_s']:.0f} | "
        f"{r['corner_count_ratio']:.4f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--side", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=64, help="input chunk side (pixels)")
    parser.add_argument("--tile", type=int, default=128, help="Denoiser tile (chunk) side")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--bin-ev", type=float, default=40.0, help="energy bin width, eV")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="folder for the output files")
    parser.add_argument("--output", default=None, help="write the markdown table here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    rows = []
    load_start = os.getloadavg()
    for side in args.sides:
        cmd = [sys.executable, __file__, "--child", "--side", str(side)]
        for name in ("channels", "chunk", "tile", "steps", "bin_ev", "seed", "workdir"):
            value = getattr(args, name)
            if value is not None:
                cmd += [f"--{name.replace('_', '-')}", str(value)]
        print("running", " ".join(cmd[1:]), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    text = table(rows)
    load_end = os.getloadavg()
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    machine = (
        f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, {ram_gb:.0f} GiB RAM, no GPU "
        f"used, Python {platform.python_version()}; load average {load_start[0]:.1f} at the "
        f"start and {load_end[0]:.1f} at the end (other jobs running)"
    )
    shown = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/lazy_memory.py " + " ".join(shown)
    print(text)
    print(machine)
    if args.output:
        Path(args.output).write_text(
            f"Command: `{command}`\n\nMachine: {machine}.\n\n"
            + text
            + "\n```json\n"
            + json.dumps(rows, indent=1)
            + "\n```\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
