"""``n2s-eds enhance IN -o OUT``: enhance 2D images (element maps, LA-ICP-MS, SEM/HAADF).

Reads an image file (PNG, TIFF), a NumPy stack (``.npy``, one image ``(H, W)`` or a stack
``(n, H, W)``) or a HyperSpy ``Signal2D`` file (``.hspy``, ``.zspy``); writes ``.hspy`` (a
``Signal2D`` with its axes rescaled), ``.npy`` or ``.tif`` (float32). Everything is checked
before any work; the output is written to a temporary file and renamed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..io import save
from ..io.signals import is_signal
from ..io.writers import atomic_file

__all__ = ["add_enhance_parser", "run_enhance", "read_images", "write_images"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
SIGNAL_SUFFIXES = (".hspy", ".zspy")
OUTPUT_SUFFIXES = (".hspy", ".npy", ".tif", ".tiff")


def add_enhance_parser(sub: Any) -> None:
    """Add the ``enhance`` command to the ``n2s-eds`` sub-parsers."""
    p = sub.add_parser(
        "enhance",
        help="denoise, deblur and up-sample 2D images (element maps, LA-ICP-MS, SEM/HAADF)",
        description="Enhance 2D images with the shipped enhancer (or a saved one, --model): "
        "denoising and deblurring at --scale 1, super-resolution at 2 or 4. Input: PNG/TIFF, "
        ".npy (H, W) or (n, H, W), or a HyperSpy Signal2D (.hspy). Output by extension: "
        ".hspy, .npy or .tif.",
    )
    p.add_argument("input", help="image file (.png, .tif, .npy, .hspy)")
    p.add_argument("-o", "--output", required=True, help="output file (.hspy, .npy, .tif)")
    p.add_argument("--scale", type=int, choices=(1, 2, 4), default=None, help="1, 2 or 4")
    p.add_argument("--model", metavar="FILE.pt", help="enhancer file (MapEnhancer.save)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_enhance)


def read_images(path: Path) -> Any:
    """An image file as an array ``(H, W)``/``(n, H, W)``, or a ``.hspy`` file as its signal."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in IMAGE_SUFFIXES:
        from skimage import io as skio

        arr = np.asarray(skio.imread(path))
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and suffix == ".png":
            raise InvalidInputError(
                f"{path} is a colour image; pass one greyscale channel per image (an element "
                "map or an electron image)."
            )
        return arr
    if suffix in SIGNAL_SUFFIXES:
        import hyperspy.api as hs

        sig = hs.load(path)
        if isinstance(sig, list) or sig.axes_manager.signal_dimension != 2:
            raise InvalidInputError(f"{path} does not hold one Signal2D (an image or a stack).")
        return sig
    raise InvalidInputError(
        f"cannot read {path.suffix!r} files; pass .png, .tif, .npy or .hspy (a Signal2D)."
    )


def write_images(result: Any, path: Path) -> Path:
    """Write an enhanced array or signal to ``path`` atomically (temporary file, rename)."""
    suffix = path.suffix.lower()
    if suffix in SIGNAL_SUFFIXES:
        if not is_signal(result):
            import hyperspy.api as hs

            result = hs.signals.Signal2D(result)
        return save(result, path, overwrite=True)
    data = np.asarray(getattr(result, "data", result), dtype=np.float32)
    with atomic_file(path, suffix) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data)
        else:
            import tifffile

            tifffile.imwrite(tmp, data)
    return path


def run_enhance(ns: argparse.Namespace) -> int:
    """``n2s-eds enhance IN -o OUT [--scale S] [--model FILE]``."""
    from ..imaging import MapEnhancer

    src = Path(ns.input).expanduser()
    out = Path(ns.output).expanduser()
    if out.suffix == "":
        out = out.with_suffix(".hspy")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidInputError(
            f"cannot write {out.suffix!r} files; choose -o with .hspy, .npy or .tif."
        )
    if out.exists() and not ns.overwrite:
        raise InvalidInputError(f"{out} already exists; pass --overwrite to replace it.")
    if not out.parent.is_dir():
        raise InvalidInputError(f"the output folder {out.parent} does not exist.")
    if not src.is_file():
        raise InvalidInputError(f"input file {src} does not exist.")
    if ns.model is not None:
        enhancer = MapEnhancer.load(ns.model, device=ns.device)
        if ns.scale is not None and ns.scale != enhancer.scale:
            raise InvalidInputError(
                f"--scale {ns.scale} differs from the model's scale {enhancer.scale}; leave "
                "--scale out or pass a model trained for it."
            )
    else:
        enhancer = MapEnhancer.pretrained(ns.scale or 1, device=ns.device)
    images = read_images(src)
    result = enhancer.enhance(images)
    written = write_images(result, out)
    print(f"wrote {written} (x{enhancer.scale}, {enhancer.architecture})")
    return 0
