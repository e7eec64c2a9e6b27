"""The design's network: a 3D denoising convolutional autoencoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_input, pad_to_multiple
from .options import Autoencoder3DOptions

__all__ = ["ConvAutoencoder3D"]


class _ResBlock3d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ConvAutoencoder3D(nn.Module):
    """3D denoising convolutional autoencoder over (energy, y, x).

    Successive strided 3D convolutions compress the cube (the energy axis by
    ``energy_stride`` and the scan axes by 2 at each level), a residual block
    sits before the bottleneck, and 3D transposed convolutions bring the
    features back to the full cube, with additive skip connections from the
    encoder. The output is a non-negative rate (softplus) in counts.

    Parameters
    ----------
    guide : bool
        Whether the input carries a guide-image channel (HAADF), i.e. whether
        ``forward`` receives 2 channels instead of 1.
    base_channels : int
        Feature channels at full resolution; doubled at each level.
    depth : int
        Number of down-sampling levels.
    energy_stride : int
        Down-sampling factor of the energy axis at each level.
    residual_blocks : int
        Residual blocks before the bottleneck.

    Every option but ``guide`` is mirrored, with its default, by
    :class:`~n2s_eds.models.options.Autoencoder3DOptions`, which checks them.

    Notes
    -----
    Input: ``(B, C, E, Y, X)`` with C = 1 (counts) or 2 (counts, guide
    broadcast along energy). Output: ``(B, 1, E, Y, X)`` expected counts.
    Counts are divided by ``count_scale`` (the mean count per voxel, set by
    :meth:`adapt`) on the way in and multiplied back on the way out.
    """

    def __init__(
        self,
        guide: bool = False,
        base_channels: int = Autoencoder3DOptions.base_channels,
        depth: int = Autoencoder3DOptions.depth,
        energy_stride: int = Autoencoder3DOptions.energy_stride,
        residual_blocks: int = Autoencoder3DOptions.residual_blocks,
    ):
        super().__init__()
        Autoencoder3DOptions(  # checks every option (InvalidInputError)
            base_channels=base_channels,
            depth=depth,
            energy_stride=energy_stride,
            residual_blocks=residual_blocks,
        )
        self.guide = guide
        self.depth = depth
        self.energy_stride = energy_stride
        in_ch = 2 if guide else 1
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = nn.Sequential(nn.Conv3d(in_ch, chans[0], 3, padding=1), nn.GELU())
        stride = (energy_stride, 2, 2)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(chans[i], chans[i + 1], 3, stride=stride, padding=1),
                nn.GELU(),
                nn.Conv3d(chans[i + 1], chans[i + 1], 3, padding=1),
                nn.GELU(),
            )
            for i in range(depth)
        )
        self.bottleneck = nn.Sequential(*[_ResBlock3d(chans[-1]) for _ in range(residual_blocks)])
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(chans[i + 1], chans[i], kernel_size=stride, stride=stride)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv3d(chans[0], 1, 1)
        self.register_buffer("count_scale", torch.tensor(1.0))

    @property
    def receptive_radius(self) -> int:
        """Voxels of context one output voxel depends on, per axis (for tiling halos)."""
        return 4 * 2**self.depth + 4

    @torch.no_grad()
    def adapt(
        self, cube: Tensor, guide: Tensor | None = None, channel_ev: float | None = None
    ) -> None:
        """Set the input scale from a (E, Y, X) count cube (its mean count per voxel).

        ``guide`` and ``channel_ev`` are accepted for the common interface and not used.
        """
        self.count_scale.fill_(float(cube.float().mean().clamp_min(1e-6)))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.guide)
        shape = x.shape
        x, crop = pad_to_multiple(x, (self.energy_stride**self.depth, 2**self.depth, 2**self.depth))
        scale = self.count_scale
        counts = x[:, :1] / scale
        h = torch.cat([counts, x[:, 1:]], dim=1) if self.guide else counts
        h = self.stem(h)
        skips = [h]
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = self.bottleneck(skips.pop())
        for layer in self.up:
            h = F.gelu(layer(h) + skips.pop())
        out = F.softplus(self.head(h) + 0.5413) * scale  # softplus(0.5413) = 1: starts at the mean
        return out[crop].reshape(shape[0], 1, *shape[2:])
