"""The Python API: denoise a HyperSpy EDS spectrum image in one call.

``denoise(signal)`` trains a Noise2Self network on the cube itself and returns
a new signal of the same class, axes and metadata; :class:`Denoiser` holds the
same steps for reuse (fit on one cube, denoise others, save, load). It only
wires :mod:`~n2s_eds.preprocess`, :mod:`~n2s_eds.training`,
:mod:`~n2s_eds.inference`, :mod:`~n2s_eds.postprocess`,
:mod:`~n2s_eds.serialization` and :mod:`~n2s_eds.options`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from .inference import denoise_lazy, denoise_window
from .io import result_signal
from .models import MODELS, Autoencoder3DOptions, PriorMixtureOptions, build_model
from .module import N2SModule
from .options import (
    MaskingOptions,
    ProcessingOptions,
    RuntimeOptions,
    TrainingOptions,
)
from .options import model_options as typed_model_options
from .postprocess import provenance, summed_spectrum
from .preprocess import (
    EnergyBinning,
    EnergyWindow,
    bin_energies,
    bin_energy,
    central_region,
    channel_width_ev,
    check_signal_and_guide,
    energy_binning,
    normalise_guide,
    prepare_cube,
    prepare_training_cube,
    processing_window,
    signal_to_cube,
)
from .pretrained import load_pretrained, pretrained_description, use_pretrained
from .serialization import (
    load_weights,
    model_description,
    model_name,
    options_of_module,
    plain,
    read_checkpoint,
    read_model_file,
    write_model_file,
)
from .training import accelerator, check_target, interactive_output, train_on_cube
from .trust import MapsReport, record_trust, refine_signal, refine_signal_lazy

__all__ = ["denoise", "Denoiser"]

#: The keys of :attr:`Denoiser.options`, in the order model files and metadata list them.
FLAT_OPTIONS = (
    *("steps", "patch_size", "energy_patch", "batch_size"),
    *("mask_rate", "mask_mode", "replacement", "loss", "window_loss", "window_channels"),
    *("lr", "holdout", "val_every", "patience", "pretrained"),
    *("low_kev", "high_kev", "bin_ev", "clip_negative", "refine_maps"),
)
#: Options of a loaded model that may change at run time (they do not change the network).
RUNTIME_OVERRIDES = ("device", "tile", "progress", "strict")


class Denoiser:
    """Self-supervised (Noise2Self) denoiser of EDS spectrum images.

    Every keyword argument is a field of one of the option classes of
    :mod:`n2s_eds.options`, whose defaults these are; after construction they
    are held, validated, as :attr:`training`, :attr:`masking`,
    :attr:`processing` and :attr:`model_options` (print them to see every value).

    Parameters
    ----------
    model : {"prior_mixture", "autoencoder3d"}
        The network. ``"prior_mixture"`` (default) learns a spatially adaptive
        mixture of J-invariant spectral-spatial priors; ``"autoencoder3d"`` is
        the plain 3D convolutional autoencoder.
    model_options : PriorMixtureOptions, Autoencoder3DOptions or dict, optional
        The network's options (:class:`~n2s_eds.models.PriorMixtureOptions`,
        e.g. ``blend_ev``, the width of the energy blend;
        :class:`~n2s_eds.models.Autoencoder3DOptions`); a dict names fields of
        the model's class.
    steps, patch_size, energy_patch, batch_size, lr, holdout, val_every, patience
        Training: see :class:`~n2s_eds.options.TrainingOptions`. With
        ``holdout > 0`` a fraction of the pixels is never a training target;
        the weights that predict them best are kept and training stops when
        their error no longer falls.
    pretrained
        Start from the shipped network pretrained on simulated acquisitions and
        fine-tune it (``None``: when ``model`` has one, i.e. ``"autoencoder3d"``);
        its options and energy bins are then those of the shipped network.
    mask_rate, mask_mode, replacement, loss, window_loss, window_channels
        Noise2Self masking and loss: see :class:`~n2s_eds.options.MaskingOptions`.
    low_kev, high_kev, bin_ev, clip_negative, refine_maps
        The processing window, energy binning (eV) and count-keeping clipping:
        see :class:`~n2s_eds.options.ProcessingOptions`.
    tile, device, seed, progress, strict
        Run-time options: see :class:`~n2s_eds.options.RuntimeOptions`.
        Progress bars appear only on a terminal or in a notebook.

    Raises
    ------
    InvalidInputError
        For an unknown model or an invalid option, naming the option.

    Examples
    --------
    >>> from n2s_eds import Denoiser, simulate
    >>> ph = simulate.phantom(shape=(24, 24), n_channels=128, dose=20)
    >>> den = Denoiser(steps=5, progress=False).fit(ph.noisy)
    >>> out = den.denoise(ph.noisy)
    >>> out.data.shape == ph.noisy.data.shape
    True
    """

    def __init__(
        self,
        model: str = "prior_mixture",
        model_options: PriorMixtureOptions | Autoencoder3DOptions | dict[str, Any] | None = None,
        steps: int = TrainingOptions.steps,
        patch_size: int = TrainingOptions.patch_size,
        energy_patch: int | str | None = TrainingOptions.energy_patch,
        batch_size: int = TrainingOptions.batch_size,
        mask_rate: float = MaskingOptions.mask_rate,
        mask_mode: str = MaskingOptions.mask_mode,
        replacement: str = MaskingOptions.replacement,
        loss: str = MaskingOptions.loss,
        window_loss: float = MaskingOptions.window_loss,
        window_channels: int = MaskingOptions.window_channels,
        lr: float = TrainingOptions.lr,
        holdout: float = TrainingOptions.holdout,
        val_every: int = TrainingOptions.val_every,
        patience: int = TrainingOptions.patience,
        pretrained: bool | None = TrainingOptions.pretrained,
        low_kev: float = ProcessingOptions.low_kev,
        high_kev: float | None = ProcessingOptions.high_kev,
        bin_ev: float | None = ProcessingOptions.bin_ev,
        clip_negative: bool = ProcessingOptions.clip_negative,
        refine_maps: bool = ProcessingOptions.refine_maps,
        tile: int = RuntimeOptions.tile,
        device: str = RuntimeOptions.device,
        seed: int = RuntimeOptions.seed,
        progress: bool = RuntimeOptions.progress,
        strict: bool = RuntimeOptions.strict,
    ):
        #: The network's options.
        self.model_options = typed_model_options(model, model_options)
        self.model = model
        given = {k: v for k, v in locals().items() if k != "self"}
        asked = {} if model_options is None else self.model_options.to_dict()
        if pretrained is not False and use_pretrained(model, pretrained, asked, bin_ev):
            desc = pretrained_description(model)
            self.model_options = typed_model_options(model, desc["model_options"])
            given.update(pretrained=True, bin_ev=desc["options"].get("bin_ev"))
        else:
            given["pretrained"] = False
        if energy_patch == "auto":
            given["energy_patch"] = None if model == "prior_mixture" else 128
        if mask_mode == "auto":
            given["mask_mode"] = getattr(MODELS[model], "default_mask_mode", "voxel")
        #: Training options (``energy_patch`` resolved for the model).
        self.training = TrainingOptions(**{k: given[k] for k in TrainingOptions.field_names()})
        #: Masking options (``mask_mode`` resolved for the model).
        self.masking = MaskingOptions(**{k: given[k] for k in MaskingOptions.field_names()})
        #: Processing window, energy binning and clipping.
        self.processing = ProcessingOptions(
            **{k: given[k] for k in ProcessingOptions.field_names()}
        )
        runtime = RuntimeOptions(**{k: given[k] for k in RuntimeOptions.field_names()})
        self.tile = runtime.tile
        self.device = runtime.device
        self.seed = runtime.seed
        self.progress = runtime.progress
        self.strict = bool(runtime.strict)
        self.net: torch.nn.Module | None = None
        self.guided: bool | None = None
        self.history: dict[str, Any] = {}

    @property
    def options(self) -> dict[str, Any]:
        """Training, masking and processing options as one flat dict (a copy)."""
        merged = {**self.training.to_dict(), **self.masking.to_dict(), **self.processing.to_dict()}
        return {k: merged[k] for k in FLAT_OPTIONS}

    def __repr__(self) -> str:
        state = "untrained" if self.net is None else ("guided" if self.guided else "trained")
        return (
            f"Denoiser(model={self.model!r}, {state},\n  {self.model_options},\n  "
            f"{self.training},\n  {self.masking},\n  {self.processing},\n  "
            f"tile={self.tile}, device={self.device!r}, seed={self.seed})"
        )

    def _new_net(self, guided: bool) -> torch.nn.Module:
        if self.training.pretrained:
            return load_pretrained(self.model, guided)
        return build_model(self.model, guide=guided, **self.model_options.to_dict())

    def _new_module(self, guided: bool) -> N2SModule:
        """A fresh network wired with this denoiser's masking, loss and optimizer."""
        m, lr = self.masking, self.training.lr
        return N2SModule(
            self._new_net(guided),
            mask_rate=m.mask_rate,
            mask_mode=m.mask_mode,
            replacement=m.replacement,
            loss=m.loss,
            window_loss=m.window_loss,
            window_channels=m.window_channels,
            optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        )

    def _binning(self, signal: Any, window: EnergyWindow) -> EnergyBinning:
        """The energy bins (set in eV by ``bin_ev``) of a signal's processing window."""
        return energy_binning(window.n_channels, channel_width_ev(signal), self.processing.bin_ev)

    @staticmethod
    def _net_channel_ev(signal: Any, binning: EnergyBinning) -> float:
        """Width in eV of one channel of the cube the network sees (after binning)."""
        return channel_width_ev(signal) * binning.factor

    def fit(self, signal: Any, haadf: Any = None, *, target: Any = None) -> Denoiser:
        """Train the network on a spectrum image (Noise2Self: no clean data needed).

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum
            The noisy spectrum image (eager or lazy; a lazy one is trained on
            its central region of at most 128 x 128 pixels); it is not modified.
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            Guide image of the same scan; the network then takes it as an
            extra input channel.
        target : hyperspy.signals.BaseSignal or numpy.ndarray, optional
            Expected counts of ``signal`` (same shape; simulations, eager
            signals only): the hidden voxels are scored against them instead of
            the counts, the supervised upper bound of the same training.

        Returns
        -------
        Denoiser
            ``self``, trained.
        """
        truth = None if target is None else check_target(signal, target)
        p, t = self.processing, self.training
        prepared = prepare_training_cube(
            signal, haadf, low_kev=p.low_kev, high_kev=p.high_kev, strict=self.strict
        )
        binning = self._binning(signal, prepared.window)
        counts = bin_energy(prepared.cube, binning)
        if truth is not None:
            truth = bin_energy(signal_to_cube(truth, prepared.window), binning)
        t0 = time.perf_counter()
        L.seed_everything(self.seed, workers=True, verbose=False)
        guided = prepared.guide is not None
        module = self._new_module(guided)
        guide_t = None if prepared.guide is None else torch.from_numpy(prepared.guide)
        module.adapt(
            torch.from_numpy(counts),
            guide_t,
            channel_ev=self._net_channel_ev(signal, binning),
            init=True,
            energy_kev=torch.from_numpy(bin_energies(signal, prepared.window, binning)),
        )
        run = train_on_cube(
            module,
            counts,
            prepared.guide,
            truth,
            t,
            seed=self.seed,
            device=self.device,
            progress=self.progress,
        )
        losses = run.pop("loss_curve")
        self.net = module.net.cpu().eval()
        self.guided = guided
        self.history = {
            "train_seconds": round(time.perf_counter() - t0, 3),
            "steps": t.steps,
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "loss_curve": losses,
            **run,
        }
        return self

    def _require_fitted(self) -> torch.nn.Module:
        if self.net is None:
            raise RuntimeError("this Denoiser is not trained: call fit() or Denoiser.load() first")
        return self.net

    def _device(self) -> str:
        return "cuda" if accelerator(self.device) == "gpu" else "cpu"

    def _energy_tile(self) -> int | None:
        return None if self.model == "prior_mixture" else 256

    def _adapt(self, counts: np.ndarray, guide: np.ndarray | None, signal: Any,
               window: EnergyWindow, binning: EnergyBinning) -> None:  # fmt: skip
        """Set the network's per-cube data and fit its energy blend (if it has one)."""
        net = self._require_fitted()
        guide_t = None if guide is None else torch.from_numpy(np.ascontiguousarray(guide))
        extra = {}
        if getattr(net, "conditioned", False):
            extra["energy_kev"] = torch.from_numpy(bin_energies(signal, window, binning))
        channel_ev = self._net_channel_ev(signal, binning)
        net.adapt(torch.from_numpy(counts), guide_t, channel_ev=channel_ev, **extra)
        if hasattr(net, "fit_blend"):
            net.fit_blend()  # once, before any tile is predicted

    def denoise(self, signal: Any, haadf: Any = None) -> Any:
        """Denoise a spectrum image with the trained network.

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum
            Spectrum image (eager or lazy; a lazy one gives a lazy result,
            computed chunk by chunk with a halo of the network's receptive
            radius). It is not modified.
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            Guide image; required when the network was trained with one.

        Returns
        -------
        exspy.signals.EDSSpectrum
            A new signal of the same class, axes and metadata, float32 expected
            counts, with ``metadata.Signal.Denoising`` recording how.
        """
        net = self._require_fitted()
        if getattr(signal, "_lazy", False):
            return self._denoise_lazy(signal, haadf)
        p = self.processing
        prepared = prepare_cube(
            signal,
            haadf,
            low_kev=p.low_kev,
            high_kev=p.high_kev,
            require_guide=bool(self.guided),
            strict=self.strict,
        )
        guide = prepared.guide if self.guided else None
        t0 = time.perf_counter()
        binning = self._binning(signal, prepared.window)
        counts = bin_energy(prepared.cube, binning)
        self._adapt(counts, guide, signal, prepared.window, binning)
        out = denoise_window(
            net,
            counts,
            prepared.cube,
            guide,
            binning,
            clip=p.clip_negative,
            tile=self.tile,
            device=self._device(),
            energy_tile=self._energy_tile(),
            progress=self.progress and interactive_output(),
        )
        data = np.array(signal.data, dtype=np.float32, copy=True)
        data[..., prepared.window.slice] = np.moveaxis(out, 0, -1)
        report = refine_signal(signal, data, prepared.window, guide, p.refine_maps)
        seconds = time.perf_counter() - t0
        return self._result(signal, data, prepared.window, binning, seconds, report)

    def _denoise_lazy(self, signal: Any, haadf: Any) -> Any:
        """Lazy result (see :func:`n2s_eds.inference.denoise_lazy`): the network is adapted
        on the central region, then every block is an independent dask task."""
        p = self.processing
        guide = check_signal_and_guide(
            signal, haadf, strict=self.strict, require_guide=bool(self.guided)
        )
        window = processing_window(signal, p.low_kev, p.high_kev)
        binning = self._binning(signal, window)
        t0 = time.perf_counter()
        src = signal.data
        ys, xs = central_region(*src.shape[:2])
        region = signal_to_cube(src[ys, xs, window.slice].compute())
        gnorm = None if (guide is None or not self.guided) else normalise_guide(guide)
        self._adapt(
            bin_energy(region, binning),
            None if gnorm is None else gnorm[ys, xs],
            signal,
            window,
            binning,
        )
        profile = summed_spectrum(region, 0)
        del region
        data = denoise_lazy(
            self._require_fitted(),
            src,
            window,
            binning,
            gnorm,
            clip=p.clip_negative,
            profile=profile,
            tile=self.tile,
            energy_tile=self._energy_tile(),
            device=self._device(),
        )
        data, report = refine_signal_lazy(signal, data, window, gnorm, p.refine_maps)
        return self._result(signal, data, window, binning, time.perf_counter() - t0, report)

    def _result(self, signal: Any, data: Any, window: EnergyWindow, binning: EnergyBinning,
                seconds: float, maps: MapsReport | None = None) -> Any:  # fmt: skip
        """The denoised signal, with ``metadata.Signal.Denoising.parameters`` saying how
        and the trust report of the element maps (:func:`n2s_eds.trust.record_trust`)."""
        params = provenance(
            self._require_fitted(),
            model=self.model,
            model_options=self.model_options.to_dict(),
            guided=bool(self.guided),
            seed=self.seed,
            options=self.options,
            history=self.history,
            window=window,
            binning=binning,
            seconds=seconds,
        )
        out = result_signal(signal, data, "n2s_eds", {}, "n2s_eds denoised")
        out.metadata.set_item("Signal.Denoising.parameters", params)
        record_trust(out, self._require_fitted(), maps)
        return out

    def describe(self) -> dict[str, Any]:
        """The JSON-serialisable description saved beside the weights."""
        return model_description(
            self.model,
            self.model_options.to_dict(),
            self.guided,
            self.options,
            self.seed,
            self.history,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Save the trained model to ``path`` (conventionally ``.pt``): plain weights plus
        a JSON description, one file, read back with ``torch.load(weights_only=True)``;
        written to a temporary file and renamed (:mod:`n2s_eds.serialization`).
        Returns the written path."""
        net = self._require_fitted()
        return write_model_file(path, self.describe(), net.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> Denoiser:
        """Load a model file written by :meth:`save` (never unpickles arbitrary objects).

        ``overrides`` are run-time options to change (``device``, ``tile``,
        ``progress``, ``strict``). Raises :class:`InvalidInputError` when the file is
        missing, truncated, tampered with, not a model, or written by a newer
        version (the message names the format).
        """
        desc, state = read_model_file(path)
        runtime = {k: overrides.pop(k) for k in RUNTIME_OVERRIDES if k in overrides}
        if overrides:
            raise TypeError(f"unexpected options: {sorted(overrides)}")
        options = dict(desc["options"])
        pretrained = options.pop("pretrained", None)  # what it started from: a record only
        den = cls(
            model=desc["model"],
            model_options=desc["model_options"],
            seed=desc.get("seed", 0),
            pretrained=False,
            **options,
            **runtime,
        )
        den.training.pretrained = pretrained
        net = den._new_net(bool(desc["guided"]))
        load_weights(net, state, f"the weights in {str(path)!r} do not fit the described network")
        den.net = net.eval()
        den.guided = bool(desc["guided"])
        den.history = dict(desc.get("training", {}))
        return den

    @classmethod
    def from_module(
        cls,
        module: N2SModule,
        datamodule: L.LightningDataModule | dict[str, Any] | None = None,
        *,
        net_options: dict[str, Any] | None = None,
        lr: float | None = None,
        steps: int = 0,
        seed: int = 0,
        train_seconds: float | None = None,
    ) -> Denoiser:
        """Wrap the trained network of an :class:`~n2s_eds.module.N2SModule`.

        ``datamodule`` (a data module or its hyperparameters, as a checkpoint
        stores them) gives the patch shape and the processing window;
        ``net_options`` are the network's configured constructor arguments;
        ``lr``, ``steps`` and ``train_seconds`` are recorded only. The module's
        ``net`` must be a model of :mod:`n2s_eds.models`.
        """
        net = module.net
        kwargs = options_of_module(module, datamodule, lr=lr, steps=steps)
        options = {k: v for k, v in plain(net_options or {}).items() if k != "guide"}
        den = cls(model=model_name(net), model_options=options, seed=int(seed), **kwargs)
        den.net = net.cpu().eval()
        den.guided = bool(getattr(net, "guide", False))
        den.history = {"steps": int(steps), "train_seconds": train_seconds, "final_loss": None}
        return den

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        config: str | os.PathLike | None = None,
        *,
        device: str = RuntimeOptions.device,
        progress: bool = RuntimeOptions.progress,
    ) -> Denoiser:
        """A denoiser holding the network of a training checkpoint of ``n2s-eds fit``
        (e.g. ``runs/.../checkpoints/last.ckpt``).

        The network is described by the run's ``config.yaml`` (beside the
        ``checkpoints`` folder unless ``config`` names it); only networks of
        :mod:`n2s_eds.models` are built, and the checkpoint is read with
        ``weights_only=True`` (:func:`n2s_eds.serialization.read_checkpoint`).
        ``device`` and ``progress`` are run-time options. Raises
        :class:`InvalidInputError` when the checkpoint or its config is missing or
        unreadable, or the weights do not fit the configured network.
        """
        ck = read_checkpoint(checkpoint, config)
        den = cls.from_module(
            ck.module,
            ck.datamodule_hparams,
            net_options=ck.net_options,
            lr=ck.lr,
            steps=ck.steps,
            seed=ck.seed,
        )
        den.device = RuntimeOptions(device=device).device
        den.progress = bool(progress)
        return den


def denoise(
    signal: Any,
    haadf: Any = None,
    *,
    seed: int = RuntimeOptions.seed,
    progress: bool = RuntimeOptions.progress,
    **options: Any,
) -> Any:
    """Denoise an EDS spectrum image with a network trained on the image itself.

    Noise2Self: random voxels are hidden, the network learns to predict them
    from their spatial and spectral neighbourhood, and only then is the whole
    cube denoised. No clean reference is needed.

    Parameters
    ----------
    signal : exspy.signals.EDSTEMSpectrum or exspy.signals.EDSSEMSpectrum
        The noisy spectrum image (two scan axes, one energy axis; counts).
        Eager or lazy. It is never modified.
    haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
        HAADF / Z-contrast (or BSE) image of the same scan, used as a guide.
    seed : int
        Seed of all randomness: the same seed gives the same result on CPU.
    progress : bool
        Show progress bars (on a terminal or in a notebook only).
    **options
        Options of :class:`Denoiser` (``steps``, ``model``, ``model_options``,
        ``bin_ev``, ...; see :mod:`n2s_eds.options`).

    Returns
    -------
    exspy.signals.EDSSpectrum
        A new signal of the same class with the same axes and metadata,
        holding expected counts; ``metadata.Signal.Denoising`` records the
        method, options and timings. Channels outside the processing window
        (the zero peak, above the beam energy) are returned unchanged.

    Raises
    ------
    InvalidInputError
        For input that cannot be denoised, before any training starts.

    Examples
    --------
    >>> import hyperspy.api as hs
    >>> import n2s_eds
    >>> s = hs.load("core_shell.hspy")  # doctest: +SKIP
    >>> clean = n2s_eds.denoise(s)  # doctest: +SKIP
    """
    den = Denoiser(seed=seed, progress=progress, **options)
    return den.fit(signal, haadf).denoise(signal, haadf)
