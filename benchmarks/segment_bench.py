"""The segmentation benchmark: phase maps from a few labelled pixels.

Sub-commands:

``pix2pix``  pretrains the Pix2Pix-style generator (:func:`n2s_eds.segment.pix2pix.fit_pix2pix`)
             on the enhancer's training images and writes it to ``n2s_eds/weights/pix2pix_x1.pt``.
``run``      fits every segmenter variant on the phantoms (TEM and SEM, doses 5, 20 and 100)
             and the clinker scan for each labelled fraction, records the convergence curves,
             runs the clustering baselines and the per-phase composition, and writes the rows
             to ``benchmarks/cache/segment/rows.json``.
``report``   turns the rows into ``benchmarks/results/segment.md``, ``segment.csv`` and the
             figures.

See ``benchmarks/README.md`` for the commands that made the current results.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "cache" / "segment"
sys.path.insert(0, str(ROOT / "benchmarks"))
ROWS = CACHE / "rows.json"

#: Scan side of the phantoms (pixels) and their energy channels.
SIDE = 128
#: The segmenter variants: name -> Segmenter keyword arguments.
VARIANTS: dict[str, dict[str, Any]] = {
    "pretrained": {"pretrained": True, "encoder": "denoiser"},
    "pix2pix": {"pretrained": True, "encoder": "pix2pix"},
    "scratch": {"pretrained": False},
}
#: Steps at which the convergence curves are read.
CURVE_STEPS = (1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 600, 800, 1000,
               1500, 2000)  # fmt: skip
FRACTIONS = (0.001, 0.01, 0.05, 0.2)
DOSES = (5.0, 20.0, 100.0)


class Curve(L.Callback):
    """Mean IoU of the full map (all pixels, away from boundaries) at :data:`CURVE_STEPS`."""

    def __init__(self, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        self.truth, self.valid, self.rows = truth, valid, []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        step = trainer.global_step
        if step in CURVE_STEPS:
            with torch.no_grad():
                pred = module.net(module.scan).argmax(1)[0].numpy()
            self.rows.append([step, *scores(pred, self.truth, self.valid)])


def scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> list[float]:
    """Mean IoU over all pixels and away from the true boundaries (inside ``valid`` only)."""
    from n2s_eds.segment import boundary_band, iou_per_phase

    n = int(truth.max()) + 1
    keep = np.ones(truth.shape, bool) if valid is None else valid
    away = keep & ~boundary_band(np.where(keep, truth, -1))
    return [
        float(np.nanmean(iou_per_phase(pred, truth, n, keep))),
        float(np.nanmean(iou_per_phase(pred, truth, n, away))),
    ]


def phantom_case(kind: str, dose: float, image: bool = False) -> dict[str, Any]:
    """A phantom's noisy cube (or, with ``image``, its HAADF / BSE image alone), truth cube
    and truth labels."""
    from n2s_eds.simulate import phantom, phantom_phases

    ph = phantom(kind, dose=dose, shape=(SIDE, SIDE), seed=0)
    truth, names = phantom_phases(kind, (SIDE, SIDE), seed=0)
    if image:
        return {"name": f"{kind}_{dose:g}_image", "signal": ph.haadf, "truth_cube": None,
                "truth": truth, "names": names, "valid": None}  # fmt: skip
    return {"name": f"{kind}_{dose:g}", "signal": ph.noisy, "truth_cube": ph.truth,
            "truth": truth, "names": names, "valid": None}  # fmt: skip


def clinker_case() -> dict[str, Any]:
    from n2s_eds.imaging.clinker import PHASES, phase_masks, read_clinker, to_counts

    raw = read_clinker()
    counts = raw.deepcopy()  # axes and metadata (the isotope names) kept
    counts.data = to_counts(raw).astype(np.float32)
    counts.metadata.General.title = "clinker (counts)"
    counts.metadata.Signal.quantity = "Counts"
    masks = phase_masks()
    truth = np.full(masks[PHASES[0]].shape, -1, dtype=np.int64)
    for k, name in enumerate(PHASES):
        truth[masks[name]] = k
    return {"name": "clinker", "signal": counts, "truth": truth, "names": PHASES,
            "valid": truth >= 0, "truth_cube": None}  # fmt: skip


def pred_path(key: str) -> Path:
    return CACHE / ("pred_" + key.replace("|", "_").replace(".", "p") + ".npy")


def phantom_case_names(case: str) -> tuple[str, ...]:
    from n2s_eds.simulate import phantom_phases

    return phantom_phases(case.split("_")[0], (SIDE, SIDE), seed=0).names


def load_rows() -> list[dict[str, Any]]:
    return json.loads(ROWS.read_text()) if ROWS.is_file() else []


def save_row(row: dict[str, Any]) -> None:
    rows = [r for r in load_rows() if r["key"] != row["key"]] + [row]
    tmp = ROWS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=0))
    tmp.replace(ROWS)
    print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "composition")}),
          flush=True)  # fmt: skip


def quant_lines(lines: list[str]) -> list[str]:
    """One line per element for Cliff-Lorimer (K before L before M): exspy treats every line
    as its own component, so two lines of one element would count it twice."""
    out: dict[str, str] = {}
    for family in ("a", "La", "Ma"):
        for line in lines:
            element, name = line.split("_")
            if element not in out and name.endswith(family) and (family != "a" or name == "Ka"):
                out[element] = line
    return sorted(out.values())


def composition_row(case: dict[str, Any], pred: np.ndarray) -> dict[str, Any] | None:
    """Per-phase Cliff-Lorimer composition (one line per element, k-factors all 1, the same on
    both sides) against the truth cube summed over the truth labels: from the noisy cube summed
    over ``pred`` (what a user gets), and from the truth cube summed over ``pred`` (the
    segmentation's share of the error alone)."""
    if case["truth_cube"] is None:
        return None
    from n2s_eds.segment.composition import composition_error, phase_composition

    lines = quant_lines(list(case["signal"].metadata.Sample.xray_lines))
    k = dict.fromkeys(lines, 1.0)
    names = case["names"]
    ref = phase_composition(case["truth_cube"], case["truth"], k, phase_names=names)
    est = phase_composition(case["signal"], pred, k, phase_names=names)
    seg_only = phase_composition(case["truth_cube"], pred, k, phase_names=names)
    return {"lines": lines, "reference": np.asarray(ref.atomic_percent).tolist(),
            "estimate": np.asarray(est.atomic_percent).tolist(),
            "relative_error": np.asarray(composition_error(est, ref)).tolist(),
            "relative_error_truth_cube": np.asarray(composition_error(seg_only, ref)).tolist(),
            "pixels": np.asarray(est.pixels).tolist()}  # fmt: skip


def fit_row(case, variant, fraction, steps, seed, with_curve=False, composition=False):
    from n2s_eds.segment import Segmenter, sample_labels

    key = f"{case['name']}|{variant}|{fraction:g}|{steps}|{seed}"
    if any(r["key"] == key for r in load_rows()):
        return
    truth, valid = case["truth"], case["valid"]
    labels = sample_labels(np.where(valid, truth, -1) if valid is not None else truth, fraction,
                           seed=seed)  # fmt: skip
    curve = Curve(truth, valid) if with_curve else None
    t0 = time.perf_counter()
    seg = Segmenter(steps=steps, seed=seed, **VARIANTS[variant])
    seg.fit(case["signal"], labels, phase_names=case["names"], callbacks=[curve] if curve else None)
    t1 = time.perf_counter()
    pred = seg.predict(case["signal"]).phases.data
    t2 = time.perf_counter()
    np.save(pred_path(key), pred.astype(np.int8))
    row = {"key": key, "case": case["name"], "method": variant, "fraction": fraction,
           "steps": steps, "seed": seed, "labelled": int((labels >= 0).sum()),
           "miou": scores(pred, truth, valid), "fit_s": round(t1 - t0, 1),
           "predict_s": round(t2 - t1, 2), "curve": curve.rows if curve else None}  # fmt: skip
    if composition:
        row["composition"] = composition_row(case, pred)
    save_row(row)


def cluster_rows(case: dict[str, Any]) -> None:
    """k-means on the denoised cube's element maps, and HyperSpy's clustering of the noisy
    cube's decomposition scores; cluster ids matched to the truth phases (Hungarian)."""
    import n2s_eds
    from n2s_eds.segment.cluster import cluster, hyperspy_clusters, match_phases

    n = len(case["names"])
    for method in ("kmeans_denoised", "hyperspy"):
        key = f"{case['name']}|{method}"
        if any(r["key"] == key for r in load_rows()):
            continue
        t0 = time.perf_counter()
        if method == "hyperspy":
            out = hyperspy_clusters(case["signal"], n, seed=0)
        else:
            out = cluster(n2s_eds.denoise(case["signal"]), n, seed=0)
        pred = match_phases(np.asarray(out.data), case["truth"], n)
        np.save(pred_path(key), pred.astype(np.int8))
        row = {"key": key, "case": case["name"], "method": method, "fraction": 0.0,
               "steps": 0, "seed": 0, "labelled": 0,
               "miou": scores(pred, case["truth"], case["valid"]),
               "fit_s": round(time.perf_counter() - t0, 1), "predict_s": 0.0,
               "curve": None, "composition": composition_row(case, pred)}  # fmt: skip
        save_row(row)


def cmd_run(ns: argparse.Namespace) -> None:
    torch.set_num_threads(ns.threads)
    kinds = ("tem", "sem")
    steps = ns.steps
    if "curves" in ns.parts:  # convergence at dose 20, 1 % labels (also the default-steps row)
        for kind in kinds:
            case = phantom_case(kind, 20.0)
            for variant in VARIANTS:
                fit_row(case, variant, 0.01, ns.cap, 0, with_curve=True)
    if "default" in ns.parts:  # the default steps at dose 20, 1 %, three seeds, composition
        for kind in kinds:
            case = phantom_case(kind, 20.0)
            for seed in (0, 1, 2):
                for variant in VARIANTS:
                    fit_row(case, variant, 0.01, steps, seed, composition=True)
            cluster_rows(case)
    if "fractions" in ns.parts:
        for kind in kinds:
            case = phantom_case(kind, 20.0)
            for fraction in FRACTIONS:
                for variant in VARIANTS:
                    fit_row(case, variant, fraction, steps, 0)
    if "doses" in ns.parts:
        for kind in kinds:
            for dose in (5.0, 100.0):
                case = phantom_case(kind, dose)
                for variant in VARIANTS:
                    fit_row(case, variant, 0.01, steps, 0, composition=True)
                cluster_rows(case)
    if "images" in ns.parts:  # the HAADF (TEM) / BSE (SEM) image alone, one channel
        for kind in kinds:
            case = phantom_case(kind, 20.0, image=True)
            for variant in VARIANTS:
                fit_row(case, variant, 0.01, steps, 0)
    if "clinker" in ns.parts:
        case = clinker_case()
        for fraction in (0.01, 0.05):
            for variant in VARIANTS:
                fit_row(case, variant, fraction, steps, 0)


def cmd_pix2pix(ns: argparse.Namespace) -> None:
    from imaging_bench import training_images

    from n2s_eds.imaging.sources import imaging_dataset
    from n2s_eds.segment.pix2pix import fit_pix2pix

    torch.set_num_threads(ns.threads)
    images, weights = training_images(imaging_dataset("train"))
    enh = fit_pix2pix(
        images, weights=weights, steps=ns.steps, batch_size=ns.batch_size, seed=ns.seed
    )
    out = Path(ns.output)
    enh.save(out, half=True)
    print(json.dumps({"model": str(out), **enh.history}))


def _mean_sd(values: list[float]) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def first_step(curve: list[list[float]], level: float, column: int) -> int | None:
    """The first curve step whose mean IoU (column 1: all pixels, 2: away) reaches ``level``."""
    return next((int(r[0]) for r in curve if r[column] >= level), None)


def _select(rows, **what) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in what.items())]


def longest_curves(rows, case: str) -> dict[str, list[list[float]]]:
    """Per method, the convergence curve of the longest recorded run on ``case``."""
    runs = sorted((r for r in _select(rows, case=case, seed=0) if r["curve"]),
                  key=lambda r: r["steps"])  # fmt: skip
    return {r["method"]: r["curve"] for r in runs}


def write_figures(rows: list[dict[str, Any]], out: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from n2s_eds.simulate import phantom_phases

    colours = {"pretrained": "C0", "pix2pix": "C2", "scratch": "C3"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind in zip(axes, ("tem", "sem"), strict=True):
        for method, curve in longest_curves(rows, f"{kind}_20").items():
            c = np.asarray(curve)
            ax.plot(c[:, 0], c[:, 2], "-", color=colours[method], label=method)
            ax.plot(c[:, 0], c[:, 1], ":", color=colours[method])
        ax.axhline(0.85, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="training steps", title=f"{kind.upper()} phantom, dose 20, 1 %")
    axes[0].set_ylabel("mean IoU (solid: away from boundaries, dotted: all)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "segment_curves.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind in zip(axes, ("tem", "sem"), strict=True):
        for method, colour in colours.items():
            pts = sorted((r["fraction"], r["miou"][1]) for r in
                         _select(rows, case=f"{kind}_20", method=method, steps=steps, seed=0))  # fmt: skip
            if pts:
                ax.plot(*np.asarray(pts).T, "o-", color=colour, label=method)
        for method, style in (("kmeans_denoised", "--"), ("hyperspy", ":")):
            for r in _select(rows, case=f"{kind}_20", method=method):
                ax.axhline(r["miou"][1], ls=style, color="k", label=method)
        ax.set(
            xscale="log",
            xlabel="labelled fraction",
            title=f"{kind.upper()}, dose 20, {steps} steps",
        )
    axes[0].set_ylabel("mean IoU away from boundaries")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "segment_fractions.png", dpi=110)
    plt.close(fig)

    methods = ("pretrained", "pix2pix", "scratch", "kmeans_denoised", "hyperspy")
    fig, axes = plt.subplots(2, 1 + len(methods), figsize=(14, 5))
    for row_axes, kind in zip(axes, ("tem", "sem"), strict=True):
        truth, _ = phantom_phases(kind, (SIDE, SIDE), seed=0)
        row_axes[0].imshow(truth, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        row_axes[0].set_title(f"{kind.upper()} truth", fontsize=9)
        for ax, method in zip(row_axes[1:], methods, strict=True):
            key = (f"{kind}_20|{method}" if method in ("kmeans_denoised", "hyperspy")
                   else f"{kind}_20|{method}|0.01|{steps}|0")  # fmt: skip
            if pred_path(key).is_file():
                ax.imshow(np.load(pred_path(key)), cmap="tab10", vmin=0, vmax=9,
                          interpolation="nearest")  # fmt: skip
            ax.set_title(method, fontsize=9)
        for ax in row_axes:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out / "segment_maps.png", dpi=110)
    plt.close(fig)


def cmd_report(ns: argparse.Namespace) -> None:
    import csv
    import subprocess

    rows = load_rows()
    out = Path(ns.output)
    steps = ns.steps
    with (out / "segment.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "method", "fraction", "steps", "seed", "labelled", "miou_all",
                    "miou_away", "fit_s", "predict_s"])  # fmt: skip
        for r in sorted(rows, key=lambda r: r["key"]):
            w.writerow([r["case"], r["method"], r["fraction"], r["steps"], r["seed"],
                        r["labelled"], f"{r['miou'][0]:.4f}", f"{r['miou'][1]:.4f}", r["fit_s"],
                        r["predict_s"]])  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    md = ["# Segmentation benchmark", "",
          f"`python benchmarks/segment_bench.py run` then `report`; commit {commit}; "
          f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}.", "",
          f"Phantoms {SIDE} x {SIDE} px (seed 0, 1024 channels), labels drawn stratified "
          "(`sample_labels`, at least 3 pixels per phase); mean IoU over the phases, over all "
          "pixels and away from the true boundaries (a one-pixel band on both sides left out). "
          f"Default steps: {steps}.", ""]  # fmt: skip
    md += ["## Dose 20, 1 % labelled, default steps (mean ± sd over seeds 0, 1, 2)", "",
           "| case | method | mIoU all | mIoU away | fit s | predict s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in ("tem", "sem"):
        for method in (*VARIANTS, "kmeans_denoised", "hyperspy"):
            sel = [r for r in _select(rows, case=f"{kind}_20", method=method)
                   if r["steps"] in (steps, 0) and r["fraction"] in (0.01, 0.0)]  # fmt: skip
            if sel:
                md.append(f"| {kind} | {method} | {_mean_sd([r['miou'][0] for r in sel])} | "
                          f"{_mean_sd([r['miou'][1] for r in sel])} | "
                          f"{np.mean([r['fit_s'] for r in sel]):.1f} | "
                          f"{np.mean([r['predict_s'] for r in sel]):.2f} |")  # fmt: skip
    md += ["", "## Convergence (dose 20, 1 %, seed 0): mean IoU all / away by step", ""]
    for kind in ("tem", "sem"):
        curves = longest_curves(rows, f"{kind}_20")
        if not curves:
            continue
        done = sorted({int(c[0]) for cur in curves.values() for c in cur})
        md += [f"**{kind.upper()}**", "", "| step | " + " | ".join(curves) + " |",
               "|---|" + "---|" * len(curves)]  # fmt: skip
        for st in done:
            cells = []
            for cur in curves.values():
                hit = [c for c in cur if int(c[0]) == st]
                cells.append(f"{hit[0][1]:.3f} / {hit[0][2]:.3f}" if hit else "")
            md.append(f"| {st} | " + " | ".join(cells) + " |")
        md.append("")
        for col, what in ((1, "all pixels"), (2, "away from boundaries")):
            reach = {m: first_step(c, 0.85, col) for m, c in curves.items()}
            md.append(f"- steps to mean IoU 0.85 ({what}): "
                      + ", ".join(f"{m} {v if v is not None else 'not reached'}"
                                  for m, v in reach.items()))  # fmt: skip
        md.append("")
    md += ["## Labelled fraction (dose 20, default steps, seed 0): mean IoU all / away", "",
           "| case | method | " + " | ".join(f"{f:g}" for f in FRACTIONS) + " |",
           "|---|---|" + "---|" * len(FRACTIONS)]  # fmt: skip
    for kind in ("tem", "sem"):
        for method in VARIANTS:
            cells = []
            for f in FRACTIONS:
                hit = _select(rows, case=f"{kind}_20", method=method, fraction=f, steps=steps,
                              seed=0)  # fmt: skip
                cells.append(f"{hit[0]['miou'][0]:.3f} / {hit[0]['miou'][1]:.3f}" if hit else "")
            md.append(f"| {kind} | {method} | " + " | ".join(cells) + " |")
    md += ["", "## Dose (1 % labelled, default steps, seed 0; clustering without labels)", "",
           "| case | method | " + " | ".join(f"dose {d:g}" for d in DOSES) + " |",
           "|---|---|" + "---|" * len(DOSES)]  # fmt: skip
    for kind in ("tem", "sem"):
        for method in (*VARIANTS, "kmeans_denoised", "hyperspy"):
            cells = []
            for d in DOSES:
                hit = [r for r in _select(rows, case=f"{kind}_{d:g}", method=method, seed=0)
                       if r["steps"] in (steps, 0) and r["fraction"] in (0.01, 0.0)]  # fmt: skip
                cells.append(f"{hit[0]['miou'][0]:.3f} / {hit[0]['miou'][1]:.3f}" if hit else "")
            md.append(f"| {kind} | {method} | " + " | ".join(cells) + " |")
    md += ["", "## Images alone (dose 20 phantoms' HAADF / BSE image, 1 %, default steps, seed 0)",
           "", "| case | method | mIoU all | mIoU away | fit s |", "|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: r["key"]):
        if r["case"].endswith("_image"):
            md.append(f"| {r['case']} | {r['method']} | {r['miou'][0]:.3f} | {r['miou'][1]:.3f} | "
                      f"{r['fit_s']:.1f} |")  # fmt: skip
    md += ["", "## Clinker (LA-ICP-MS, 11 isotopes, 50 x 700; masks of alite, belite, C4AF)", "",
           "Scored on the pixels inside the three masks; labels drawn from them.", "",
           "| method | fraction | labelled | mIoU all | mIoU away | fit s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(_select(rows, case="clinker"), key=lambda r: (r["fraction"], r["method"])):
        md.append(f"| {r['method']} | {r['fraction']:g} | {r['labelled']} | {r['miou'][0]:.3f} | "
                  f"{r['miou'][1]:.3f} | {r['fit_s']:.1f} |")  # fmt: skip
    md += ["", "## Per-phase composition (Cliff-Lorimer, one line per element, k-factors 1; at.%)",
           "", "Estimate: the noisy cube summed over the predicted phase (default steps, 1 %); "
           "reference: the truth cube summed over the truth labels; in brackets, the truth cube "
           "summed over the predicted phase (the segmentation's share of the error alone). "
           "Largest relative error of a line's at.%, over the phases' main lines (10 at.% or "
           "more in the reference: the elements each phase is made of) and over the lines at "
           "5 at.% or more. No background is subtracted, so a line missing from a phase still "
           "reads a few at.% from the continuum under it.", "",
           "| case | method | seed | main lines (>= 10 at.%) | lines >= 5 at.% |",
           "|---|---|---|---|---|"]  # fmt: skip
    details = []
    for r in sorted(rows, key=lambda r: r["key"]):
        comp = r.get("composition")
        if not comp:
            continue
        ref, est = np.asarray(comp["reference"], float), np.asarray(comp["estimate"], float)
        err = np.asarray(comp["relative_error"], float)
        seg_err = np.asarray(comp["relative_error_truth_cube"], float)
        cells = []
        for level in (10.0, 5.0):
            keep = ref >= level
            worst = float(np.nanmax(np.where(keep, err, np.nan)))
            seg_worst = float(np.nanmax(np.where(keep, seg_err, np.nan)))
            cells.append(f"{100 * worst:.1f} % ({100 * seg_worst:.1f} %)")
        md.append(f"| {r['case']} | {r['method']} | {r['seed']} | {cells[0]} | {cells[1]} |")
        if r["method"] == "pretrained" and r["case"].endswith("_20") and r["seed"] == 0:
            details.append((r, ref, est, err))
    for r, ref, est, err in details:
        names = phantom_case_names(r["case"])
        md += ["", f"**{r['case']} pretrained** (reference / estimate at.%, relative error)", "",
               "| phase | " + " | ".join(r["composition"]["lines"]) + " |",
               "|---|" + "---|" * len(r["composition"]["lines"])]  # fmt: skip
        for k, name in enumerate(names):
            md.append(f"| {name} | " + " | ".join(
                f"{ref[k, j]:.1f} / {est[k, j]:.1f} ({100 * err[k, j]:.1f} %)"
                for j in range(ref.shape[1])) + " |")  # fmt: skip
    md += ["", "## IoU per phase (dose 20, 1 %, default steps, seed 0; all pixels)", ""]
    for kind in ("tem", "sem"):
        from n2s_eds.segment import iou_per_phase
        from n2s_eds.simulate import phantom_phases

        truth, names = phantom_phases(kind, (SIDE, SIDE), seed=0)
        md += [f"**{kind.upper()}**", "", "| method | " + " | ".join(names) + " |",
               "|---|" + "---|" * len(names)]  # fmt: skip
        for method in (*VARIANTS, "kmeans_denoised", "hyperspy"):
            key = (f"{kind}_20|{method}" if method in ("kmeans_denoised", "hyperspy")
                   else f"{kind}_20|{method}|0.01|{steps}|0")  # fmt: skip
            if pred_path(key).is_file():
                iou = iou_per_phase(np.load(pred_path(key)), truth, len(names))
                md.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in iou) + " |")
        md.append("")
    (out / "segment.md").write_text("\n".join(md))
    write_figures(rows, out, steps)
    print((out / "segment.md").read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pix2pix")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=str(ROOT / "n2s_eds" / "weights" / "pix2pix_x1.pt"))
    p.set_defaults(func=cmd_pix2pix)
    p = sub.add_parser("run")
    p.add_argument("--parts", nargs="+", default=["curves", "default", "fractions", "doses",
                   "images", "clinker"])  # fmt: skip
    p.add_argument("--steps", type=int, default=100, help="the Segmenter's default steps")
    p.add_argument("--cap", type=int, default=2000, help="last step of the convergence curves")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("--steps", type=int, default=100, help="the Segmenter's default steps")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    p.set_defaults(func=cmd_report)
    ns = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    ns.func(ns)


if __name__ == "__main__":
    main()
