"""Pretraining the 3D network: objective and corpus variety, one at a time.

``python benchmarks/ablations/ablation_pretraining.py [--steps 500] [--variants ...] [CASE ...]``

Each variant pretrains the conditioned 3D autoencoder of ``configs/pretrain.yaml`` for
``--steps`` steps (seed 0, batch 4, 32 x 32 x 128 patches) on the simulated corpus and is
then applied, without fine-tuning and without the element-map stage (``steps=0,
refine_maps=False``: the network alone), to the benchmark's cases, scored as the benchmark
scores them. Variants:

* ``both``, ``supervised``, ``n2s``: the objective (truth, counts, or the mean of the two);
* ``narrow``: objective ``both`` on a narrow corpus: TEM only, 4 elements, 20 eV channels at
  one offset, one detector resolution, no zero peak, no scan artefacts;
* ``shipped``: the package's shipped weights (``n2s_eds/weights/dcae.pt``), not retrained.

The last validation loss of each run (the supervised error of hidden voxels on 16 fixed
held-out acquisitions, in units of each acquisition's mean count) is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np

warnings.simplefilter("ignore")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness

from harness.cases import build_case  # noqa: E402
from harness.scores import score  # noqa: E402

import n2s_eds.pretrained as shipped_weights  # noqa: E402
from n2s_eds import Denoiser  # noqa: E402
from n2s_eds.data import SimulatedDataModule  # noqa: E402
from n2s_eds.models import ConvAutoencoder3D  # noqa: E402
from n2s_eds.pretraining import ExportPretrained, PretrainModule  # noqa: E402
from n2s_eds.simulate.corpus import CorpusOptions  # noqa: E402

NARROW = CorpusOptions(
    kinds=("tem",),
    n_elements=(4, 4),
    channel_ev=(20.0, 20.0),
    offset_kev=(-0.1, -0.1),
    resolution_ev=(130.0, 130.0),
    zero_peak=0.0,
    artefacts=0.0,
)
VARIANTS = {
    "both": ("both", None),
    "supervised": ("supervised", None),
    "n2s": ("n2s", None),
    "narrow": ("both", NARROW),
    "shipped": None,
}
DEFAULT_CASES = (
    "phantom_tem_dose5",
    "phantom_tem_dose20",
    "phantom_tem_dose100",
    "fept_core_shell_tem",
    "bruker_sem_30x30_highcount",
)


def pretrain(objective: str, corpus: CorpusOptions | None, steps: int, folder: Path) -> float:
    """Pretrain one variant into ``folder/dcae.pt``; returns its last validation loss."""
    L.seed_everything(0, verbose=False)
    net = ConvAutoencoder3D(guide=True, base_channels=16, depth=2, conditioned=True)
    module = PretrainModule(net, objective=objective)
    data = SimulatedDataModule(seed=0, batch_size=4, patch_size=32, energy_patch=128,
                               val_draws=16, num_workers=1, corpus=corpus)  # fmt: skip
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=4,
        val_check_interval=steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        callbacks=[ExportPretrained(str(folder / "dcae.pt"))],
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return float(trainer.callback_metrics.get("val_loss", float("nan")))


def evaluate(case, folder: Path | None) -> dict:
    """Scores of the pretrained network alone on one case (weights of ``folder``)."""
    if folder is not None:
        shipped_weights.WEIGHTS_DIR = folder
    shipped_weights._read.cache_clear()
    den = Denoiser(model="autoencoder3d", pretrained=True, steps=0, progress=False,
                   refine_maps=False)  # fmt: skip
    out = den.fit(case.signal).denoise(case.signal)
    row, _ = score(case, np.asarray(out.data)[..., case.window.slice])
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(DEFAULT_CASES))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    cases = [build_case(name, 0) for name in args.cases]
    home = shipped_weights.WEIGHTS_DIR
    print("| variant | steps | val_loss | case | cube_gain_db | maps_gain_db | quant_bias_pct |")
    print("|---|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        spec = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            if spec is None:
                folder, val, steps = home, float("nan"), "shipped"
            else:
                t0 = time.perf_counter()
                folder = Path(tmp)
                val = pretrain(spec[0], spec[1], args.steps, folder)
                steps = f"{args.steps} ({time.perf_counter() - t0:.0f} s)"
            for case in cases:
                row = evaluate(case, folder)
                print(
                    f"| {name} | {steps} | {val:.3f} | {case.name} | {row['cube_gain_db']:.2f} | "
                    f"{row['maps_gain_db']:.2f} | {row['quant_bias_pct']:.2f} |",
                    flush=True,
                )
        shipped_weights.WEIGHTS_DIR = home
    return 0


if __name__ == "__main__":
    sys.exit(main())
