"""The enhancer: a network trained on virtual-ablation pairs that denoises, deblurs and
up-samples 2D elemental and electron images.

>>> from n2s_eds.imaging import MapEnhancer
>>> enhancer = MapEnhancer.pretrained(scale=1)  # doctest: +SKIP
>>> sharp = enhancer.enhance(images)  # (H, W), (n, H, W) or a Signal2D  # doctest: +SKIP

:meth:`MapEnhancer.fit` trains under Lightning on pairs drawn on the fly
(:class:`~n2s_eds.imaging.training.AblationPairs`); :meth:`MapEnhancer.save` writes one file
(weights + JSON description, read back with ``torch.load(weights_only=True)``), written to a
temporary file and renamed; :meth:`MapEnhancer.pretrained` loads the weights shipped in the
package (``n2s_eds/weights/enhancer_x{scale}.pt``, model card ``MODEL_CARD.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..exceptions import InvalidInputError
from ..io.signals import is_signal
from ..serialization import package_version, read_format, write_model_file
from ..training import accelerator, fit_quietly
from .ablation import AblationSettings
from .losses import LossWeights
from .networks import ARCHITECTURES, build_network
from .training import AblationPairs, EnhancerModule, network_input
from .validation import as_image_stack, restore_shape

__all__ = ["MapEnhancer", "ENHANCER_FORMAT", "shipped_enhancer_path"]

ENHANCER_FORMAT = "n2s_eds.enhancer"
ENHANCER_FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_enhancer_path(scale: int) -> Path:
    """Path of the enhancer weights shipped for ``scale`` (it may not exist)."""
    return WEIGHTS_DIR / f"enhancer_x{int(scale)}.pt"


class MapEnhancer:
    """Denoise, deblur and up-sample 2D images with a network trained on virtual ablation.

    Parameters
    ----------
    architecture : {"unet_small", "unet_resnet34", "drln"}
        The network (:mod:`n2s_eds.imaging.networks`); ``"unet_small"`` is the shipped one.
    scale : {1, 2, 4}
        Up-sampling factor: 1 denoises and deblurs on the same grid.
    steps : int
        Optimiser steps of :meth:`fit`.
    batch_size : int
        Pairs per step.
    patch : int
        Side of the clean training crops (a multiple of ``scale``).
    lr : float
        Adam's initial learning rate (cosine decay to 2 % over ``steps``).
    loss : LossWeights, optional
        Weights of the L1, SSIM, perceptual and Gram terms.
    settings : AblationSettings, optional
        The acquisition the training pairs are drawn around (its dose, spot size, flicker and
        washout are varied, see :func:`~n2s_eds.imaging.training.vary_settings`).
    seed : int
        Seed of the weights' initialisation and of the training pairs.
    device : {"auto", "cpu", "cuda"}
        Where to train and run.
    """

    def __init__(
        self,
        architecture: str = "unet_small",
        scale: int = 1,
        *,
        steps: int = 2000,
        batch_size: int = 8,
        patch: int = 64,
        lr: float = 1e-3,
        loss: LossWeights | None = None,
        settings: AblationSettings | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if architecture not in ARCHITECTURES:
            raise InvalidInputError(
                f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
            )
        if scale not in (1, 2, 4):
            raise InvalidInputError(f"scale must be 1, 2 or 4, got {scale!r}.")
        if steps < 1 or batch_size < 1:
            raise InvalidInputError("steps and batch_size must be positive integers.")
        if patch % scale or patch < 8 * scale:
            raise InvalidInputError(
                f"patch {patch} must be a multiple of scale {scale} and at least {8 * scale}."
            )
        if device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
        self.architecture = architecture
        self.scale = int(scale)
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.patch = int(patch)
        self.lr = float(lr)
        self.loss = loss or LossWeights()
        self.settings = settings or AblationSettings()
        self.seed = int(seed)
        self.device = device
        self.net: torch.nn.Module | None = None
        self.history: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def fit(self, clean_images: Any, weights: Any = None) -> MapEnhancer:
        """Train on virtual-ablation pairs drawn from ``clean_images``.

        Parameters
        ----------
        clean_images : array_like or sequence of array_like
            Clean 2D images: one ``(H, W)``, a stack ``(n, H, W)``, or a list of images of
            any sizes (each at least 8 px a side), in any units (each is normalised by its
            own range first).
        weights : sequence of float, optional
            Relative probability of drawing each image (each image of a stack counts as
            one), e.g. to balance categories of unequal size; equal by default.

        Returns
        -------
        MapEnhancer
            ``self``, trained.

        Raises
        ------
        InvalidInputError
            Empty images, NaN or infinite values, negative values, or images under 8 px.
        """
        images = clean_images if isinstance(clean_images, (list, tuple)) else [clean_images]
        clean: list[np.ndarray] = []
        for im in images:
            stack, _ = as_image_stack(im, name="clean_images", min_size=8)
            if stack.min() < 0:
                raise InvalidInputError(
                    "clean_images: negative values; the acquisition model counts ions or "
                    "X-rays, so images must be non-negative (subtract a background first)."
                )
            for s in stack:
                lo, hi = float(s.min()), float(s.max())
                clean.append((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s))
        data = AblationPairs(  # checks the weights before the network is built
            clean,
            self.settings,
            scale=self.scale,
            patch=self.patch,
            seed=self.seed,
            weights=weights,
        )
        torch.manual_seed(self.seed)
        net = build_network(self.architecture, self.scale)
        module = EnhancerModule(net, self.loss, lr=self.lr, max_steps=self.steps)
        loader = DataLoader(data, batch_size=self.batch_size, num_workers=0)
        t0 = time.perf_counter()
        fit_quietly(module, loader, self.steps, self.device)
        self.net = module.net.cpu().eval()
        curve = module.curve
        self.history = {
            "steps": self.steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": float(np.mean(curve[-50:])) if curve else None,
            "images": len(clean),
        }
        return self

    # ----------------------------------------------------------------- inference
    def _require_fitted(self) -> torch.nn.Module:
        if self.net is None:
            raise InvalidInputError(
                "this MapEnhancer is not trained: call fit(clean_images), or use "
                "MapEnhancer.pretrained(scale) or MapEnhancer.load(path)."
            )
        return self.net

    def enhance_array(self, images: Any, batch: int = 4) -> np.ndarray:
        """Enhance one image ``(H, W)`` or a stack ``(n, H, W)``; returns the same rank,
        ``scale`` times larger, in the input's units."""
        net = self._require_fitted()
        stack, single = as_image_stack(images, name="images", min_size=4)
        if stack.min() < 0:
            raise InvalidInputError(
                "images: negative values; pass non-negative intensities (counts, counts/s)."
            )
        x, scl = network_input(stack)
        dev = torch.device("cuda" if accelerator(self.device) == "gpu" else "cpu")
        net = net.to(dev)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                out.append(net(x[i : i + batch].to(dev))[:, 0].float().cpu().numpy())
        res = np.concatenate(out) * scl[:, None, None]
        return restore_shape(np.maximum(res, 0).astype(np.float32), single)

    def enhance(self, images: Any) -> Any:
        """Enhance images: an array ``(H, W)`` / ``(n, H, W)`` or a HyperSpy ``Signal2D``.

        Parameters
        ----------
        images : numpy.ndarray or hyperspy.signals.Signal2D
            Non-negative images in any units (counts, counts/s, normalised intensity).

        Returns
        -------
        numpy.ndarray or hyperspy.signals.Signal2D
            ``scale`` times larger on both sides; a signal comes back as a new signal of the
            same class with its signal axes' scale divided by ``scale`` (offsets moved to the
            first fine pixel's centre), its metadata kept and
            ``metadata.Signal.Enhancement`` recording the enhancer. The input is not modified.

        Raises
        ------
        InvalidInputError
            Not trained; empty images, NaN, negative values; a signal without two signal axes.
        """
        self._require_fitted()
        if not is_signal(images):
            return self.enhance_array(images)
        return self.enhance_signal(images)

    def enhance_signal(self, signal: Any) -> Any:
        """:meth:`enhance` for a ``Signal2D`` (any navigation shape)."""
        if signal.axes_manager.signal_dimension != 2:
            raise InvalidInputError(
                f"expected a Signal2D (two signal axes), got {signal.axes_manager.signal_dimension}"
                " signal axes; use signal.as_signal2D((x, y)) to choose the image axes."
            )
        data = np.asarray(signal.data, dtype=np.float32)
        h, w = data.shape[-2:]
        res = self.enhance_array(data.reshape(-1, h, w))
        res = res.reshape(data.shape[:-2] + res.shape[-2:])
        out = signal._deepcopy_with_new_data(res)
        out.get_dimensions_from_data()
        for ax_in, ax_out in zip(
            signal.axes_manager.signal_axes, out.axes_manager.signal_axes, strict=True
        ):
            ax_out.scale = ax_in.scale / self.scale
            ax_out.offset = ax_in.offset - ax_in.scale / 2 + ax_out.scale / 2
        out.metadata.set_item("Signal.Enhancement", self.provenance())
        title = signal.metadata.get_item("General.title", "")
        out.metadata.set_item("General.title", f"{title} (enhanced x{self.scale})".strip())
        return out

    def provenance(self) -> dict[str, Any]:
        """What :meth:`enhance` records in a signal's metadata."""
        return {
            "method": "n2s_eds.imaging.MapEnhancer",
            "architecture": self.architecture,
            "scale": self.scale,
            "package_version": package_version(),
            "training": {k: v for k, v in self.history.items() if k != "curve"},
        }

    # ---------------------------------------------------------------- model files
    def describe(self) -> dict[str, Any]:
        """The JSON description a model file holds beside the weights."""
        return {
            "format": ENHANCER_FORMAT,
            "format_version": ENHANCER_FORMAT_VERSION,
            "package_version": package_version(),
            "architecture": self.architecture,
            "scale": self.scale,
            "options": {
                "steps": self.steps,
                "batch_size": self.batch_size,
                "patch": self.patch,
                "lr": self.lr,
                "seed": self.seed,
                "loss": dataclasses.asdict(self.loss),
                "settings": dataclasses.asdict(self.settings),
            },
            "training": self.history,
        }

    def save(self, path: str | os.PathLike, *, half: bool = False) -> Path:
        """Write the trained enhancer to one file (``half``: weights as float16).
        Returns the written path."""
        net = self._require_fitted()
        state = {
            k: (v.half() if half and v.is_floating_point() else v)
            for k, v in net.state_dict().items()
        }
        return write_model_file(path, self.describe(), state)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> MapEnhancer:
        """Read a file written by :meth:`save` (never unpickles objects).

        Raises
        ------
        InvalidInputError
            Missing, truncated or foreign files, or weights that do not fit.
        """
        path = Path(path)
        desc, state = read_format(
            path, ENHANCER_FORMAT, ENHANCER_FORMAT_VERSION, "enhancer", "MapEnhancer.save()"
        )
        opts = copy.deepcopy(desc["options"])
        enh = cls(
            desc["architecture"],
            int(desc["scale"]),
            steps=opts["steps"],
            batch_size=opts["batch_size"],
            patch=opts["patch"],
            lr=opts["lr"],
            loss=LossWeights(**opts["loss"]),
            settings=AblationSettings(**opts["settings"]),
            seed=opts["seed"],
            device=device,
        )
        net = build_network(enh.architecture, enh.scale)
        try:
            net.load_state_dict({k: v.float() for k, v in state.items()})
        except (RuntimeError, KeyError) as exc:
            raise InvalidInputError(f"the weights in {str(path)!r} do not fit: {exc}") from None
        enh.net = net.eval()
        enh.history = dict(desc.get("training", {}))
        return enh

    @classmethod
    def pretrained(cls, scale: int = 1, *, device: str = "cpu") -> MapEnhancer:
        """The enhancer shipped in the package for ``scale`` (see ``MODEL_CARD.md``).

        Raises
        ------
        InvalidInputError
            When no weights are shipped for ``scale``.
        """
        path = shipped_enhancer_path(scale)
        if not path.is_file():
            raise InvalidInputError(
                f"no enhancer weights are shipped for scale {scale!r}; shipped: "
                f"{sorted(p.name for p in WEIGHTS_DIR.glob('enhancer_x*.pt'))}. Train one "
                "with MapEnhancer(scale=...).fit(clean_images)."
            )
        return cls.load(path, device=device)
