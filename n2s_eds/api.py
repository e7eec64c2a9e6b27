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
from .preprocess import EnergyWindow, processing_window, signal_to_cube

__all__ = ["denoise", "Denoiser", "prepare_cube", "normalise_guide", "PreparedCube"]

_log = logging.getLogger(__name__)

MODEL_FORMAT = "n2s_eds.model"
MODEL_FORMAT_VERSION = 1
#: Largest scan region (pixels per side) used for training on a lazy cube.
LAZY_TRAIN_SIDE = 128


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("n2s-eds")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def clip_keeping_counts(cube: np.ndarray) -> np.ndarray:
    """Make expected counts non-negative while keeping each pixel's total.

    Negative values (a low-rank estimate can dip below 0 in empty channels)
    are set to 0, and the mass this adds is taken back from the same pixel's
    positive channels in proportion to their values, so the total counts of
    every spectrum are unchanged. Works in place on a (E, Y, X) cube.
    """
    pos = np.clip(cube, 0.0, None)
    total = cube.sum(axis=0, dtype=np.float64)
    pos_sum = pos.sum(axis=0, dtype=np.float64)
    scale = np.where(pos_sum > 0, np.clip(total, 0.0, None) / np.where(pos_sum > 0, pos_sum, 1), 0)
    np.multiply(pos, scale.astype(np.float32)[None], out=cube)
    return cube


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
    mask_rate, mask_mode, replacement, loss
        Noise2Self masking and loss; see :class:`n2s_eds.module.N2SModule`.
        ``mask_mode="auto"`` hides whole spectra for ``prior_mixture`` (its
        weights must not see the hidden pixel) and single voxels for
        ``autoencoder3d``.
    lr : float
        Adam learning rate.
    low_kev, high_kev : float
        Processing window in keV; channels outside it are returned unchanged.
    clip_negative : bool
        Make the result non-negative while keeping every pixel's total counts
        (see :func:`clip_keeping_counts`).
    tile : int
        Spatial tile side for inference.
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
        lr: float = 1e-3,
        low_kev: float = 0.2,
        high_kev: float | None = 20.0,
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
        if not 0 < mask_rate < 1:
            raise InvalidInputError(f"mask_rate must lie in (0, 1), got {mask_rate}")
        if int(steps) < 0:
            raise InvalidInputError(f"steps must be >= 0, got {steps}")
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
            "lr": float(lr),
            "low_kev": float(low_kev),
            "high_kev": None if high_kev is None else float(high_kev),
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

    def fit(self, signal: Any, haadf: Any = None) -> Denoiser:
        """Train the network on a spectrum image (Noise2Self: no clean data needed).

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum
            The noisy spectrum image (eager or lazy); it is not modified.
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            Guide image of the same scan; the network then takes it as an
            extra input channel.

        Returns
        -------
        Denoiser
            ``self``, trained.
        """
        prepared = self._train_cube(signal, haadf)
        t0 = time.perf_counter()
        L.seed_everything(self.seed, workers=True, verbose=False)
        guided = prepared.guide is not None
        net = self._new_net(guided)
        opts = self.options
        module = N2SModule(
            net,
            mask_rate=opts["mask_rate"],
            mask_mode=opts["mask_mode"],
            replacement=opts["replacement"],
            loss=opts["loss"],
            optimizer=lambda params: torch.optim.Adam(params, lr=opts["lr"]),
        )
        cube_t = torch.from_numpy(prepared.cube)
        guide_t = None if prepared.guide is None else torch.from_numpy(prepared.guide)
        module.adapt(cube_t, guide_t)
        losses: list[float] = []
        if opts["steps"] > 0:
            dm = CubeDataModule(
                samples=[CubeSample(prepared.cube, prepared.guide)],
                patch_size=opts["patch_size"],
                energy_patch=opts["energy_patch"],
                batch_size=opts["batch_size"],
                train_patches=opts["steps"] * opts["batch_size"],
                seed=self.seed,
            )
            recorder = _LossRecorder(losses)
            with _quiet_lightning(True):
                trainer = L.Trainer(
                    max_steps=opts["steps"],
                    max_epochs=-1,
                    accelerator=_accelerator(self.device),
                    devices=1,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=self.progress,
                    enable_model_summary=False,
                    limit_val_batches=0,
                    num_sanity_val_steps=0,
                    callbacks=[recorder],
                )
                trainer.fit(module, datamodule=dm)
        self.net = module.net.cpu().eval()
        self.guided = guided
        self.history = {
            "train_seconds": round(time.perf_counter() - t0, 3),
            "steps": opts["steps"],
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "loss_curve": losses,
        }
        return self

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
        net.adapt(torch.from_numpy(prepared.cube))
        out = predict_cube(
            net,
            prepared.cube,
            prepared.guide,
            tile=self.tile,
            device=self._device(),
            energy_tile=self._energy_tile(),
            progress=self.progress,
        )
        if self.options["clip_negative"]:
            clip_keeping_counts(out)
        data = np.array(signal.data, dtype=np.float32, copy=True)
        data[..., prepared.window.slice] = np.moveaxis(out, 0, -1)
        return self._result(signal, data, prepared.window, time.perf_counter() - t0)

    def _energy_tile(self) -> int | None:
        return None if self.model == "prior_mixture" else 256

    def _denoise_lazy(self, signal: Any, haadf: Any) -> Any:
        import dask.array as da

        net = self._require_fitted()
        guide = _check_signal_and_guide(
            signal, haadf, strict=self.strict, require_guide=bool(self.guided)
        )
        window = processing_window(signal, self.options["low_kev"], self.options["high_kev"])
        t0 = time.perf_counter()
        ny, nx = signal.data.shape[:2]
        ys, xs = _central_region(ny, nx)
        region = signal.data[ys, xs, window.slice].compute()
        net.adapt(torch.from_numpy(signal_to_cube(region)))
        step = int(getattr(net, "tile_multiple", 1))
        halo = -(-int(getattr(net, "receptive_radius", 16)) // step) * step
        inner = signal.data[..., window.slice].astype(np.float32)
        # chunks start on the network's pixel grid and are at least one halo wide
        chunks = []
        for n, c in zip((ny, nx), inner.chunksize[:2], strict=True):
            c = min(max(c, halo, 64), 256)
            c = -(-c // step) * step
            chunks.append(n if c >= n else c)
        inner = inner.rechunk((chunks[0], chunks[1], -1))
        depth = {0: halo if chunks[0] < ny else 0, 1: halo if chunks[1] < nx else 0, 2: 0}
        gnorm = None if (guide is None or not self.guided) else normalise_guide(guide)
        clip = self.options["clip_negative"]
        device = self._device()
        e_tile = self._energy_tile()

        def run(block: np.ndarray, guide_block: np.ndarray | None = None) -> np.ndarray:
            g = None if guide_block is None else np.asarray(guide_block[..., 0], np.float32)
            cube = np.moveaxis(np.asarray(block, np.float32), -1, 0)
            res = predict_cube(net, cube, g, tile=self.tile, device=device, energy_tile=e_tile)
            if clip:
                clip_keeping_counts(res)
            return np.moveaxis(res, 0, -1)

        arrays = [inner]
        if gnorm is not None:
            arrays.append(da.from_array(gnorm[..., None], chunks=(chunks[0], chunks[1], 1)))
        den = da.map_overlap(
            run,
            *arrays,
            depth=depth,
            boundary="none",
            dtype=np.float32,
            trim=True,
            align_arrays=False,
        )
        full = signal.data.astype(np.float32)
        data = da.concatenate(
            [full[..., : window.start], den, full[..., window.stop :]], axis=-1
        ).rechunk(signal.data.chunksize)
        return self._result(signal, data, window, time.perf_counter() - t0)

    def _result(self, signal: Any, data: Any, window: EnergyWindow, seconds: float) -> Any:
        net = self._require_fitted()
        params = {
            "package": "n2s_eds",
            "version": _version(),
            "model": self.model,
            "model_options": json.dumps(self.model_options),
            "guided": bool(self.guided),
            "energy_window_kev": [window.low_kev, window.high_kev],
            "seed": self.seed,
            **{k: v for k, v in self.options.items() if v is not None},
            "train_seconds": self.history.get("train_seconds"),
            "final_loss": self.history.get("final_loss"),
            "inference_seconds": round(seconds, 3),
        }
        if hasattr(net, "rank"):
            params["spectral_rank"] = int(net.rank)
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
            "format_version": MODEL_FORMAT_VERSION,
            "package_version": _version(),
            "model": self.model,
            "model_options": self.model_options,
            "guided": bool(self.guided),
            "options": self.options,
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
