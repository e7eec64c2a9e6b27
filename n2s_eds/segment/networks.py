"""The segmentation network: a pretrained 2D denoising UNet as a shared per-channel encoder,
and a small head that reads all channels' features together.

Every input channel (an element map, an image, a guide image) goes through the same trunk:
the enhancer's :class:`~n2s_eds.imaging.networks.SmallUNet` without its output convolution,
fed the channel over its robust scale and its noise map
(:func:`~n2s_eds.imaging.training.network_input`), exactly as when it was pretrained to
denoise. The trunk's full-resolution features of all channels are concatenated and the head
(a 3 x 3 convolution, GroupNorm, SiLU, a 1 x 1 convolution) turns them into one logit per
phase. Sharing the trunk across channels lets one set of pretrained weights serve scans with
any number of elements.
"""

from __future__ import annotations

import torch
from torch import nn

from ..exceptions import InvalidInputError
from ..imaging.enhancer import MapEnhancer, shipped_enhancer_path
from ..imaging.networks import SmallUNet
from ..pretrained import WEIGHTS_DIR

__all__ = ["ENCODERS", "SegmentationNet", "encoder_weights_path", "load_encoder"]

#: Pretrained encoders: name -> what they were trained for.
ENCODERS: dict[str, str] = {
    "denoiser": "the shipped scale-1 enhancer (denoising and deblurring, L1 + SSIM loss)",
    "pix2pix": "a Pix2Pix generator (denoising, L1 + patch-discriminator loss)",
}


def encoder_weights_path(encoder: str):
    """The shipped weights file of a pretrained encoder."""
    if encoder == "denoiser":
        return shipped_enhancer_path(1)
    if encoder == "pix2pix":
        return WEIGHTS_DIR / "pix2pix_x1.pt"
    raise InvalidInputError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}.")


class SegmentationNet(nn.Module):
    """Shared per-channel UNet trunk plus a phase head; see the module docstring.

    Parameters
    ----------
    n_channels : int
        Input channels of the scan (element maps, image, guide).
    n_phases : int
        Output phases.
    head_width : int
        Feature channels of the head's hidden layer.

    Notes
    -----
    Input ``(B, C, 2, H, W)`` (per channel: normalised image and noise map); output
    ``(B, n_phases, H, W)`` logits.
    """

    def __init__(self, n_channels: int, n_phases: int, head_width: int = 32) -> None:
        super().__init__()
        self.n_channels = int(n_channels)
        self.n_phases = int(n_phases)
        self.trunk = SmallUNet(scale=1)
        self.trunk.head = nn.Identity()  # the denoising output layer is not used
        width = self.trunk.up[-1].conv2.out_channels
        self.head = nn.Sequential(
            nn.Conv2d(width * self.n_channels, head_width, 3, padding=1),
            nn.GroupNorm(min(8, head_width), head_width),
            nn.SiLU(),
            nn.Conv2d(head_width, self.n_phases, 1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's full-resolution features of every channel, ``(B, C * width, H, W)``."""
        if x.ndim != 5 or x.shape[1] != self.n_channels or x.shape[2] != 2:
            raise InvalidInputError(
                f"the network takes (B, {self.n_channels}, 2, H, W), got {tuple(x.shape)}."
            )
        b, c = x.shape[:2]
        y, (h, w) = self.trunk.decode(x.flatten(0, 1))
        y = y[..., :h, :w]
        return y.reshape(b, c * y.shape[1], h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_encoder(net: SegmentationNet, encoder: str) -> None:
    """Copy a pretrained encoder's weights (:data:`ENCODERS`) into ``net``'s trunk.

    Raises
    ------
    InvalidInputError
        An unknown encoder, or one whose weights are not in this installation.
    """
    path = encoder_weights_path(encoder)
    if not path.is_file():
        raise InvalidInputError(
            f"the {encoder!r} encoder's weights ({path.name}) are not in this installation; "
            "pass pretrained=False to train from random weights."
        )
    source = MapEnhancer.load(path).net
    if not isinstance(source, SmallUNet):
        raise InvalidInputError(f"{path.name} does not hold a unet_small network.")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    net.trunk.load_state_dict(state, strict=True)
