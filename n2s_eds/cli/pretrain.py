"""``n2s-eds pretrain``: the LightningCLI that pretrains the 3D network on simulated data.

``n2s-eds pretrain --config configs/pretrain.yaml`` runs LightningCLI's ``fit`` with
:class:`~n2s_eds.pretraining.PretrainModule` and
:class:`~n2s_eds.data.SimulatedDataModule` (acquisitions drawn on the fly, no corpus
on disk). Every Trainer option works as in ``n2s-eds fit`` (``--trainer.devices 4
--trainer.strategy ddp`` on several GPUs, ``--ckpt_path last`` to resume); the
:class:`~n2s_eds.pretraining.ExportPretrained` callback of the config writes the
weights when training ends.
"""

from __future__ import annotations

import warnings

from lightning.pytorch.cli import ArgsType, LightningCLI

from ..data import SimulatedDataModule
from ..pretraining import PretrainModule
from ..training import interactive_output
from .lightning_cli import DEFAULT_LOGGER, PROG

__all__ = ["PretrainCLI", "pretrain_main"]


class PretrainCLI(LightningCLI):
    """LightningCLI of ``n2s-eds pretrain`` (CSVLogger by default)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.logger": DEFAULT_LOGGER})
        parser.set_defaults({"trainer.enable_progress_bar": interactive_output()})


def pretrain_main(args: ArgsType = None, *, run: bool = True) -> PretrainCLI:
    """Run ``n2s-eds pretrain``.

    Parameters
    ----------
    args : list of str, dict or None
        Arguments after ``pretrain`` (``["--config", "configs/pretrain.yaml"]``), a
        dict of the config, or ``None`` for ``sys.argv[2:]``.
    run : bool
        Train (``False``: only build trainer, model and data).

    Returns
    -------
    PretrainCLI
    """
    import sys

    if args is None:
        args = sys.argv[2:]
    if run and isinstance(args, list):
        args = ["fit", *args]
    elif run and isinstance(args, dict):
        args = {"fit": args}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return PretrainCLI(
            PretrainModule,
            SimulatedDataModule,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"{PROG} pretrain"},
            args=args,
            run=run,
        )
