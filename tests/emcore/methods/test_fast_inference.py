"""CPU inference speed-ups that must not change results: folded batch norms, heap allocation,
tiles fitted to the image."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emcore.methods.fast_inference import inference_copy
from emcore.methods.tiling import axis_plan, tiled_apply
from models.dncnn import BiasFreeBatchNorm2d, DnCNN
from models.unet import UNet


def _randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, BiasFreeBatchNorm2d)):
                for name in ("weight", "bias", "running_mean"):
                    t = getattr(m, name, None)
                    if t is not None:
                        t.copy_(torch.randn(t.shape, generator=g) * 0.3 + (1.0 if name == "weight" else 0.0))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if getattr(m, "head", None) is not None:  # a prior network's head starts at zero: make it count
                nn.init.normal_(m.head.weight, std=0.1, generator=g)
    return model.eval()


@pytest.mark.parametrize("make", [
    lambda: UNet(in_channels=2, prior=True, scales=3, base=16),
    lambda: UNet(scales=3, base=16),
    lambda: UNet(scales=3, base=16, bias=False),
    lambda: DnCNN(width=16),
    lambda: DnCNN(in_channels=2, width=16, prior=True, residual=False),
])
def test_folded_copy_gives_the_same_output_and_leaves_the_model_alone(make):
    torch.manual_seed(0)
    model = _randomise_norms(make(), 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    x = torch.rand(2, model.in_channels, 72, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert float(ref.abs().max()) > 0.05  # not a trivial network
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    standard = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) == 0
    assert standard > 0 or getattr(model, "bias", True) is False
    # bias-free norms stay (folding them would add nothing but rounding); the copy keeps them
    assert (sum(isinstance(m, BiasFreeBatchNorm2d) for m in fast.modules())
            == sum(isinstance(m, BiasFreeBatchNorm2d) for m in model.modules()))


@pytest.mark.parametrize("make", [
    lambda: UNet(in_channels=2, prior=True, scales=4, base=16),
    lambda: UNet(scales=3, base=16),
    lambda: UNet(scales=2, base=16, bias=False),
    lambda: UNet(in_channels=3, out_channels=3, scales=5, base=16, residual=True),
])
@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 37, 50)])
def test_padded_buffer_unet_equals_the_unet_bit_for_bit(make, shape):
    """The forward pass that writes into padded, concatenated buffers computes exactly what the
    UNet's own forward does (same folded weights), for sizes that need padding to the pooling
    step and for batches; with autograd on, the UNet's own forward runs."""
    from emcore.methods.fast_unet import PaddedBufferUNet

    torch.manual_seed(0)
    fast = inference_copy(_randomise_norms(make(), 3))
    assert isinstance(fast, PaddedBufferUNet) and fast.receptive_field() == fast.unet.receptive_field()
    g = torch.Generator().manual_seed(4)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.rand(shape[0], fast.in_channels, *shape[1:], generator=g).contiguous(memory_format=layout)
        with torch.inference_mode():
            ref, out = fast.unet(x), fast(x)
        assert out.shape == ref.shape == (shape[0], fast.out_channels, *shape[1:])
        assert float(ref.abs().max()) > 0.05 and torch.equal(out, ref)
    x.requires_grad_(True)
    fast(x).sum().backward()  # autograd: the plain forward, which has a gradient
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_inference_network_is_made_once_and_remade_when_the_weights_change():
    from emcore.methods.supervised import _inference_network

    net = _randomise_norms(UNet(scales=2, base=16), 5)
    cpu = torch.device("cpu")
    first = _inference_network(net, cpu)
    assert _inference_network(net, cpu) is first
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        before = first(x)
        net.head.bias.add_(1.0)  # changed in place: the folded copy is stale
        again = _inference_network(net, cpu)
        assert again is not first
        torch.testing.assert_close(again(x), before + 1.0, rtol=1e-5, atol=1e-5)


def test_folded_unet_keeps_the_channels_last_weights():
    fast = inference_copy(UNet(scales=2, base=16).eval())
    convs = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_heap_allocation_stops_refaulting_large_blocks():
    # In a fresh process: earlier tests leave free heap blocks that any allocation may reuse.
    script = """
import resource, torch
from emcore.methods.fast_inference import heap_allocation, release_heap

def faults(n):  # minor page faults of each of n allocations of 40 MiB (above glibc's 32 MiB mmap cap)
    out = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = torch.ones(40 << 20, dtype=torch.uint8)
        del a
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

outside = faults(3)
with heap_allocation() as on, heap_allocation() as nested:
    faults(2)  # the heap grows once
    inside = faults(4)
    big = torch.ones(400 << 20, dtype=torch.uint8)
    in_block = rss_mib()
    del big
kept = rss_mib()  # the free heap is kept for the next block
with heap_allocation():
    warm = faults(2)  # a block started within KEEP_SECONDS finds the pages mapped
release_heap()
released = rss_mib()
print(on, nested, min(outside), max(inside), max(warm), int(in_block - kept), int(kept - released))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3])
    on, nested, outside, inside, warm, dropped_on_exit, trimmed = res.stdout.split()
    pages = (40 << 20) // 4096
    assert on == nested == "True"
    assert int(outside) > pages // 2  # each block is mapped and faulted in again
    assert int(inside) < pages // 10  # inside, the block is reused
    assert int(warm) < pages // 10  # the kept heap serves the next block
    assert int(dropped_on_exit) < 40  # the 400 MiB stay resident while kept ...
    assert int(trimmed) > 300  # ... and go back to the system when released


def test_fitted_tiles_cover_the_axis_with_the_same_count_and_overlap():
    rng = np.random.default_rng(0)
    for _ in range(300):
        tile = int(rng.integers(2, 64)) * 8
        step = int(rng.integers(-(-tile // 2), tile + 1))
        n = int(rng.integers(tile + 1, 6 * tile))
        t0, p0, s0 = axis_plan(n, tile, step, 8)
        t, p, s = axis_plan(n, tile, step, 8, fit=True)
        assert len(s) == len(s0) and p >= n and p <= p0 and t <= t0 and t % 8 == 0
        assert all(b - a == t - (tile - step) for a, b in zip(s, s[1:]))  # the same overlap
        assert t == tile or t >= 2 * (tile - step)  # tiles never overlap three deep
    assert axis_plan(2048, 1024, 896, 8, fit=True) == (768, 2048, [0, 640, 1280])
    assert axis_plan(8192, 1024, 896, 8, fit=True)[0] == 1024


def test_fitted_tiles_still_match_the_whole_image_away_from_borders():
    img = np.random.default_rng(5).random((700, 530)).astype(np.float32)
    seen = []

    def mean5(x):
        seen.append(tuple(x.shape[-2:]))
        return nn.functional.conv2d(x, torch.full((1, 1, 5, 5), 1 / 25), padding=2)

    out = tiled_apply(mean5, img, tile=512, step=448, batch=1, multiple=8)
    whole = mean5(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out[2:-2, 2:-2], whole[2:-2, 2:-2], atol=1e-5)
    assert set(seen[:-1]) == {(384, 304)}  # 2 x 2 tiles shrunk to fit, not 512 x 512


def test_supervised_defaults_put_a_1024_image_in_one_tile():
    from emcore.methods.registry import get_method
    from emcore.methods.supervised import OVERLAP, TILE, _tile_batch, auto_tile

    params = {p.name: p.default for p in get_method("unet").params}
    assert (params["tile"], params["overlap"]) == (None, OVERLAP) and (TILE, OVERLAP) == (1024, 128)
    assert auto_tile((1024, 1024)) == auto_tile((3, 4096, 4096)) == 1024 and auto_tile((8192, 8192)) == 768
    assert axis_plan(1024, TILE, TILE - OVERLAP, 8, fit=True) == (1024, 1024, [0])
    assert _tile_batch(1024, "cpu") == 1 and _tile_batch(400, "cpu") == 4 and _tile_batch(400, "cuda") == 16


def test_channels_given_as_planes_equal_the_stacked_image_bit_for_bit():
    rng = np.random.default_rng(6)
    a, b = rng.random((300, 270)).astype(np.float32), rng.random((300, 270)).astype(np.float32)
    w = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(7))

    def fn(x):
        return nn.functional.conv2d(x / np.float32(3.0), w, padding=1)

    stacked = tiled_apply(fn, np.stack([a, b]), tile=128, step=96, channels=True)
    planes = tiled_apply(fn, [a, b], tile=128, step=96, channels=True)
    np.testing.assert_array_equal(planes, stacked)
    with pytest.raises(Exception, match="same 2-D shape"):
        tiled_apply(fn, [a, b[:-1]], channels=True)
