"""Losses of the training loop: ``loss(output, target, mask=None)``.

:class:`MSELoss` for clean or independent-noisy targets, :class:`PoissonNLLLoss` for count
data; the optional mask restricts the loss to the blind-spot pixels of self-supervised
methods.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from emcore.errors import EmcoreError


class Loss(Protocol):
    """``loss(output, target, mask=None) -> scalar tensor``; with a mask, only pixels where
    ``mask == 1`` count."""

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor: ...


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).expand_as(values)
    # clamp: a batch whose mask is empty contributes 0 rather than 0/0.
    return (values * m).sum() / m.sum().clamp_min(1.0)


class MSELoss:
    """Mean squared error, over the pixels where ``mask == 1`` when a mask is given.

    Computed in float32 whatever the output dtype (autocast).
    """

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return _masked_mean((output.float() - target.float()) ** 2, mask)

    def __repr__(self) -> str:
        return "MSELoss()"


class PoissonNLLLoss:
    """Poisson negative log-likelihood of count targets, for shot-noise-limited data.

    Parameters
    ----------
    link : {"log", "softplus"}
        How the network output ``o`` becomes a rate ``r``. ``"log"``: ``o`` is the log-rate,
        ``r = exp(o)`` and the loss is ``exp(o) - t * o`` (numerically safe, but the network
        must output logarithms). ``"softplus"``: ``r = softplus(o) + eps`` keeps the rate
        positive while the network outputs intensities directly; the loss is
        ``r - t * log(r)``.
    eps : float
        Floor added to the softplus rate so that ``log`` stays finite.

    Notes
    -----
    The constant ``log(t!)`` is left out (it does not depend on the network), so values can be
    negative; only differences matter. Averaged over the pixels where ``mask == 1`` when a
    mask is given.
    """

    def __init__(self, link: Literal["log", "softplus"] = "softplus", eps: float = 1e-6):
        if link not in ("log", "softplus"):
            raise EmcoreError(f"Unknown Poisson link '{link}'; use log or softplus.")
        if not eps > 0:
            raise EmcoreError(f"The Poisson loss floor eps must be positive; got {eps!r}.")
        self.link = link
        self.eps = float(eps)

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        o, t = output.float(), target.float()
        if self.link == "log":
            values = torch.exp(o) - t * o
        else:
            rate = nn.functional.softplus(o) + self.eps
            values = rate - t * torch.log(rate)
        return _masked_mean(values, mask)

    def __repr__(self) -> str:
        return f"PoissonNLLLoss(link={self.link!r}, eps={self.eps:g})"
