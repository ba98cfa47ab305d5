"""Noise2SR network: a U-Net encoder and a super-resolving sub-pixel decoder.

References
----------
.. [Tian2024] X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, "Zero-Shot
   Image Denoising for High-Resolution Electron Microscopy", IEEE Trans. Comput. Imaging 10,
   1462-1475, 2024 (arXiv:2406.14264).
.. [Shi2016] W. Shi, J. Caballero, F. Huszar, J. Totz, A. P. Aitken, R. Bishop, D. Rueckert,
   Z. Wang, "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
   Convolutional Neural Network", CVPR 2016.
.. [Aitken2017] A. Aitken, C. Ledig, L. Theis, J. Caballero, Z. Wang, W. Shi, "Checkerboard
   artifact free sub-pixel convolution", arXiv:1707.02937, 2017.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .dncnn import ConfigMixin, init_relu_network, zero_head
from .unet import UNet

__all__ = ["Noise2SR"]

# [Tian2024]: the decoder is a sub-pixel convolution (3x3 convolution to
# scale**2 times the channels, then a pixel shuffle [Shi2016]) followed by pointwise layers.
SUBPIXEL_KERNEL_SIZE = 3
# Slope of the leaky ReLU after the pixel shuffle (as in the code released with [Tian2024]).
LEAKY_SLOPE = 0.1


class Noise2SR(ConfigMixin, nn.Module):
    """Super-resolving denoiser of Noise2SR [Tian2024].

    Layout: ``forward(x)`` takes a sub-sampled image ``[B, C_in, h, w]`` (one pixel of every
    ``scale x scale`` cell of the noisy image, see :mod:`emcore.methods.self_supervised`) and
    returns ``[B, C_out, scale * h, scale * w]``, the estimate of the full-resolution clean
    image, for any ``h, w >= 1``. Unlike the models listed in ``models.__all__`` the output
    is ``scale`` times larger than the input, so this class is not under their
    size-preserving contract; it follows the rest of it (``PARAM_RANGES``, ``config`` /
    ``from_config``, ``receptive_field``, parameter counts below).

    Architecture: a :class:`~models.unet.UNet` encoder (``scales``, ``base``) whose 1x1 head
    gives ``features`` channels at the sub-sampled resolution; a 3x3 convolution (replication
    padding) to ``features * scale**2`` channels and a pixel shuffle by ``scale`` (sub-pixel
    convolution [Shi2016]), leaky ReLU (slope 0.1), then a 1x1 convolution ``features ->
    features``, ReLU and a 1x1 convolution to ``out_channels`` (``head``). The sub-pixel
    convolution starts from the ICNR initialisation of [Aitken2017] (all ``scale**2``
    sub-pixel filters equal, i.e. nearest-neighbour upsampling), which avoids checkerboard
    artefacts at the start of training. The released code of [Tian2024] uses a 5-pooling
    U-Net with 48 channels and a 3x3 convolution after the shuffle; here the U-Net is the
    project's (batch norm, bilinear upsampling) and every layer after the shuffle is
    pointwise, which keeps the full-resolution part cheap on a CPU.

    ``bias=False`` removes every additive constant (bias-free U-Net and convolutions); the
    leaky ReLU and the pixel shuffle are positively homogeneous, so in eval mode
    ``f(a x) = a f(x)`` for ``a > 0``.

    Receptive field (:meth:`receptive_field`, in input pixels, i.e. sub-sampling cells):
    the U-Net's plus 2, 118 px for the default ``scales=4``; an output pixel of the full
    image depends on ``scale * receptive_field()`` = 236 px of it (default).

    Parameter counts (``sum(p.numel() for p in m.parameters())``):

    - ``Noise2SR()``: 1,836,737 parameters
    - ``Noise2SR(base=16, features=16)``: 460,129 parameters (the ``fast`` preset of ``noise2sr``)
    - ``Noise2SR(scales=5)``: 7,279,809 parameters (the ``quality`` preset; field 238 px)
    - ``Noise2SR(scales=5, base=48, features=64)``: 16,441,233 parameters

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out (1 to 256).
    scale : int
        Super-resolution factor, the side of a sub-sampling cell, 2 to 4 ([Tian2024]: 2).
    scales : int
        Number of U-Net resolutions, 2 to 6.
    base : int
        U-Net channels at full (sub-sampled) resolution, 16 to 128.
    features : int
        Channels handed from the encoder to the decoder, 8 to 256.
    bias : bool
        ``False`` gives the bias-free network.
    prior : bool
        The last input channel is a prior estimate of the clean image at the sub-sampled
        resolution (the workbench feeds the Wiener filter of the sub-sampled image: it sees only
        the kept pixels, so the training stays blind to the pixels the loss is taken on); the
        output is that prior, bilinearly brought to the full grid, plus a learned correction
        whose head starts at zero.
    """

    PARAM_RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "in_channels": (1, 256),
        "out_channels": (1, 256),
        "scale": (2, 4),
        "scales": (2, 6),
        "base": (16, 128),
        "features": (8, 256),
    }
    PARAM_WHY: ClassVar[dict[str, str]] = {
        "scale": "super-resolution factor",
        "scales": "number of U-Net resolutions",
        "base": "U-Net channels at full resolution",
        "features": "encoder output channels",
    }

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 2,
        scales: int = 4,
        base: int = 32,
        features: int = 32,
        bias: bool = True,
        prior: bool = False,
    ) -> None:
        super().__init__()
        self._store_config(locals())
        if self.prior and (self.in_channels < 2 or self.out_channels != 1):
            raise ValueError("Noise2SR: prior=True reads the sub-sampled image and a prior estimate of it "
                             f"(in_channels >= 2) and returns one image, not {self.in_channels} -> "
                             f"{self.out_channels} channels.")

        self.encoder = UNet(self.in_channels, self.features, scales=self.scales, base=self.base, bias=self.bias)
        self.subpixel = nn.Conv2d(
            self.features, self.features * self.scale**2, SUBPIXEL_KERNEL_SIZE,
            padding=SUBPIXEL_KERNEL_SIZE // 2, padding_mode="replicate", bias=self.bias,
        )
        self.shuffle = nn.PixelShuffle(self.scale)
        self.mix = nn.Conv2d(self.features, self.features, 1, bias=self.bias)
        self.head = nn.Conv2d(self.features, self.out_channels, 1, bias=self.bias)
        init_relu_network(self)
        self._icnr()
        if self.prior:
            zero_head(self.head)

    @torch.no_grad()
    def _icnr(self) -> None:
        """[Aitken2017]: one Kaiming-initialised filter per output channel, copied to all of
        its ``scale**2`` sub-pixel positions (the pixel shuffle takes channel ``c * s**2 + k``
        to sub-pixel ``k`` of channel ``c``)."""
        w = self.subpixel.weight
        one = torch.empty(self.features, self.features, *w.shape[2:], dtype=w.dtype, device=w.device)
        nn.init.kaiming_normal_(one, nonlinearity="leaky_relu", a=LEAKY_SLOPE)
        w.copy_(one.repeat_interleave(self.scale**2, dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        h = F.leaky_relu(self.shuffle(self.subpixel(h)), LEAKY_SLOPE)
        h = F.relu(self.mix(h))
        out = self.head(h)
        if self.prior:
            # The prior (last input channel, at the sub-sampled resolution) brought to the full
            # grid: cell centres map to cell centres (align_corners=False).
            out = out + F.interpolate(x[:, -1:], scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out.contiguous()

    def receptive_field(self) -> int:
        """Side length, in input (sub-sampled) pixels, of the square one output pixel sees.

        The U-Net's field plus one pixel on each side for the 3x3 sub-pixel convolution; the
        pixel shuffle maps an output pixel to exactly one input cell and the layers after it
        are pointwise.
        """
        return self.encoder.receptive_field() + 2 * (SUBPIXEL_KERNEL_SIZE // 2)

