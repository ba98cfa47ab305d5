"""DnCNN and its bias-free variant, plus the bias-free batch normalisation they share.

References
----------
.. [Zhang2017] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian Denoiser:
   Residual Learning of Deep CNN for Image Denoising", IEEE Trans. Image Process. 26(7),
   3142-3155, 2017.
.. [Mohan2020] S. Mohan, Z. Kadkhodaie, E. P. Simoncelli, C. Fernandez-Granda, "Robust and
   Interpretable Blind Image Denoising via Bias-Free Convolutional Neural Networks",
   ICLR 2020.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["BiasFreeBatchNorm2d", "DnCNN", "freeze_bias_free_norms", "load_without_constants"]

# [Zhang2017] Sec. III-A: depth 17 (receptive field 35 x 35) for Gaussian denoising with a
# known noise level; Sec. III-E: depth 20 for the blind / general models (DnCNN-B, CDnCNN-B,
# DnCNN-3); Sec. III-B: 3 x 3 kernels and 64 feature maps in every hidden layer.
DNCNN_DEPTH_RANGE = (17, 20)
DNCNN_KERNEL_SIZE = 3
DNCNN_WIDTH = 64


class _BiasFreeBatchNormFn(torch.autograd.Function):
    """``y = x * w / sqrt(var_B(x) + eps)`` per channel, with a hand-written backward.

    Autograd through ``x.var`` (a Welford reduction and its backward) made the layer cost
    about 3x ``nn.BatchNorm2d`` on CPU; here the statistics come from the fused batch-norm
    statistics kernel and the gradient is written out. With ``s = w / sigma``, sums over the
    batch and pixels of one channel and ``N`` the number of summed values::

        dL/dx = s * g - s / (N * sigma**2) * sum(g * x) * (x - mu)
        dL/dw = sum(g * x) / sigma

    Statistics and the per-channel sums are kept in at least float32.
    """

    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        mean, var = torch.batch_norm_update_stats(x.to(stat_dtype), None, None, 0.0)
        invstd = torch.rsqrt(var + eps)
        scale = weight.to(stat_dtype) * invstd
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(var)
        return x * scale.to(x.dtype).view(1, -1, 1, 1), var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_var):  # type: ignore[override]
        x, mean, invstd, scale = ctx.saved_tensors
        n = x.numel() // x.shape[1]
        sum_gx = (grad.to(mean.dtype) * x.to(mean.dtype)).sum(dim=(0, 2, 3))
        k = -scale * invstd * invstd * sum_gx / n
        per_channel = (1, -1, 1, 1)
        dx = torch.addcmul(
            (-k * mean).to(x.dtype).view(per_channel), x, k.to(x.dtype).view(per_channel)
        )
        dx.addcmul_(grad, scale.to(x.dtype).view(per_channel))
        return dx, (sum_gx * invstd).to(ctx.weight_dtype), None


class BiasFreeBatchNorm2d(nn.Module):
    """Batch normalisation without additive constants ([Mohan2020], Sec. 3 "bias-free").

    Each channel is divided by a standard deviation and multiplied by a learned scale
    ``weight``; nothing is subtracted or added. In training mode the divisor is the batch
    standard deviation (the variance is measured about the batch mean, as in the reference
    implementation, but the mean itself is *not* removed from the activations); in eval mode
    it is the running standard deviation, so the layer is then exactly linear and the whole
    network stays positively homogeneous: ``f(a x) = a f(x)`` for ``a > 0``.

    ``frozen = True`` (an attribute, not saved with the weights) makes training mode behave
    like eval mode: the divisor is the running standard deviation, which is no longer
    updated, so the layer is a learned per-channel scale. Use it to fine-tune with small
    batches, whose own statistics swing from batch to batch (see
    :func:`freeze_bias_free_norms`).

    Tensor layout ``[B, C, H, W]`` in and out. Parameters: ``num_features`` (the scale).
    Receptive field 1 x 1. Statistics are computed in at least float32, so the layer is safe
    under ``torch.autocast(..., dtype=torch.bfloat16)``. The training-mode gradient is
    hand-written (see ``_BiasFreeBatchNormFn``) and supports first derivatives only.

    Parameters
    ----------
    num_features : int
        Number of channels ``C``.
    eps : float
        Added to the variance before the square root (as ``nn.BatchNorm2d``).
    momentum : float
        Weight of the newest batch in the running variance (as ``nn.BatchNorm2d``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BiasFreeBatchNorm2d({self.num_features}) expects "
                f"[B, {self.num_features}, H, W], got shape {tuple(x.shape)}."
            )
        if not self.training or self.frozen:
            var = self.running_var.to(torch.promote_types(x.dtype, torch.float32))
            scale = self.weight.to(var.dtype) * torch.rsqrt(var + self.eps)
            return x * scale.to(x.dtype).view(1, -1, 1, 1)
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(
                "BiasFreeBatchNorm2d needs more than one value per channel when training "
                f"(got input of shape {tuple(x.shape)})."
            )
        y, var = _BiasFreeBatchNormFn.apply(x, self.weight, self.eps)
        with torch.no_grad():
            # Like nn.BatchNorm2d: the running estimate uses the unbiased batch variance.
            self.running_var.lerp_((var * (n / (n - 1))).to(self.running_var.dtype), self.momentum)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}" + (", frozen" if self.frozen else "")


def load_without_constants(bias_free: nn.Module, biased: nn.Module) -> None:
    """Give ``bias_free`` what multiplies in ``biased``, a biased twin of the same architecture.

    Convolution weights, normalisation scales and running variances are copied; biases and
    running means, which add, are dropped. Every tensor of ``bias_free`` must come from
    ``biased`` (a strict load): a network of another architecture raises.
    """
    own = bias_free.state_dict()
    bias_free.load_state_dict({k: v for k, v in biased.state_dict().items() if k in own})


def freeze_bias_free_norms(module: nn.Module, frozen: bool = True) -> int:
    """Set ``frozen`` on every :class:`BiasFreeBatchNorm2d` in ``module``; return how many."""
    norms = [m for m in module.modules() if isinstance(m, BiasFreeBatchNorm2d)]
    for m in norms:
        m.frozen = bool(frozen)
    return len(norms)


# --- configuration helpers shared by the models in this package ---------------------------


def check_int(
    cls_name: str, name: str, value: Any, bounds: tuple[int, int], why: str = ""
) -> int:
    """Return ``value`` if it is an int within ``bounds`` (inclusive), else raise ValueError.

    ``why`` is appended to the message (e.g. where the range comes from).
    """
    lo, hi = bounds
    suffix = f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{cls_name}: {name} must be an integer from {lo} to {hi}{suffix}, got {value!r}."
        )
    if not lo <= value <= hi:
        raise ValueError(f"{cls_name}: {name} must be from {lo} to {hi}{suffix}, got {value}.")
    return value


def check_bool(cls_name: str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{cls_name}: {name} must be True or False, got {value!r}.")
    return value


def init_relu_network(module: nn.Module) -> None:
    """Kaiming-normal convolution weights for ReLU (He et al. 2015), zero biases, NHWC weights.

    Convolution weights are stored channels-last (NHWC), which makes oneDNN run every
    convolution in NHWC whatever the input layout (converting only the input does not):
    1.0-1.2x the training steps/s on CPU for DnCNN, 1.3x for the UNet. Inputs in either
    layout work; the models return contiguous outputs.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    module.to(memory_format=torch.channels_last)


def zero_head(head: nn.Conv2d) -> None:
    """Zero a correction head, so a network with ``prior=True`` starts by returning its prior."""
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()


def add_prior_channel(model: nn.Module, source: nn.Module) -> None:
    """Load ``source`` (one input channel, no prior) into ``model`` (``prior=True``).

    Every weight is copied except the first convolution's, whose extra (prior) input channels
    start at zero, and the head, which starts at zero: the widened network returns its prior
    and keeps the source's features for the noisy channel.
    """
    ours, theirs = model.state_dict(), source.state_dict()
    with torch.no_grad():
        for k, v in theirs.items():
            if k.startswith("head."):
                continue
            if ours[k].shape == v.shape:
                ours[k].copy_(v)
            elif ours[k].dim() == 4 and ours[k].shape[1] > v.shape[1] and ours[k].shape[0] == v.shape[0]:
                ours[k].zero_()
                ours[k][:, : v.shape[1]].copy_(v)
            else:
                raise ValueError(f"add_prior_channel: {k} has shape {tuple(v.shape)}, expected {tuple(ours[k].shape)}.")
    zero_head(model.head)


def build_from_config(cls: type[nn.Module], d: Mapping[str, Any]) -> nn.Module:
    """Construct ``cls(**d)`` after checking that every key of ``d`` is a constructor argument.

    Missing keys take the constructor defaults, so checkpoints written before a new
    argument was added still load.
    """
    if not isinstance(d, Mapping):
        raise ValueError(
            f"{cls.__name__}.from_config expects a mapping, got {type(d).__name__}."
        )
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(d) - accepted)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.from_config: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"accepted keys are {', '.join(sorted(accepted))}."
        )
    return cls(**dict(d))


class ConfigMixin:
    """``config()`` and ``from_config()`` for a module that keeps every constructor argument
    as an attribute of the same name: ``type(m).from_config(m.config())`` rebuilds the
    architecture (weights files store the config beside the state dict)."""

    #: What each ranged argument counts, for the error message (optional per argument).
    PARAM_WHY: ClassVar[dict[str, str]] = {}

    def _store_config(self, values: Mapping[str, Any]) -> None:
        """Check every constructor argument and keep it as an attribute of the same name.

        ``values`` is the constructor's ``locals()``. Arguments listed in ``PARAM_RANGES``
        must be ints within their range, the others bools (:func:`check_int`,
        :func:`check_bool`, ValueError otherwise). ``residual=True`` (output = input minus
        predicted noise) needs as many output channels as input ones.
        """
        name = type(self).__name__
        for key in self._arg_names():
            if key in self.PARAM_RANGES:
                value = check_int(name, key, values[key], self.PARAM_RANGES[key], self.PARAM_WHY.get(key, ""))
            else:
                value = check_bool(name, key, values[key])
            setattr(self, key, value)
        if getattr(self, "residual", False) and self.in_channels != self.out_channels:
            raise ValueError(
                f"{name}: residual=True returns input minus predicted noise, so in_channels "
                f"({self.in_channels}) must equal out_channels ({self.out_channels})."
            )
        if getattr(self, "prior", False):
            if getattr(self, "residual", False):
                raise ValueError(f"{name}: prior=True corrects the prior channel; it excludes residual=True.")
            if self.in_channels < 2 or self.out_channels != 1:
                raise ValueError(
                    f"{name}: prior=True reads the image and a prior estimate of it (in_channels >= 2, "
                    f"the prior last) and returns one corrected image (out_channels = 1), not "
                    f"{self.in_channels} -> {self.out_channels} channels."
                )

    @classmethod
    def _arg_names(cls) -> list[str]:
        """The constructor's argument names, in order."""
        return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]

    def config(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same names."""
        return {n: getattr(self, n) for n in self._arg_names()}

    @classmethod
    def from_config(cls, d: Mapping[str, Any]):
        """Build from a :meth:`config` dict; unknown keys raise ValueError."""
        return build_from_config(cls, d)


class DnCNN(ConfigMixin, nn.Module):
    """DnCNN denoiser [Zhang2017], optionally bias-free [Mohan2020].

    Layout: ``forward(x)`` takes ``[B, C_in, H, W]`` and returns ``[B, C_out, H, W]`` for any
    ``H, W >= 1`` (3 x 3 convolutions with zero padding 1 keep the size, [Zhang2017]
    Sec. III-B "reducing boundary artifacts").

    Architecture ([Zhang2017] Sec. III-B): layer 1 is Conv(3x3, ``width``)+ReLU; layers
    2..depth-1 are Conv(3x3, ``width``)+BN+ReLU; the last layer is Conv(3x3, ``out_channels``).
    With ``residual=True`` the network predicts the noise and the output is
    ``x - noise`` (residual learning, Sec. III-B); this needs ``in_channels == out_channels``.
    Convolutions directly followed by BN carry no bias (BN's shift makes it redundant).

    ``bias=False`` gives the bias-free network BF-DnCNN [Mohan2020]: no convolution has a
    bias and BN is replaced by :class:`BiasFreeBatchNorm2d`, so in eval mode
    ``f(a x) = a f(x)`` for every ``a > 0``.

    Receptive field (:meth:`receptive_field`): ``2 * depth + 1`` px per side, i.e. 35 px
    for depth 17 and 41 px for depth 20 ([Zhang2017] Sec. III-A and III-E).

    Parameter counts (``sum(p.numel() for p in m.parameters())``):

    - ``DnCNN()``: 556,097 parameters
    - ``DnCNN(depth=20)``: 667,073 parameters
    - ``DnCNN(bias=False)``: 555,072 parameters

    Training speed, measured (Adam step on a ``4 x 1 x 128 x 128`` batch, 2 cores of an
    AMD EPYC with AVX-512, torch 2.13 CPU, ``torch.set_num_threads(2)``, median of 10 steps
    after 3 warm-ups, repeated on a shared machine): ``DnCNN()`` about 1.0 s/step
    (0.9-1.2 steps/s), 2.4-2.9 steps/s under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
    It is convolution-bound: 9.08 GMAC per 128 x 128 image forward, four times the
    ``UNet()`` default.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out (1 to 256).
    depth : int
        Number of convolution layers, 17 to 20 ([Zhang2017] Sec. III-A, III-E).
    width : int
        Feature maps per hidden layer, 8 to 256 (64 in [Zhang2017]).
    batch_norm : bool
        Batch normalisation in the middle layers (bias-free variant when ``bias=False``).
    bias : bool
        ``False`` removes every additive constant [Mohan2020].
    residual : bool
        Predict the noise and return ``x - noise`` (default) instead of the clean image.
    prior : bool
        The last input channel is a prior estimate of the clean image (the workbench feeds a
        self-calibrated Fourier Wiener filter of the whole image, which sees the lattice's
        periodicity far beyond the receptive field); the output is that prior plus a learned
        correction, and the correction head starts at zero, so an untrained network returns
        the prior. Needs ``residual=False``, ``in_channels >= 2``, ``out_channels = 1``.
    """

    PARAM_RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "in_channels": (1, 256),
        "out_channels": (1, 256),
        "depth": DNCNN_DEPTH_RANGE,
        "width": (8, 256),
    }
    PARAM_WHY: ClassVar[dict[str, str]] = {
        "depth": "layers; Zhang et al. 2017 use 17 for one known noise level, 20 for blind denoising",
    }

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 17,
        width: int = DNCNN_WIDTH,
        batch_norm: bool = True,
        bias: bool = True,
        residual: bool = True,
        prior: bool = False,
    ) -> None:
        super().__init__()
        self._store_config(locals())

        k, p = DNCNN_KERNEL_SIZE, DNCNN_KERNEL_SIZE // 2
        layers: list[nn.Module] = [
            nn.Conv2d(self.in_channels, self.width, k, padding=p, bias=self.bias),
            nn.ReLU(inplace=True),
        ]
        for _ in range(self.depth - 2):
            layers.append(
                nn.Conv2d(
                    self.width, self.width, k, padding=p, bias=self.bias and not self.batch_norm
                )
            )
            if self.batch_norm:
                norm = nn.BatchNorm2d if self.bias else BiasFreeBatchNorm2d
                layers.append(norm(self.width))
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(self.width, self.out_channels, k, padding=p, bias=self.bias)
        # [Zhang2017] Sec. IV-A initialises with He et al. 2015 ("Delving deep into rectifiers").
        init_relu_network(self)
        if self.prior:
            zero_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        if self.prior:
            return (x[:, -1:] + out).contiguous()
        return (x - out if self.residual else out).contiguous()

    def receptive_field(self) -> int:
        """Side length in pixels of the square of input pixels that one output pixel sees."""
        return self.depth * (DNCNN_KERNEL_SIZE - 1) + 1

