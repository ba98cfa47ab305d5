"""A UNet's forward pass on a CPU without the copies around its convolutions (same outputs).

In :class:`models.UNet`, every 3×3 convolution pads its input by replication first, a copy of
the whole activation, and every skip connection concatenates the encoder's features with the
upsampled branch, another copy of both. On a 1024² image on two CPU cores those copies took
about 0.5 s of a 3 s forward pass (``torch.profiler``, ``benchmarks/bench_inference.py``).

:class:`PaddedBufferUNet` runs the same layers, but each ReLU writes its output straight into
the interior of a channels-last buffer one pixel larger on each side, whose margin is then
filled from its edge (what replication padding computes), and each 3×3 convolution runs
unpadded on that buffer. At a skip connection the buffer is allocated twice as deep: the
encoder writes the first half of its channels, the decoder's upsampled branch the second half
(``torch.cat([skip, up])`` order). The convolutions see the same numbers, so the outputs are
the same to the bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.unet import UNET_POOL, UNet, _ConvNormReLU

__all__ = ["PaddedBufferUNet"]


def _padded(like: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """An uninitialised channels-last ``(N, c, h + 2, w + 2)`` buffer: a one-pixel margin."""
    return torch.empty((like.shape[0], c, h + 2, w + 2), dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last)


def _interior(buf: torch.Tensor) -> torch.Tensor:
    return buf[:, :, 1:-1, 1:-1]


def _replicate_margin(buf: torch.Tensor) -> torch.Tensor:
    """Fill the one-pixel margin from the interior's edge, as replication padding does."""
    buf[:, :, 1:-1, 0] = buf[:, :, 1:-1, 1]
    buf[:, :, 1:-1, -1] = buf[:, :, 1:-1, -2]
    buf[:, :, 0, :] = buf[:, :, 1, :]
    buf[:, :, -1, :] = buf[:, :, -2, :]
    return buf


def _block(block: nn.Module, buf: torch.Tensor, into: torch.Tensor | None = None,
           plain: bool = False) -> torch.Tensor | None:
    """One Conv 3×3 - norm - ReLU block applied to a padded buffer.

    The output goes into ``into`` (a channel slice of a padded buffer's interior; its margin is
    filled later) and None is returned; or, with ``plain``, comes back as a tensor; or else
    comes back in a new padded buffer, margin filled, for the next 3×3 convolution.
    """
    conv, norm = block[0], block[1]
    y = norm(F.conv2d(buf, conv.weight, conv.bias))
    if into is not None:
        torch.clamp_min(y, 0, out=into)
        return None
    if plain:
        return y.clamp_min_(0)
    nxt = _padded(y, y.shape[1], y.shape[2], y.shape[3])
    torch.clamp_min(y, 0, out=_interior(nxt))
    return _replicate_margin(nxt)


class PaddedBufferUNet(nn.Module):
    """An eval-mode :class:`models.UNet` whose forward pass writes each ReLU's output into the
    padded input buffer of the next convolution (see the module notes).

    The same function as ``unet``: on another device than the CPU, or with autograd on,
    ``unet``'s own forward runs. Attributes not found here are read from ``unet``
    (``prior``, ``scales``, ``receptive_field()``, …).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    @staticmethod
    def fits(m: nn.Module) -> bool:
        """Whether ``m`` is a UNet built of the blocks this forward pass knows."""
        if type(m) is not UNet:
            return False
        blocks = [b for seq in list(m.down) + list(m.merge) for b in seq]
        return all(
            type(b) is _ConvNormReLU and len(b) == 3 and isinstance(b[2], nn.ReLU)
            and b[0].padding_mode == "replicate" and b[0].kernel_size == (3, 3) and b[0].padding == (1, 1)
            and b[0].stride == (1, 1) and b[0].dilation == (1, 1) and b[0].groups == 1
            for b in blocks)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("unet"), name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet
        if x.device.type != "cpu" or torch.is_grad_enabled() or u.training:
            return u(x)
        xp = u.pad_input(x)
        buf = _padded(xp, xp.shape[1], *xp.shape[-2:])
        _interior(buf).copy_(xp)
        _replicate_margin(buf)
        skips = []
        for s, (first, second) in enumerate(u.down):
            if s:  # pool the previous scale's features (the first half of its skip buffer)
                prev = skips[-1]
                pooled = F.max_pool2d(_interior(prev)[:, : prev.shape[1] // 2], UNET_POOL)
                buf = _padded(pooled, pooled.shape[1], *pooled.shape[-2:])
                _interior(buf).copy_(pooled)
                del pooled
                _replicate_margin(buf)
            mid = _block(first, buf)
            del buf
            if s == u.scales - 1:  # the bottom feeds the decoder directly
                h = _block(second, mid, plain=True)
            else:
                c = second[0].out_channels
                skip = _padded(mid, 2 * c, mid.shape[2] - 2, mid.shape[3] - 2)
                _block(second, mid, into=_interior(skip)[:, :c])
                skips.append(skip)
            del mid
        for up, (first, second) in zip(u.up, u.merge):
            buf = skips.pop()
            c = buf.shape[1] // 2
            g = up.before_relu(h)
            del h
            torch.clamp_min(g, 0, out=_interior(buf)[:, c:])
            del g
            _replicate_margin(buf)
            mid = _block(first, buf)
            del buf
            h = _block(second, mid, plain=True)
            del mid
        return u.output(xp, h, x.shape[-2:])
