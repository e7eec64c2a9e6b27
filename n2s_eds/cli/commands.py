"""The ``n2s-eds`` commands that need no Trainer: ``denoise``, ``demo``, ``pack``.

Each takes the parsed arguments and returns an exit code; input errors raise
:class:`~n2s_eds.InvalidInputError`, which :func:`n2s_eds.cli.main` turns into
a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..api import Denoiser
from ..data import pack_corpus, read_corpus
from ..exceptions import InvalidInputError
from ..io import load, load_guide, save
from .lightning_cli import PROG

__all__ = [
    "run_denoise",
    "run_demo_command",
    "run_pack",
    "non_negative_int",
    "positive_int",
    "positive_float",
]


def run_denoise(ns: argparse.Namespace) -> int:
    """``n2s-eds denoise IN -o OUT``: train on the file (or apply a model) and save."""
    out = Path(ns.output).expanduser()
    if out.suffix == "":
        out = out.with_suffix(".hspy")
    if out.exists() and not ns.overwrite:
        raise InvalidInputError(
            f"{out} already exists; pass --overwrite to replace it, or choose another -o."
        )
    if ns.model is not None and ns.steps is not None:
        raise InvalidInputError(
            "--steps sets the training of a new model; it cannot be used with --model "
            "(a trained model file)"
        )
    if ns.haadf is not None and ns.guide:
        raise InvalidInputError("give either --haadf FILE or --guide, not both")
    if ns.model is not None and ns.checkpoint is not None:
        raise InvalidInputError("give either --model FILE.pt or --checkpoint CKPT, not both")
    if ns.checkpoint is not None and ns.steps is not None:
        raise InvalidInputError(
            "--steps sets the training of a new model; it cannot be used with --checkpoint"
        )
    if ns.config is not None and ns.checkpoint is None:
        raise InvalidInputError("--config is the run config of a --checkpoint; give both")
    pretrained = getattr(ns, "pretrained", "auto")
    if pretrained != "auto" and (ns.model is not None or ns.checkpoint is not None):
        raise InvalidInputError("--pretrained chooses how a new model starts; not with --model")
    den = None
    fresh = None
    # read the model first: a bad model file or checkpoint fails before the data is loaded
    if ns.model is not None:
        den = Denoiser.load(ns.model, device=ns.device, progress=not ns.quiet)
    elif ns.checkpoint is not None:
        den = Denoiser.from_checkpoint(
            ns.checkpoint, ns.config, device=ns.device, progress=not ns.quiet
        )
    else:  # options checked (and shipped weights found) before the data is read
        options: dict[str, Any] = {"device": ns.device, "seed": ns.seed}
        if ns.steps is not None:
            options["steps"] = ns.steps
        if ns.model_type is not None:
            options["model"] = ns.model_type
        if pretrained != "auto":
            options["pretrained"] = pretrained == "yes"
        fresh = Denoiser(progress=not ns.quiet, **options)
    acq = load(ns.input)
    guide = None
    if ns.haadf is not None:
        guide = load_guide(ns.haadf, acq.eds)
    elif ns.guide:
        if acq.haadf is None:
            raise InvalidInputError(
                f"{ns.input} holds no image of the same scan to use as a guide; pass "
                "--haadf FILE or leave out --guide."
            )
        guide = acq.haadf
    if den is not None:
        result = den.denoise(acq.eds, guide)
    else:
        result = fresh.fit(acq.eds, guide).denoise(acq.eds, guide)
    path = save(result, out, overwrite=ns.overwrite)
    print(f"{PROG}: denoised spectrum image written to {path}", file=sys.stderr)
    return 0


def run_demo_command(ns: argparse.Namespace) -> int:
    """``n2s-eds demo``: simulate, denoise, compare, write a table and a figure."""
    from ..demo import run_demo  # matplotlib only for this command

    res = run_demo(ns.output, steps=ns.steps, dose=ns.dose, seed=ns.seed, progress=not ns.quiet)
    if ns.quiet:  # run_demo prints the table itself when not quiet
        print(res["table"])
    return 0


def run_pack(ns: argparse.Namespace) -> int:
    """``n2s-eds pack OUT.h5 IN ...``: many acquisitions into one HDF5 corpus."""
    path = pack_corpus(
        ns.inputs,
        ns.output,
        low_kev=ns.low_kev,
        high_kev=ns.high_kev,
        include_guides=not ns.no_guide,
        energy_tolerance=ns.energy_tolerance,
        compression=None if ns.compression == "none" else ns.compression,
        overwrite=ns.overwrite,
    )
    info = read_corpus(path)
    e0 = float(info.attrs["energy_offset_kev"])
    e1 = e0 + (info.n_channels - 1) * float(info.attrs["energy_scale_kev"])
    guides = sum(c.has_guide for c in info.cubes)
    print(
        f"{PROG}: packed {len(info.cubes)} cubes ({info.n_channels} channels, {e0:.3f}-{e1:.3f} "
        f"keV; {guides} with a guide image) into {path} "
        f"({path.stat().st_size / 2**20:.1f} MiB)",
        file=sys.stderr,
    )
    return 0


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
