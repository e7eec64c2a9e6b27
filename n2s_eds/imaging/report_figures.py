"""Figures of a :class:`~n2s_eds.imaging.compare.ComparisonReport`, written as PNG files.

* :func:`difference_histograms`: histograms of the per-image PSNR and SSIM differences,
  reference minus each baseline, for one category;
* :func:`gallery`: the images of one category where the reference gains most and least PSNR
  over the best baseline, side by side with the other methods and the truth.

The figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas
(:class:`matplotlib.backends.backend_agg.FigureCanvasAgg`): no screen and no pyplot state are
involved, and each figure's canvas is released after saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics.reference import psnr as _psnr

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["difference_histograms", "gallery", "gallery_rows"]


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=100)
    fig.clear()
    return path


def difference_histograms(report: Any, category: str, path: str | Path) -> Path:
    """Histograms of reference minus baseline PSNR (left) and SSIM (right) over the images of
    ``category``, one histogram per baseline, with a line at zero. Returns ``path``."""
    idx = report.indices(category)
    fig = _new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2)
    for ax, score, unit in zip(axes, ("psnr", "ssim"), (" (dB)", ""), strict=True):
        table = getattr(report, score)
        diffs = {b: table[report.reference][idx] - table[b][idx] for b in report.baselines}
        edges = np.histogram_bin_edges(np.concatenate(list(diffs.values())), bins="auto")
        if edges.size > 31:
            edges = np.linspace(edges[0], edges[-1], 31)
        for b, d in diffs.items():
            ax.hist(d, bins=edges, histtype="stepfilled", alpha=0.45, label=f"- {b}")
        ax.axvline(0.0, color="k", lw=1)
        ax.set_xlabel(f"{score.upper()} difference{unit}")
        ax.set_ylabel("images")
        ax.legend(title=report.reference, fontsize=8, title_fontsize=8)
    fig.suptitle(f"{category}: {report.reference} minus each baseline ({idx.size} images)")
    return _save(fig, path)


def gallery_rows(report: Any, category: str, n_examples: int = 2) -> list[int]:
    """Image positions shown by :func:`gallery`: the ``n_examples`` with the largest and the
    ``n_examples`` with the smallest PSNR change (reference minus the best baseline, by mean
    PSNR in the category), largest change first; all images of the category, sorted, when
    there are at most ``2 * n_examples``."""
    idx = report.indices(category)
    best = report.best_baseline(category)
    if best is None:
        return []
    change = report.psnr[report.reference][idx] - report.psnr[best][idx]
    order = idx[np.argsort(-change, kind="stable")]
    if order.size <= 2 * n_examples:
        return [int(i) for i in order]
    return [int(i) for i in np.concatenate([order[:n_examples], order[-n_examples:]])]


def gallery(
    report: Any,
    category: str,
    path: str | Path,
    *,
    n_examples: int = 2,
    cmap: str = "viridis",
) -> Path:
    """Best and worst images of ``category`` by PSNR change against the best baseline.

    One row per image (:func:`gallery_rows`); columns: the degraded input (when the report has
    inputs), each baseline, the reference and the truth. Every panel title gives the PSNR
    against the truth (for the input only when it has the truth's shape); all panels of a row
    share the colour scale of the truth's range. Returns ``path``.
    """
    rows = gallery_rows(report, category, n_examples)
    best = report.best_baseline(category)
    cols = ([None] if report.inputs is not None else []) + report.baselines + [report.reference]
    ncol = len(cols) + 1
    fig = _new_figure(2.3 * ncol, 2.5 * max(len(rows), 1) + 0.4)
    axes = np.atleast_2d(fig.subplots(max(len(rows), 1), ncol, squeeze=False))
    for r, i in enumerate(rows):
        truth = report.truth[i]
        lo, hi = float(truth.min()), float(truth.max())
        if hi <= lo:
            hi = lo + 1.0
        change = report.psnr[report.reference][i] - report.psnr[best][i]
        for c, method in enumerate([*cols, "truth"]):
            ax = axes[r, c]
            if method is None:
                img = report.inputs[i]
                title = "input"
                if img.shape == truth.shape:
                    title += (
                        f"\n{min(_psnr(truth, img, data_range=hi - lo), report.psnr_cap):.2f} dB"
                    )
                else:
                    title += f" {img.shape[0]}x{img.shape[1]}"
            elif method == "truth":
                img, title = truth, "truth"
            else:
                img = report.estimates[method][i]
                title = f"{method}\n{report.psnr[method][i]:.2f} dB"
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{report.image_ids[i]}\nvs {best}: {change:+.2f} dB", fontsize=8)
    fig.suptitle(
        f"{category}: {report.reference} against the best baseline ({best}), "
        "largest to smallest PSNR change",
        fontsize=9,
    )
    return _save(fig, path)
