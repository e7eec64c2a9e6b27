"""The enhancer's networks: 2D image in, 2D image out, on the fine grid.

Every network takes ``(B, 2, h, w)``: the image, normalised by its robust scale, and a map
of its estimated noise level (:func:`n2s_eds.imaging.training.network_input`), so that one set
of weights serves images of any dose. It returns ``(B, 1, h * scale, w * scale)``:
the bicubic up-sampling of the image plus a learned correction (a global residual), so an
untrained network starts at bicubic interpolation.

* :class:`SmallUNet` (``"unet_small"``, the shipped architecture): a UNet whose encoder is
  four stages of residual basic blocks (the ResNet-18 block, narrower: 16 to 128 channels)
  and whose decoder is one convolution per stage.
* :class:`LaplacianSR` (``"drln"``): a residual super-resolution network after the densely
  residual Laplacian network (DRLN; Anwar & Barnes, IEEE TPAMI 44, 1192 (2022)): cascaded
  blocks of densely connected residual units, each block gated by Laplacian (multi-dilation)
  channel attention, a long skip, and sub-pixel (pixel-shuffle) up-sampling.
* ``"unet_resnet34"``: the published laser-ablation method's UNet with a ResNet-34 encoder,
  built by ``segmentation-models-pytorch`` (:func:`smp_unet`). No ImageNet weights can be
  downloaded here: the encoder starts from PyTorch's default (Kaiming-uniform) initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import InvalidInputError

__all__ = [
    "ARCHITECTURES",
    "SmallUNet",
    "LaplacianSR",
    "SmpUNet",
    "smp_unet",
    "build_network",
    "pad_multiple",
]

#: Architecture names accepted by :func:`build_network`.
ARCHITECTURES = ("unet_small", "unet_resnet34", "drln")


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic up-sampling by ``scale`` with pixel centres at block centres (identity at 1)."""
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def pad_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes up to a multiple of ``multiple``; return the old size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with a shortcut (ResNet's basic block), GroupNorm, SiLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(y)) + self.short(x))


class SmallUNet(nn.Module):
    """UNet with a narrow residual encoder; see the module docstring.

    Parameters
    ----------
    scale : int
        Up-sampling factor (1, 2 or 4); the image is up-sampled bicubically first and the
        UNet works on the fine grid.
    widths : tuple of int
        Channels of the encoder's stages (each after the first halves the grid).
    in_channels : int
        Image plus noise-level channel.
    """

    def __init__(
        self, scale: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = 2
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.multiple = 2 ** (len(widths) - 1)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        self.down = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.down.append(nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(BasicBlock(c + w, w))
            c = w
        self.head = nn.Conv2d(c, 1, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The last decoder stage's features of an input on the fine grid, on that grid
        reflect-padded to a multiple of :attr:`multiple`, and the unpadded ``(h, w)``."""
        x, (h, w) = pad_multiple(x, self.multiple)
        skips = []
        y = self.stem(x)
        for stage in self.down:
            y = stage(y)
            skips.append(y)
        for stage, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = stage(torch.cat([y, skip], dim=1))
        return y, (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample(x, self.scale)
        y, (h, w) = self.decode(x)
        return x[:, :1] + self.head(y)[..., :h, :w]


class LaplacianAttention(nn.Module):
    """Channel attention from the global mean through three dilated convolutions (3, 5, 7)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        r = max(channels // reduction, 4)
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, r, 3, padding=d, dilation=d) for d in (3, 5, 7)
        )
        self.fuse = nn.Conv2d(3 * r, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x, 1)
        g = torch.cat([F.relu(b(g)) for b in self.branches], dim=1)
        return x * torch.sigmoid(self.fuse(g))


class DenseResidualBlock(nn.Module):
    """Three residual units, each fed the concatenation of all before it, then attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        self.fuses = nn.ModuleList()
        for i in range(3):
            self.fuses.append(nn.Conv2d(channels * (i + 1), channels, 1))
            self.units.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, 3, 1, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels, 3, 1, 1),
                )
            )
        self.attention = LaplacianAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for fuse, unit in zip(self.fuses, self.units, strict=True):
            y = fuse(torch.cat(feats, dim=1))
            feats.append(F.relu(y + unit(y)))
        return x + self.attention(feats[-1])


class LaplacianSR(nn.Module):
    """DRLN-style residual super-resolution network; see the module docstring.

    Parameters
    ----------
    scale : int
        Up-sampling factor (1, 2 or 4); at 1 the network denoises and deblurs.
    channels : int
        Feature channels.
    blocks : int
        Cascaded dense residual blocks.
    in_channels : int
        Image plus noise-level channel.
    """

    def __init__(
        self, scale: int = 1, channels: int = 32, blocks: int = 4, in_channels: int = 2
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.head = nn.Conv2d(in_channels, channels, 3, 1, 1)
        self.body = nn.Sequential(*(DenseResidualBlock(channels) for _ in range(blocks)))
        self.body_end = nn.Conv2d(channels, channels, 3, 1, 1)
        ups: list[nn.Module] = []
        for _ in range(int(round(math.log2(self.scale)))):
            ups += [nn.Conv2d(channels, 4 * channels, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsampler = nn.Sequential(*ups)
        self.tail = nn.Conv2d(channels, 1, 3, 1, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = upsample(x[:, :1], self.scale)
        f = self.head(x)
        f = f + self.body_end(self.body(f))
        return base + self.tail(self.upsampler(f))


class SmpUNet(nn.Module):
    """A ``segmentation_models_pytorch.Unet`` on the bicubically up-sampled image, residual."""

    def __init__(self, unet: nn.Module, scale: int = 1) -> None:
        super().__init__()
        self.unet = unet
        self.scale = int(scale)
        self.multiple = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample(x, self.scale)
        base = x[:, :1]
        x, (h, w) = pad_multiple(x, self.multiple)
        return base + self.unet(x)[..., :h, :w]


def smp_unet(scale: int = 1, encoder: str = "resnet34", in_channels: int = 2) -> SmpUNet:
    """The published method's UNet (ResNet-34 encoder) from ``segmentation-models-pytorch``.

    The encoder starts from random weights (``encoder_weights=None``): ImageNet weights
    cannot be downloaded here. ``segmentation-models-pytorch`` needs ``torchvision``
    built for the installed torch (``pip install "n2s-eds[smp]"``).

    Raises
    ------
    InvalidInputError
        When ``segmentation-models-pytorch`` (or its ``torchvision``) cannot be imported.
    """
    try:
        import segmentation_models_pytorch as smp
    except Exception as err:  # ImportError, or torchvision's operators missing
        raise InvalidInputError(
            f"architecture 'unet_resnet34' needs segmentation-models-pytorch, which could not "
            f"be imported ({type(err).__name__}: {err}). Install it with a torchvision built "
            "for your torch (pip install 'n2s-eds[smp]'), or use architecture='unet_small'."
        ) from None
    unet = smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=1)
    seg = unet.segmentation_head[0]
    nn.init.zeros_(seg.weight)
    nn.init.zeros_(seg.bias)
    return SmpUNet(unet, scale)


def build_network(architecture: str, scale: int) -> nn.Module:
    """The network of an architecture name (:data:`ARCHITECTURES`) for an up-sampling factor.

    Raises
    ------
    InvalidInputError
        For an unknown name, a scale other than 1, 2 or 4, or ``"unet_resnet34"`` without
        ``segmentation-models-pytorch``.
    """
    if scale not in (1, 2, 4):
        raise InvalidInputError(f"scale must be 1, 2 or 4, got {scale!r}.")
    if architecture == "unet_small":
        return SmallUNet(scale)
    if architecture == "drln":
        return LaplacianSR(scale)
    if architecture == "unet_resnet34":
        return smp_unet(scale)
    raise InvalidInputError(
        f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
    )
