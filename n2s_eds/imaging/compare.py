"""Scoring 2D images against a known truth and comparing methods image by image.

* :func:`image_scores`: PSNR and SSIM of one estimate, with the truth's range as data range
  (through :func:`n2s_eds.metrics.psnr` and :func:`n2s_eds.metrics.ssim`).
* :func:`compare`: the scores of several methods on the same images, summarised per image
  category, with paired t-tests of one method (the reference) against each other method (the
  baselines), in a :class:`ComparisonReport` that writes CSV tables, a Markdown report and
  figures (:mod:`n2s_eds.imaging.report_figures`).
* Invented structure (defined in :mod:`n2s_eds.imaging.structure`, importable from here):
  :func:`edge_and_texture_excess` (texture in the truth's flat regions, edges where the truth
  has none) and :func:`edge_straightness` (does a straight edge stay straight), with the test
  image :func:`straight_edge_image`.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..exceptions import InvalidInputError
from ..metrics.reference import psnr as _psnr
from ..metrics.reference import ssim as _ssim
from .structure import (
    StructureExcess,
    checked_image,
    edge_and_texture_excess,
    edge_positions,
    edge_straightness,
    straight_edge_image,
)

__all__ = [
    "PSNR_CAP_DB",
    "ComparisonReport",
    "MethodSummary",
    "PairedComparison",
    "PairedTest",
    "StructureExcess",
    "compare",
    "edge_and_texture_excess",
    "edge_positions",
    "edge_straightness",
    "image_scores",
    "slug",
    "straight_edge_image",
]

#: PSNR values are capped at this many dB, so that an exact estimate (infinite PSNR) still
#: enters means, differences and t-tests as a finite number.
PSNR_CAP_DB = 100.0
_MIN_SIDE = 7  # SSIM's 7 x 7 window


def _image_list(x: Any, name: str, min_size: int = _MIN_SIDE) -> list[np.ndarray]:
    """A list of checked 2D images from a list of images or a stack ``(n, H, W)``."""
    if isinstance(x, np.ndarray):
        if x.ndim != 3:
            raise InvalidInputError(
                f"{name}: expected a list of 2D images or a stack (n, H, W), got an array of "
                f"shape {x.shape}."
            )
        x = list(x)
    if not isinstance(x, Sequence) or isinstance(x, (str, bytes)):
        raise InvalidInputError(f"{name}: expected a list of 2D images, got {type(x).__name__}.")
    if len(x) == 0:
        raise InvalidInputError(f"{name}: the list is empty; pass at least one image.")
    return [checked_image(im, f"{name}[{i}]", min_size) for i, im in enumerate(x)]


def image_scores(estimate: Any, truth: Any) -> tuple[float, float]:
    """PSNR (dB) and SSIM of one estimated 2D image against its clean image.

    The data range of both scores is the truth's ``max - min`` (1 for a constant truth).

    Parameters
    ----------
    estimate, truth : array_like
        2D images of the same shape, each side at least 7 pixels (the SSIM window).

    Returns
    -------
    psnr : float
        In dB, capped at :data:`PSNR_CAP_DB` (an exact estimate scores the cap).
    ssim : float
        1 for an exact estimate.

    Raises
    ------
    InvalidInputError
        Not 2D, sides below 7 pixels, NaN or infinite values, or different shapes.
    """
    t = checked_image(truth, "truth")
    e = checked_image(estimate, "estimate")
    if e.shape != t.shape:
        raise InvalidInputError(f"estimate {e.shape} and truth {t.shape} differ in shape.")
    return min(_psnr(t, e), PSNR_CAP_DB), _ssim(t, e)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of one score, reference minus baseline, over a category's images.

    Attributes
    ----------
    mean, sd : float
        Mean and sample standard deviation (``ddof=1``; NaN for one image) of the differences.
    t : float
        The t statistic of :func:`scipy.stats.ttest_rel`.
    p_two_sided : float
        Two-sided p-value (the means differ).
    p_reference_better : float
        One-sided p-value for the alternative "the reference scores higher"
        (``alternative="greater"``). When all differences are zero both p-values are 1; with
        fewer than two images both are NaN.
    wins : int
        Number of images where the reference scores strictly higher.
    """

    mean: float
    sd: float
    t: float
    p_two_sided: float
    p_reference_better: float
    wins: int


def _paired_test(ref: np.ndarray, base: np.ndarray) -> PairedTest:
    d = ref - base
    n = d.size
    wins = int(np.sum(d > 0))
    sd = float(np.std(d, ddof=1)) if n > 1 else float("nan")
    if n < 2:
        return PairedTest(float(d.mean()), sd, float("nan"), float("nan"), float("nan"), wins)
    if np.all(d == 0):
        return PairedTest(0.0, 0.0, 0.0, 1.0, 1.0, wins)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        two = stats.ttest_rel(ref, base)
        one = stats.ttest_rel(ref, base, alternative="greater")
    return PairedTest(
        float(d.mean()), sd, float(two.statistic), float(two.pvalue), float(one.pvalue), wins
    )


@dataclass(frozen=True)
class MethodSummary:
    """Mean and sample standard deviation (``ddof=1``) of one method's scores in a category."""

    category: str
    method: str
    n: int
    psnr_mean: float
    psnr_sd: float
    ssim_mean: float
    ssim_sd: float


@dataclass(frozen=True)
class PairedComparison:
    """The reference against one baseline in one category, for PSNR and for SSIM."""

    category: str
    reference: str
    baseline: str
    n: int
    psnr: PairedTest
    ssim: PairedTest


def _sd(a: np.ndarray) -> float:
    return float(np.std(a, ddof=1)) if a.size > 1 else float("nan")


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "category"


def _fmt(x: float | None, digits: int) -> str:
    if x is None or not np.isfinite(x):
        return "n/a" if x is None or np.isnan(x) else str(x)
    return f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    return "n/a" if np.isnan(p) else f"{p:.2e}"


@dataclass
class ComparisonReport:
    """Per-image scores of several methods and their comparison per image category.

    Built by :func:`compare`. ``psnr[method][i]`` and ``ssim[method][i]`` are the scores of
    image ``image_ids[i]`` (category ``image_categories[i]``); PSNR values are capped at
    :data:`PSNR_CAP_DB`. ``summaries`` has one entry per category and method, ``comparisons``
    one per category and baseline (every method except ``reference``); differences are always
    reference minus baseline. The images themselves are kept for the figures of :meth:`write`.
    """

    reference: str
    methods: list[str]
    image_ids: list[str]
    image_categories: list[str]
    psnr: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    summaries: list[MethodSummary]
    comparisons: list[PairedComparison]
    truth: list[np.ndarray] = field(repr=False)
    estimates: dict[str, list[np.ndarray]] = field(repr=False)
    inputs: list[np.ndarray] | None = field(default=None, repr=False)
    psnr_cap: float = PSNR_CAP_DB

    @property
    def categories(self) -> list[str]:
        """The categories in the order of their first image."""
        return list(dict.fromkeys(self.image_categories))

    @property
    def baselines(self) -> list[str]:
        """Every method except the reference, in the order given."""
        return [m for m in self.methods if m != self.reference]

    def indices(self, category: str) -> np.ndarray:
        """Positions of the images of ``category``."""
        return np.flatnonzero(np.asarray(self.image_categories) == category)

    def best_baseline(self, category: str) -> str | None:
        """The baseline with the highest mean PSNR in ``category`` (None without baselines)."""
        means = {
            s.method: s.psnr_mean
            for s in self.summaries
            if s.category == category and s.method != self.reference
        }
        return max(means, key=means.__getitem__) if means else None

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One dict per image and method: ``image``, ``category``, ``method``, ``psnr``,
        ``ssim``."""
        return [
            {
                "image": img,
                "category": cat,
                "method": m,
                "psnr": float(self.psnr[m][i]),
                "ssim": float(self.ssim[m][i]),
            }
            for i, (img, cat) in enumerate(zip(self.image_ids, self.image_categories, strict=True))
            for m in self.methods
        ]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One dict per category and method.

        Keys: ``category``, ``method``, ``role`` ("reference" or "baseline"), ``n``,
        ``psnr_mean``, ``psnr_sd``, ``ssim_mean``, ``ssim_sd``, and for a baseline the paired
        comparison with the reference (reference minus baseline), for ``s`` in psnr and ssim:
        ``{s}_diff_mean``, ``{s}_diff_sd``, ``{s}_t``, ``{s}_p_two_sided``,
        ``{s}_p_reference_better`` (one-sided), ``{s}_reference_wins``; these are None in the
        reference's row.
        """
        pairs = {(c.category, c.baseline): c for c in self.comparisons}
        rows = []
        for s in self.summaries:
            row: dict[str, Any] = {
                "category": s.category,
                "method": s.method,
                "role": "reference" if s.method == self.reference else "baseline",
                "n": s.n,
                "psnr_mean": s.psnr_mean,
                "psnr_sd": s.psnr_sd,
                "ssim_mean": s.ssim_mean,
                "ssim_sd": s.ssim_sd,
            }
            c = pairs.get((s.category, s.method))
            for name in ("psnr", "ssim"):
                t: PairedTest | None = getattr(c, name) if c is not None else None
                row[f"{name}_diff_mean"] = t.mean if t else None
                row[f"{name}_diff_sd"] = t.sd if t else None
                row[f"{name}_t"] = t.t if t else None
                row[f"{name}_p_two_sided"] = t.p_two_sided if t else None
                row[f"{name}_p_reference_better"] = t.p_reference_better if t else None
                row[f"{name}_reference_wins"] = t.wins if t else None
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """The summary as Markdown: per category, a table of the methods' scores and a table
        of the reference against each baseline (PSNR to 2 decimals, SSIM to 4, p-values in
        scientific notation; "p (ref. better)" is the one-sided p-value)."""
        lines = [
            "# Image comparison",
            "",
            f"Reference method: **{self.reference}**. Differences are reference minus baseline "
            "over the same images (paired t-test, scipy.stats.ttest_rel); 'p (two-sided)' tests "
            "for any difference, 'p (ref. better)' is the one-sided p-value for a higher "
            "reference score. PSNR in dB (capped at "
            f"{PSNR_CAP_DB:g} dB), data range = the clean image's max - min.",
        ]
        for cat in self.categories:
            lines += ["", f"## {cat}", "", "| method | n | PSNR (dB) | SSIM |", "|---|---|---|---|"]
            for s in self.summaries:
                if s.category == cat:
                    lines.append(
                        f"| {s.method} | {s.n} | {_fmt(s.psnr_mean, 2)} ± {_fmt(s.psnr_sd, 2)} "
                        f"| {_fmt(s.ssim_mean, 4)} ± {_fmt(s.ssim_sd, 4)} |"
                    )
            comps = [c for c in self.comparisons if c.category == cat]
            if not comps:
                continue
            lines += [
                "",
                f"{self.reference} against each baseline:",
                "",
                "| baseline | score | mean diff. ± sd | p (two-sided) | p (ref. better) | "
                "ref. wins |",
                "|---|---|---|---|---|---|",
            ]
            for c in comps:
                for name, t, digits in (("PSNR", c.psnr, 2), ("SSIM", c.ssim, 4)):
                    lines.append(
                        f"| {c.baseline} | {name} | {_fmt(t.mean, digits)} ± {_fmt(t.sd, digits)}"
                        f" | {_fmt_p(t.p_two_sided)} | {_fmt_p(t.p_reference_better)} "
                        f"| {t.wins} / {c.n} |"
                    )
        return "\n".join(lines) + "\n"

    def write(
        self, folder: str | Path, *, prefix: str = "imaging", n_examples: int = 2
    ) -> list[Path]:
        """Write the tables, the Markdown report and the figures into ``folder``.

        Files: ``<prefix>_per_image.csv`` (:meth:`per_image_rows`), ``<prefix>_summary.csv``
        (:meth:`summary_rows`, empty cells for None), ``<prefix>.md`` (:meth:`to_markdown`)
        and, when there is at least one baseline, per category (as :func:`slug`, made unique)
        ``<prefix>_hist_<category>.png`` and ``<prefix>_gallery_<category>.png``
        (:mod:`n2s_eds.imaging.report_figures`; the gallery shows the ``n_examples`` best and
        worst images by PSNR change against the best baseline).

        Returns
        -------
        list of pathlib.Path
            The files written. ``folder`` is created if needed.
        """
        from .report_figures import difference_histograms, gallery

        if not prefix or Path(prefix).name != prefix:
            raise InvalidInputError(f"prefix must be a plain file-name prefix, got {prefix!r}.")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix, rows in (
            ("per_image", self.per_image_rows()),
            ("summary", self.summary_rows()),
        ):
            path = out / f"{prefix}_{suffix}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            written.append(path)
        md = out / f"{prefix}.md"
        md.write_text(self.to_markdown(), encoding="utf-8")
        written.append(md)
        if not self.baselines:
            return written
        used: set[str] = set()
        for cat in self.categories:
            name, k = slug(cat), 2
            while name in used:
                name, k = f"{slug(cat)}_{k}", k + 1
            used.add(name)
            written.append(difference_histograms(self, cat, out / f"{prefix}_hist_{name}.png"))
            written.append(
                gallery(self, cat, out / f"{prefix}_gallery_{name}.png", n_examples=n_examples)
            )
        return written


def compare(
    results: Mapping[str, Any],
    truth: Any,
    categories: str | Sequence[str],
    *,
    reference: str | None = None,
    names: Sequence[str] | None = None,
    inputs: Any = None,
) -> ComparisonReport:
    """Score every method on every image and compare the reference with each other method.

    Parameters
    ----------
    results : mapping of str to images
        Method name -> its estimated images: a list of 2D images, or a stack ``(n, H, W)``,
        in the order of ``truth``.
    truth : list of 2D images or a stack ``(n, H, W)``
        The clean images; sizes may differ between images, each at least 7 x 7 pixels. Every
        method's ``i``-th image has the shape of ``truth[i]``.
    categories : str or sequence of str
        The category of each image (e.g. "simulated maps", "electron images"), or one
        category for all.
    reference : str, optional
        The method compared with all others; the first key of ``results`` by default.
    names : sequence of str, optional
        Unique image ids; ``image_000``, ``image_001``, ... by default.
    inputs : list of 2D images, optional
        The degraded input of each image (any size, e.g. a coarser grid), shown in the
        gallery of :meth:`ComparisonReport.write`.

    Returns
    -------
    ComparisonReport

    Raises
    ------
    InvalidInputError
        No methods or images, lengths of ``results``, ``categories``, ``names`` or ``inputs``
        that differ from that of ``truth``, repeated names, a shape that differs from the
        truth's, NaN or infinite values, images below 7 x 7, or an unknown ``reference``.
    """
    if not isinstance(results, Mapping) or len(results) == 0:
        raise InvalidInputError("results: expected a non-empty dict of method name -> images.")
    clean = _image_list(truth, "truth")
    n = len(clean)
    cats = [categories] * n if isinstance(categories, str) else [str(c) for c in categories]
    ids = [f"image_{i:03d}" for i in range(n)] if names is None else [str(s) for s in names]
    for label, seq in (("categories", cats), ("names", ids)):
        if len(seq) != n:
            raise InvalidInputError(f"{label}: {len(seq)} entries for {n} clean images.")
    if len(set(ids)) != n:
        raise InvalidInputError("names: the image ids must be unique.")
    methods = [str(m) for m in results]
    ref = methods[0] if reference is None else str(reference)
    if ref not in methods:
        raise InvalidInputError(f"reference {ref!r} is not one of the methods {methods}.")
    estimates: dict[str, list[np.ndarray]] = {}
    for key, m in zip(results, methods, strict=True):
        ims = _image_list(results[key], f"results[{m!r}]")
        if len(ims) != n:
            raise InvalidInputError(f"results[{m!r}]: {len(ims)} images for {n} clean images.")
        for i, (e, t) in enumerate(zip(ims, clean, strict=True)):
            if e.shape != t.shape:
                raise InvalidInputError(
                    f"results[{m!r}][{i}] has shape {e.shape}, the clean image {t.shape}."
                )
        estimates[m] = ims
    degraded = None
    if inputs is not None:
        degraded = _image_list(inputs, "inputs", min_size=1)
        if len(degraded) != n:
            raise InvalidInputError(f"inputs: {len(degraded)} images for {n} clean images.")
    psnr: dict[str, np.ndarray] = {}
    ssim: dict[str, np.ndarray] = {}
    for m, ims in estimates.items():
        scores = np.array(
            [(min(_psnr(t, e), PSNR_CAP_DB), _ssim(t, e)) for e, t in zip(ims, clean, strict=True)]
        )
        psnr[m], ssim[m] = scores[:, 0], scores[:, 1]
    summaries, comparisons = [], []
    cat_arr = np.asarray(cats)
    for cat in dict.fromkeys(cats):
        idx = np.flatnonzero(cat_arr == cat)
        for m in methods:
            p, s = psnr[m][idx], ssim[m][idx]
            summaries.append(
                MethodSummary(cat, m, idx.size, float(p.mean()), _sd(p), float(s.mean()), _sd(s))
            )
        for b in (m for m in methods if m != ref):
            comparisons.append(
                PairedComparison(
                    cat,
                    ref,
                    b,
                    idx.size,
                    _paired_test(psnr[ref][idx], psnr[b][idx]),
                    _paired_test(ssim[ref][idx], ssim[b][idx]),
                )
            )
    return ComparisonReport(
        ref, methods, ids, cats, psnr, ssim, summaries, comparisons, clean, estimates, degraded
    )
