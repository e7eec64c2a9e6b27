"""The HDF5 corpus file: its layout and reading its description.

A corpus (written by :func:`n2s_eds.data.pack_corpus`) holds many count cubes
of one energy axis, each with its guide image and metadata::

    /                  attrs: format, format_version, n_cubes, names,
                       energy_offset_kev, energy_scale_kev, energy_units,
                       n_channels, low_kev, high_kev, created_by
    /cubes/0000/counts (E, Y, X) counts of the processing window, chunked
                       (E, c, c): a patch of all channels is a few chunks
    /cubes/0000/guide  (Y, X) float32 guide image on the scan grid, when
                       present; attrs normalise_median, normalise_spread
    /cubes/0000        attrs: name, source, title, signal_class, signal_type,
                       energy_offset_kev, energy_scale_kev, energy_units,
                       source_energy_offset_kev, source_channels,
                       source_n_channels, window_low_kev, window_high_kev,
                       elements, xray_lines, beam_energy_kev, live_time,
                       scan_shape, scan_scale, scan_offset, scan_units,
                       total_counts, has_guide

:func:`read_corpus` reads the root and cube attributes (no counts) into a
:class:`CorpusInfo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..exceptions import InvalidInputError

__all__ = ["CORPUS_FORMAT", "CorpusCube", "CorpusInfo", "read_corpus"]

#: ``format`` attribute of the root group of a corpus file.
CORPUS_FORMAT = "n2s_eds.corpus"
#: Version of the corpus layout written by :func:`~n2s_eds.data.pack_corpus`.
CORPUS_FORMAT_VERSION = 1


def _plain_attr(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain_attr(v) for v in value]
    return value


@dataclass(frozen=True)
class CorpusCube:
    """One cube of a corpus file, as its attributes describe it (no counts read).

    Attributes
    ----------
    index : int
        Position in the corpus.
    group : str
        HDF5 group path (``cubes/0000``).
    name : str
        Unique name of the cube.
    shape : tuple of int
        (E, Y, X) of the stored counts.
    has_guide : bool
        Whether a guide image is stored.
    attrs : dict
        Every attribute of the group, as plain Python values.
    """

    index: int
    group: str
    name: str
    shape: tuple[int, int, int]
    has_guide: bool
    attrs: dict[str, Any]


@dataclass(frozen=True)
class CorpusInfo:
    """What a corpus file holds: its root attributes and its cubes.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    attrs : dict
        Root attributes (energy axis of the stored channels, window, format).
    cubes : tuple of CorpusCube
        The cubes in file order.
    """

    path: Path
    attrs: dict[str, Any]
    cubes: tuple[CorpusCube, ...]

    @property
    def n_channels(self) -> int:
        """Energy channels of every stored cube."""
        return int(self.attrs["n_channels"])

    def find(self, key: str | int) -> CorpusCube:
        """The cube of a name, group name (``0003``) or index."""
        if isinstance(key, int) and not isinstance(key, bool):
            if 0 <= key < len(self.cubes):
                return self.cubes[key]
        else:
            for c in self.cubes:
                if str(key) in (c.name, c.group, c.group.rsplit("/", 1)[-1]):
                    return c
        raise InvalidInputError(
            f"{self.path} holds no cube {key!r}; its cubes are "
            + ", ".join(repr(c.name) for c in self.cubes)
        )


def read_corpus(path: str | os.PathLike) -> CorpusInfo:
    """Read the description of a corpus file written by :func:`~n2s_eds.data.pack_corpus`.

    Parameters
    ----------
    path : str or os.PathLike
        The corpus file.

    Returns
    -------
    CorpusInfo

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, a file that is not a corpus, or one
        written by a newer n2s_eds.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"corpus file not found: {path}. Write one with `n2s-eds pack`.")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain_attr(v) for k, v in f.attrs.items()}
            if attrs.get("format") != CORPUS_FORMAT:
                raise InvalidInputError(
                    f"{path} is not an n2s_eds corpus (no format={CORPUS_FORMAT!r} attribute); "
                    "write one with n2s_eds.data.pack_corpus or `n2s-eds pack`"
                )
            if int(attrs.get("format_version", 0)) > CORPUS_FORMAT_VERSION:
                raise InvalidInputError(
                    f"{path} was written by a newer n2s_eds (corpus format "
                    f"{attrs['format_version']}); upgrade n2s_eds to read it"
                )
            cubes = []
            for i, key in enumerate(sorted(f["cubes"].keys())):
                g = f["cubes"][key]
                cattrs = {k: _plain_attr(v) for k, v in g.attrs.items()}
                cubes.append(
                    CorpusCube(
                        index=i,
                        group=g.name.lstrip("/"),
                        name=str(cattrs.get("name", key)),
                        shape=tuple(int(s) for s in g["counts"].shape),
                        has_guide="guide" in g,
                        attrs=cattrs,
                    )
                )
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"could not read the corpus {path}: {type(exc).__name__}: {exc}"
        ) from None
    if not cubes:
        raise InvalidInputError(f"the corpus {path} holds no cube")
    return CorpusInfo(path, attrs, tuple(cubes))
