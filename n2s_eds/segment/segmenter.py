"""The segmenter: phase maps of a scan from a few labelled pixels.

>>> from n2s_eds.segment import Segmenter
>>> seg = Segmenter().fit(signal, labels)  # labels: (Y, X), -1 unlabelled  # doctest: +SKIP
>>> phases, probabilities = seg.predict(signal)  # doctest: +SKIP

The network (:class:`~n2s_eds.segment.networks.SegmentationNet`) starts from a 2D UNet
pretrained to denoise Poisson-noised images (``encoder="denoiser"``: the shipped scale-1
enhancer; ``"pix2pix"``: a generator pretrained adversarially) or, with
``pretrained=False``, from random weights, and is fine-tuned under Lightning on the
labelled pixels of the scan (:mod:`n2s_eds.segment.training`). :meth:`Segmenter.save`
writes one file (weights + JSON description) read back by :meth:`Segmenter.load`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from hyperspy.signals import Signal2D
from torch.utils.data import DataLoader

from ..exceptions import InvalidInputError
from ..serialization import load_weights, package_version, read_format, write_model_file
from ..training import fit_quietly
from .features import scan_channels
from .labels import check_labels, phase_signal, read_labels, scan_axes
from .networks import ENCODERS, SegmentationNet, load_encoder
from .training import SegmenterModule, SparseLabelBatches, scan_input

__all__ = ["Segmenter", "Segmentation", "SEGMENTER_FORMAT"]

SEGMENTER_FORMAT = "n2s_eds.segmenter"
SEGMENTER_FORMAT_VERSION = 1


class Segmentation(NamedTuple):
    """What :meth:`Segmenter.predict` returns.

    Attributes
    ----------
    phases : hyperspy.signals.Signal2D
        ``(Y, X)`` int phase indices on the scan's axes; ``metadata.Segmentation`` holds
        the phase names and how the map was made.
    probabilities : hyperspy.signals.Signal2D
        ``(n_phases | Y, X)`` float32: each phase's probability at every pixel (one image
        per phase along the navigation axis ``phase``).
    """

    phases: Any
    probabilities: Any


class Segmenter:
    """Segment a scan into phases from sparse labels; see the module docstring.

    Parameters
    ----------
    pretrained : bool
        Start the encoder from pretrained denoising weights (``encoder``); ``False``
        trains the same network from random weights.
    steps : int
        Optimiser steps of :meth:`fit`.
    encoder : {"denoiser", "pix2pix"}
        Which pretrained weights (:data:`~n2s_eds.segment.networks.ENCODERS`).
    batch_size : int
        Crops per step.
    patch : int
        Side of the training crops, in pixels.
    lr, trunk_lr : float
        AdamW learning rates of the head and of the pretrained trunk.
    seed : int
        Seed of the head's initialisation (and the trunk's when not pretrained) and of the
        training batches.
    device : {"cpu", "cuda", "auto"}
        Where to train and predict.
    """

    def __init__(
        self,
        pretrained: bool = True,
        steps: int = 100,
        *,
        encoder: str = "denoiser",
        batch_size: int = 4,
        patch: int = 64,
        lr: float = 1e-3,
        trunk_lr: float = 1e-4,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if encoder not in ENCODERS:
            raise InvalidInputError(
                f"unknown encoder {encoder!r}; choose one of {', '.join(sorted(ENCODERS))}."
            )
        if int(steps) < 1 or int(batch_size) < 1:
            raise InvalidInputError("steps and batch_size must be positive integers.")
        if int(patch) < 8:
            raise InvalidInputError(f"patch must be at least 8 pixels, got {patch!r}.")
        if not (lr > 0 and trunk_lr > 0):
            raise InvalidInputError("lr and trunk_lr must be positive.")
        if device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
        self.pretrained = bool(pretrained)
        self.steps = int(steps)
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.patch = int(patch)
        self.lr = float(lr)
        self.trunk_lr = float(trunk_lr)
        self.seed = int(seed)
        self.device = device
        self.net: SegmentationNet | None = None
        self.channel_names: tuple[str, ...] = ()
        self.phase_names: tuple[str, ...] = ()
        self.history: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def fit(
        self,
        signal: Any,
        labels: Any,
        haadf: Any = None,
        *,
        phase_names: Any = None,
        callbacks: list[L.Callback] | None = None,
    ) -> Segmenter:
        """Fine-tune on the labelled pixels of ``signal``.

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum or hyperspy.signals.Signal2D
            A spectrum image whose metadata name its elements (one input channel per
            element: the counts in its line windows), or one 2D image (HAADF, TEM, SEM).
        labels : array_like or path
            ``(Y, X)`` integers: ``k`` for a pixel of phase ``k``, ``-1`` unlabelled (a few
            clicks or scribbles per phase are enough); or a label file
            (:func:`~n2s_eds.segment.labels.read_labels`: in PNG/TIFF images 0 is
            unlabelled and ``k`` the phase ``k - 1``).
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            An image of the same scan (HAADF / Z-contrast), one more input channel.
        phase_names : sequence of str, optional
            One name per phase (default ``"phase 0"``, ``"phase 1"``, ...).
        callbacks : list of lightning.Callback, optional
            Passed to the Lightning trainer (e.g. to follow the map during training).

        Returns
        -------
        Segmenter
            ``self``, trained.

        Raises
        ------
        InvalidInputError
            A signal that is neither a spectrum image with elements nor a 2D image; labels
            of another shape, a phase without labelled pixels or a single phase; phase
            names that do not match the labels; pretrained weights missing. All before
            any training.
        """
        channels = scan_channels(signal, haadf)
        shape = channels.data.shape[1:]
        if isinstance(labels, (str, os.PathLike)):
            labels = read_labels(labels)
        names = tuple(str(n) for n in phase_names) if phase_names is not None else None
        if names is not None and len(set(names)) != len(names):
            raise InvalidInputError(f"phase_names repeat a name: {list(names)}.")
        labels, n_phases = check_labels(labels, shape, names)
        torch.manual_seed(self.seed)
        net = SegmentationNet(len(channels.names), n_phases)
        if self.pretrained:
            load_encoder(net, self.encoder)
        data = SparseLabelBatches(
            channels.data,
            channels.counts,
            labels,
            batch_size=self.batch_size,
            patch=self.patch,
            seed=self.seed,
        )
        module = SegmenterModule(net, lr=self.lr, trunk_lr=self.trunk_lr)
        module.scan = scan_input(channels.data)  # for callbacks that follow the full map
        t0 = time.perf_counter()
        fit_quietly(module, DataLoader(data, batch_size=None), self.steps, self.device, callbacks)
        self.net = module.net.cpu().eval()
        self.channel_names = channels.names
        self.phase_names = names or tuple(f"phase {k}" for k in range(n_phases))
        curve = module.curve
        self.history = {
            "steps": self.steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": float(np.mean(curve[-20:])) if curve else None,
            "labelled_pixels": int(np.count_nonzero(labels >= 0)),
            "labelled_per_phase": np.bincount(labels[labels >= 0], minlength=n_phases).tolist(),
        }
        return self

    # ----------------------------------------------------------------- inference
    def _require_fitted(self) -> SegmentationNet:
        if self.net is None:
            raise InvalidInputError(
                "this Segmenter is not trained: call fit(signal, labels) or Segmenter.load(path)."
            )
        return self.net

    def predict_proba(self, signal: Any, haadf: Any = None) -> np.ndarray:
        """Phase probabilities of every pixel, float32 ``(n_phases, Y, X)``."""
        net = self._require_fitted()
        channels = scan_channels(signal, haadf)
        if channels.names != self.channel_names:
            raise InvalidInputError(
                f"the segmenter was trained on the channels {list(self.channel_names)} but "
                f"this scan gives {list(channels.names)}; pass a scan with the same elements "
                "(and a guide image exactly when it was trained with one)."
            )
        with torch.no_grad():
            logits = net(scan_input(channels.data))
        return torch.softmax(logits, dim=1)[0].numpy().astype(np.float32)

    def predict(self, signal: Any, haadf: Any = None) -> Segmentation:
        """The phase map of ``signal`` and the per-pixel phase probabilities.

        Parameters
        ----------
        signal : exspy.signals.EDSSpectrum or hyperspy.signals.Signal2D
            A scan with the channels the segmenter was trained on (same elements).
        haadf : hyperspy.signals.Signal2D or numpy.ndarray, optional
            The guide image, exactly when :meth:`fit` had one.

        Returns
        -------
        Segmentation
            ``(phases, probabilities)`` signals; the input is not modified.

        Raises
        ------
        InvalidInputError
            Not trained, or a scan with other channels than the training scan.
        """
        proba = self.predict_proba(signal, haadf)
        phases = phase_signal(signal, proba.argmax(axis=0), self.phase_names, self.provenance())
        axes = [{"name": "phase", "size": len(self.phase_names), "units": ""}, *scan_axes(signal)]
        probabilities = Signal2D(proba, axes=axes)
        probabilities.metadata.General.title = f"{phases.metadata.General.title} (probabilities)"
        probabilities.metadata.Signal.quantity = "Probability"
        probabilities.metadata.set_item(
            "Segmentation", phases.metadata.Segmentation.as_dictionary()
        )
        return Segmentation(phases, probabilities)

    def provenance(self) -> dict[str, Any]:
        """What :meth:`predict` records in ``metadata.Segmentation``."""
        return {
            "method": "n2s_eds.segment.Segmenter",
            "pretrained": self.pretrained,
            "encoder": self.encoder if self.pretrained else None,
            "channels": list(self.channel_names),
            "package_version": package_version(),
            "training": dict(self.history),
        }

    # ---------------------------------------------------------------- model files
    def describe(self) -> dict[str, Any]:
        """The JSON description a model file holds beside the weights."""
        return {
            "format": SEGMENTER_FORMAT,
            "format_version": SEGMENTER_FORMAT_VERSION,
            "package_version": package_version(),
            "options": {
                "pretrained": self.pretrained,
                "steps": self.steps,
                "encoder": self.encoder,
                "batch_size": self.batch_size,
                "patch": self.patch,
                "lr": self.lr,
                "trunk_lr": self.trunk_lr,
                "seed": self.seed,
            },
            "channel_names": list(self.channel_names),
            "phase_names": list(self.phase_names),
            "training": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trained segmenter to one file (atomically). Returns the path."""
        net = self._require_fitted()
        return write_model_file(path, self.describe(), net.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> Segmenter:
        """Read a file written by :meth:`save` (never unpickles objects).

        Raises
        ------
        InvalidInputError
            Missing, truncated or foreign files, or weights that do not fit.
        """
        path = Path(path)
        desc, state = read_format(
            path, SEGMENTER_FORMAT, SEGMENTER_FORMAT_VERSION, "segmenter", "Segmenter.save()"
        )
        seg = cls(**desc["options"], device=device)
        seg.channel_names = tuple(desc["channel_names"])
        seg.phase_names = tuple(desc["phase_names"])
        net = SegmentationNet(len(seg.channel_names), len(seg.phase_names))
        state = {k: v.float() for k, v in state.items()}
        load_weights(net, state, f"the weights in {str(path)!r} do not fit")
        seg.net = net.eval()
        seg.history = dict(desc.get("training", {}))
        return seg
