"""3D-DCAE: the network, the Noise2Self masking of spectrum images, spectral preparation,
HAADF fusion, bad input, stop, and a tiny training run that denoises."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from emcore import Dataset, EmcoreError, sim
from emcore.data.dataset import Calibration
from emcore.evaluate.validation import reference_metrics
from emcore.methods.dcae3d import _SoftplusMSE
from emcore.methods.dcae3d_data import MaskedCubeSource, prepare_cube, spread_back
from emcore.methods.registry import denoise, get_method
from emcore.train.losses import PoissonNLLLoss
from models.dcae3d import DCAE3D

QUICK = get_method("dcae3d").quick


def _cube(h=13, w=11, e=37, seed=0, haadf=True) -> Dataset:
    g = np.random.default_rng(seed)
    r, c = np.mgrid[0:h, 0:w]
    a = (np.hypot(r - h / 2, c - w / 2) < min(h, w) / 3).astype(np.float32)
    spectra = np.zeros((2, e), np.float32)
    spectra[0, e // 4] = spectra[1, 3 * e // 4] = 2.0
    spectra += 0.05
    clean = np.stack([a, 1 - a], -1) @ spectra
    return Dataset(g.poisson(clean).astype(np.float32), "cube", ground_truth=clean, is_counts=True,
                   haadf=(a + 0.02 * g.standard_normal(a.shape)).astype(np.float32) if haadf else None,
                   calibration=Calibration(1.0, "nm", 0.1, 0.02, "keV"), name="odd cube")


def _source(e=20, h=24, w=24, haadf=True, **kw):
    g = np.random.default_rng(0)
    x = g.poisson(0.5, size=(e, h, w)).astype(np.float32)
    hd = g.standard_normal((h, w)).astype(np.float32) if haadf else None
    return MaskedCubeSource(x, np.linspace(-1, 1, e), hd, **kw), x, hd


def _map_psnr(ds, a):
    lines = ds.metadata["xray_lines"]
    m = reference_metrics(ds, a, lines)
    return float(np.mean([m[f"psnr_{x}"] for x in lines if f"psnr_{x}" in m]))


# -- the network --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 2, 13, 11, 7), (2, 2, 1, 1, 1), (1, 2, 37, 24, 9)])
def test_network_keeps_any_size(shape):
    m = DCAE3D(width=4)
    x = torch.randn(*shape)
    assert m(x).shape == (shape[0], 1, *shape[2:])


@pytest.mark.parametrize("kw", [dict(levels=1), dict(levels=1, spectral_context=False), dict(skips=False)])
def test_receptive_field_bounds_the_gradient_support(kw):
    torch.manual_seed(0)  # the weights come from the global generator: fix them, whatever ran before
    m = DCAE3D(width=4, in_channels=1, **kw).eval()
    with torch.no_grad():  # positive biases so that the ReLUs pass and every path shows
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(0.2, 0.4, generator=torch.Generator().manual_seed(1))
    rf, rfe = m.receptive_field(), m.receptive_field_energy()
    n, ne = rf + 12, (rfe or 6) + 12
    x = torch.randn(1, 1, ne, n, n, generator=torch.Generator().manual_seed(2), requires_grad=True)
    extent, extent_e, seen = 0, 0, 0
    for o in range(12):  # the field depends on the position modulo the stride
        x.grad = None
        k = o % 4
        m(x)[0, 0, ne // 2 + k, n // 2 + k, n // 2 + o // 4].backward()
        g = x.grad[0, 0].abs()
        if not float(g.sum()) > 0:
            continue  # every ReLU of the last layer is off at this voxel
        seen += 1
        rows = (g.sum((0, 2)) > 0).nonzero().flatten()
        chans = (g.sum((1, 2)) > 0).nonzero().flatten()
        extent = max(extent, int(rows.max() - rows.min() + 1))
        extent_e = max(extent_e, int(chans.max() - chans.min() + 1))
    assert seen >= 6
    assert extent == rf
    if rfe is None:
        assert extent_e == ne  # the spectral context reaches the whole energy axis
    else:
        assert extent_e == rfe


def test_config_round_trip_and_docstring_counts():
    import re

    m = DCAE3D(in_channels=3, width=8)
    m2 = DCAE3D.from_config(m.config())
    m2.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 9, 10, 11)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    with pytest.raises(ValueError, match="depth"):
        DCAE3D.from_config({**m.config(), "depth": 3})
    with pytest.raises(ValueError, match="levels"):
        DCAE3D(levels=9)
    quoted = re.findall(r"``DCAE3D\(([^`]*)\)``: ([\d,]+) parameters", DCAE3D.__doc__)
    assert quoted
    for args, count in quoted:
        kwargs = eval(f"dict({args})")  # noqa: S307 - our own docstring
        assert sum(p.numel() for p in DCAE3D(**kwargs).parameters()) == int(count.replace(",", ""))
    assert f"{DCAE3D().receptive_field()} px" in DCAE3D.__doc__


# -- masking ------------------------------------------------------------------------------
def test_masking_draws_the_requested_fraction_and_hides_those_voxels():
    src, x, _ = _source(mask_rate=0.2, holdout_rate=0.0)
    inputs, targets, mask = src.batch(8, 16, np.random.default_rng(1))
    assert inputs.shape == (8, 4, 20, 16, 16) and targets.shape == mask.shape == (8, 1, 20, 16, 16)
    assert abs(float(mask.mean()) - 0.2) < 0.01
    hidden = mask[:, 0] > 0
    assert torch.equal(inputs[:, 1], mask[:, 0])  # the network is told which voxels are hidden
    assert torch.all(inputs[:, 0][hidden] == 0)  # fill = zero
    assert torch.equal(inputs[:, 0][~hidden], targets[:, 0][~hidden])  # the rest is the data

    src, x, _ = _source(mask_rate=0.2, holdout_rate=0.0, fill="local_mean")
    inputs, targets, mask = src.batch(4, 24, np.random.default_rng(2))
    hidden = mask[:, 0] > 0
    # a hidden voxel gets the mean of its 26 neighbours (in the flipped/transposed crop)
    from emcore.methods.dcae3d_data import _local_mean

    lm = np.round(_local_mean(x), 4)
    assert np.isin(np.round(inputs[:, 0][hidden].numpy(), 4), lm).all()
    assert float(inputs[:, 0][hidden].std()) > 0


def test_holdout_voxels_are_never_training_targets_and_score_validation():
    src, x, _ = _source(mask_rate=0.3, holdout_rate=0.1, val_patch=24)
    # whole-map crops: the mask lines up with the hold-out set up to a flip / transpose
    ok = []
    for seed in range(3):
        inputs, targets, mask = src.batch(2, 24, np.random.default_rng(seed))
        for m in mask[:, 0].numpy().astype(bool):
            views = [np.flip(np.rot90(src.holdout, k, axes=(1, 2)), axis=2) for k in range(4)]
            views += [np.rot90(src.holdout, k, axes=(1, 2)) for k in range(4)]
            ok.append(any(not np.any(m & v) for v in views))
    assert all(ok)
    (val,) = src.validation()
    v_in, v_t, v_m, clean = val
    assert clean is None and torch.equal(v_m[0, 0].bool(), torch.from_numpy(src.holdout))
    assert torch.all(v_in[0, 0][v_m[0, 0] > 0] == 0) and torch.equal(v_in[0, 1], v_m[0, 0])


def test_haadf_channel_is_never_masked():
    src, x, hd = _source(mask_rate=0.4, holdout_rate=0.0)
    inputs, _, mask = src.batch(6, 24, np.random.default_rng(3))  # whole map: a flip/transpose of it
    views = [np.rot90(hd, k) for k in range(4)] + [np.rot90(hd[:, ::-1], k) for k in range(4)]
    for item, m in zip(inputs, mask):
        chan = item[3].numpy()
        assert np.all(chan == chan[:1])  # constant along energy
        assert any(np.array_equal(chan[0], v) for v in views)
        assert np.all(item[2].numpy() == item[2, :, :1, :1].numpy())  # the spectrum channel: not masked either
        assert float(m.sum()) > 0  # while the counts channel is


@pytest.mark.parametrize("loss", [PoissonNLLLoss(link="softplus"), _SoftplusMSE()])
def test_loss_sees_only_masked_voxels(loss):
    src, _, _ = _source(mask_rate=0.1, holdout_rate=0.0)
    _, targets, mask = src.batch(2, 16, np.random.default_rng(4))
    out = torch.randn(targets.shape, generator=torch.Generator().manual_seed(5))
    base = float(loss(out, targets, mask))
    changed = out.clone()
    changed[mask == 0] += 10.0  # unmasked voxels: no effect
    assert float(loss(changed, targets, mask)) == pytest.approx(base, rel=1e-6)
    changed = out.clone()
    changed[mask > 0] += 1.0  # masked voxels: they are the loss
    assert float(loss(changed, targets, mask)) != pytest.approx(base, rel=1e-3)


# -- spectral preparation -----------------------------------------------------------------
def test_binning_and_spreading_back_keep_counts_and_empty_channels():
    g = np.random.default_rng(0)
    data = g.poisson(2.0, size=(5, 6, 50)).astype(np.float32)
    data[:, :, :4] = 0  # empty at the start (below the detector's range)
    data[:, :, 20:23] = 0  # empty inside
    data[:, :, 45:] = 0  # empty at the end
    before = data.copy()
    prep = prepare_cube(data, 0, 50, 4)
    np.testing.assert_array_equal(data, before)
    assert (prep.lo, prep.hi, prep.bin) == (4, 45, 4) and prep.channels == 11
    assert prep.cube.sum() == pytest.approx(data.sum())
    back = spread_back(prep.cube, prep)
    assert back.shape == (5, 6, 41)
    assert np.all(back[:, :, 20 - 4:23 - 4] == 0)  # channels with no count stay exactly zero
    # each bin's value is spread over its channels, not lost or created
    np.testing.assert_allclose(back.reshape(5, 6, -1)[:, :, :40].reshape(5, 6, 10, 4).sum(-1), prep.cube[:, :, :10],
                               rtol=1e-5)
    t = torch.from_numpy(prep.cube).requires_grad_(True)
    torch_back = spread_back(t, prep)
    np.testing.assert_allclose(torch_back.detach().numpy(), back, rtol=1e-6)
    torch_back.sum().backward()
    assert t.grad is not None


def test_energy_crop_leaves_other_channels_as_recorded_and_reports_it():
    ds = _cube(haadf=False)
    res = denoise(ds, "dcae3d", seed=0, energy_min=0.2, energy_max=0.5, **QUICK)
    lo, hi = 5, 21  # 0.1 + 0.02 k in [0.2, 0.5]
    np.testing.assert_array_equal(res.data[:, :, :lo], ds.data[:, :, :lo])
    np.testing.assert_array_equal(res.data[:, :, hi:], ds.data[:, :, hi:])
    assert not np.array_equal(res.data[:, :, lo:hi], ds.data[:, :, lo:hi])
    assert any("left as recorded" in line for line in res.log)
    with pytest.raises(EmcoreError, match="holds no channel"):
        denoise(ds, "dcae3d", energy_min=5.0, energy_max=6.0, **QUICK)


# -- runs on datasets -----------------------------------------------------------------------
def test_odd_sizes_all_zero_channels_and_artifacts():
    ds = _cube()
    data = ds.data.copy()
    data[:, :, 3] = 0
    data[:, :, -2:] = 0
    ds = replace(ds, data=data)
    res = denoise(ds, "dcae3d", seed=1, **QUICK)
    assert res.data.shape == ds.data.shape == (13, 11, 37) and res.data.dtype == np.float32
    assert np.all(np.isfinite(res.data)) and np.all(res.data >= 0)
    assert np.all(res.data[:, :, 3] == 0) and np.all(res.data[:, :, -2:] == 0)
    assert res.params["use_haadf"] is True
    art = res.artifacts
    assert art["receptive_field"] == DCAE3D(levels=2).receptive_field() and art["min_size"] >= 1
    assert art["training"] and "val_loss" in art["training"][-1]
    x = torch.from_numpy(ds.data.copy())  # "apply" is the single-pass network function
    np.testing.assert_allclose(art["apply"](x).detach().numpy(), res.data, rtol=1e-4, atol=1e-5)
    j_inv = denoise(ds, "dcae3d", seed=1, inference="j-invariant", **QUICK)  # same training, other inference
    assert np.all(j_inv.data[:, :, 3] == 0) and not np.array_equal(j_inv.data, res.data)
    # on a crop (located in the map, so the matching HAADF window is used), differentiably
    crop = torch.from_numpy(ds.data[2:10, 3:9].copy()).requires_grad_(True)
    out = art["apply"](crop)
    assert out.shape == crop.shape
    out[4, 3, 9].backward()
    assert float(crop.grad.abs().sum()) > 0
    same = art["apply"](torch.from_numpy(ds.data[2:10, 3:9].copy()), origin=(2, 3))
    torch.testing.assert_close(out.detach(), same)


def test_all_zero_cube_gives_zeros():
    ds = Dataset(np.zeros((9, 8, 16), np.float32), "cube", is_counts=True, name="empty")
    res = denoise(ds, "dcae3d", **QUICK)
    assert np.all(res.data == 0)
    assert any("no counts" in line for line in res.log)


def test_haadf_missing_is_logged_and_mismatched_is_refused():
    ds = _cube(haadf=False)
    res = denoise(ds, "dcae3d", **QUICK)
    assert res.params["use_haadf"] is False
    assert any("has no HAADF image" in line for line in res.log)
    bad = _cube()
    bad.haadf = np.ones((5, 5), np.float32)  # bypasses the Dataset check, as a stale object could
    with pytest.raises(EmcoreError, match=r"5×5 pixels but the spectrum image is 13×11.*use_haadf to false"):
        denoise(bad, "dcae3d", **QUICK)
    res = denoise(bad, "dcae3d", use_haadf=False, **QUICK)  # the offered way out works
    assert res.params["use_haadf"] is False


def test_image_is_pointed_to_image_methods_and_negative_data_to_mse():
    img = Dataset(np.ones((16, 16), np.float32), "image", name="tiny image")
    with pytest.raises(EmcoreError, match="works on spectrum images, but tiny image is an image; methods for an image"):
        denoise(img, "dcae3d")
    neg = _cube(haadf=False)
    neg = replace(neg, data=neg.data - 1.0, is_counts=False)
    with pytest.raises(EmcoreError, match="loss = mse"):
        denoise(neg, "dcae3d", **QUICK)
    res = denoise(neg, "dcae3d", loss="mse", **QUICK)
    assert np.all(np.isfinite(res.data))


def test_stop_keeps_the_model_and_finishes_inference():
    ds = _cube()
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    res = denoise(ds, "dcae3d", should_stop=stop, steps=50, width=4)
    assert res.data.shape == ds.data.shape and np.all(np.isfinite(res.data))
    assert any("Stopped at step 2 of 50; result from the best model so far." in line for line in res.log)


# -- it denoises ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    # 32×32 px, 0–10 keV in 32 channels, ~20 counts per pixel: small enough for CPU seconds.
    return sim.eds_example(seed=2, counts_per_pixel=20, size=32, channels=32, energy_scale=0.32)


TINY = dict(steps=80, patch_size=16)  # a tiny training budget: about 8 CPU-seconds per run


@pytest.fixture(scope="module")
def with_haadf(phantom):
    return denoise(phantom, "dcae3d", seed=0, use_haadf=True, **TINY)


def test_tiny_budget_beats_the_raw_element_maps(phantom, with_haadf):
    assert with_haadf.params["use_haadf"] is True and with_haadf.params["steps"] == 80
    assert _map_psnr(phantom, with_haadf.data) > _map_psnr(phantom, phantom.data) + 1.5
    assert reference_metrics(phantom, with_haadf.data)["psnr"] > reference_metrics(phantom, phantom.data)["psnr"]


def test_haadf_helps_at_a_fixed_seed(phantom, with_haadf):
    without = denoise(phantom, "dcae3d", seed=0, use_haadf=False, **TINY)
    assert _map_psnr(phantom, with_haadf.data) > _map_psnr(phantom, without.data) + 0.3
