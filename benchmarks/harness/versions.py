"""Code versions: a hash of the source and the package versions behind a result (cache keys)."""

from __future__ import annotations

import hashlib
import inspect
import json
import types
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import n2s_eds

__all__ = ["PACKAGE_DIR", "code_sources", "package_versions", "package_source_hash", "code_version"]

#: Source folder of the installed ``n2s_eds`` package.
PACKAGE_DIR = Path(n2s_eds.__file__).resolve().parent


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _is_ours(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith("n2s_eds")


def code_sources(objects: Sequence[Any]) -> dict[str, str]:
    """Source texts of functions and classes of ``n2s_eds``, followed through their names.

    Starting from ``objects`` (functions, classes or modules), every global name a function
    uses that resolves to a function or class of ``n2s_eds`` is added, recursively. Modules
    are taken whole.

    Parameters
    ----------
    objects : sequence
        Functions, classes or modules.

    Returns
    -------
    dict
        Qualified name -> source text.
    """
    out: dict[str, str] = {}
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, types.ModuleType):
            key = obj.__name__
            if key not in out:
                out[key] = inspect.getsource(obj)
            continue
        obj = inspect.unwrap(obj)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        key = f"{obj.__module__}.{obj.__qualname__}"
        if key in out:
            continue
        try:
            out[key] = inspect.getsource(obj)
        except (OSError, TypeError):
            out[key] = repr(obj)
        if inspect.isfunction(obj):
            for name in _code_names(obj.__code__):
                ref = obj.__globals__.get(name)
                if (inspect.isfunction(ref) or inspect.isclass(ref)) and _is_ours(ref):
                    stack.append(ref)
    return out


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed version of each distribution, ``"absent"`` when it is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def package_source_hash(exclude: Sequence[str] = ("cli.py",)) -> str:
    """Hash of every source file of ``n2s_eds`` except ``exclude`` (file names)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name in exclude:
            continue
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(
    objects: Sequence[Any],
    packages: Sequence[str] = (),
    whole_package: bool = False,
    extra: str = "",
) -> str:
    """A short hash of the code behind a result (see :func:`code_sources`).

    Parameters
    ----------
    objects : sequence
        Functions, classes or modules whose source (and helpers) produced the result.
    packages : sequence of str
        External distributions whose versions matter (``"bm4d"``, ``"torch"``).
    whole_package : bool
        Also hash every source file of ``n2s_eds`` except ``cli.py`` (for the networks,
        which use most of the package).
    extra : str
        Anything else the result depends on (e.g. an external script's hash and the package
        versions of its own environment).

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    payload = {
        "sources": code_sources(objects),
        "packages": package_versions(packages),
        "package": package_source_hash() if whole_package else "",
    }
    if extra:  # only when given, so that the versions of the other methods stay as they were
        payload["extra"] = extra
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
