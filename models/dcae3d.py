"""3-D convolutional autoencoder (3D-DCAE) for spectrum images.

References
----------
.. [Taylor] R. Taylor, Y. Chen, H. Zheng, N. D. Browning, "Deep learning-based blind
   denoising for enhancing energy-dispersive X-ray spectroscopy (EDS) images", Microscopy
   and Microanalysis (conference abstract): a 3-D convolutional autoencoder (encoder of
   3-D convolutions, intermediate residual block, bottleneck, decoder of 3-D transposed
   convolutions) trained Noise2Self-style on the noisy EDS cube itself, optionally with
   the HAADF image as an extra input.
.. [Batson2019] J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision",
   ICML 2019.
.. [He2015] K. He, X. Zhang, S. Ren, J. Sun, "Delving Deep into Rectifiers", ICCV 2015.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .dncnn import ConfigMixin

__all__ = ["DCAE3D"]

DCAE_KERNEL_SIZE = 3


class DCAE3D(ConfigMixin, nn.Module):
    """3-D convolutional autoencoder over (energy, row, column) [Taylor].

    Layout: ``forward(x)`` takes ``[B, C_in, E, H, W]`` (channel, then energy, row, column)
    and returns ``[B, C_out, E, H, W]`` for any ``E, H, W >= 1``: the input is
    replication-padded at the end of each axis to a multiple of the total stride
    (``energy_stride**levels`` along energy, ``spatial_stride**levels`` along rows and
    columns) and the output cropped back. The output is unconstrained (a pre-activation);
    the caller applies its link (e.g. softplus for count rates).

    Architecture. Stem: Conv 3x3x3 (``width`` channels) + ReLU. Encoder, ``levels`` times:
    a strided Conv 3x3x3 (stride ``energy_stride`` along energy, ``spatial_stride`` along rows
    and columns) doubling the channels, then Conv 3x3x3, each followed by ReLU. Intermediate
    residual block at the coarsest scale: ``h + Conv(ReLU(Conv(h)))`` [Taylor]. Bottleneck:
    Conv 1x1x1 to half the channels + ReLU; with ``spectral_context`` the bottleneck features
    averaged over the whole energy axis pass through a Conv 1x1x1 and are added back at every
    energy, so each output voxel sees the whole spectrum of its neighbourhood (the lines of
    one element lie keV apart, far beyond a local 3-D kernel). Decoder, ``levels`` times: a
    3-D transposed convolution (kernel = stride, so every output voxel has exactly one
    contribution and no checkerboard overlap) halving the channels + ReLU, the encoder
    features of that scale added (``skips``), Conv 3x3x3 + ReLU (Conv 1x1x1 at full
    resolution, where a 3x3x3 one would cost about 30 % of the whole network). Head: Conv 1x1x1 to
    ``out_channels``. No normalisation layers: eval and training mode compute the same
    function, and the network is small enough to train from a He initialisation [He2015].
    Convolution weights are stored channels-last (NDHWC), which oneDNN runs 2-4x faster on
    the CPU for these narrow layers.

    Receptive field (:meth:`receptive_field`): 41 px along rows and columns for the default
    ``levels=2, spatial_stride=2`` (17 px for ``levels=1``, 93 px for ``levels=3``); along
    energy it is the whole axis with ``spectral_context``, else
    :meth:`receptive_field_energy` channels.

    Parameter counts (``sum(p.numel() for p in m.parameters())``):

    - ``DCAE3D()``: 473,185 parameters
    - ``DCAE3D(in_channels=3, width=24)``: 1,064,281 parameters
    - ``DCAE3D(width=8, levels=1)``: 25,505 parameters
    - ``DCAE3D(levels=3)``: 1,961,633 parameters

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in (counts plus context such as a HAADF image broadcast along energy) and
        out, 1 to 16.
    width : int
        Channels at full resolution, 4 to 128; doubled at every level.
    levels : int
        Number of strided down-sampling steps (and transposed-convolution up-sampling steps),
        1 to 4.
    energy_stride, spatial_stride : int
        Stride of each down-sampling step along energy and along rows/columns, 1 to 2.
    skips : bool
        Add the encoder features of each scale to the decoder (as a U-Net, but additive).
    spectral_context : bool
        Global average over energy at the bottleneck, added back at every energy.
    """

    PARAM_RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "in_channels": (1, 16),
        "out_channels": (1, 16),
        "width": (4, 128),
        "levels": (1, 4),
        "energy_stride": (1, 2),
        "spatial_stride": (1, 2),
    }
    PARAM_WHY: ClassVar[dict[str, str]] = {
        "width": "channels at full resolution",
        "levels": "down-sampling steps",
    }

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        width: int = 16,
        levels: int = 2,
        energy_stride: int = 2,
        spatial_stride: int = 2,
        skips: bool = True,
        spectral_context: bool = True,
    ) -> None:
        super().__init__()
        self._store_config(locals())

        k, p = DCAE_KERNEL_SIZE, DCAE_KERNEL_SIZE // 2
        stride = (self.energy_stride, self.spatial_stride, self.spatial_stride)
        ch = [self.width * 2**i for i in range(self.levels + 1)]
        self.stem = nn.Conv3d(self.in_channels, ch[0], k, padding=p)
        self.down = nn.ModuleList(
            nn.ModuleList([nn.Conv3d(ch[i], ch[i + 1], k, stride=stride, padding=p),
                           nn.Conv3d(ch[i + 1], ch[i + 1], k, padding=p)])
            for i in range(self.levels)
        )
        deep = ch[-1]
        self.res1 = nn.Conv3d(deep, deep, k, padding=p)
        self.res2 = nn.Conv3d(deep, deep, k, padding=p)
        latent = deep // 2
        self.bottleneck = nn.Conv3d(deep, latent, 1)
        self.context = nn.Conv3d(latent, latent, 1) if self.spectral_context else None
        # Decoder lists run from the coarsest scale upwards.
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        c_prev = latent
        for i in reversed(range(self.levels)):
            self.up.append(nn.ConvTranspose3d(c_prev, ch[i], kernel_size=stride, stride=stride))
            # Pointwise at full resolution: a 3x3x3 convolution there costs 30 % of the network.
            km = k if i else 1
            self.merge.append(nn.Conv3d(ch[i], ch[i], km, padding=km // 2))
            c_prev = ch[i]
        self.head = nn.Conv3d(ch[0], self.out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # A small head starts the network near a constant output, which the caller sets
        # through head.bias (e.g. the mean count rate).
        nn.init.normal_(self.head.weight, std=0.01)
        self.to(memory_format=torch.channels_last_3d)

    def multiple(self) -> tuple[int, int]:
        """Sizes the input is padded to a multiple of: (energy, rows/columns)."""
        return self.energy_stride**self.levels, self.spatial_stride**self.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DCAE3D expects [B, {self.in_channels}, E, H, W], got shape {tuple(x.shape)}."
            )
        e_in, h_in, w_in = x.shape[-3:]
        me, ms = self.multiple()
        pe, ph, pw = -e_in % me, -h_in % ms, -w_in % ms
        if pe or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pe), mode="replicate")
        h = F.relu(self.stem(x))
        skips = [h]
        for conv_s, conv in self.down:
            h = F.relu(conv(F.relu(conv_s(h))))
            skips.append(h)
        skips.pop()
        h = h + self.res2(F.relu(self.res1(h)))
        h = F.relu(self.bottleneck(h))
        if self.context is not None:
            h = F.relu(h + self.context(h.mean(dim=2, keepdim=True)))
        for up, merge in zip(self.up, self.merge):
            h = F.relu(up(h))
            skip = skips.pop()
            if self.skips:
                h = h + skip
            h = F.relu(merge(h))
        out = self.head(h)
        return out[:, :, :e_in, :h_in, :w_in].contiguous()

    def _field(self, stride: int) -> int:
        """Exact receptive field along one axis with the given per-level stride.

        An output interval ``[a, b]`` is traced back to the input: a 3-wide convolution
        widens it by 1 on each side, a strided one maps it to ``[s·a - 1, s·b + 1]``, a
        transposed convolution with kernel = stride ``s`` reads coarse voxels
        ``[a // s, b // s]``, and a skip takes the union of both branches. Maximised over
        the output positions modulo the total stride.
        """
        half = DCAE_KERNEL_SIZE // 2

        def encoder(level: int, a: int, b: int) -> tuple[int, int]:
            # [a, b] at the output of `level`'s encoder block -> interval at the input.
            if level == 0:
                return a - half, b + half  # the stem
            a, b = a - half, b + half  # second convolution of the level
            a, b = stride * a - half, stride * b + half  # strided convolution
            return encoder(level - 1, a, b)

        def decoder(level: int, a: int, b: int) -> tuple[int, int]:
            # [a, b] at the output of the decoder block producing scale `level`.
            if level:
                a, b = a - half, b + half  # merge convolution (pointwise at full resolution)
            lo, hi = (encoder(level, a, b) if self.skips else (10**9, -(10**9)))
            ca, cb = a // stride, b // stride  # transposed convolution
            if level + 1 == self.levels:
                ca, cb = ca - 2 * half, cb + 2 * half  # residual block (the 1x1x1 are pointwise)
                deep = encoder(level + 1, ca, cb)
            else:
                deep = decoder(level + 1, ca, cb)
            return min(lo, deep[0]), max(hi, deep[1])

        period = stride**self.levels
        return max(b - a + 1 for a, b in (decoder(0, o, o) for o in range(period)))

    def receptive_field(self) -> int:
        """Side length in pixels (rows/columns) of the input window one output voxel sees."""
        return self._field(self.spatial_stride)

    def receptive_field_energy(self) -> int | None:
        """Channels along energy one output voxel sees; None for the whole axis
        (``spectral_context``)."""
        return None if self.spectral_context else self._field(self.energy_stride)

