"""U-Net denoiser with a configurable number of scales, optionally bias-free.

References
----------
.. [Ronneberger2015] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
   Biomedical Image Segmentation", MICCAI 2015, LNCS 9351, 234-241.
.. [Mohan2020] S. Mohan, Z. Kadkhodaie, E. P. Simoncelli, C. Fernandez-Granda, "Robust and
   Interpretable Blind Image Denoising via Bias-Free Convolutional Neural Networks",
   ICLR 2020.
.. [Mohan2022] S. Mohan, R. Manzorro, J. L. Vincent, B. Tang, D. Y. Sheth, E. P. Simoncelli,
   D. S. Matteson, P. A. Crozier, C. Fernandez-Granda, "Deep Denoising for Scientific
   Discovery: A Case Study in Electron Microscopy", IEEE Trans. Comput. Imaging 8, 585-597,
   2022.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .dncnn import BiasFreeBatchNorm2d, ConfigMixin, init_relu_network, zero_head

__all__ = ["UNet"]

# [Ronneberger2015] Sec. 2: two 3x3 convolutions per scale, 2x2 max pooling with stride 2,
# the number of feature channels doubled at each downsampling step.
UNET_KERNEL_SIZE = 3
UNET_POOL = 2
UNET_CONVS_PER_SCALE = 2
# The convolution after each bilinear upsampling is 1x1: a 3x3 one there is 28 % of the
# network's multiply-adds (3.10 instead of 2.22 GMAC per 128 x 128 image for UNet()), works
# on a bilinearly smoothed map, and its neighbourhood is covered anyway by the two 3x3
# convolutions after the skip concatenation. Measured on 2 CPU cores, the 3x3 variant
# trains at 0.7-0.85x the steps/s and missed the 3 steps/s target in NCHW layout.
UNET_UP_KERNEL_SIZE = 1


class _ConvNormReLU(nn.Sequential):
    """3x3 convolution with replication padding, (bias-free) batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, bias: bool) -> None:
        super().__init__(
            # No conv bias: the following BN's shift (or, bias-free, nothing) plays that role.
            nn.Conv2d(
                c_in, c_out, UNET_KERNEL_SIZE, padding=UNET_KERNEL_SIZE // 2,
                padding_mode="replicate", bias=False,
            ),
            nn.BatchNorm2d(c_out) if bias else BiasFreeBatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class _UpConv(nn.Module):
    """Bilinear x2 upsampling followed by a 1x1 convolution halving the channels, BN, ReLU.

    The 1x1 convolution is *computed* before the upsampling: both are linear, the 1x1 acts
    on channels only and the bilinear weights act on space only (and sum to one), so
    ``conv1x1(upsample(h)) == upsample(conv1x1(h))`` exactly, and the latter costs a quarter
    of the multiply-adds and upsamples half the channels. For the same reason (a per-channel
    affine map commutes with the upsampling, whose weights sum to one) an eval-mode ``norm``
    may be folded into ``conv``: ``FOLDABLE_NORM``.
    """

    FOLDABLE_NORM = True

    def __init__(self, c_in: int, c_out: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, UNET_UP_KERNEL_SIZE, bias=False)
        self.norm = nn.BatchNorm2d(c_out) if bias else BiasFreeBatchNorm2d(c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.before_relu(h), inplace=True)

    def before_relu(self, h: torch.Tensor) -> torch.Tensor:
        """Everything but the final ReLU (an inference pass may write the ReLU elsewhere)."""
        h = F.interpolate(
            self.conv(h), scale_factor=UNET_POOL, mode="bilinear", align_corners=False
        )
        return self.norm(h)


class UNet(ConfigMixin, nn.Module):
    """U-Net encoder/decoder [Ronneberger2015] as used for TEM denoising in [Mohan2022].

    Layout: ``forward(x)`` takes ``[B, C_in, H, W]`` and returns ``[B, C_out, H, W]`` for any
    ``H, W >= 1``. The input is replication-padded at the bottom/right to a multiple of
    ``2**(scales - 1)`` and the output cropped back; anchoring the pooling grid at the
    top-left pixel keeps tiles whose offsets are multiples of that step consistent with the
    whole image.

    Architecture: scale ``s = 0 .. scales-1`` has ``base * 2**s`` channels. Encoder: at each
    scale two [Conv 3x3 - BN - ReLU] blocks, then 2x2 max pooling (stride 2) to the next
    scale [Ronneberger2015, Sec. 2]. Decoder, for each scale from the bottom up: bilinear
    upsampling by 2 (``align_corners=False``) followed by Conv 1x1 - BN - ReLU halving the
    channels (upsample-then-convolve instead of the paper's 2x2 up-convolution avoids the
    checkerboard artefacts of transposed convolutions: Odena, Dumoulin, Olah, "Deconvolution
    and Checkerboard Artifacts", Distill 2016; why 1x1: see ``UNET_UP_KERNEL_SIZE``),
    concatenation with the encoder features of that scale (skip connection), two
    [Conv 3x3 - BN - ReLU]. A 1x1 convolution maps ``base`` channels to ``out_channels``.
    All 3x3 convolutions use replication padding, as in the code released with [Mohan2022],
    so image borders are not darkened by zero padding. (That code upsamples with
    ``align_corners=True`` and has no convolution before the concatenation.)

    ``bias=False`` removes every additive constant: no convolution bias and
    :class:`~models.dncnn.BiasFreeBatchNorm2d` instead of BN [Mohan2020, Mohan2022]; max
    pooling, bilinear upsampling and replication padding are positively homogeneous, so in
    eval mode ``f(a x) = a f(x)`` for ``a > 0``. ``residual=True`` predicts the noise and
    returns ``x - noise`` (needs ``in_channels == out_channels``).

    Receptive field (:meth:`receptive_field`, independent of ``base``): 20 px for
    ``scales=2``, 52 px for 3, 116 px for 4 (the default), 236 px for 5, 476 px for 6.

    Parameter counts (``sum(p.numel() for p in m.parameters())``):

    - ``UNet()``: 1,797,633 parameters
    - ``UNet(bias=False)``: 1,796,000 parameters
    - ``UNet(scales=2, base=16)``: 24,001 parameters
    - ``UNet(scales=6, base=16)``: 7,255,041 parameters

    Training speed, measured (Adam step on a ``4 x 1 x 128 x 128`` batch, 2 cores of an
    AMD EPYC with AVX-512, torch 2.13 CPU, ``torch.set_num_threads(2)``, median of 10 steps
    after 3 warm-ups, 5 interleaved repeats on a shared machine): ``UNet()`` 0.235 s/step,
    4.2 steps/s; 3.2 steps/s with the weights converted back to NCHW; 2.7 steps/s for the
    first draft (3x3 convolution after each upsampling, NCHW); 6.6 steps/s under
    ``torch.autocast("cpu", dtype=torch.bfloat16)``. About 80 % of the step is convolution
    (2.22 GMAC per 128 x 128 image forward), so float32 on two cores is close to its limit.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out (1 to 256).
    scales : int
        Number of resolutions, 2 to 6 (``scales - 1`` poolings).
    base : int
        Channels at full resolution, 16 to 128; doubled at every coarser scale, so the
        bottom has ``base * 2**(scales - 1)`` channels. Parameters grow as
        ``base**2 * 4**scales``: ``UNet(scales=6, base=128)`` has 464 million.
    bias : bool
        ``False`` gives the bias-free network [Mohan2020].
    residual : bool
        Predict the noise and return ``x - noise``.
    prior : bool
        The last input channel is a prior estimate of the clean image (the workbench feeds a
        self-calibrated Fourier Wiener filter of the whole image: it uses the lattice's
        periodicity over the whole field, far beyond the 116-px receptive field); the output is
        that prior plus a learned correction, whose head starts at zero. Needs
        ``residual=False``, ``in_channels >= 2``, ``out_channels = 1``.
    """

    PARAM_RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "in_channels": (1, 256),
        "out_channels": (1, 256),
        "scales": (2, 6),
        "base": (16, 128),
    }
    PARAM_WHY: ClassVar[dict[str, str]] = {
        "scales": "number of resolutions",
        "base": "channels at full resolution",
    }

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scales: int = 4,
        base: int = 32,
        bias: bool = True,
        residual: bool = False,
        prior: bool = False,
    ) -> None:
        super().__init__()
        self._store_config(locals())

        ch = [self.base * 2**s for s in range(self.scales)]
        self.down = nn.ModuleList()
        c_prev = self.in_channels
        for c in ch:
            self.down.append(
                nn.Sequential(_ConvNormReLU(c_prev, c, self.bias), _ConvNormReLU(c, c, self.bias))
            )
            c_prev = c
        # Decoder lists run from the coarsest scale upwards.
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for s in reversed(range(self.scales - 1)):
            self.up.append(_UpConv(ch[s + 1], ch[s], self.bias))
            self.merge.append(
                nn.Sequential(
                    _ConvNormReLU(2 * ch[s], ch[s], self.bias),
                    _ConvNormReLU(ch[s], ch[s], self.bias),
                )
            )
        self.head = nn.Conv2d(ch[0], self.out_channels, 1, bias=self.bias)
        # [Ronneberger2015] Sec. 3: Gaussian weights with std sqrt(2 / fan_in) (He et al. 2015).
        init_relu_network(self)
        if self.prior:
            zero_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = self.pad_input(x)
        skips = []
        h = xp
        for s, block in enumerate(self.down):
            if s:
                h = F.max_pool2d(h, UNET_POOL)
            h = block(h)
            skips.append(h)
        skips.pop()  # the coarsest scale feeds the decoder directly
        for up, merge in zip(self.up, self.merge):
            h = merge(torch.cat([skips.pop(), up(h)], dim=1))
        return self.output(xp, h, x.shape[-2:])

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` replication-padded at the bottom/right to a multiple of ``2**(scales - 1)``."""
        h_in, w_in = x.shape[-2:]
        step = UNET_POOL ** (self.scales - 1)
        pad_h, pad_w = -h_in % step, -w_in % step
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

    def output(self, xp: torch.Tensor, h: torch.Tensor, size) -> torch.Tensor:
        """The head on the last decoder features ``h``, the residual or prior added from the
        padded input ``xp``, cropped back to the input's ``size`` (H, W)."""
        out = self.head(h)
        if self.residual:
            out = xp - out
        elif self.prior:
            out = xp[:, -1:] + out
        return out[..., : size[0], : size[1]].contiguous()

    def receptive_field(self) -> int:
        """Side length in pixels of the input square that can affect one output pixel.

        Exact interval propagation, not the usual ``r += (k - 1) * jump`` recursion: after a
        bilinear upsampling two neighbouring fine pixels are shifted by either 0 or a whole
        coarse pixel, so the uniform-jump formula underestimates the field for
        ``scales >= 5``. An output pixel interval ``[a, b]`` is traced back to the input:
        a k x k convolution widens it by ``k // 2`` on each side, a 2x2 pooling maps it to
        ``[2a, 2b + 1]``, a bilinear x2 upsampling (``align_corners=False``) reads coarse
        pixels ``[(a - 1) // 2, (b + 1) // 2]``, and a skip concatenation takes the union of
        both branches. The result is maximised over the output positions modulo the
        pooling period. It does not depend on ``base`` or the channel counts.
        """
        half = UNET_KERNEL_SIZE // 2
        up_half = UNET_UP_KERNEL_SIZE // 2
        convs = UNET_CONVS_PER_SCALE * half

        def encoder(s: int, a: int, b: int) -> tuple[int, int]:
            a, b = a - convs, b + convs
            if s == 0:
                return a, b
            return encoder(s - 1, UNET_POOL * a, UNET_POOL * b + UNET_POOL - 1)

        def decoder(s: int, a: int, b: int) -> tuple[int, int]:
            a, b = a - convs, b + convs  # the two convolutions after the concatenation
            skip = encoder(s, a, b)
            a, b = a - up_half, b + up_half
            a, b = (a - 1) // UNET_POOL, (b + 1) // UNET_POOL
            deep = decoder(s + 1, a, b) if s + 1 < self.scales - 1 else encoder(s + 1, a, b)
            return min(skip[0], deep[0]), max(skip[1], deep[1])

        period = UNET_POOL ** (self.scales - 1)
        return max(b - a + 1 for a, b in (decoder(0, o, o) for o in range(period)))

