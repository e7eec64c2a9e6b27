"""Unsupervised phase maps: k-means on the element maps, and HyperSpy's PCA + k-means baseline.

:func:`cluster` groups the pixels of a (ideally denoised) spectrum image by their element
abundances (:func:`~n2s_eds.segment.features.element_maps`). :func:`hyperspy_clusters` is the
baseline users know from HyperSpy: a Poisson-normalised SVD of the whole spectra, then
k-means on the decomposition scores. :func:`match_phases` renumbers an unsupervised map to
the phases of a reference map (the Hungarian assignment), for scoring.

Both return a ``Signal2D`` of ``(Y, X)`` phase indices on the scan's axes, phases numbered
by decreasing pixel count, with ``metadata.Segmentation`` saying how the map was made.

>>> from n2s_eds.segment.cluster import cluster
>>> phases = cluster(denoised, n_phases=3)  # doctest: +SKIP
>>> phases.metadata.Segmentation.phase_names  # doctest: +SKIP
['phase 0', 'phase 1', 'phase 2']
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
from hyperspy.signals import Signal2D
from scipy.cluster.vq import kmeans2
from scipy.optimize import linear_sum_assignment

from ..exceptions import InvalidInputError
from ..io.signals import is_lazy
from ..io.validation import NonIntegerCountsWarning, check_spectrum_image
from .features import element_maps, spectrum_image_shape
from .labels import phase_signal

__all__ = [
    "CLUSTER_METHODS",
    "CLUSTER_FEATURES",
    "HYPERSPY_PREPROCESSING",
    "cluster",
    "hyperspy_clusters",
    "match_phases",
]

#: Clustering algorithms of :func:`cluster`. (A Gaussian mixture would need scikit-learn,
#: which is not a dependency.)
CLUSTER_METHODS: tuple[str, ...] = ("kmeans",)

#: How :func:`cluster` turns the element maps into per-pixel features.
#:
#: ``"fractions"``: each element's share of the pixel's summed element counts, plus the
#: summed counts, every feature standardised (zero mean, unit variance over the scan);
#: ``"standardized"``: the element counts, standardised; ``"sqrt"``: the square roots of the
#: element counts, not rescaled (variance-stabilised raw Poisson counts: equal noise in
#: every feature).
CLUSTER_FEATURES: tuple[str, ...] = ("fractions", "standardized", "sqrt")

#: Score scalings of :func:`hyperspy_clusters`, as HyperSpy's ``cluster_analysis`` names
#: them: ``"norm"`` (each pixel's scores to unit length), ``"standard"`` (each score
#: standardised), ``None`` (as they are).
HYPERSPY_PREPROCESSING: tuple[str | None, ...] = ("norm", "standard", None)

_METHOD_TEXT = {"kmeans": "k-means"}
#: k-means restarts (k-means++ seeding each); the one of least inertia is kept.
_N_INIT = 10
_ITERATIONS = 50
_KMEANS2_RNG = "rng" if "rng" in inspect.signature(kmeans2).parameters else "seed"


def _check_n_phases(n_phases: Any, n_pixels: int) -> int:
    if isinstance(n_phases, bool) or not isinstance(n_phases, (int, np.integer)):
        raise InvalidInputError(f"n_phases must be an integer, got {n_phases!r}.")
    if not 2 <= int(n_phases) <= n_pixels:
        raise InvalidInputError(
            f"n_phases={int(n_phases)} must be at least 2 and at most the number of scan "
            f"pixels ({n_pixels})."
        )
    return int(n_phases)


def _standardize(a: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance (a constant column to zeros)."""
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _features(maps: np.ndarray, features: str) -> np.ndarray:
    """``(Y * X, n_features)`` float64 features of ``(C, Y, X)`` element maps."""
    counts = np.clip(maps.reshape(len(maps), -1).T.astype(np.float64), 0.0, None)
    if features == "sqrt":
        return np.sqrt(counts)
    if features == "standardized":
        return _standardize(counts)
    total = counts.sum(axis=1, keepdims=True)
    fractions = counts / np.where(total > 0, total, 1.0)
    return _standardize(np.hstack([fractions, total]))


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels of the rows of ``x``: the best of ``_N_INIT`` seeded k-means runs."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(_N_INIT):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an emptied cluster: that run loses anyway
            centroids, labels = kmeans2(
                x, k, iter=_ITERATIONS, minit="++", missing="warn", **{_KMEANS2_RNG: rng}
            )
        inertia = float(((x - centroids[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return np.asarray(best)


def _cluster_rows(x: np.ndarray, n_phases: int, seed: int) -> np.ndarray:
    """k-means labels of the rows of ``x``, renumbered by decreasing cluster size."""
    distinct = len(np.unique(x, axis=0))
    if distinct < n_phases:
        raise InvalidInputError(
            f"the scan holds only {distinct} distinct feature vectors, fewer than "
            f"n_phases={n_phases}; ask for at most {distinct} phases."
        )
    labels = _kmeans(x, n_phases, seed)
    sizes = np.bincount(labels, minlength=n_phases)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(n_phases, dtype=np.int64)
    rank[order] = np.arange(n_phases)
    return rank[labels]


def _phase_map(
    signal: Any, phases: np.ndarray, what: str, segmentation: dict[str, Any]
) -> Signal2D:
    n_phases = int(segmentation["n_phases"])
    names = [f"phase {k}" for k in range(n_phases)]
    return phase_signal(signal, phases, names, segmentation, how=f"{what}, {n_phases} phases")


def cluster(
    signal: Any,
    n_phases: int,
    *,
    method: str = "kmeans",
    features: str = "fractions",
    seed: int = 0,
) -> Signal2D:
    """Phases of a spectrum image found without labels, from its element abundances.

    Every pixel is described by its element counts (:func:`~n2s_eds.segment.features.
    element_maps`: the counts in each element's X-ray line windows), scaled as
    ``features`` says, and the pixels are grouped by k-means (k-means++ seeding, the best
    of 10 seeded runs by inertia). Pass a denoised spectrum image where possible: on raw
    counts at a few counts per pixel the element shares are mostly noise
    (``features="sqrt"`` suits raw counts best).

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        A spectrum image whose metadata name its elements or X-ray lines. Not modified.
    n_phases : int
        Number of phases to find, at least 2.
    method : {"kmeans"}
        The clustering algorithm (:data:`CLUSTER_METHODS`).
    features : {"fractions", "standardized", "sqrt"}
        How the element counts become features (:data:`CLUSTER_FEATURES`).
        ``"fractions"`` (each element's share of the pixel's element counts and the summed
        counts, all standardised) kept the phantoms' phases apart best on expected and
        smoothed counts.
    seed : int
        Seed of the k-means initialisation: the same seed gives the same map.

    Returns
    -------
    hyperspy.signals.Signal2D
        ``(Y, X)`` int64 phase indices on the spectrum image's scan axes, phase 0 the
        largest. ``metadata.Segmentation`` holds ``method``, ``n_phases``, ``phase_names``
        (``"phase 0"``, ...), ``features`` (the elements), ``feature_scaling`` and
        ``seed``.

    Raises
    ------
    InvalidInputError
        Not a spectrum image, no elements in its metadata, ``n_phases`` below 2 or above
        the number of pixels (or of distinct pixels), an unknown method or feature scaling.
    """
    if method not in CLUSTER_METHODS:
        extra = " (a Gaussian mixture would need scikit-learn)" if method == "gmm" else ""
        raise InvalidInputError(
            f"method={method!r} is not available{extra}; use one of {CLUSTER_METHODS}."
        )
    if features not in CLUSTER_FEATURES:
        raise InvalidInputError(
            f"features={features!r} is not known; use one of {CLUSTER_FEATURES}."
        )
    ny, nx = spectrum_image_shape(signal)
    n_phases = _check_n_phases(n_phases, ny * nx)
    with warnings.catch_warnings():
        # float (denoised) cubes are what this is for: no warning about raw counts.
        warnings.simplefilter("ignore", NonIntegerCountsWarning)
        elements, maps = element_maps(signal)
    labels = _cluster_rows(_features(maps, features), n_phases, int(seed))
    segmentation = {
        "method": method,
        "n_phases": n_phases,
        "features": list(elements),
        "feature_scaling": features,
        "seed": int(seed),
    }
    return _phase_map(signal, labels.reshape(ny, nx), _METHOD_TEXT[method], segmentation)


def hyperspy_clusters(
    signal: Any,
    n_phases: int,
    *,
    n_components: int | None = None,
    preprocessing: str | None = "norm",
    seed: int = 0,
) -> Signal2D:
    """The HyperSpy baseline: k-means on the scores of a Poisson-normalised SVD.

    On a copy of the spectrum image (the whole spectra, counts as they are),
    ``decomposition(normalize_poissonian_noise=True, algorithm="SVD")``, then k-means with
    ``n_phases`` clusters on the first ``n_components`` decomposition scores (loadings),
    scaled as ``preprocessing`` says: what ``s.cluster_analysis("decomposition",
    n_clusters=n_phases, preprocessing=..., number_of_components=...)`` does. HyperSpy's
    ``cluster_analysis`` needs scikit-learn, which is not a dependency, so the clustering
    step is the k-means of :func:`cluster` (k-means++, best of 10 seeded runs) and the
    scalings are computed here as scikit-learn's ``Normalizer`` / ``StandardScaler`` do.

    Parameters
    ----------
    signal : hyperspy.signals.Signal1D
        A spectrum image of non-negative values (elements are not needed). Not modified.
    n_phases : int
        Number of clusters, at least 2.
    n_components : int, optional
        Decomposition scores to cluster; ``n_phases + 1`` by default.
    preprocessing : {"norm", "standard", None}
        Scaling of the scores (:data:`HYPERSPY_PREPROCESSING`); HyperSpy documents
        ``"norm"`` as its default.
    seed : int
        Seed of the k-means initialisation.

    Returns
    -------
    hyperspy.signals.Signal2D
        As :func:`cluster`; ``metadata.Segmentation`` holds ``method``
        (``"hyperspy_svd_kmeans"``), ``n_phases``, ``phase_names``, ``features``
        (``"decomposition scores"``), ``n_components``, ``preprocessing`` and ``seed``.

    Raises
    ------
    InvalidInputError
        Not a spectrum image, negative or non-finite values, ``n_phases`` below 2 or above
        the number of pixels, ``n_components`` below 1 or above the number of pixels or
        channels, an unknown preprocessing.
    """
    if preprocessing not in HYPERSPY_PREPROCESSING:
        raise InvalidInputError(
            f"preprocessing={preprocessing!r} is not known; use one of {HYPERSPY_PREPROCESSING}."
        )
    ny, nx = spectrum_image_shape(signal)
    n_phases = _check_n_phases(n_phases, ny * nx)
    n_channels = int(signal.axes_manager.signal_axes[0].size)
    if n_components is None:
        n_components = n_phases + 1
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise InvalidInputError(f"n_components must be an integer, got {n_components!r}.")
    if not 1 <= int(n_components) <= min(ny * nx, n_channels):
        raise InvalidInputError(
            f"n_components={int(n_components)} must be at least 1 and at most the number of "
            f"pixels ({ny * nx}) and of channels ({n_channels})."
        )
    n_components = int(n_components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonIntegerCountsWarning)
        check_spectrum_image(signal, min_size=2)
    work = signal.deepcopy()
    if is_lazy(work):
        work.compute()
    work.change_dtype("float64")
    work.decomposition(normalize_poissonian_noise=True, algorithm="SVD", print_info=False)
    scores = np.asarray(work.learning_results.loadings)[:, :n_components].astype(np.float64)
    del work
    if preprocessing == "norm":
        norms = np.linalg.norm(scores, axis=1, keepdims=True)
        scores = scores / np.where(norms > 0, norms, 1.0)
    elif preprocessing == "standard":
        scores = _standardize(scores)
    labels = _cluster_rows(scores, n_phases, int(seed))
    segmentation = {
        "method": "hyperspy_svd_kmeans",
        "n_phases": n_phases,
        "features": "decomposition scores",
        "n_components": n_components,
        "preprocessing": "none" if preprocessing is None else preprocessing,
        "seed": int(seed),
    }
    return _phase_map(signal, labels.reshape(ny, nx), "HyperSpy SVD + k-means", segmentation)


def match_phases(pred: Any, truth: Any, n_phases: int) -> np.ndarray:
    """Renumber an unsupervised phase map so that its phases best match a reference map.

    The one-to-one assignment of predicted to reference phases that maximises the summed
    intersection over union (the Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`), so the mean IoU of the renumbered map is
    the best any renumbering reaches.

    Parameters
    ----------
    pred, truth : array_like or hyperspy.signals.Signal2D
        ``(Y, X)`` phase indices ``0 ... n_phases - 1`` (a signal's data is used).
    n_phases : int
        Number of phases of both maps.

    Returns
    -------
    numpy.ndarray
        int64 ``(Y, X)``: ``pred`` renumbered.

    Raises
    ------
    InvalidInputError
        Maps of different shapes, values outside ``0 ... n_phases - 1``.
    """
    p = np.asarray(getattr(pred, "data", pred))
    t = np.asarray(getattr(truth, "data", truth))
    if p.shape != t.shape:
        raise InvalidInputError(f"phase maps differ in shape: {p.shape} and {t.shape}.")
    n = int(n_phases)
    for name, a in (("pred", p), ("truth", t)):
        if a.size and (a.dtype.kind not in "iub" or a.min() < 0 or a.max() >= n):
            raise InvalidInputError(
                f"{name} must hold integer phase indices 0 ... {n - 1} (n_phases={n})."
            )
    p, t = p.astype(np.int64), t.astype(np.int64)
    joint = np.bincount((p * n + t).ravel(), minlength=n * n).reshape(n, n)
    union = joint.sum(axis=1)[:, None] + joint.sum(axis=0)[None, :] - joint
    iou = joint / np.where(union > 0, union, 1)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    lut = np.empty(n, dtype=np.int64)
    lut[rows] = cols
    return lut[p]
