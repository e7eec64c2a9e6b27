"""Writing signals atomically, and building result signals like their input.

:func:`save` writes any format HyperSpy writes without ever leaving a
half-written file behind; :func:`result_signal` makes the output signal of a
denoiser from its input (same class, axes and metadata).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from .signals import is_signal

__all__ = ["atomic_file", "save", "result_signal"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` to write into; renamed onto ``path`` when the block
    ends without an error, removed in every case, so ``path`` is never half-written.

    ``suffix`` is the temporary file's extension, for writers that choose the format by it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(
    signal: Any, path: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
) -> Path:
    """Write a signal to any format HyperSpy writes, atomically.

    The file is written into a temporary folder beside the target, under the
    target's own name (so HyperSpy picks the writer from the extension and any
    side files keep their references), and moved onto the target with
    :func:`os.replace` only when complete: a crash never leaves a half-written
    output, and the temporary folder is removed on failure.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        The signal to write.
    path : str or os.PathLike
        Target file; without an extension ``.hspy`` is used, as HyperSpy does.
    overwrite : bool
        Replace an existing file. When ``False`` an existing target is refused
        before anything is written.
    **kwargs
        Passed to :meth:`hyperspy.signal.BaseSignal.save` (e.g. ``file_format``,
        ``compression``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InvalidInputError
        Not a HyperSpy signal, or the target exists and ``overwrite`` is ``False``.
    """
    if not is_signal(signal):
        raise InvalidInputError(
            f"save writes HyperSpy signals, got {type(signal).__name__}; wrap arrays in a "
            "signal first."
        )
    target = Path(path).expanduser().resolve()
    if target.suffix == "" and "file_format" not in kwargs:
        target = target.with_suffix(".hspy")
    if target.exists() and not overwrite:
        raise InvalidInputError(
            f"{target} already exists; pass overwrite=True to replace it, or choose another name."
        )
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        signal.save(tmpdir / target.name, overwrite=True, **kwargs)
        produced = sorted(tmpdir.iterdir())
        if not produced:
            raise OSError(f"the writer produced no file for {target}")
        main = tmpdir / target.name
        if not main.exists():  # the writer chose the extension (file_format, no suffix)
            main = next((p for p in produced if p.stem == target.stem), produced[0])
        final = folder / main.name
        clashes = [folder / p.name for p in produced if (folder / p.name).exists()]
        if clashes and not overwrite:
            raise InvalidInputError(
                f"{', '.join(map(str, clashes))} already exist(s); pass overwrite=True to "
                "replace, or choose another name."
            )
        # Side files first, the main file last: once it appears, the output is complete.
        for item in [p for p in produced if p != main] + [main]:
            dest = folder / item.name
            if dest.is_dir() and not dest.is_symlink():
                old = tmpdir / f".old-{item.name}"
                os.replace(dest, old)
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with contextlib.suppress(Exception):
        signal.tmp_parameters.set_item("folder", final.parent)
        signal.tmp_parameters.set_item("filename", final.stem)
        signal.tmp_parameters.set_item("extension", final.suffix)
    logger.info("saved %s", final)
    return final


def result_signal(
    signal: Any, data: np.ndarray, method: str, parameters: dict[str, Any], label: str
) -> Any:
    """A new signal like ``signal`` holding ``data``, as a HyperSpy method returns one.

    Same class, axes and metadata (a deep copy); the title gets ``label`` as
    a suffix and ``metadata.Signal.Denoising`` records ``method`` and
    ``parameters``. A lazy input gives a lazy result. The input is not modified.
    """
    if getattr(signal, "_lazy", False) and not hasattr(data, "dask"):
        import dask.array as da

        data = da.from_array(data, chunks=signal.data.chunksize)
    out = signal._deepcopy_with_new_data(data)
    title = signal.metadata.get_item("General.title", default="") or ""
    out.metadata.set_item("General.title", f"{title} ({label})".strip())
    out.metadata.set_item("Signal.Denoising.method", method)
    out.metadata.set_item("Signal.Denoising.parameters", dict(parameters))
    return out
