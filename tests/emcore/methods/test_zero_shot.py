"""Noise2SR (Tian et al. 2024) and Noise2Self (Batson & Royer 2019): sampler, masks, network,
loss, MMSE, and the registry entries on small simulated data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emcore import Dataset, EmcoreError, sim
from emcore.evaluate.reference import psnr
from emcore.methods import noise2self as n2s
from emcore.methods import noise2sr as n2sr
from emcore.methods import zero_shot as ss
from emcore.methods.registry import denoise, get_method
from emcore.noise.models import PoissonGaussian
from emcore.train.losses import MSELoss
from models import Noise2SR

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (see conftest)

# -- random sub-sampler ---------------------------------------------------------------


@pytest.mark.parametrize("s", [2, 3])
def test_subsampler_keeps_one_pixel_per_cell_and_mask_is_the_complement(s):
    b, h, w = 3, 5, 7
    x = torch.arange(b * s * h * s * w, dtype=torch.float32).reshape(b, 1, s * h, s * w)  # all values distinct
    cells = torch.from_numpy(n2sr.draw_cells(np.random.default_rng(0), b, h, w, s))
    low, mask = n2sr.subsample(x, cells, s)
    assert low.shape == (b, 1, h, w) and mask.shape == (b, 1, s * h, s * w)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    per_cell = mask.reshape(b, h, s, w, s).sum(dim=(2, 4))
    assert torch.all(per_cell == s * s - 1)  # exactly one pixel kept per cell
    kept = (x * (1 - mask)).reshape(b, h, s, w, s).sum(dim=(2, 4))  # the one unmasked value per cell
    torch.testing.assert_close(low[:, 0], kept)
    # the kept pixel is the one the cell index names: row k // s, column k % s
    i, j = cells // s, cells % s
    rows = torch.arange(h).view(1, h, 1) * s + i
    cols = torch.arange(w).view(1, 1, w) * s + j
    torch.testing.assert_close(low[:, 0], x[torch.arange(b).view(b, 1, 1), 0, rows, cols])


@pytest.mark.parametrize("s", [2, 3])
def test_subsampler_positions_are_uniform_and_independent_of_the_cell(s):
    n = 20000
    cells = n2sr.draw_cells(np.random.default_rng(1), n, 2, 2, s)
    counts = np.bincount(cells.ravel(), minlength=s * s)
    expected = cells.size / (s * s)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 99.9 % quantiles of chi-square with 3 and 8 degrees of freedom
    assert chi2 < {2: 16.27, 3: 26.12}[s], counts
    # neighbouring cells choose independently: the joint table of two cells is uniform too
    joint = np.bincount((cells[:, 0, 0] * s * s + cells[:, 0, 1]).ravel(), minlength=s**4)
    e2 = n / s**4
    assert float(((joint - e2) ** 2 / e2).sum()) < {2: 37.70, 3: 124.84}[s]  # 15 and 80 dof


def test_mmse_patterns_do_not_depend_on_grouping():
    a = n2sr.mmse_cells(4, 3, 6, 5, 2)
    assert np.array_equal(a, n2sr.mmse_cells(4, 3, 6, 5, 2))
    assert not np.array_equal(a, n2sr.mmse_cells(4, 2, 6, 5, 2))


# -- network -----------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(13, 7), (1, 1), (21, 32)])
def test_network_super_resolves_any_size(h, w):
    torch.manual_seed(0)
    m = Noise2SR(scales=3, base=16, features=8)
    assert m(torch.randn(2, 1, h, w)).shape == (2, 1, 2 * h, 2 * w)
    m3 = Noise2SR(scale=3, scales=2, base=16, features=8)
    assert m3(torch.randn(2, 1, h, w)).shape == (2, 1, 3 * h, 3 * w)


@pytest.mark.parametrize("hh,ww", [(37, 29), (33, 64), (17, 17)])
def test_mmse_output_has_the_input_size_for_odd_sizes(hh, ww):
    torch.manual_seed(0)
    m = Noise2SR(scales=3, base=16, features=8).eval()
    x = torch.rand(hh, ww)
    with torch.no_grad():
        out = n2sr.mmse_apply(m, x, 3, seed=0, chunk=2)
        again = n2sr.mmse_apply(m, x, 3, seed=0, chunk=1)
    assert out.shape == (hh, ww)
    torch.testing.assert_close(out, again)  # the fixed patterns do not depend on batching


def test_network_config_receptive_field_and_quoted_counts():
    import re

    m = Noise2SR(scales=3, base=16, features=8)
    m2 = Noise2SR.from_config(json.loads(json.dumps(m.config())))
    m2.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="colour"):
        Noise2SR.from_config({**m.config(), "colour": 1})
    with pytest.raises(ValueError, match="scale"):
        Noise2SR(scale=5)
    for expr, count in re.findall(r"``(Noise2SR\([^`]*\))``: ([\d,]+) parameters", Noise2SR.__doc__):
        net = eval(expr, {"Noise2SR": Noise2SR})  # noqa: S307 - our own docstring
        assert sum(p.numel() for p in net.parameters()) == int(count.replace(",", "")), expr
    assert f"{Noise2SR().receptive_field()} px" in Noise2SR.__doc__
    # the gradient of one output pixel stays inside the declared field (input pixels)
    m.eval()
    rf = m.receptive_field()
    n = 2 * rf + 9
    x = torch.randn(1, 1, n, n, requires_grad=True)
    m(x)[0, 0, n, n].backward()  # output pixel (n, n) lies in input cell (n // 2, n // 2)
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero().flatten()
    cols = (x.grad[0, 0].abs().sum(0) > 0).nonzero().flatten()
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1).item()
    assert 0.8 * rf <= extent <= rf


def test_icnr_start_is_nearest_neighbour_upsampling():
    """[Aitken2017]: at initialisation the s**2 sub-pixels of a cell get the same value."""
    torch.manual_seed(0)
    m = Noise2SR(scales=2, base=16, features=8).eval()
    with torch.no_grad():
        y = m(torch.rand(1, 1, 6, 5))
    cells = y.reshape(1, 1, 6, 2, 5, 2)
    torch.testing.assert_close(cells, cells[:, :, :, :1, :, :1].expand_as(cells))


# -- loss ---------------------------------------------------------------------------------


def test_loss_ignores_the_sampled_pixels():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 10, generator=g)
    out = torch.rand(2, 1, 8, 10, generator=g, requires_grad=True)
    cells = torch.from_numpy(n2sr.draw_cells(np.random.default_rng(2), 2, 4, 5, 2))
    _, mask = n2sr.subsample(target, cells, 2)
    loss = MSELoss()
    ref = loss(out, target, mask)
    changed = target.clone()
    changed[mask == 0] += 100.0  # the pixels fed to the network
    torch.testing.assert_close(loss(out, changed, mask), ref)
    other = target.clone()
    other[mask == 1] += 0.5
    assert loss(out, other, mask) > ref + 0.1
    ref.backward()
    assert torch.all(out.grad[mask == 0] == 0) and out.grad[mask == 1].abs().sum() > 0
    # the data source hands out exactly that mask with its batch
    src = n2sr.SubsampledPatches(np.random.default_rng(0).random((2, 40, 36)).astype(np.float32))
    low, tgt, m = src.batch(3, 16, np.random.default_rng(5))
    assert low.shape == (3, 1, 8, 8) and tgt.shape == (3, 1, 16, 16)
    torch.testing.assert_close(low[:, 0], (tgt * (1 - m)).reshape(3, 8, 2, 8, 2).sum(dim=(2, 4)))


# -- Noise2Self masking ----------------------------------------------------------------------


def test_noise2self_interpolation_is_j_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 12, 12, generator=g, requires_grad=True)
    mask = torch.from_numpy(n2s.grid_mask((12, 12), 4, (1, 2))[None, None].astype(np.float32))
    y = n2s.interpolate_masked(x, mask)
    torch.testing.assert_close(y[mask == 0], x[mask == 0])  # the rest is untouched
    y[0, 0, 5, 6].backward()  # a masked pixel: its value comes from its neighbours only
    assert x.grad[0, 0, 5, 6] == 0 and x.grad[0, 0, 4:7, 5:8].sum() > 0
    # the J-invariant prediction of a pixel never reads that pixel
    from models.unet import UNet

    torch.manual_seed(0)
    net = UNet(scales=2, base=16).eval()
    z = torch.rand(16, 16, requires_grad=True)
    n2s.j_invariant_apply(net, z, 4)[7, 9].backward()
    assert z.grad[7, 9] == 0 and z.grad.abs().sum() > 0
    src = n2s.MaskedPatches(np.ones((1, 20, 20), np.float32) * 2, grid=4)
    inp, tgt, m = src.batch(2, 16, np.random.default_rng(0))
    assert inp.shape == tgt.shape == m.shape == (2, 1, 16, 16)
    assert torch.all(m.sum(dim=(1, 2, 3)) == 16)  # one pixel in 4 x 4
    torch.testing.assert_close(inp, tgt)  # a flat image interpolates to itself


# -- the methods -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hrem128():
    return sim.hrem_example(seed=5, dose=1.0, size=128, noise=PoissonGaussian(0.05, 0.02))


def test_tiny_budget_noise2sr_improves_psnr(hrem128):
    ds = hrem128
    before = psnr(ds.data, ds.ground_truth)
    res = denoise(ds, "noise2sr", seed=0, steps=40, batch_size=2, patch_size=64, mmse_samples=8, lr=3e-3)
    after = psnr(res.data, ds.ground_truth)
    assert after > before + 5.0, (before, after)  # measured: 1.6 -> 12.1 dB
    # what the inspection view needs
    art = res.artifacts
    assert art["receptive_field"] == 2 * Noise2SR().receptive_field() and art["min_size"] == 2
    assert art["training"] and art["training"][-1]["step"] == 40
    x = torch.from_numpy(ds.data.copy()).requires_grad_(True)
    y = art["apply"](x)
    np.testing.assert_allclose(y.detach().numpy(), res.data, rtol=1e-4, atol=1e-4 * float(np.abs(res.data).max()))
    y[60, 70].backward()
    assert x.grad.abs().sum() > 0
    crop = art["apply"](torch.from_numpy(ds.data[10:41, 20:47].copy()))  # odd crop
    assert crop.shape == (31, 27)
    assert res.params["steps"] == 40 and res.params["preset"] == "fast" and res.params["steps_done"] == 40


def test_mmse_with_more_samples_lowers_the_variance(hrem128):
    torch.manual_seed(0)
    m = Noise2SR(scales=2, base=16, features=8)
    src = n2sr.SubsampledPatches(ss._frames_of(hrem128))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    for _ in range(5):  # a few steps so the output is not the initial smooth map
        low, tgt, mask = src.batch(4, 32, rng)
        loss = MSELoss()(m(low), tgt, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x = torch.from_numpy(hrem128.data[:48, :48].copy())
    with torch.no_grad():
        var = {}
        for k in (1, 8):
            est = torch.stack([n2sr.mmse_apply(m, x, k, seed=sd, chunk=k) for sd in range(8)])
            var[k] = float(est.var(0).mean())
    assert var[8] < 0.3 * var[1], var  # ideally 1/8 for independent patterns


def test_stack_trains_one_model_and_stop_keeps_a_result():
    clean = sim.hrem_example(seed=2, dose=5.0, size=48).ground_truth
    g = np.random.default_rng(0)
    frames = np.stack([PoissonGaussian(0.05, 0.02).sample(clean, g) for _ in range(3)])
    ds = Dataset(frames, "stack", ground_truth=np.stack([clean] * 3), name="tiny movie")
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    seen = []
    res = denoise(ds, "noise2sr", seed=1, steps=50, batch_size=2, patch_size=32, mmse_samples=2,
                  should_stop=stop_after_three, progress=seen.append)
    assert res.data.shape == frames.shape and np.all(np.isfinite(res.data))
    assert any(line.startswith("Stopped at step 3 of 50") for line in res.log), res.log
    assert res.params["steps_done"] == 3
    assert seen[-1].step == seen[-1].total == 3 and "frame 3 of 3" in seen[-1].message  # inference finished


def test_small_image_adapts_the_patch_and_tiny_image_is_refused():
    g = np.random.default_rng(0)
    ds = Dataset(g.random((40, 52)).astype(np.float32) + 1, "image", name="small.tif")
    res = denoise(ds, "noise2self", steps=1, batch_size=1)
    assert any("smaller than the 64-px training patches; training on 40-px patches" in x for x in res.log), res.log
    assert res.params["patch_size"] == 40
    res = denoise(ds, "noise2sr", steps=1, batch_size=1, mmse_samples=1, patch_size=64)
    assert res.params["patch_size"] == 40
    with pytest.raises(EmcoreError, match="tiny.tif is 12×30 px, too small"):
        denoise(Dataset(g.random((12, 30)).astype(np.float32), "image", name="tiny.tif"), "noise2sr")


def test_cube_is_refused_and_dcae3d_is_named():
    cube = Dataset(np.ones((16, 16, 8), np.float32), "cube", name="cube")
    for name in ("noise2sr", "noise2self"):
        with pytest.raises(EmcoreError, match="but cube is a spectrum image; methods for a spectrum image: .*dcae3d"):
            denoise(cube, name)
        assert "dcae3d" in get_method(name).details


def test_quality_preset_runs_a_few_steps_on_the_cpu():
    g = np.random.default_rng(0)
    ds = Dataset(g.random((64, 64)).astype(np.float32) + 1, "image", name="q")
    res = denoise(ds, "noise2sr", preset="quality", steps=1, mmse_samples=2, device="cpu")
    assert res.params["batch_size"] == 10 and res.params["lr"] == pytest.approx(1e-4)
    assert res.params["patch_size"] == 64  # the paper's 256 px adapted to the image
    res = denoise(ds, "noise2self", preset="quality", steps=1, batch_size=2, device="cpu")
    assert res.data.shape == (64, 64) and res.params["lr"] == pytest.approx(1e-4)


def test_large_frames_are_denoised_in_tiles(monkeypatch):
    """Frames above the size limit go through overlapping tiles (memory); same shape, finite."""
    monkeypatch.setattr(ss, "_TILE_ABOVE", 1000)
    monkeypatch.setattr(ss, "_TILE", 32)
    monkeypatch.setattr(ss, "_TILE_STEP", 24)
    g = np.random.default_rng(0)
    ds = Dataset(g.random((50, 41)).astype(np.float32) + 1, "image", name="big")
    seen = []
    res = denoise(ds, "noise2sr", steps=1, batch_size=1, patch_size=32, mmse_samples=2, progress=seen.append)
    assert res.data.shape == (50, 41) and np.all(np.isfinite(res.data))
    assert seen[-1].message.startswith("MMSE average of 2 sub-samplings: done")


# -- the Wiener prior channel of Noise2SR (issue 18) ------------------------------------


def test_prior_batches_are_cell_aligned_and_blind_to_the_loss_pixels(hrem128):
    """The prior is computed from the kept pixels only: changing a pixel that was not kept
    changes neither the network input nor the prior, only the target."""
    frames = ss._frames_of(hrem128)
    src = n2sr.SubsampledPatches(frames, prior_fn=lambda low: low * 2.0)
    x, target, mask = src.batch(3, 32, np.random.default_rng(1))
    assert x.shape == (3, 2, 16, 16) and target.shape == (3, 1, 32, 32) and mask.shape == target.shape
    torch.testing.assert_close(x[:, 1], 2.0 * x[:, 0])  # the prior of exactly the kept pixels
    # every input pixel is a kept pixel of its target patch (mask 0 there, one per cell)
    kept = 1 - mask
    assert torch.all(kept.reshape(3, 16, 2, 16, 2).sum((2, 4)) == 1)
    cells = (kept * target).reshape(3, 16, 2, 16, 2).sum((2, 4))
    torch.testing.assert_close(cells, x[:, 0])


def test_prior_channel_beats_the_plain_network_at_the_same_budget():
    ds = sim.hrem_example(seed=5, dose=2.0, size=128)
    before = psnr(ds.data, ds.ground_truth)
    quick = dict(seed=0, steps=40, batch_size=2, patch_size=64, mmse_samples=8, lr=3e-3)
    off = denoise(ds, "noise2sr", prior="off", **quick)
    on = denoise(ds, "noise2sr", prior="wiener", **quick)
    p_off, p_on = psnr(off.data, ds.ground_truth), psnr(on.data, ds.ground_truth)
    assert p_on > p_off + 1.0 and p_on > before + 8.0, (before, p_off, p_on)
    assert any("Prior channel" in line for line in on.log) and on.params["prior_window"] is not None
    # the filter view follows the network with the prior held fixed, and says so
    from emcore.evaluate.filter_view import pixel_filter

    f = pixel_filter(on.artifacts, ds.data, 60, 64, method="noise2sr")
    assert "prior" in f.note and np.isfinite(f.weights).all()


def test_presets_give_the_steps_the_page_shows():
    m = get_method("noise2sr")
    assert m.preset_values({"preset": "fast", "prior": "wiener"})["steps"] == ss.PRESETS["noise2sr"]["fast"]["prior_steps"]
    assert m.preset_values({"preset": "fast", "prior": "off"})["steps"] == ss.PRESETS["noise2sr"]["fast"]["steps"]
