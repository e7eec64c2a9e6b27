"""The ``n2s-eds`` command: a small dispatcher in front of LightningCLI.

Trainer commands go to a :class:`~lightning.pytorch.cli.LightningCLI` built on
:class:`~n2s_eds.module.N2SModule` and :class:`~n2s_eds.data.CubeDataModule`::

    n2s-eds fit --config configs/quick_cpu.yaml [--trainer.max_steps 50 ...]
    n2s-eds validate --config configs/quick_cpu.yaml --ckpt_path runs/.../last.ckpt
    n2s-eds predict --config configs/quick_cpu.yaml --ckpt_path runs/.../last.ckpt \\
        --output denoised.hspy
    n2s-eds test ...   (once the module and data module define test steps)

The data module is :class:`~n2s_eds.data.CubeDataModule` (one spectrum-image
file) unless ``data.class_path`` names another, such as
:class:`~n2s_eds.data.CorpusDataModule` (patches of an HDF5 corpus of many cubes
written by ``n2s-eds pack``; ``configs/corpus.yaml``).

``fit`` ends by writing a shareable model file (:meth:`n2s_eds.Denoiser.save`
format) beside the checkpoints; LightningCLI saves the resolved
``config.yaml`` there too. ``fit --ckpt_path last`` resumes from the newest
``last.ckpt`` of the earlier runs of the same logger folder (each run logs
into a new ``version_N``), or starts afresh when there is none. Logs go to
CSV (the presets' logger) and, when ``tensorboard`` or ``tensorboardX`` is
installed, to TensorBoard as well (``version_N/tensorboard``; turn off with
``--tensorboard false``). The other commands need no Trainer::

    n2s-eds denoise IN -o OUT [--haadf FILE | --guide] [--model FILE.pt | --checkpoint CKPT]
                    [--steps N]
    n2s-eds demo [--output DIR] [--steps N] [--dose D]
    n2s-eds pack OUT.h5 IN [IN ...] [--low-kev E] [--high-kev E] [--no-guide]
    n2s-eds enhance IN -o OUT [--scale S] [--model FILE]
    n2s-eds segment IN --labels LABELS -o OUT [--haadf FILE] [--steps N] [--scratch]

Input errors (:class:`n2s_eds.InvalidInputError`) end the command with exit
code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

from ..api import Denoiser
from .lightning_cli import N2SLightningCLI, cli_main, find_last_checkpoint, tensorboard_available
from .main import build_parser, main

__all__ = [
    "main",
    "build_parser",
    "cli_main",
    "N2SLightningCLI",
    "denoiser_from_module",
    "denoiser_from_checkpoint",
    "find_last_checkpoint",
    "tensorboard_available",
]

#: Alias of :meth:`n2s_eds.Denoiser.from_module`.
denoiser_from_module = Denoiser.from_module
#: Alias of :meth:`n2s_eds.Denoiser.from_checkpoint`.
denoiser_from_checkpoint = Denoiser.from_checkpoint
