"""The imaging benchmark: the enhancer against classical baselines on clean images it never saw.

Steps (each a sub-command, so that the ResNet-34 UNet can train and predict in its own
environment, ``benchmarks/external/.venv-smp``):

``train``    trains an enhancer on the training split (:func:`n2s_eds.imaging.sources.
             imaging_dataset`) and writes it to ``benchmarks/cache/imaging/<name>_x<s>.pt``.
``predict``  enhances the degraded test images with a model file (or the shipped weights)
             and writes the predictions to ``benchmarks/cache/imaging/pred_<name>_x<s>.npz``.
``report``   degrades the test images by :func:`~n2s_eds.imaging.virtual_ablation` (defaults,
             one fixed seed per image), runs the baselines (each parameter tuned on training
             pairs), reads the predictions, and writes :func:`~n2s_eds.imaging.compare`'s
             report per scale, the invented-structure check, the real clinker check and the
             timings into ``benchmarks/results/``.

See ``benchmarks/README.md`` for the commands that made the current results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "cache" / "imaging"
#: Seed stream of the test images' degradation (image i uses [TEST_STREAM, scale, i]).
TEST_STREAM = 0x7E57
#: Procedural texture images added to the training split (:mod:`n2s_eds.imaging.textures`).
TEXTURES = 400


def degraded_test_set(scale: int):
    """The test images and their virtual-ablation inputs (defaults, fixed seed per image)."""
    from n2s_eds.imaging import AblationSettings, virtual_ablation
    from n2s_eds.imaging.sources import imaging_dataset

    test = imaging_dataset("test")
    settings = AblationSettings()
    inputs = [
        virtual_ablation(
            t.image, **dataclasses.asdict(settings), scale=scale, seed=[TEST_STREAM, scale, i]
        )
        for i, t in enumerate(test)
    ]
    return test, inputs


def training_images(train) -> tuple[list[np.ndarray], list[float]]:
    """The training split plus procedural textures, each of the four groups drawn equally."""
    from n2s_eds.imaging.textures import texture_images

    groups: dict[str, list[np.ndarray]] = {}
    for t in train:
        groups.setdefault(t.category, []).append(t.image)
    groups["textures"] = texture_images(range(TEXTURES), size=64)
    images = [im for g in groups.values() for im in g]
    weights = [1.0 / len(g) for g in groups.values() for _ in g]
    return images, weights


def load_model(name: str, scale: int):
    """The enhancer ``name`` for ``scale``: the shipped weights for ``"shipped"``, else the
    model file ``train`` wrote."""
    from n2s_eds.imaging import MapEnhancer

    if name == "shipped":
        return MapEnhancer.pretrained(scale)
    return MapEnhancer.load(model_path(name, scale))


def model_path(name: str, scale: int) -> Path:
    return CACHE / f"{name}_x{scale}.pt"


def cmd_train(ns: argparse.Namespace) -> None:
    from n2s_eds.imaging import LossWeights, MapEnhancer
    from n2s_eds.imaging.sources import imaging_dataset

    torch.set_num_threads(ns.threads)
    train = imaging_dataset("train")
    loss = LossWeights() if ns.loss == "full" else LossWeights(perceptual=0.0, gram=0.0)
    enh = MapEnhancer(
        ns.arch, ns.scale, steps=ns.steps, batch_size=ns.batch_size, loss=loss, seed=ns.seed
    )
    images, weights = training_images(train)
    enh.fit(images, weights=weights)
    out = model_path(ns.name or ns.arch, ns.scale)
    enh.save(out, half=ns.half)
    print(json.dumps({"model": str(out), "images": len(train), **enh.history}))


def cmd_predict(ns: argparse.Namespace) -> None:
    torch.set_num_threads(ns.threads)
    test, inputs = degraded_test_set(ns.scale)
    enh = load_model(ns.name, ns.scale)
    t0 = time.perf_counter()
    preds = [enh.enhance(x) for x in inputs]
    seconds = time.perf_counter() - t0
    out = CACHE / f"pred_{ns.name}_x{ns.scale}.npz"
    np.savez_compressed(
        out,
        **{f"i{i}": p for i, p in enumerate(preds)},
        meta=json.dumps({"architecture": enh.architecture, "seconds": seconds, **enh.history}),
    )
    print(f"{out}: {len(preds)} images in {seconds:.1f} s")


def read_predictions(name: str, scale: int, n: int) -> tuple[list[np.ndarray], dict]:
    with np.load(CACHE / f"pred_{name}_x{scale}.npz") as z:
        return [z[f"i{i}"] for i in range(n)], json.loads(str(z["meta"]))


def baseline_rows(scale: int, test_inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Every baseline, its parameter tuned on training pairs, applied to the test inputs."""
    from n2s_eds.imaging import AblationSettings, virtual_ablation
    from n2s_eds.imaging.baselines import BASELINES, tune_baseline
    from n2s_eds.imaging.sources import imaging_dataset

    settings = AblationSettings()
    train = imaging_dataset("train")
    rng = np.random.default_rng(5)
    pick = rng.choice(len(train), size=min(60, len(train)), replace=False)
    clean = [train[i].image[: train[i].image.shape[0] // 4 * 4, : train[i].image.shape[1] // 4 * 4]
             for i in pick]  # fmt: skip
    degraded = [
        virtual_ablation(c, **dataclasses.asdict(settings), scale=scale, seed=[9, scale, k])
        for k, c in enumerate(clean)
    ]
    rows: dict[str, list[np.ndarray]] = {}
    for name in BASELINES:
        if name in ("bicubic", "lanczos") and scale == 1:
            continue  # interpolation is the identity on the same grid
        cached = CACHE / f"pred_baseline_{name}_x{scale}.npz"
        if cached.exists():
            rows[name], _ = read_predictions(f"baseline_{name}", scale, len(test_inputs))
            continue
        try:
            fn = tune_baseline(name, clean, degraded, scale=scale, settings=settings)
        except ImportError as err:
            print(f"skipping {name}: {err}")
            continue
        rows[name] = [fn(x) for x in test_inputs]
        np.savez_compressed(
            cached,
            **{f"i{i}": p for i, p in enumerate(rows[name])},
            meta=json.dumps({"param": getattr(fn, "param", None)}),
        )
    return rows


def cmd_report(ns: argparse.Namespace) -> None:
    from n2s_eds.imaging import compare

    out = Path(ns.output)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for scale in ns.scales:
        test, inputs = degraded_test_set(scale)
        truth = [t.image for t in test]
        results: dict[str, list[np.ndarray]] = {}
        meta: dict[str, dict] = {}
        for name in ns.networks:
            path = CACHE / f"pred_{name}_x{scale}.npz"
            if not path.exists():
                print(f"no predictions {path.name}; skipping {name} at x{scale}")
                continue
            results[name], meta[name] = read_predictions(name, scale, len(test))
        reference = next(iter(results))
        results.update(baseline_rows(scale, inputs))
        report = compare(
            results,
            truth,
            [t.category for t in test],
            reference=reference,
            names=[t.name for t in test],
            inputs=inputs,
        )
        report.write(out, prefix=f"imaging_x{scale}")
        summary[f"x{scale}"] = {"networks": meta, "report": report}
    write_summary(out, summary, ns)


def clinker_rows(name: str) -> list[dict]:
    """The real clinker scan enhanced by the x1 model ``name``: contrast and noise per isotope."""
    from n2s_eds.imaging.clinker import clinker_report, phase_masks, read_clinker

    raw = read_clinker()
    enh = load_model(name, 1)
    rep = clinker_report(raw, enh.enhance(raw), phase_masks())
    return [{"isotope": k, **v} for k, v in rep.items()]


def structure_rows(name: str) -> list[dict]:
    """Invented structure on a straight edge beside flat regions, three seeds, x1 and x2."""
    from n2s_eds.imaging import AblationSettings, virtual_ablation
    from n2s_eds.imaging.baselines import upsample
    from n2s_eds.imaging.structure import (
        edge_and_texture_excess,
        edge_straightness,
        straight_edge_image,
    )

    settings = dataclasses.asdict(AblationSettings())
    rows = []
    for scale in (1, 2):
        if name != "shipped" and not model_path(name, scale).exists():
            continue
        enh = load_model(name, scale)
        for seed, angle in enumerate((0.0, 20.0, -35.0)):
            clean = straight_edge_image((64, 64), angle_deg=angle, low=0.2, high=0.8)
            noisy = virtual_ablation(clean, **settings, scale=scale, seed=[77, seed])
            for method, est in (("input", upsample(noisy, scale) if scale > 1 else noisy),
                                ("enhancer", enh.enhance(noisy))):  # fmt: skip
                ex = edge_and_texture_excess(est, clean)
                rows.append({"scale": scale, "angle": angle, "method": method,
                             "flat_std": ex.flat_std,
                             "invented_edge_fraction": ex.invented_edge_fraction,
                             "edge_rms_px": edge_straightness(est)})  # fmt: skip
    return rows


def speed_rows(name: str) -> list[dict]:
    """Seconds to enhance the 11 clinker images (50 x 700) and one 512 x 512 image at x1
    (best of three, after one warm-up), with the threads set by ``--threads``."""
    from n2s_eds.imaging.clinker import read_clinker

    enh = load_model(name, 1)
    cases = {
        "clinker 11 x 50 x 700": np.asarray(read_clinker().data, np.float32),
        "one 512 x 512": np.random.default_rng(0).poisson(20.0, (512, 512)).astype(np.float32),
    }
    rows = []
    for label, data in cases.items():
        enh.enhance(data)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            enh.enhance(data)
            times.append(time.perf_counter() - t0)
        rows.append({"case": label, "seconds": min(times), "threads": torch.get_num_threads()})
    return rows


def gallery_structure_rows(summary: dict) -> list[dict]:
    """Invented edges and texture of the reference and the best baseline on the images of
    each gallery (:func:`~n2s_eds.imaging.report_figures.gallery_rows`)."""
    from n2s_eds.imaging.report_figures import gallery_rows
    from n2s_eds.imaging.structure import edge_and_texture_excess

    rows = []
    for key, entry in summary.items():
        report = entry["report"]
        for category in report.categories:
            idx = gallery_rows(report, category)
            for method in (report.reference, report.best_baseline(category)):
                ex = [edge_and_texture_excess(report.estimates[method][i], report.truth[i])
                      for i in idx]  # fmt: skip
                rows.append({"scale": key, "category": category, "method": method,
                             "invented_edge_fraction": float(np.mean(
                                 [e.invented_edge_fraction for e in ex])),
                             "flat_std": float(np.nanmean([e.flat_std for e in ex]))
                             if any(np.isfinite(e.flat_std) for e in ex) else float("nan")})  # fmt: skip
    return rows


def write_summary(out: Path, summary: dict, ns: argparse.Namespace) -> None:
    """``imaging.md``: the tables per scale, the clinker, structure and speed checks."""
    torch.set_num_threads(ns.threads)
    ref = ns.networks[0]
    lines = [
        "# Imaging benchmark",
        "",
        f"Command: `{' '.join(sys.argv)}`; machine: {platform.processor() or platform.machine()}"
        f", {torch.get_num_threads()} threads; torch {torch.__version__}.",
        "",
    ]
    for key, entry in summary.items():
        lines += [f"## {key}: per category (details: `imaging_{key}.md`)", ""]
        lines += entry["report"].to_markdown().splitlines()[2:] + [""]
    grows = gallery_structure_rows(summary)
    lines += ["## Invented structure on the best/worst gallery images", "",
              "Per scale and category, the images of the gallery (two with the largest and two "
              "with the smallest PSNR change against the best baseline): the fraction of the "
              "checked pixels (away from the clean image's edges) where the estimate has an edge "
              "(gradient above 10 % of the clean range) that the clean image lacks, and the "
              "texture inside the clean image's flat regions (std over its range; NaN: no flat "
              "region), mean over the images.", "",
              "| scale | category | method | invented-edge fraction | flat std |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in grows:
        lines.append(
            f"| {r['scale']} | {r['category']} | {r['method']} | "
            f"{r['invented_edge_fraction']:.4f} | {r['flat_std']:.4f} |"
        )
    lines.append("")
    crows = clinker_rows(ref)
    lines += [
        "## Real clinker (LA-ICP-MS), x1",
        "",
        "| isotope | phases | raw contrast | enhanced | change % | raw noise | "
        "enhanced noise | noise ratio | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in crows:
        lines.append(
            f"| {r['isotope']} | {r['phase_a']}/{r['phase_b']} | {r['raw_contrast']:.3f} | "
            f"{r['enhanced_contrast']:.3f} | {r['contrast_change_pct']:+.1f} | "
            f"{r['raw_noise']:.1f} | {r['enhanced_noise']:.1f} | {r['noise_ratio']:.2f} | "
            f"{'yes' if r['meets_target'] else 'no'} |"
        )
    srows = structure_rows(ref)
    lines += ["", "## Invented structure: a straight edge beside flat regions", "",
              "| scale | angle | method | flat std | invented-edge fraction | edge rms (px) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in srows:
        lines.append(
            f"| x{r['scale']} | {r['angle']:.0f} | {r['method']} | {r['flat_std']:.4f} | "
            f"{r['invented_edge_fraction']:.4f} | {r['edge_rms_px']:.3f} |"
        )
    prows = speed_rows(ref)
    lines += ["", "## Speed (x1, shipped architecture)", "", "| case | seconds | threads |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['case']} | {r['seconds']:.2f} | {r['threads']} |" for r in prows]
    (out / "imaging.md").write_text("\n".join(lines) + "\n")
    (out / "imaging_checks.json").write_text(
        json.dumps(
            {
                "clinker": crows,
                "structure": srows,
                "speed": prows,
                "models": {k: v["networks"] for k, v in summary.items()},
            },
            indent=1,
            default=float,
        )  # fmt: skip
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--arch", default="unet_small")
    p.add_argument("--name", default=None, help="model name (default: the architecture)")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--loss", choices=("full", "l1ssim"), default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store float16 weights")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("predict")
    p.add_argument("--name", required=True, help="model name, or 'shipped'")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("report")
    p.add_argument("--networks", nargs="+", default=["shipped"])
    p.add_argument("--scales", nargs="+", type=int, default=[1, 2])
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_report)
    ns = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    ns.func(ns)


if __name__ == "__main__":
    main()
