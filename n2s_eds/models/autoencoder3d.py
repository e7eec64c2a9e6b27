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
    conditioned : bool
        The input's last channel holds the energy (keV) of every voxel's channel.
        The network then also sees the channel width (the energy step along the
        axis) and the log of the count scale, as constant channels: one set of
        weights serves cubes of any energy offset, channel width and dose.

    Every option but ``guide`` is mirrored, with its default, by
    :class:`~n2s_eds.models.options.Autoencoder3DOptions`, which checks them.

    Notes
    -----
    Input: ``(B, C, E, Y, X)`` with C = 1 (counts), 2 (counts, guide
    broadcast along energy), plus one energy channel when ``conditioned``.
    Output: ``(B, 1, E, Y, X)`` expected counts. Counts are divided by
    ``count_scale`` (the mean count per voxel, set by :meth:`adapt`, or given
    per sample to :meth:`forward`) on the way in and multiplied back on the way out.
    """

    def __init__(
        self,
        guide: bool = False,
        base_channels: int = Autoencoder3DOptions.base_channels,
        depth: int = Autoencoder3DOptions.depth,
        energy_stride: int = Autoencoder3DOptions.energy_stride,
        residual_blocks: int = Autoencoder3DOptions.residual_blocks,
        conditioned: bool = Autoencoder3DOptions.conditioned,
    ):
        super().__init__()
        Autoencoder3DOptions(  # checks every option (InvalidInputError)
            base_channels=base_channels,
            depth=depth,
            energy_stride=energy_stride,
            residual_blocks=residual_blocks,
            conditioned=conditioned,
        )
        self.guide = guide
        self.conditioned = bool(conditioned)
        self.base_channels = int(base_channels)
        self.residual_blocks = int(residual_blocks)
        self.depth = depth
        self.energy_stride = energy_stride
        in_ch = 1 + int(guide) + (3 if self.conditioned else 0)
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
        #: Energy (keV) of every channel of the cube of the last :meth:`adapt`, when given.
        self.register_buffer("energy_kev", torch.zeros(0), persistent=False)

    @property
    def receptive_radius(self) -> int:
        """Voxels of context one output voxel depends on, per axis (for tiling halos)."""
        return 4 * 2**self.depth + 4

    @torch.no_grad()
    def adapt(
        self,
        cube: Tensor,
        guide: Tensor | None = None,
        channel_ev: float | None = None,
        energy_kev: Tensor | None = None,
    ) -> None:
        """Set the input scale from a (E, Y, X) count cube (its mean count per voxel).

        ``energy_kev`` (E,) is the energy of each channel of ``cube``, kept as
        :attr:`energy_kev` for the callers that build a conditioned network's
        input. ``guide`` and ``channel_ev`` are accepted for the common interface.
        """
        self.count_scale.fill_(float(cube.float().mean().clamp_min(1e-6)))
        if energy_kev is not None:
            self.energy_kev = torch.as_tensor(energy_kev, dtype=torch.float32).to(
                self.count_scale.device
            )

    def _conditioning(self, energy: Tensor, scale: Tensor) -> Tensor:
        """Energy, channel width and count level as input channels, (B, 3, E, Y, X)."""
        e = energy / 10.0  # keV to about [0, 2]
        if energy.shape[2] > 1:
            step = (energy[:, :, 1:2] - energy[:, :, :1]) * 50.0  # a 20 eV channel gives 1
        else:
            step = torch.ones_like(energy[:, :, :1])
        level = torch.log10(scale).reshape(-1, 1, 1, 1, 1) / 3.0
        return torch.cat([e, step.expand_as(e), level.expand_as(e)], dim=1)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """Expected counts of a (B, C, E, Y, X) input.

        ``scale`` (B,), when given, is each sample's count scale instead of
        :attr:`count_scale` (batches drawn from several cubes).
        """
        check_input(x, self.guide, self.conditioned)
        shape = x.shape
        x, crop = pad_to_multiple(x, (self.energy_stride**self.depth, 2**self.depth, 2**self.depth))
        if scale is None:
            scale = self.count_scale.expand(x.shape[0])
        scale = scale.to(x.dtype).clamp_min(1e-6)
        scale5 = scale.reshape(-1, 1, 1, 1, 1)
        parts = [x[:, :1] / scale5]
        if self.guide:
            parts.append(x[:, 1:2])
        if self.conditioned:
            parts.append(self._conditioning(x[:, -1:], scale))
        h = self.stem(torch.cat(parts, dim=1))
        skips = [h]
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = self.bottleneck(skips.pop())
        for layer in self.up:
            h = F.gelu(layer(h) + skips.pop())
        out = F.softplus(self.head(h) + 0.5413) * scale5  # softplus(0.5413) = 1: the mean
        return out[crop].reshape(shape[0], 1, *shape[2:])
