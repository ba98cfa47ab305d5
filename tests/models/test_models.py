"""Contract test over every model class exported by ``models.__all__``.

Models are discovered from ``models.__all__``; nothing here names a model. A new model only
has to follow the contract described in ``models/__init__.py`` (``PARAM_RANGES``,
``config``/``from_config``, ``receptive_field``, a final layer called ``head`` when it has a
``residual`` option, parameter counts quoted in its docstring) to be covered.

Most checks use the *small* configuration: the lowest accepted value of every ranged
argument, which keeps the whole file at a few seconds on two CPU cores.
"""

from __future__ import annotations

import ast
import inspect
import json
import re

import pytest
import torch

import models

MODEL_CLASSES = [getattr(models, name) for name in models.__all__]
IDS = [cls.__name__ for cls in MODEL_CLASSES]
per_model = pytest.mark.parametrize("cls", MODEL_CLASSES, ids=IDS)


def small_kwargs(cls) -> dict:
    return {name: lo for name, (lo, _hi) in cls.PARAM_RANGES.items()}


def build(cls, which: str = "small", **over) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = small_kwargs(cls) if which == "small" else {}
    kwargs.update(over)
    return cls(**kwargs)


def accepts(cls, arg: str) -> bool:
    return arg in inspect.signature(cls).parameters


def warm_up_statistics(m: torch.nn.Module, channels: int, steps: int = 3) -> None:
    """A few training-mode passes so the running BN statistics are not the initial ones."""
    m.train()
    g = torch.Generator().manual_seed(1)
    dtype = next(m.parameters()).dtype
    with torch.no_grad():
        for _ in range(steps):
            m(torch.randn(2, channels, 24, 20, generator=g, dtype=dtype) * 2.0 + 0.5)
    m.eval()


def test_models_are_discovered():
    assert MODEL_CLASSES, "models.__all__ lists no model"
    for cls in MODEL_CLASSES:
        assert issubclass(cls, torch.nn.Module)
        for attr in ("config", "from_config", "receptive_field", "PARAM_RANGES"):
            assert hasattr(cls, attr), f"{cls.__name__} lacks {attr}"


@per_model
@pytest.mark.parametrize("which", ["small", "default"])
@pytest.mark.parametrize("shape", [(1, 1, 64, 63), (3, 1, 37, 53), (2, 1, 1, 1)])
def test_output_shape_matches_input(cls, which, shape):
    m = build(cls, which)
    x = torch.randn(*shape)
    assert m.train()(x).shape == x.shape
    with torch.no_grad():
        assert m.eval()(x).shape == x.shape


@per_model
def test_multichannel_shape(cls):
    m = build(cls, in_channels=2, out_channels=2)
    x = torch.randn(2, 2, 19, 22)
    assert m(x).shape == x.shape
    if accepts(cls, "residual"):
        m = build(cls, in_channels=2, out_channels=3, residual=False)
        assert m(x).shape == (2, 3, 19, 22)


@per_model
def test_gradients_reach_every_parameter_and_the_input(cls):
    m = build(cls).train()
    x = torch.randn(2, m.in_channels, 33, 29, requires_grad=True)
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    assert x.grad.abs().sum() > 0


@per_model
@pytest.mark.parametrize("bias", [True, False])
def test_from_config_rebuilds_the_same_architecture(cls, bias):
    m = build(cls, bias=bias) if accepts(cls, "bias") else build(cls)
    warm_up_statistics(m, m.in_channels)
    cfg = json.loads(json.dumps(m.config()))  # checkpoints store the config as JSON
    assert cfg == m.config()
    m2 = cls.from_config(cfg)
    m2.load_state_dict(m.state_dict(), strict=True)
    m2.eval()
    assert m2.config() == cfg
    assert repr(m2) == repr(m)
    x = torch.randn(2, m.in_channels, 21, 18)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


@per_model
def test_from_config_names_unknown_keys(cls):
    cfg = build(cls).config()
    with pytest.raises(ValueError, match="colour_depth"):
        cls.from_config({**cfg, "colour_depth": 3})
    with pytest.raises(ValueError):
        cls.from_config([("depth", 17)])


@per_model
def test_eval_mode_is_deterministic_and_batch_independent(cls):
    m = build(cls)
    warm_up_statistics(m, m.in_channels)
    x = torch.randn(3, m.in_channels, 26, 31)
    with torch.no_grad():
        a, b = m(x), m(x)
        single = m(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:2], single, rtol=1e-5, atol=1e-5)


@per_model
def test_bias_free_variant_is_scale_equivariant(cls):
    """Mohan et al. 2020, Sec. 3: without additive constants, f(a x) = a f(x) for a > 0."""
    if not accepts(cls, "bias"):
        pytest.skip(f"{cls.__name__} has no bias-free variant")
    m = build(cls, bias=False).double()
    names = [n for n, _ in m.named_parameters()] + [n for n, _ in m.named_buffers()]
    assert not [n for n in names if n.endswith("bias") or n.endswith("running_mean")], names
    warm_up_statistics(m, m.in_channels)
    x = torch.rand(2, m.in_channels, 27, 30, dtype=torch.float64) + 0.2
    with torch.no_grad():
        fx = m(x)
        for a in (0.03, 1.7, 250.0):
            torch.testing.assert_close(m(a * x), a * fx, rtol=1e-10, atol=1e-12 * a)

    # Negative control: the ordinary network is not equivariant, so the check above has teeth.
    biased = build(cls, bias=True).double()
    warm_up_statistics(biased, biased.in_channels)
    with torch.no_grad():
        gap = (biased(250.0 * x) - 250.0 * biased(x)).abs().max()
    assert gap > 1e-3


@per_model
def test_residual_with_zero_head_returns_the_input(cls):
    """Residual learning (Zhang et al. 2017, Sec. III-B): output = input - predicted noise."""
    if not accepts(cls, "residual"):
        pytest.skip(f"{cls.__name__} has no residual option")
    m = build(cls, residual=True)
    with torch.no_grad():
        for p in m.head.parameters():
            p.zero_()
    x = torch.randn(2, m.in_channels, 23, 41)
    assert torch.equal(m.train()(x), x)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), x)


@per_model
@pytest.mark.parametrize("which", ["small", "default"])
def test_receptive_field_bounds_the_gradient_support(cls, which):
    """The centre output pixel's gradient w.r.t. a large zero-mean input is nonzero only
    inside the analytic receptive field (eval mode: training-mode BN mixes all pixels)."""
    m = build(cls, which).eval()
    rf = m.receptive_field()
    n = 2 * rf + 9
    x = torch.randn(1, m.in_channels, n, n, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    m(x)[0, 0, n // 2, n // 2].backward()
    support = x.grad[0].abs().sum(0) > 0
    rows = support.any(1).nonzero().flatten()
    cols = support.any(0).nonzero().flatten()
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < n - 1 and cols.max() < n - 1, (
        "gradient support touches the image border: the measurement would be clipped"
    )
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1).item()
    assert extent <= rf
    assert extent >= 0.8 * rf, f"analytic receptive field {rf} px far above measured {extent} px"


@per_model
def test_parameter_ranges_are_enforced(cls):
    assert cls.PARAM_RANGES
    base = small_kwargs(cls)
    for name, (lo, hi) in cls.PARAM_RANGES.items():
        for bad in (lo - 1, hi + 1, float(lo), True, "8"):
            with pytest.raises(ValueError, match=name):
                cls(**{**base, name: bad})
        for good in (lo, hi):
            kwargs = {**base, name: good}
            if name in ("in_channels", "out_channels") and accepts(cls, "residual"):
                kwargs["residual"] = False
            assert cls(**kwargs).config()[name] == good
    if accepts(cls, "residual"):
        with pytest.raises(ValueError, match="in_channels"):
            cls(**{**base, "in_channels": 1, "out_channels": 2, "residual": True})


QUOTED = re.compile(r"``(?P<expr>\w+\([^`]*\))``: (?P<count>[\d,]+) parameters")


def _construct(cls, expr: str) -> torch.nn.Module:
    call = ast.parse(expr, mode="eval").body
    assert isinstance(call, ast.Call) and call.func.id == cls.__name__ and not call.args, expr
    return cls(**{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords})


@per_model
def test_parameter_counts_quoted_in_the_docstring(cls):
    quoted = QUOTED.findall(cls.__doc__ or "")
    assert any(expr == f"{cls.__name__}()" for expr, _ in quoted), (
        f"{cls.__name__}'s docstring must quote the parameter count of the default config"
    )
    for expr, count in quoted:
        m = _construct(cls, expr)
        assert sum(p.numel() for p in m.parameters()) == int(count.replace(",", "")), expr
    assert f"{build(cls, 'default').receptive_field()} px" in cls.__doc__, (
        "the docstring must state the default receptive field in px"
    )


@per_model
def test_dtypes_memory_format_and_bf16_autocast(cls):
    m = build(cls)
    warm_up_statistics(m, m.in_channels)
    x = torch.randn(2, m.in_channels, 25, 34)
    with torch.no_grad():
        ref = m(x)
        m64 = cls.from_config(m.config()).double().eval()
        m64.load_state_dict(m.state_dict())
        y64 = m64(x.double())
        assert y64.dtype == torch.float64
        torch.testing.assert_close(y64.float(), ref, rtol=1e-4, atol=1e-4)
        y_cl = m(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(y_cl, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = m(x)
        assert y16.shape == ref.shape and torch.isfinite(y16).all()
        rel = (y16.float() - ref).norm() / ref.norm()
        assert rel < 0.1, f"bf16 autocast deviates by {rel:.3f} (relative L2)"
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(x).float().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bias_free_batch_norm_training_gradient_and_statistics(memory_format):
    """The hand-written backward of the bias-free batch norm matches finite differences,
    and its forward/running variance match the definition (Mohan et al. 2020, Sec. 3)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * 2 + 1).contiguous(
        memory_format=memory_format
    )
    bn = models.BiasFreeBatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0, generator=g)
    torch.autograd.gradcheck(bn, (x.requires_grad_(True),))
    bn = models.BiasFreeBatchNorm2d(4, momentum=0.25).double()
    y = bn(x)
    var = x.detach().var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(y, x / torch.sqrt(var + bn.eps).view(1, -1, 1, 1))
    torch.testing.assert_close(
        bn.running_var, 0.75 + 0.25 * x.detach().var(dim=(0, 2, 3), unbiased=True)
    )


def test_frozen_bias_free_batch_norm_trains_as_a_fixed_scale():
    """Frozen, the training-mode layer divides by the running std (as in eval) and leaves it alone."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64) * 3 + 2
    bn = models.BiasFreeBatchNorm2d(3).double()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 4.0]))
        bn.weight.copy_(torch.tensor([1.0, 0.5, 2.0]))
    bn.eval()
    expected = bn(x)
    net = torch.nn.Sequential(bn)
    assert models.dncnn.freeze_bias_free_norms(net) == 1 and "frozen" in repr(bn)
    bn.train()
    y = bn(x)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(bn.running_var, torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64))
    y.sum().backward()
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()
    models.dncnn.freeze_bias_free_norms(net, False)
    assert not torch.allclose(bn(x), expected)  # batch statistics again


def test_load_without_constants_keeps_what_multiplies():
    """A biased UNet whose biases and running means are zero computes the same function as the
    bias-free UNet loaded from it; another architecture is refused."""
    torch.manual_seed(0)
    biased = models.UNet(scales=2, base=16).eval()
    with torch.no_grad():
        for name, t in biased.state_dict().items():
            if name.endswith(("bias", "running_mean")):
                t.zero_()
            elif name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
    bias_free = models.UNet(scales=2, base=16, bias=False).eval()
    models.dncnn.load_without_constants(bias_free, biased)
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(bias_free(x), biased(x))
    with pytest.raises(RuntimeError):
        models.dncnn.load_without_constants(models.UNet(scales=3, base=16, bias=False), biased)
