"""The denoisers as the benchmark runs them, in the order of the table."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from n2s_eds import baselines

from . import external
from .versions import code_version

__all__ = [
    "SUPERVISED_STEPS_FACTOR",
    "Method",
    "METHODS",
    "BASELINES",
    "GUIDED_BASELINES",
]


def _run_raw(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return signal


def _run_gaussian1(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.gaussian(signal, sigma=1.0)


def _run_gaussian2(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.gaussian(signal, sigma=2.0)


def _run_pca(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.pca(signal)


def _run_pca_gaussian(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.pca_gaussian(signal, sigma=1.0)


def _run_guided_filter(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.guided_filter(signal, guide)


def _run_bm3d(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.bm3d(signal, sigma=1.0)


def _run_bm4d(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    return baselines.bm4d(signal, sigma=1.0)


def _n2s_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k == "steps" and v is not None}


def _run_n2s(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    from n2s_eds import api

    return api.denoise(signal, seed=seed, progress=False, **_n2s_options(options))


def _run_n2s_guided(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    from n2s_eds import api

    return api.denoise(signal, haadf=guide, seed=seed, progress=False, **_n2s_options(options))


#: The supervised bound trains this many times the steps of the self-supervised row. On the
#: dose-20 phantom, 300 / 600 / 1200 supervised steps scored 17.11 / 17.19 / 17.26 dB (cube)
#: and 8.07 / 8.06 / 8.02 dB (maps): converged well before 4x the default 300.
SUPERVISED_STEPS_FACTOR = 4


def _run_n2s_supervised(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """The default network, masks and schedule trained against the truth (phantoms only)."""
    from n2s_eds import api

    steps = options.get("steps")
    if steps is None:
        steps = inspect.signature(api.Denoiser).parameters["steps"].default
    # every step is trained against the truth (no held-out stopping): the bound converges
    den = api.Denoiser(
        seed=seed, progress=False, steps=SUPERVISED_STEPS_FACTOR * int(steps), holdout=0.0
    )
    return den.fit(signal, target=options["target"]).denoise(signal)


def _run_dcae(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """The design's 3D autoencoder, trained from scratch on the cube by Noise2Self."""
    from n2s_eds import api

    opts = _n2s_options(options)
    return api.denoise(
        signal, seed=seed, progress=False, model="autoencoder3d", pretrained=False, **opts
    )


def _run_dcae_pretrained(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """The shipped pretrained 3D autoencoder applied as it is (no fine-tuning)."""
    from n2s_eds import api

    den = api.Denoiser(model="autoencoder3d", pretrained=True, steps=0, seed=seed, progress=False)
    return den.fit(signal).denoise(signal)


def _run_dcae_finetuned(signal: Any, guide: Any, seed: int, options: dict[str, Any]) -> Any:
    """The shipped pretrained 3D autoencoder fine-tuned on the cube by Noise2Self."""
    from n2s_eds import api

    opts = _n2s_options(options)
    return api.denoise(
        signal, seed=seed, progress=False, model="autoencoder3d", pretrained=True, **opts
    )


def _shipped_weights_version() -> str:
    """Hash of the shipped pretrained weights (they change the dcae_* results)."""
    import hashlib

    from n2s_eds.pretrained import shipped_weights

    path = shipped_weights("autoencoder3d")
    return "none" if path is None else hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Method:
    """A denoiser as the benchmark runs it.

    Attributes
    ----------
    name : str
        Row name.
    run : callable
        ``run(signal, guide, seed, options) -> signal``.
    sources : tuple
        Functions/modules whose code produces the result (with :attr:`run`): the code version.
    packages : tuple of str
        External distributions whose versions enter the code version.
    whole_package : bool
        The result depends on most of ``n2s_eds`` (the networks).
    cached : bool
        Cache the denoised cube on disk (slow methods).
    guided : bool
        Needs the case's guide image; skipped where there is none.
    uses_options : tuple of str
        Run options (``steps``) that change the result and so enter the cache key.
    needs_truth : bool
        Trains against the case's truth (given as ``options["target"]``); skipped where
        there is none (real data).
    needs_case : bool
        Gets the :class:`~harness.cases.Case` as ``options["case"]`` (its name, element
        windows and processing window).
    maps_only : bool
        Returns element maps ``(n_maps, Y, X)`` of the case's windows instead of a cube; the
        row's cube columns are NaN and its maps columns come from these maps.
    extra_version : callable or None
        ``extra_version() -> str``: what else enters the code version (an external script's
        hash and its environment's package versions).
    case_key : callable or None
        ``case_key(case) -> dict``: what else of the case (beyond the input cube, energy axis
        and guide) the result depends on, for the cache key (e.g. the metadata espm reads).
    """

    name: str
    run: Callable[[Any, Any, int, dict[str, Any]], Any]
    sources: tuple[Any, ...] = ()
    packages: tuple[str, ...] = ()
    whole_package: bool = False
    cached: bool = False
    guided: bool = False
    uses_options: tuple[str, ...] = ()
    needs_truth: bool = False
    needs_case: bool = False
    maps_only: bool = False
    extra_version: Callable[[], str] | None = None
    case_key: Callable[[Any], dict[str, Any]] | None = None

    def code_version(self) -> str:
        """The hash of the code behind this method's results.

        Taken once per process (at the first call; :func:`run_bench` calls it before it
        computes anything) and then kept: the source files may change on disk while a long
        run goes on, and the key must describe the code that was loaded, not the edits.
        """
        if self not in _CODE_VERSIONS:
            extra = self.extra_version() if self.extra_version is not None else ""
            _CODE_VERSIONS[self] = code_version(
                (self.run, *self.sources), self.packages, self.whole_package, extra
            )
        return _CODE_VERSIONS[self]


#: Method -> its code version, taken once per process (see :meth:`Method.code_version`).
_CODE_VERSIONS: dict[Method, str] = {}


_BASE_PACKAGES = ("numpy", "scipy")


def _network(name: str, run: Callable[..., Any], **kwargs: Any) -> Method:
    """A method that trains or applies a network of the package: its result depends on
    most of ``n2s_eds`` and on torch and lightning, and its cubes are cached."""
    packages = (*_BASE_PACKAGES, "torch", "lightning")
    return Method(name, run, packages=packages, whole_package=True, cached=True, **kwargs)


#: The methods, in the order of the table.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("raw", _run_raw),
        Method("gaussian1", _run_gaussian1, (baselines.gaussian,), _BASE_PACKAGES),
        Method("gaussian2", _run_gaussian2, (baselines.gaussian,), _BASE_PACKAGES),
        Method("pca", _run_pca, (baselines.pca,), (*_BASE_PACKAGES, "hyperspy")),
        Method(
            "pca_gaussian",
            _run_pca_gaussian,
            (baselines.pca_gaussian,),
            (*_BASE_PACKAGES, "hyperspy"),
        ),
        Method(
            "guided_filter",
            _run_guided_filter,
            (baselines.guided_filter,),
            _BASE_PACKAGES,
            guided=True,
        ),
        Method("bm3d", _run_bm3d, (baselines.bm3d,), (*_BASE_PACKAGES, "bm3d"), cached=True),
        Method("bm4d", _run_bm4d, (baselines.bm4d,), (*_BASE_PACKAGES, "bm4d"), cached=True),
        _network("n2s", _run_n2s, uses_options=("steps",)),
        _network("n2s_supervised", _run_n2s_supervised, uses_options=("steps",), needs_truth=True),
        _network("n2s_guided", _run_n2s_guided, guided=True, uses_options=("steps",)),
        # the design's 3D network: from scratch, pretrained only, pretrained + fine-tuned
        _network("dcae", _run_dcae, uses_options=("steps",)),
        _network("dcae_pretrained", _run_dcae_pretrained, extra_version=_shipped_weights_version),
        _network(
            "dcae_finetuned",
            _run_dcae_finetuned,
            uses_options=("steps",),
            extra_version=_shipped_weights_version,
        ),
        # espm: physics-guided NMF in its own environment (harness.external, the rule in
        # benchmarks/external/espm_runner.py); G @ W @ H as the denoised cube
        Method(
            "espm",
            external.run_espm,
            (external,),
            cached=True,
            needs_case=True,
            extra_version=external.espm_version,
            case_key=external.espm_case_key,
        ),
        # fused: element maps fused with the HAADF (multimodal-fusion defaults), maps only
        Method(
            "fused",
            external.run_fused,
            (external,),
            (*_BASE_PACKAGES, "multimodal-fusion"),
            guided=True,
            needs_case=True,
            maps_only=True,
        ),
    )
}
#: Methods counted as baselines in the n2s comparison (classical ones and espm).
BASELINES = ("gaussian1", "gaussian2", "pca", "pca_gaussian", "bm3d", "bm4d", "espm")
#: Baselines of the guided comparison (``n2s_guided`` against these; ``fused`` has maps only).
GUIDED_BASELINES = (*BASELINES, "guided_filter", "fused")
