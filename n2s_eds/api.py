"""The Python API: denoise a HyperSpy EDS spectrum image in one call.

``denoise(signal)`` trains a Noise2Self network on the cube itself and returns
a new signal of the same class, axes and metadata; :class:`Denoiser` holds
the same steps for reuse (fit on one cube, denoise others, save, load).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from .data import CubeDataModule, CubeSample
from .exceptions import InvalidInputError
from .inference import predict_cube
from .io import check_spectrum_image, match_guide, result_signal
from .models import MODELS, build_model
from .module import LOSSES, N2SModule
from .preprocess import (
    EnergyBinning,
    EnergyWindow,
    _box_sum_,
    bin_energy,
    channel_width_ev,
    energy_binning,
    processing_window,
    signal_to_cube,
    unbin_energy,
)

__all__ = ["denoise", "Denoiser", "prepare_cube", "normalise_guide", "PreparedCube"]

_log = logging.getLogger(__name__)

MODEL_FORMAT = "n2s_eds.model"
#: Newest model file format this version reads. Format 2 adds ``options.bin_ev``
#: (energy binning in eV); a model without binning is still written as format 1.
MODEL_FORMAT_VERSION = 2
#: Largest scan region (pixels per side) used for training on a lazy cube.
LAZY_TRAIN_SIDE = 128


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("n2s-eds")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


#: Pixels around a negative voxel that pay back what clipping adds to it (same channel).
CLIP_RADIUS_PX = 2
#: Rounds of that local payback before the rest is settled within each pixel.
CLIP_ITERATIONS = 4


def clip_keeping_counts(
    cube: np.ndarray, radius: int = CLIP_RADIUS_PX, iterations: int = CLIP_ITERATIONS
) -> np.ndarray:
    """Make expected counts non-negative, moving counts only within a channel and a few pixels.

    A low-rank estimate dips below 0 in channels with little signal; setting
    those values to 0 alone would add counts exactly where an element is
    absent (a positive bias of the weak element maps). Instead, the mass that
    clipping adds to a voxel is taken from the positive voxels of the same
    energy channel within ``radius`` pixels, in proportion to their values.
    This is repeated ``iterations`` times (values it drives below 0 are treated
    the same way); the little that is left is then taken from the same pixel's
    positive channels in proportion to their values. Every step keeps the
    total counts; an output voxel depends on inputs at most
    :func:`clip_reach` pixels away, so a cube cut into blocks with that margin
    gives the same result. Works in place on a (E, Y, X) cube.
    """
    radius = int(radius)
    work = cube.astype(np.float64)
    for _ in range(int(iterations)):
        neg = work < 0
        if not neg.any():
            break
        pos = np.where(neg, 0.0, work)
        near = _box_sum_(pos.copy(), radius)
        payable = neg & (near > 0)
        share = np.divide(-work, near, out=np.zeros_like(work), where=payable)
        work = np.where(payable | ~neg, pos - pos * _box_sum_(share, radius), work)
    total = work.sum(axis=0)
    pos = np.clip(work, 0.0, None)
    pos_sum = pos.sum(axis=0)
    scale = np.where(pos_sum > 0, np.clip(total, 0.0, None) / np.where(pos_sum > 0, pos_sum, 1), 0)
    cube[...] = pos * scale[None]
    return cube


def clip_reach(radius: int = CLIP_RADIUS_PX, iterations: int = CLIP_ITERATIONS) -> int:
    """Pixels of context :func:`clip_keeping_counts` uses around each output pixel."""
    return 2 * int(radius) * int(iterations)  # each round: the payers' and the debtors' windows


def normalise_guide(guide: np.ndarray) -> np.ndarray:
    """Robustly normalise a guide image: (g - median) / (10-90 % percentile spread)."""
    g = np.asarray(guide, dtype=np.float32)
    lo, med, hi = np.percentile(g, [10, 50, 90])
    spread = float(hi - lo)
    if spread <= 0:
        spread = float(g.std()) or 1.0
    return ((g - med) / spread).astype(np.float32)


@dataclass
class PreparedCube:
    """A spectrum image ready for the network.

    Attributes
    ----------
    cube : numpy.ndarray
        float32 counts (E, Y, X) inside the processing window.
    guide : numpy.ndarray or None
        Normalised guide image (Y, X) on the scan grid.
    window : EnergyWindow
        The processing window on the signal's energy axis.
    """

    cube: np.ndarray
    guide: np.ndarray | None
    window: EnergyWindow


def _central_region(ny: int, nx: int) -> tuple[slice, slice]:
    """The central scan region, at most LAZY_TRAIN_SIDE pixels a side, of a lazy cube."""
    sy, sx = min(ny, LAZY_TRAIN_SIDE), min(nx, LAZY_TRAIN_SIDE)
    y0, x0 = (ny - sy) // 2, (nx - sx) // 2
    return slice(y0, y0 + sy), slice(x0, x0 + sx)


def _check_signal_and_guide(
    signal: Any, haadf: Any, *, strict: bool, require_guide: bool
) -> np.ndarray | None:
    check_spectrum_image(signal, strict=strict)
    if require_guide and haadf is None:
        raise InvalidInputError(
            "this model was trained with a guide image (HAADF); pass it as `haadf=`, "
            "or train a model without one"
        )
    return None if haadf is None else match_guide(haadf, signal)


def prepare_cube(
    signal: Any,
    haadf: Any = None,
    *,
    low_kev: float = 0.2,
    high_kev: float | None = 20.0,
    require_guide: bool = False,
    strict: bool = False,
) -> PreparedCube:
    """Validate a spectrum image (and guide) and turn it into a count cube.

    Parameters
    ----------
    signal : exspy.signals.EDSSpectrum
        Spectrum image (eager; a lazy one is computed).
    haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
        Guide image of the same scan.
    low_kev, high_kev : float
        Processing window in keV (the upper edge is lowered to the beam energy).
    require_guide : bool
        Raise when no guide is given.
    strict : bool
        Non-integer counts raise instead of warning.

    Returns
    -------
    PreparedCube
    """
    guide = _check_signal_and_guide(signal, haadf, strict=strict, require_guide=require_guide)
    window = processing_window(signal, low_kev, high_kev)
    data = signal.data
    if hasattr(data, "compute"):
        data = data[..., window.slice].compute()
        cube = signal_to_cube(data)
    else:
        cube = signal_to_cube(data, window)
    return PreparedCube(cube, None if guide is None else normalise_guide(guide), window)


#: Half side (pixels) of the neighbourhood whose raw counts share binned counts among channels.
_UNBIN_RADIUS = 2


def _block_sizes(n: int, side: int) -> tuple[int, ...]:
    """Sizes of consecutive blocks of ``side`` pixels covering ``n`` (the last may be shorter)."""
    return tuple(min(side, n - i) for i in range(0, n, side))


def _split_sizes(blocks: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Split every block into nearly equal parts of about ``target`` pixels.

    No part straddles two blocks, so rechunking blocks into these parts only
    splits: every output chunk depends on a single block.
    """
    out: list[int] = []
    for size in blocks:
        parts = max(1, round(size / max(int(target), 1)))
        base, extra = divmod(size, parts)
        out.extend(base + (k < extra) for k in range(parts))
    return tuple(out)


def _profile(cube: np.ndarray, axis: int) -> np.ndarray:
    """The summed spectrum (float64) of a cube whose energy axis is ``axis``."""
    other = tuple(i for i in range(cube.ndim) if i != axis)
    return np.asarray(cube).sum(axis=other, dtype=np.float64)


@contextmanager
def _quiet_lightning(enabled: bool):
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    if enabled:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _accelerator(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return {"cuda": "gpu"}.get(device, device)


class Denoiser:
    """Self-supervised (Noise2Self) denoiser of EDS spectrum images.

    Parameters
    ----------
    model : {"prior_mixture", "autoencoder3d"}
        The network. ``"prior_mixture"`` (default) learns a spatially adaptive
        mixture of J-invariant spectral-spatial priors; ``"autoencoder3d"`` is
        the plain 3D convolutional autoencoder.
    model_options : dict, optional
        Extra constructor arguments of the network.
    steps : int
        Training steps.
    patch_size : int
        Spatial side of the training patches (pixels).
    energy_patch : int, "auto" or None
        Channels per training patch; ``"auto"``: all for ``prior_mixture``,
        128 for ``autoencoder3d``.
    batch_size : int
        Patches per step.
    mask_rate, mask_mode, replacement, loss, window_loss, window_channels
        Noise2Self masking and loss; see :class:`n2s_eds.module.N2SModule`.
        ``mask_mode="auto"`` hides whole spectra for ``prior_mixture`` (its
        weights must not see the hidden pixel) and single voxels for
        ``autoencoder3d``.
    lr : float
        Adam learning rate.
    holdout : float
        Fraction of the scan's pixels (drawn at random with ``seed``) that are
        never training targets. Every ``val_every`` steps, and before the first,
        the network predicts their hidden spectra (as in training, from the
        other pixels and their own other channels); later weights replace the
        kept ones only when their error is lower by more than two standard
        errors of the pixel-wise difference, and training stops after
        ``patience`` scores in a row without a lower error than any before. A
        network fitted to a noisy cube can fit its noise; the held-out
        pixels' counts are not in the fit, so their score measures the error
        against the expected counts. 0 trains all pixels for ``steps`` steps.
    val_every, patience : int
        Steps between held-out scores; scores without a lower error before stopping.
    low_kev, high_kev : float
        Processing window in keV; channels outside it are returned unchanged.
        The upper edge is lowered to the beam energy when that is lower.
    bin_ev : float or None
        Energy bin width in eV (``None``: no binning). The network then sees
        the window's channels summed into bins of ``round(bin_ev / channel
        width)`` channels (40 eV: 8 channels of 5 eV, 4 of 10 eV, 2 of 20 eV),
        which makes it faster and smaller on fine energy axes; its output is
        spread back onto the input's channels with
        :func:`n2s_eds.preprocess.unbin_energy`, keeping every pixel's counts
        in every bin, so the result stays on the input's energy axis. Set in
        eV, not channels, so that one saved model bins spectra of every
        instrument alike. Options counted in channels (``energy_patch``)
        then count bins.
    clip_negative : bool
        Make the result non-negative, paying back the counts this adds from the
        same energy channel within a few pixels, so that the element maps keep
        their counts (see :func:`clip_keeping_counts`).
    tile : int
        Spatial tile side for inference (pixels). A lazy cube is processed in
        blocks of this side (rounded up to the network's pixel grid), each read
        with a halo of the network's receptive radius: peak memory follows
        ``tile`` and the number of channels, not the scan size.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seed of everything random (weights, patches, masks).
    progress : bool
        Show progress bars.
    strict : bool
        Non-integer counts raise instead of warning.

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
        model_options: dict[str, Any] | None = None,
        steps: int = 300,
        patch_size: int = 32,
        energy_patch: int | str | None = "auto",
        batch_size: int = 4,
        mask_rate: float = 0.1,
        mask_mode: str = "auto",
        replacement: str = "local_mean",
        loss: str = "mse",
        window_loss: float = 0.0,
        window_channels: int = 16,
        lr: float = 1e-3,
        holdout: float = 0.1,
        val_every: int = 25,
        patience: int = 4,
        low_kev: float = 0.2,
        high_kev: float | None = 20.0,
        bin_ev: float | None = None,
        clip_negative: bool = True,
        tile: int = 128,
        device: str = "auto",
        seed: int = 0,
        progress: bool = True,
        strict: bool = False,
    ):
        if model not in MODELS:
            raise InvalidInputError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        if loss not in LOSSES:
            raise InvalidInputError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if window_loss < 0 or int(window_channels) < 1:
            raise InvalidInputError(
                f"window_loss must be >= 0 and window_channels >= 1, got {window_loss}, "
                f"{window_channels}"
            )
        if not 0 < mask_rate < 1:
            raise InvalidInputError(f"mask_rate must lie in (0, 1), got {mask_rate}")
        if int(steps) < 0:
            raise InvalidInputError(f"steps must be >= 0, got {steps}")
        if not 0 <= holdout < 1:
            raise InvalidInputError(f"holdout must lie in [0, 1), got {holdout}")
        if int(val_every) < 1 or int(patience) < 1:
            raise InvalidInputError(
                f"val_every and patience must be >= 1, got {val_every}, {patience}"
            )
        energy_binning(1, 1.0, bin_ev)  # checks bin_ev
        if energy_patch == "auto":
            energy_patch = None if model == "prior_mixture" else 128
        if mask_mode == "auto":
            mask_mode = getattr(MODELS[model], "default_mask_mode", "voxel")
        self.model = model
        self.model_options = dict(model_options or {})
        self.options = {
            "steps": int(steps),
            "patch_size": int(patch_size),
            "energy_patch": energy_patch,
            "batch_size": int(batch_size),
            "mask_rate": float(mask_rate),
            "mask_mode": mask_mode,
            "replacement": replacement,
            "loss": loss,
            "window_loss": float(window_loss),
            "window_channels": int(window_channels),
            "lr": float(lr),
            "holdout": float(holdout),
            "val_every": int(val_every),
            "patience": int(patience),
            "low_kev": float(low_kev),
            "high_kev": None if high_kev is None else float(high_kev),
            "bin_ev": None if bin_ev is None else float(bin_ev),
            "clip_negative": bool(clip_negative),
        }
        self.tile = int(tile)
        self.device = device
        self.seed = int(seed)
        self.progress = bool(progress)
        self.strict = bool(strict)
        self.net: torch.nn.Module | None = None
        self.guided: bool | None = None
        self.history: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def _new_net(self, guided: bool) -> torch.nn.Module:
        return build_model(self.model, guide=guided, **self.model_options)

    def _new_module(self, guided: bool) -> N2SModule:
        """A fresh network wired with this denoiser's masking, loss and optimizer."""
        opts = self.options
        return N2SModule(
            self._new_net(guided),
            mask_rate=opts["mask_rate"],
            mask_mode=opts["mask_mode"],
            replacement=opts["replacement"],
            loss=opts["loss"],
            window_loss=opts.get("window_loss", 0.0),
            window_channels=opts.get("window_channels", 16),
            optimizer=lambda params: torch.optim.Adam(params, lr=opts["lr"]),
        )

    def _binning(self, signal: Any, window: EnergyWindow) -> EnergyBinning:
        """The energy bins (set in eV by ``bin_ev``) of a signal's processing window."""
        return energy_binning(window.n_channels, channel_width_ev(signal), self.options["bin_ev"])

    @staticmethod
    def _net_channel_ev(signal: Any, binning: EnergyBinning) -> float:
        """Width in eV of one channel of the cube the network sees (after binning)."""
        return channel_width_ev(signal) * binning.factor

    def _train_cube(self, signal: Any, haadf: Any) -> PreparedCube:
        if not getattr(signal, "_lazy", False):
            return prepare_cube(
                signal,
                haadf,
                low_kev=self.options["low_kev"],
                high_kev=self.options["high_kev"],
                strict=self.strict,
            )
        # lazy: validate cheaply, then train on a central region of bounded size
        guide = _check_signal_and_guide(signal, haadf, strict=self.strict, require_guide=False)
        window = processing_window(signal, self.options["low_kev"], self.options["high_kev"])
        ys, xs = _central_region(*signal.data.shape[:2])
        block = signal.data[ys, xs, window.slice].compute()
        g = None if guide is None else normalise_guide(guide)[ys, xs]
        return PreparedCube(signal_to_cube(block), g, window)

    def fit(self, signal: Any, haadf: Any = None, *, target: Any = None) -> Denoiser:
        """Train the network on a spectrum image (Noise2Self: no clean data needed).

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum
            The noisy spectrum image (eager or lazy); it is not modified.
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            Guide image of the same scan; the network then takes it as an
            extra input channel.
        target : hyperspy.signals.BaseSignal or numpy.ndarray, optional
            Expected counts of ``signal`` (same shape), known only for
            simulated data. The hidden voxels are then scored against them
            instead of against the counts: the same network, masks and
            schedule with supervision, which the benchmark reports as the
            upper bound of self-supervised training. Eager signals only.

        Returns
        -------
        Denoiser
            ``self``, trained.
        """
        truth = None if target is None else self._target_array(signal, target)
        prepared = self._train_cube(signal, haadf)
        binning = self._binning(signal, prepared.window)
        counts = bin_energy(prepared.cube, binning)
        if truth is not None:
            truth = bin_energy(signal_to_cube(truth, prepared.window), binning)
        t0 = time.perf_counter()
        L.seed_everything(self.seed, workers=True, verbose=False)
        guided = prepared.guide is not None
        opts = self.options
        module = self._new_module(guided)
        cube_t = torch.from_numpy(counts)
        guide_t = None if prepared.guide is None else torch.from_numpy(prepared.guide)
        module.adapt(cube_t, guide_t, channel_ev=self._net_channel_ev(signal, binning), init=True)
        losses: list[float] = []
        selection = None
        if opts["steps"] > 0:
            held_out = self._held_out(counts.shape[1:])
            callbacks: list[L.Callback] = [_LossRecorder(losses)]
            if held_out is not None:
                selection = _HeldOutSelection(
                    counts,
                    prepared.guide,
                    truth,
                    held_out,
                    every=opts.get("val_every", 25),
                    patience=opts.get("patience", 4),
                    seed=self.seed,
                )
                callbacks.append(selection)
            dm = CubeDataModule(
                samples=[
                    CubeSample(
                        counts,
                        prepared.guide,
                        truth,
                        trainable=None if held_out is None else ~held_out,
                    )
                ],
                patch_size=opts["patch_size"],
                energy_patch=opts["energy_patch"],
                batch_size=opts["batch_size"],
                train_patches=opts["steps"] * opts["batch_size"],
                seed=self.seed,
            )
            self._train(module, dm, opts["steps"], callbacks=callbacks)
        self.net = module.net.cpu().eval()
        self.guided = guided
        self.history = {
            "train_seconds": round(time.perf_counter() - t0, 3),
            "steps": opts["steps"],
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "loss_curve": losses,
        }
        if selection is not None:
            self.history["held_out_curve"] = selection.curve
            self.history["best_step"] = selection.best_step
        return self

    def _held_out(self, scan: tuple[int, int]) -> np.ndarray | None:
        """(Y, X) booleans of the pixels held out of training (``None`` for none)."""
        frac = self.options.get("holdout", 0.0)
        n = int(round(frac * scan[0] * scan[1]))
        if n < 1:
            return None
        rng = np.random.default_rng([self.seed, 0x401D])
        flat = np.zeros(scan[0] * scan[1], dtype=bool)
        flat[rng.choice(flat.size, n, replace=False)] = True
        return flat.reshape(scan)

    @staticmethod
    def _target_array(signal: Any, target: Any) -> np.ndarray:
        """``target`` as a (Y, X, E) array checked against ``signal``, before any work."""
        if getattr(signal, "_lazy", False):
            raise InvalidInputError(
                "a training target needs an eager signal; call `signal.compute()` first"
            )
        data = np.asarray(getattr(target, "data", target), dtype=np.float64)
        shape = tuple(np.shape(signal.data))
        if data.shape != shape:
            raise InvalidInputError(
                f"target shape {data.shape} does not match the signal's data {shape}; pass "
                "the expected counts of the same spectrum image"
            )
        if not np.all(np.isfinite(data)) or data.min() < 0:
            raise InvalidInputError("target must hold finite, non-negative expected counts")
        return data

    def _train(
        self,
        module: N2SModule,
        datamodule: L.LightningDataModule,
        steps: int,
        callbacks: Sequence[L.Callback] = (),
    ) -> None:
        """Train ``module`` for ``steps`` steps as :meth:`fit` does: no logger, checkpoints
        or validation, Lightning's info messages off."""
        with _quiet_lightning(True):
            trainer = L.Trainer(
                max_steps=int(steps),
                max_epochs=-1,
                accelerator=_accelerator(self.device),
                devices=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=self.progress,
                enable_model_summary=False,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                callbacks=list(callbacks),
            )
            trainer.fit(module, datamodule=datamodule)

    # ------------------------------------------------------------------ inference
    def _require_fitted(self) -> torch.nn.Module:
        if self.net is None:
            raise RuntimeError("this Denoiser is not trained: call fit() or Denoiser.load() first")
        return self.net

    def _device(self) -> str:
        return "cuda" if _accelerator(self.device) == "gpu" else "cpu"

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
        prepared = prepare_cube(
            signal,
            haadf,
            low_kev=self.options["low_kev"],
            high_kev=self.options["high_kev"],
            require_guide=bool(self.guided),
            strict=self.strict,
        )
        if not self.guided:
            prepared.guide = None
        t0 = time.perf_counter()
        binning = self._binning(signal, prepared.window)
        counts = bin_energy(prepared.cube, binning)
        guide_t = None if prepared.guide is None else torch.from_numpy(prepared.guide)
        net.adapt(
            torch.from_numpy(counts), guide_t, channel_ev=self._net_channel_ev(signal, binning)
        )
        _fit_blend(net)
        out = predict_cube(
            net,
            counts,
            prepared.guide,
            tile=self.tile,
            device=self._device(),
            energy_tile=self._energy_tile(),
            progress=self.progress,
        )
        if self.options["clip_negative"]:
            clip_keeping_counts(out)
        if binning.factor > 1:
            out = unbin_energy(
                out,
                prepared.cube,
                binning,
                profile=_profile(prepared.cube, 0),
                radius=_UNBIN_RADIUS,
            )
        data = np.array(signal.data, dtype=np.float32, copy=True)
        data[..., prepared.window.slice] = np.moveaxis(out, 0, -1)
        return self._result(signal, data, prepared.window, binning, time.perf_counter() - t0)

    def _energy_tile(self) -> int | None:
        return None if self.model == "prior_mixture" else 256

    def _denoise_lazy(self, signal: Any, haadf: Any) -> Any:
        """Lazy result: blocks of ``tile`` pixels, each read with a halo of the receptive radius.

        Nothing here holds the whole cube: the per-cube data (spectral basis,
        within-bin profile) come from the central training region, and the
        returned signal's data is a dask graph in which every block is one
        independent task that reads its pixels plus a halo straight from the
        input (a small dask computation of its own), runs the network once
        and keeps its interior. No task shares input chunks with another, so
        dask never keeps input chunks, or halo strips cut from them, waiting
        for a neighbouring block (with ``map_overlap``, peak memory grew with
        the scan width); the price is that a halo, with the input chunks it
        cuts through, is read again for every block that needs it.
        """
        import dask.array as da

        net = self._require_fitted()
        guide = _check_signal_and_guide(
            signal, haadf, strict=self.strict, require_guide=bool(self.guided)
        )
        window = processing_window(signal, self.options["low_kev"], self.options["high_kev"])
        binning = self._binning(signal, window)
        t0 = time.perf_counter()
        src = signal.data
        ny, nx, ne = src.shape
        ys, xs = _central_region(ny, nx)
        region = signal_to_cube(src[ys, xs, window.slice].compute())
        gnorm = None if (guide is None or not self.guided) else normalise_guide(guide)
        net.adapt(
            torch.from_numpy(bin_energy(region, binning)),
            None if gnorm is None else torch.from_numpy(np.ascontiguousarray(gnorm[ys, xs])),
            channel_ev=self._net_channel_ev(signal, binning),
        )
        _fit_blend(net)  # once, here: the dask tasks only read it
        profile = _profile(region, 0)
        del region
        step = int(getattr(net, "tile_multiple", 1))
        clip = self.options["clip_negative"]
        # context of an interior pixel: the network's, then the clipping's, then unbinning's
        reach = (clip_reach() if clip else 0) + (_UNBIN_RADIUS if binning.factor > 1 else 0)
        halo = -(-(int(getattr(net, "receptive_radius", 16)) + reach) // step) * step
        # one block = one network tile, on the network's pixel grid (as predict_cube tiles an
        # eager cube, so both give the same result)
        side = -(-max(self.tile, 1) // step) * step
        device = self._device()
        e_tile = self._energy_tile()

        def block_task(block_info: dict | None = None) -> np.ndarray:
            (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
            hy0, hy1 = max(y0 - halo, 0), min(y1 + halo, ny)
            hx0, hx1 = max(x0 - halo, 0), min(x1 + halo, nx)
            block = np.asarray(src[hy0:hy1, hx0:hx1].compute(scheduler="synchronous"))
            iy, ix = slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0)
            out = block[iy, ix].astype(np.float32)  # channels outside the window: as they are
            raw = np.moveaxis(block[..., window.slice], -1, 0)  # (E, Y, X), input dtype
            g = None if gnorm is None else gnorm[hy0:hy1, hx0:hx1]
            res = predict_cube(
                net,
                bin_energy(raw, binning),
                g,
                tile=max(raw.shape[1:]),
                device=device,
                energy_tile=e_tile,
            )
            # the interior, with the margins that clipping and the within-bin profile need
            r = _UNBIN_RADIUS if binning.factor > 1 else 0
            if clip:
                m = r + clip_reach()
                ky = slice(max(iy.start - m, 0), min(iy.stop + m, raw.shape[1]))
                kx = slice(max(ix.start - m, 0), min(ix.stop + m, raw.shape[2]))
                part = clip_keeping_counts(np.ascontiguousarray(res[:, ky, kx]))
                res[:, ky, kx] = part
            cy = slice(max(iy.start - r, 0), min(iy.stop + r, raw.shape[1]))
            cx = slice(max(ix.start - r, 0), min(ix.stop + r, raw.shape[2]))
            res = np.ascontiguousarray(res[:, cy, cx])
            if binning.factor > 1:
                res = unbin_energy(
                    res, raw[:, cy, cx], binning, profile=profile, radius=_UNBIN_RADIUS
                )
            oy, ox = iy.start - cy.start, ix.start - cx.start
            res = res[:, oy : oy + y1 - y0, ox : ox + x1 - x0]
            out[..., window.slice] = np.moveaxis(res, 0, -1)
            return out

        blocks = [_block_sizes(n, side) for n in (ny, nx)]
        den = da.map_blocks(
            block_task,
            chunks=(blocks[0], blocks[1], (ne,)),
            dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
            # a unique name: dask need not tokenize (pickle) the closure with net and graph
            name=f"n2s-eds-denoise-{uuid.uuid4().hex}",
        )
        # output chunks about the input's, each inside one block: a pure split, no merging
        chunks = tuple(_split_sizes(b, c) for b, c in zip(blocks, src.chunksize[:2], strict=True))
        data = den.rechunk((*chunks, src.chunks[2]))
        return self._result(signal, data, window, binning, time.perf_counter() - t0)

    def _result(
        self,
        signal: Any,
        data: Any,
        window: EnergyWindow,
        binning: EnergyBinning,
        seconds: float,
    ) -> Any:
        net = self._require_fitted()
        params = {
            "package": "n2s_eds",
            "version": _version(),
            "model": self.model,
            "model_options": json.dumps(self.model_options),
            "guided": bool(self.guided),
            "energy_window_kev": [window.low_kev, window.high_kev],
            "energy_window_channels": [window.start, window.stop],
            "seed": self.seed,
            **{k: v for k, v in self.options.items() if v is not None},
            "train_seconds": self.history.get("train_seconds"),
            "final_loss": self.history.get("final_loss"),
            "inference_seconds": round(seconds, 3),
        }
        if binning.factor > 1:
            params["energy_bin_channels"] = binning.factor
            params["energy_bin_width_ev"] = round(binning.width_ev, 6)
        if hasattr(net, "rank"):
            params["spectral_rank"] = int(net.rank)
        if getattr(net, "blend_report", None):
            params["energy_blend"] = json.dumps(net.blend_report)
        out = result_signal(signal, data, "n2s_eds", {}, "n2s_eds denoised")
        out.metadata.set_item(
            "Signal.Denoising.parameters", {k: v for k, v in params.items() if v is not None}
        )
        return out

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        """The JSON-serialisable description saved beside the weights."""
        return {
            "format": MODEL_FORMAT,
            # format 1 readers do not know bin_ev: they must refuse a model that bins
            "format_version": 1 if self.options.get("bin_ev") is None else 2,
            "package_version": _version(),
            "model": self.model,
            "model_options": self.model_options,
            "guided": bool(self.guided),
            # bin_ev is left out when unset, so that format 1 readers load the file
            "options": {k: v for k, v in self.options.items() if k != "bin_ev" or v is not None},
            "seed": self.seed,
            "training": {k: v for k, v in self.history.items() if k != "loss_curve"},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Save the trained model: plain weights plus a JSON description, one file.

        The file loads with ``torch.load(weights_only=True)``: it holds only
        tensors and strings, never pickled objects. Written to a temporary file
        and renamed, so a crash leaves no half-written model.

        Parameters
        ----------
        path : str or os.PathLike
            Target file (conventionally ``.pt``).

        Returns
        -------
        pathlib.Path
        """
        net = self._require_fitted()
        path = Path(path)
        payload = {
            "description": json.dumps(self.describe()),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> Denoiser:
        """Load a model saved by :meth:`save` (never unpickles arbitrary objects).

        Parameters
        ----------
        path : str or os.PathLike
            The model file.
        **overrides
            Run-time options to change (``device``, ``tile``, ``progress``).

        Raises
        ------
        InvalidInputError
            When the file is missing, truncated, tampered with or not a model.
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"model file {str(path)!r} does not exist")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            desc = json.loads(payload["description"])
            state = payload["state_dict"]
        except Exception as exc:
            raise InvalidInputError(
                f"{str(path)!r} is not a readable n2s_eds model file ({type(exc).__name__}: "
                f"{exc}); it may be truncated or not made by Denoiser.save()"
            ) from None
        if desc.get("format") != MODEL_FORMAT:
            raise InvalidInputError(f"{str(path)!r} is not an n2s_eds model file")
        if desc.get("format_version", 0) > MODEL_FORMAT_VERSION:
            raise InvalidInputError(
                f"{str(path)!r} was written by a newer n2s_eds (format "
                f"{desc['format_version']}); upgrade n2s_eds to read it"
            )
        runtime = {
            k: overrides.pop(k) for k in ("device", "tile", "progress", "strict") if k in overrides
        }
        if overrides:
            raise TypeError(f"unexpected options: {sorted(overrides)}")
        opts = dict(desc["options"])
        den = cls(
            model=desc["model"],
            model_options=desc["model_options"],
            seed=desc.get("seed", 0),
            **opts,
            **runtime,
        )
        net = den._new_net(bool(desc["guided"]))
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise InvalidInputError(
                f"the weights in {str(path)!r} do not fit the described network: {exc}"
            ) from None
        den.net = net.eval()
        den.guided = bool(desc["guided"])
        den.history = dict(desc.get("training", {}))
        return den


class _HeldOutSelection(L.Callback):
    """Score the held-out pixels every ``every`` steps; keep the best weights, stop early.

    The held-out pixels' spectra are hidden exactly as in training and predicted;
    those pixels are never training targets (``CubeSample.trainable``), so the
    squared error of the predictions against their counts (or the target, when
    given) measures the network on data it was not fitted to. Later weights
    replace the kept ones only when their error is lower by more than
    :data:`HELD_OUT_Z` standard errors of the voxel-wise difference: a
    flat, noisy score keeps the earlier, simpler network. Training stops after
    ``patience`` scores in a row with no lower mean error than any before (a
    slow but steady fall keeps it going).
    """

    def __init__(
        self,
        counts: np.ndarray,
        guide: np.ndarray | None,
        target: np.ndarray | None,
        held_out: np.ndarray,
        every: int,
        patience: int,
        seed: int,
    ):
        self.batch = {"counts": torch.from_numpy(np.ascontiguousarray(counts))[None, None]}
        if guide is not None:
            self.batch["guide"] = torch.from_numpy(np.ascontiguousarray(guide))[None, None]
        if target is not None:
            self.batch["target"] = torch.from_numpy(np.ascontiguousarray(target))[None, None]
        self.mask = torch.from_numpy(held_out)[None, None, None].expand_as(self.batch["counts"])
        self.every, self.patience, self.seed = int(every), int(patience), int(seed)
        #: [step, mean squared error of the held-out voxels] of every score
        self.curve: list[list[float]] = []
        self.best_step = 0
        self._best: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._lowest = float("inf")
        self._waited = 0

    def _errors(self, module: N2SModule) -> torch.Tensor:
        """Per held-out pixel, the error of ``module``'s estimates of its spectrum as the
        training loss counts it: mean squared error of the channels, plus ``window_loss``
        times that of the energy-window sums (float64)."""
        dev = module.device
        batch = {k: v.to(dev) for k, v in self.batch.items()}
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            pred, ref = module.hidden_estimates(batch, self.mask.to(dev), generator=gen)
        module.train(was_training)
        n_channels = self.batch["counts"].shape[2]
        rows = (pred.double() - ref.double()).reshape(n_channels, -1).T  # (pixels, E)
        err = rows.pow(2).mean(dim=1)
        weight = float(module.hparams.get("window_loss", 0.0))
        if weight > 0:
            err = err + weight * module.window_errors(rows)
        return err.cpu()

    def _score(self, trainer, module) -> None:
        step = int(trainer.global_step)
        if self.curve and self.curve[-1][0] == step:
            return
        err = self._errors(module)
        self.curve.append([step, float(err.mean())])
        if self._best is None:
            better = True
        else:
            diff = err - self._best[0]
            se = float(diff.std()) / max(1.0, diff.numel()) ** 0.5
            better = float(diff.mean()) < -HELD_OUT_Z * se
        if better:
            state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            self._best, self.best_step = (err, state), step
        mean = float(err.mean())
        if mean < self._lowest:
            self._lowest, self._waited = mean, 0
        else:
            self._waited += 1
            if self._waited >= self.patience:
                trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        self._score(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._score(trainer, pl_module)
        if self._best is not None:
            pl_module.net.load_state_dict(self._best[1])


def _fit_blend(net: torch.nn.Module) -> None:
    """Fit the network's blend (``PriorMixture.fit_blend``), if it has one, on the cube it
    was just adapted to, before any tile is predicted."""
    if hasattr(net, "fit_blend"):
        net.fit_blend()


#: Standard errors by which a later held-out score must beat the kept one (see
#: :class:`_HeldOutSelection`).
HELD_OUT_Z = 2.0


class _LossRecorder(L.Callback):
    def __init__(self, sink: list[float]):
        self.sink = sink

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.sink.append(float(loss))


def denoise(
    signal: Any,
    haadf: Any = None,
    *,
    seed: int = 0,
    progress: bool = True,
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
        Show progress bars.
    **options
        Options of :class:`Denoiser` (``steps``, ``model``, ``loss``, ...).

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
