"""``n2s-eds segment IN --labels LABELS -o OUT``: a phase map from a few labelled pixels.

Reads a spectrum image (any file HyperSpy reads, with its elements in the metadata), or one
image or a stack of images of one scan (PNG, TIFF, ``.npy``, a ``Signal2D`` file), and a
label file (PNG/TIFF: ``0`` unlabelled, ``k`` phase ``k - 1``; ``.npy``: ``-1`` unlabelled,
``k`` phase ``k``); fine-tunes a :class:`~n2s_eds.segment.Segmenter` on the labelled pixels
and writes the phase map: ``.hspy`` (a ``Signal2D`` of phase indices with the phase names in
``metadata.Segmentation``), a PNG/TIFF label image (phase ``k`` written as ``k + 1``) or
``.npy`` (the phase indices). Everything is checked before training; every output is written
to a temporary file and renamed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..io import load, load_guide, save
from ..io.signals import scan_shape_of, signal_dims
from .commands import positive_int
from .enhance import IMAGE_SUFFIXES, SIGNAL_SUFFIXES, read_images, write_images

__all__ = ["add_segment_parser", "run_segment", "read_scan", "write_phases"]

#: Phase-map outputs, by extension.
OUTPUT_SUFFIXES = (".hspy", ".png", ".tif", ".tiff", ".npy")
#: Probability outputs (``(n_phases, Y, X)`` float32), by extension.
PROBABILITY_SUFFIXES = (".hspy", ".npy", ".tif", ".tiff")


def add_segment_parser(sub: Any) -> None:
    """Add the ``segment`` command to the ``n2s-eds`` sub-parsers."""
    from ..segment.networks import ENCODERS

    p = sub.add_parser(
        "segment",
        help="phase map of a scan from a few labelled pixels",
        description="Segment a scan into phases from sparse labels: a network pretrained on "
        "denoising (or, with --scratch, from random weights) is fine-tuned on the labelled "
        "pixels and predicts every pixel's phase. Input: a spectrum image whose metadata name "
        "its elements (any format HyperSpy reads), or an image / image stack (.png, .tif, "
        ".npy, Signal2D .hspy). Labels: PNG/TIFF (0 unlabelled, k = phase k-1) or .npy (-1 "
        "unlabelled). Output by extension: .hspy (Signal2D with the phase names), .png/.tif "
        "(label image, phase k written as k+1) or .npy (phase indices).",
    )
    p.add_argument("input", help="spectrum-image or image file (.hspy, .bcf, .emd, .png, .npy)")
    p.add_argument(
        "--labels",
        required=True,
        metavar="FILE",
        help="label file: .png/.tif (0 unlabelled, k for phase k-1) or .npy (-1 unlabelled)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="phase map (.hspy, .png, .tif, .npy; default .hspy)"
    )
    p.add_argument("--haadf", metavar="FILE", help="image (HAADF/BSE) of the same scan")
    p.add_argument(
        "--steps", type=positive_int, default=100, help="training steps (default %(default)s)"
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="train the network from random weights instead of pretrained ones",
    )
    p.add_argument(
        "--encoder",
        choices=tuple(sorted(ENCODERS)),
        default=None,
        help="pretrained weights to start from (default denoiser)",
    )
    p.add_argument(
        "--phase-names",
        metavar="A,B,...",
        help="comma-separated phase names, one per phase, in label order",
    )
    p.add_argument(
        "--probabilities",
        metavar="FILE",
        help="also write the per-pixel phase probabilities (n_phases, Y, X): .hspy, .npy, .tif",
    )
    p.add_argument("--save-model", metavar="FILE.pt", help="also write the trained segmenter")
    p.add_argument("--seed", type=int, default=0, help="seed of the training (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run_segment)


def read_scan(path: Path) -> Any:
    """The scan of a file: its spectrum image, or an image / image stack as a ``Signal2D``."""
    suffix = path.suffix.lower()
    if suffix in (*IMAGE_SUFFIXES, ".npy"):
        from hyperspy.signals import Signal2D

        data = np.asarray(read_images(path))
        if data.ndim not in (2, 3):
            raise InvalidInputError(
                f"{path} holds an array of shape {data.shape}; pass one image (Y, X) or a "
                "stack of images of one scan (n, Y, X)."
            )
        return Signal2D(data)
    try:
        return load(path).eds
    except InvalidInputError as exc:
        if suffix not in SIGNAL_SUFFIXES:
            raise
        try:  # a Signal2D file: one image or a stack of images of the scan
            return read_images(path)
        except InvalidInputError:
            raise exc from None


def _read_guide(path: Path, scan: Any) -> Any:
    if signal_dims(scan) == (2, 1):
        return load_guide(path, scan)
    return read_images(path)


def _scan_shape(scan: Any) -> tuple[int, int] | None:
    """(Y, X) of a spectrum image or an image (stack); ``None`` for anything else."""
    dims = signal_dims(scan)
    if dims == (2, 1):
        return scan_shape_of(scan)
    if dims[1] == 2:
        return tuple(int(n) for n in scan.data.shape[-2:])
    return None


def _phase_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise InvalidInputError(
            f"--phase-names {text!r} has an empty name; pass names separated by commas, "
            "e.g. --phase-names carbon,FePt,Fe3O4."
        )
    return names


def _check_output(
    path: Path, suffixes: tuple[str, ...] | None, option: str, overwrite: bool
) -> None:
    """Refuse an output of another format, one that exists (without --overwrite), or one in a
    missing folder."""
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InvalidInputError(
            f"cannot write {path.suffix!r} files with {option}; choose {', '.join(suffixes)}."
        )
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} already exists; pass --overwrite to replace it.")
    if not path.parent.is_dir():
        raise InvalidInputError(f"the output folder {path.parent} does not exist.")


def write_phases(phases: Any, path: Path) -> Path:
    """Write a phase map atomically: ``.hspy`` the signal, PNG/TIFF a label image (phase
    ``k`` as ``k + 1``), ``.npy`` the phase indices."""
    from ..segment import write_labels

    if path.suffix.lower() in SIGNAL_SUFFIXES:
        return save(phases, path, overwrite=True)
    return write_labels(path, np.asarray(phases.data))


def run_segment(ns: argparse.Namespace) -> int:
    """``n2s-eds segment IN --labels LABELS -o OUT``: fine-tune on the labels, write the map."""
    from ..segment import Segmenter, check_labels, read_labels

    src = Path(ns.input).expanduser()
    out = Path(ns.output).expanduser()
    if out.suffix == "":
        out = out.with_suffix(".hspy")
    _check_output(out, OUTPUT_SUFFIXES, "-o", ns.overwrite)
    extra: dict[str, Path] = {}
    for option, value, suffixes in (
        ("--probabilities", ns.probabilities, PROBABILITY_SUFFIXES),
        ("--save-model", ns.save_model, None),
    ):
        if value is not None:
            extra[option] = Path(value).expanduser()
            _check_output(extra[option], suffixes, option, ns.overwrite)
    targets = [out.resolve(), *(p.resolve() for p in extra.values())]
    if len(set(targets)) != len(targets):
        raise InvalidInputError("-o, --probabilities and --save-model must name different files.")
    if ns.scratch and ns.encoder is not None:
        raise InvalidInputError(
            "--encoder chooses the pretrained weights to start from; it cannot be used with "
            "--scratch (random weights)."
        )
    if not (src.is_file() or (src.is_dir() and src.suffix.lower() == ".zspy")):
        raise InvalidInputError(f"input file {src} does not exist.")
    labels_path = Path(ns.labels).expanduser()
    if not labels_path.is_file():
        raise InvalidInputError(f"label file {labels_path} does not exist.")
    if ns.haadf is not None and not Path(ns.haadf).expanduser().is_file():
        raise InvalidInputError(f"guide image file {ns.haadf} does not exist.")
    names = _phase_names(ns.phase_names)
    segmenter = Segmenter(  # options checked (and the encoder known) before the data is read
        pretrained=not ns.scratch,
        steps=ns.steps,
        encoder=ns.encoder or "denoiser",
        seed=ns.seed,
        device=ns.device,
    )
    labels = read_labels(labels_path)
    scan = read_scan(src)
    shape = _scan_shape(scan)
    if shape is not None:
        check_labels(labels, shape, names)
    guide = _read_guide(Path(ns.haadf).expanduser(), scan) if ns.haadf is not None else None

    t0 = time.perf_counter()
    segmenter.fit(scan, labels, guide, phase_names=names)
    result = segmenter.predict(scan, guide)
    seconds = time.perf_counter() - t0

    if "--save-model" in extra:
        segmenter.save(extra["--save-model"])
    if "--probabilities" in extra:
        write_images(result.probabilities, extra["--probabilities"])
    written = write_phases(result.phases, out)
    counts = np.bincount(
        np.asarray(result.phases.data).ravel(), minlength=len(segmenter.phase_names)
    )
    summary = ", ".join(f"{n} {int(c)}" for n, c in zip(segmenter.phase_names, counts, strict=True))
    start = f"{ns.encoder or 'denoiser'} pretrained" if not ns.scratch else "from scratch"
    print(
        f"wrote {written}: {len(counts)} phases (pixels: {summary}); {start}, "
        f"{segmenter.steps} steps, {seconds:.1f} s"
    )
    return 0
