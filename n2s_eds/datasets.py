"""Where the real measured EDS data used by tests, benchmarks and notebooks lives.

The data are not shipped with the package. They are looked up in the folder
named by the environment variable ``N2S_EDS_DATA``, which defaults to
``../shared/data`` relative to the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "data_path", "REAL_FILES"]

_REPO_ROOT = Path(__file__).resolve().parent.parent

#: Relative paths of the real acquisitions, by short name.
REAL_FILES: dict[str, str] = {
    "fept_core_shell_tem": "fept_core_shell_tem/core_shell.hspy",
    "bruker_sem_30x30_highcount": (
        "bruker_sem_30x30_highcount/30x30_instructively_packed_16bit_compressed.bcf"
    ),
    "sio2_particles_stem_haadf": "sio2_particles_stem_haadf/SiO2_EDS_Spectrum_Image.hspy",
    "sio2_particles_stem_haadf_image": "sio2_particles_stem_haadf/SiO2_HAADF_Image.hspy",
    "bruker_stem_haadf_lowcount": "bruker_stem_haadf_lowcount/test_TEM.bcf",
    "velox_20frames": "velox_superx_frames_detectors/fei_SI_SuperX-HAADF_20frames_10x50.emd",
    "velox_4detectors": "velox_superx_frames_detectors/fei_SI_EDS-HAADF-4detectors_2frames.emd",
    "bruker_sem_50x50": "bruker_sem_50x50/bcf_v2_50x50px.bcf",
    "eels_cuzn_si_haadf_image": "eels_cuzn_si_haadf/CuZn_HAADF.hspy",
    "laicpms_clinker_area1": "laicpms_clinker_area1/area1_cps_lines.npz",
}


def data_dir() -> Path:
    """Return the folder holding the shared real data (it may not exist).

    Returns
    -------
    pathlib.Path
        ``$N2S_EDS_DATA`` if set, else ``<repository>/../shared/data``.
    """
    env = os.environ.get("N2S_EDS_DATA")
    if env:
        return Path(env).expanduser()
    return (_REPO_ROOT.parent / "shared" / "data").resolve()


def data_path(name: str) -> Path:
    """Return the path of a real acquisition by its short name.

    Parameters
    ----------
    name : str
        A key of :data:`REAL_FILES`, e.g. ``"fept_core_shell_tem"``.

    Returns
    -------
    pathlib.Path
        The path; check ``.exists()`` before use, the data may be absent.
    """
    try:
        rel = REAL_FILES[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(REAL_FILES)}") from None
    return data_dir() / rel
