"""The ``n2s-eds`` entry point: Trainer commands go to LightningCLI, the others to argparse."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from lightning.fabric.utilities.exceptions import MisconfigurationException

from ..exceptions import InvalidInputError
from ..options import ProcessingOptions, RuntimeOptions, TrainingOptions
from .commands import (
    non_negative_int,
    positive_float,
    run_demo_command,
    run_denoise,
    run_pack,
)
from .enhance import add_enhance_parser
from .lightning_cli import PROG, cli_main
from .segment import add_segment_parser

__all__ = ["TRAINER_COMMANDS", "build_parser", "main"]

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")

#: Deprecation messages of the libraries below that say nothing to a user of the command.
THIRD_PARTY_NOISE = (
    r"Importing `\w+` from `hyperspy\._signals",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the commands that need no Trainer (and the top-level help)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-supervised (Noise2Self) denoising of EDS spectrum images.",
        epilog=(
            "Trainer commands (LightningCLI; see `n2s-eds fit --help`): "
            "fit, validate, test, predict, e.g. `n2s-eds fit --config configs/quick_cpu.yaml`."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in TRAINER_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI `{name}` (see `{PROG} {name} --help`)")
    sub.add_parser(
        "pretrain",
        help="pretrain the 3D network on simulated acquisitions (LightningCLI fit; "
        f"`{PROG} pretrain --config configs/pretrain.yaml`, see `{PROG} pretrain --help`)",
    )

    p = sub.add_parser(
        "denoise",
        help="denoise a spectrum-image file",
        description="Denoise an EDS spectrum image file. Without --model, a network is "
        "trained on the file itself (Noise2Self); with --model (a saved model) or --checkpoint "
        "(a training checkpoint), a trained network is applied without retraining.",
    )
    p.add_argument("input", help="spectrum-image file (.bcf, .emd, .hspy, .pts, .rpl, ...)")
    p.add_argument("-o", "--output", required=True, help="output file (.hspy if no extension)")
    p.add_argument("--haadf", metavar="FILE", help="guide image file (HAADF/BSE) of the scan")
    p.add_argument(
        "--guide",
        action="store_true",
        help="use the image found in the input file as the guide",
    )
    p.add_argument("--model", metavar="FILE.pt", help="trained model file (from fit or save)")
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="Lightning checkpoint of an `n2s-eds fit` run (e.g. runs/.../checkpoints/last.ckpt);"
        " the network is described by the run's config.yaml",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the run's config.yaml, when it is not in the checkpoint's run folder",
    )
    p.add_argument(
        "--model-type",
        choices=("prior_mixture", "autoencoder3d"),
        default=None,
        help="network to train when no --model is given (default: prior_mixture)",
    )
    p.add_argument(
        "--pretrained",
        choices=("auto", "yes", "no"),
        default="auto",
        help="start from the shipped pretrained network and fine-tune it (yes), train from "
        "scratch (no), or pretrained when the network has shipped weights (auto: "
        "autoencoder3d; the default)",
    )
    p.add_argument(
        "--steps",
        type=non_negative_int,
        default=None,
        help=f"training steps (default {TrainingOptions.steps})",
    )
    p.add_argument(
        "--seed", type=int, default=RuntimeOptions.seed, help="seed of everything random"
    )
    p.add_argument(
        "--device", default=RuntimeOptions.device, help="auto, cpu or cuda (default auto)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_denoise)

    p = sub.add_parser(
        "demo",
        help="denoise a simulated phantom and compare with baselines",
        description="Simulate a low-dose TEM phantom (64 x 64 pixels, 1024 channels), "
        "denoise it with raw / Gaussian / PCA / n2s_eds, and write a table of PSNR/SSIM "
        "against the truth (demo_table.md) and a figure (demo_figure.png).",
    )
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument(
        "--steps", type=non_negative_int, default=TrainingOptions.steps, help="training steps"
    )
    p.add_argument("--dose", type=positive_float, default=10.0, help="counts per pixel")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and training")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo_command)

    p = sub.add_parser(
        "pack",
        help="pack spectrum images into one HDF5 corpus for training",
        description="Pack EDS spectrum images (with the image of the same scan as a guide, "
        "and their metadata) into one HDF5 corpus: the counts of the processing window, "
        "chunked for fast patch reads. Train on it with `n2s-eds fit --config "
        "configs/corpus.yaml --data.init_args.path OUT.h5`. The files must share one energy "
        "axis (channel width and offset); nothing is written when any input is refused.",
    )
    p.add_argument("output", metavar="OUT.h5", help="corpus file to write")
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="spectrum-image files (.bcf, .emd, .hspy, ...)"
    )
    p.add_argument(
        "--low-kev",
        type=float,
        default=ProcessingOptions.low_kev,
        help="lower edge of the window, keV (default %(default)s)",
    )
    p.add_argument(
        "--high-kev",
        type=float,
        default=ProcessingOptions.high_kev,
        help="upper edge of the window, keV (default %(default)s)",
    )
    p.add_argument("--no-guide", action="store_true", help="leave the guide images out")
    p.add_argument(
        "--energy-tolerance",
        type=float,
        default=0.25,
        metavar="CHANNELS",
        help="largest misalignment of two files' energy channels accepted anywhere in the "
        "window, in channels (default 0.25)",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="gzip",
        help="HDF5 compression of the counts (default gzip)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus file")
    p.set_defaults(func=run_pack)

    add_enhance_parser(sub)
    add_segment_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``n2s-eds`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    int
        Exit code: 0 on success, 2 on invalid input (one-line message on stderr).
    """
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        for message in THIRD_PARTY_NOISE:
            warnings.filterwarnings("ignore", message=message)
        return _dispatch(argv, from_sys)


def _dispatch(argv: list[str], from_sys: bool) -> int:
    try:
        if argv and argv[0] in TRAINER_COMMANDS:
            cli_main(None if from_sys else argv)
            return 0
        if argv and argv[0] == "pretrain":
            from .pretrain import pretrain_main

            pretrain_main(argv[1:])
            return 0
        parser = build_parser()
        ns = parser.parse_args(argv)
        if ns.command is None:
            parser.print_help()
            return 2
        return int(ns.func(ns))
    except (InvalidInputError, MisconfigurationException) as exc:
        # MisconfigurationException: e.g. `test` while the module defines no test_step
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse/jsonargparse: --help (0) or a usage error (2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
