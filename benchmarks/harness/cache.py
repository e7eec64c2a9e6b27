"""The on-disk cache of the slow rows (BM3D, BM4D, espm, the networks): denoised cubes by key.

A row is keyed by the case, method, seed, split, the run options that matter, a hash of
exactly what the method sees (:func:`input_digest`; plus, for a method with a
:attr:`~harness.methods.Method.case_key`, the case metadata it reads) and the method's code
version (:meth:`harness.methods.Method.code_version`). Only the processing-window channels are
kept (the maps, for a maps-only method).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .cases import Case
from .methods import Method

__all__ = ["input_digest", "cache_key", "cache_file", "cache_load", "cache_save"]


def input_digest(case: Case, guided: bool, truth: bool = False) -> str:
    """Hash of exactly what a method sees: the noisy cube, its energy axis, the guide and
    (for the supervised bound) the truth."""
    digest = hashlib.sha256()
    raw = np.ascontiguousarray(case.raw)
    digest.update(f"{raw.dtype}{raw.shape}".encode())
    digest.update(raw.tobytes())
    ax = case.signal.axes_manager.signal_axes[0]
    digest.update(f"{ax.offset!r}{ax.scale!r}{ax.units!r}".encode())
    if guided and case.guide is not None:
        digest.update(np.ascontiguousarray(np.asarray(case.guide.data, np.float64)).tobytes())
    if truth and case.truth is not None:
        digest.update(np.ascontiguousarray(case.truth, np.float64).tobytes())
    return digest.hexdigest()[:16]


def cache_key(case: Case, method: Method, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    # Keyed on the input data rather than on the code that built the case: a change in the
    # loaders that leaves the cube unchanged keeps the (hours of) cached BM3D/BM4D rows.
    key = {
        "case": case.name,
        "method": method.name,
        "seed": int(seed),
        "split": case.split,
        "input": input_digest(case, method.guided, method.needs_truth),
        "method_code": method.code_version(),
        "options": {k: options.get(k) for k in method.uses_options},
        "shape": list(case.raw.shape),
    }
    if method.case_key is not None:  # e.g. the metadata espm reads (absent for the others)
        key["case_inputs"] = json.loads(json.dumps(method.case_key(case), default=str))
    return key


def cache_file(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['case']}__{key['method']}__{digest}.npz"


def cache_load(path: Path, key: dict[str, Any]) -> tuple[np.ndarray, float] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != key:
                return None
            return np.asarray(f["window"]), float(f["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def cache_save(path: Path, key: dict[str, Any], window: np.ndarray, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, window=window.astype(np.float32), seconds=seconds, key=json.dumps(key, sort_keys=True)
    )
    os.replace(tmp, path)
