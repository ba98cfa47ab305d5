"""The adaptive-filter (Jacobian) view: exact on known linear models, sensible on a trained one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emcore import EmcoreError
from emcore.evaluate.filter_view import (
    filter_summary,
    filter_window,
    pixel_filter,
    supported_text,
)


def _conv_apply(kernel: np.ndarray):
    """``apply`` of a fixed 2-D cross-correlation (what torch's conv2d computes), zero padding."""
    k = torch.from_numpy(kernel.astype(np.float32))[None, None]
    pad = kernel.shape[0] // 2

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x[None, None], k, padding=pad)[0, 0]

    return {"apply": apply, "receptive_field": kernel.shape[0], "min_size": 1}


@pytest.fixture
def kernel():
    return np.random.default_rng(3).normal(size=(5, 5)).astype(np.float32)


def test_filter_of_a_correlation_is_its_kernel(kernel):
    img = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    before = img.copy()
    f = pixel_filter(_conv_apply(kernel), img, 20, 17)
    np.testing.assert_array_equal(img, before)  # input untouched
    r, c = f.centre
    assert (f.origin[0] + r, f.origin[1] + c) == (20, 17)
    np.testing.assert_allclose(f.weights[r - 2:r + 3, c - 2:c + 3], kernel, atol=1e-6)
    outside = f.weights.copy()
    outside[r - 2:r + 3, c - 2:c + 3] = 0
    assert np.all(outside == 0)
    assert f.weight_sum == pytest.approx(float(kernel.sum()), abs=1e-5)
    # a linear model without offset: f(x) = J x exactly
    assert f.linear_estimate == pytest.approx(f.output, rel=1e-5, abs=1e-5)
    assert f.weights.dtype == np.float32 and f.energy is None


def test_filter_of_a_true_convolution_is_the_flipped_kernel(kernel):
    """A convolution in the signal-processing sense (scipy.ndimage.convolve) flips the kernel."""
    flipped = kernel[::-1, ::-1].copy()
    img = np.random.default_rng(1).random((30, 30)).astype(np.float32)
    f = pixel_filter(_conv_apply(flipped), img, 15, 15)
    r, c = f.centre
    from scipy import ndimage

    impulse = np.zeros((5, 5), np.float32)
    impulse[2, 2] = 1
    # weights[i, j] = d out[p] / d in[p + (i, j) - 2]: the kernel convolve() applies, mirrored
    np.testing.assert_allclose(f.weights[r - 2:r + 3, c - 2:c + 3], kernel[::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(ndimage.correlate(impulse, f.weights[r - 2:r + 3, c - 2:c + 3], mode="constant"),
                               ndimage.correlate(impulse, flipped, mode="constant"), atol=1e-6)


def test_cube_filter_at_an_energy():
    rng = np.random.default_rng(2)
    k = rng.random((3, 3)).astype(np.float32)
    m = rng.random((6, 6)).astype(np.float32)  # spectral mixing out[e] = Σ_e' m[e, e'] conv(in[e'])
    kt, mt = torch.from_numpy(k)[None, None], torch.from_numpy(m)

    def apply(x):  # (H, W, E) -> (H, W, E)
        sl = F.conv2d(x.permute(2, 0, 1)[:, None], kt, padding=1)[:, 0]  # (E, H, W)
        return torch.einsum("ef,fhw->hwe", mt, sl)

    cube = rng.random((20, 24, 6)).astype(np.float32)
    art = {"apply": apply, "receptive_field": 3, "min_size": 1}
    f = pixel_filter(art, cube, 9, 11, energy=4)
    r, c = f.centre
    np.testing.assert_allclose(f.weights[r - 1:r + 2, c - 1:c + 2], m[4, 4] * k, rtol=1e-5)
    np.testing.assert_allclose(f.summed[r - 1:r + 2, c - 1:c + 2], m[4].sum() * k, rtol=1e-5)
    np.testing.assert_allclose(f.spectral, m[4] * k.sum(), rtol=1e-5)
    assert f.window_input.shape == f.weights.shape
    np.testing.assert_array_equal(f.window_input, cube[f.extent[0]:f.extent[1], f.extent[2]:f.extent[3], 4])
    with pytest.raises(EmcoreError, match="choose an energy"):
        pixel_filter(art, cube, 9, 11)
    with pytest.raises(EmcoreError, match="Channel 6 is outside"):
        pixel_filter(art, cube, 9, 11, energy=6)


def test_bad_input_sentences(kernel):
    img = np.zeros((32, 40), np.float32)
    with pytest.raises(EmcoreError) as err:
        pixel_filter({}, img, 3, 3, method="bm3d")
    msg = str(err.value)
    assert "no trained network" in msg and "bm3d" in msg
    assert all(name in msg for name in ("DnCNN", "Noise2Self", "Noise2SR", "3D-DCAE"))
    assert "DnCNN" in supported_text()
    for row, col in ((32, 0), (-1, 5), (0, 40)):
        with pytest.raises(EmcoreError, match=r"outside the 32×40 image; rows run from 0 to 31"):
            pixel_filter(_conv_apply(kernel), img, row, col)
    with pytest.raises(EmcoreError, match="stack"):
        pixel_filter(_conv_apply(kernel), np.zeros((2, 3, 4, 5)), 0, 0)


def test_window_is_exact_for_a_unet_and_grows_when_the_field_is_understated(one_torch_thread):
    from models import UNet

    torch.manual_seed(0)
    net = UNet(scales=3, base=16).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def apply(x):
        return net(x[None, None])[0, 0]

    img = np.random.default_rng(4).random((110, 100)).astype(np.float32)
    x = torch.from_numpy(img).requires_grad_(True)
    y = apply(x)
    for rc, rf in (((55, 50), net.receptive_field()), ((3, 97), net.receptive_field()), ((70, 40), 9)):
        (g,) = torch.autograd.grad(y[rc], x, retain_graph=True)
        f = pixel_filter({"apply": apply, "receptive_field": rf, "min_size": 4}, img, *rc)
        r0, r1, c0, c1 = f.extent
        full = g.numpy()
        np.testing.assert_allclose(f.weights, full[r0:r1, c0:c1], atol=1e-6)
        assert np.abs(full).sum() == pytest.approx(np.abs(f.weights).sum(), rel=1e-5)  # nothing outside
        assert (r1 - r0) < 110 or rf == 9  # a real window, not the whole image


def test_window_geometry():
    r0, r1, c0, c1 = filter_window((512, 512), 256, 256, 116)
    assert r0 % 32 == 0 and c0 % 32 == 0 and r0 <= 256 - 62 and r1 >= 256 + 63
    assert filter_window((512, 512), 0, 511, 116)[1:3] == (63, 448)
    assert filter_window((20, 20), 10, 10, 3, min_size=16)[:2] == (0, 16)


def test_summary_numbers():
    box = np.full((5, 5), 1 / 25)
    s = filter_summary(np.pad(box, 10))
    assert s["weight_sum"] == pytest.approx(1.0)
    assert s["participation"] == pytest.approx(25.0)
    assert s["area90"] == 23  # 90 % of 25 equal weights
    delta = np.zeros((9, 9))
    delta[4, 4] = 2.0
    s = filter_summary(delta)
    assert s["participation"] == pytest.approx(1.0) and s["area90"] == 1 and s["weight_sum"] == 2.0


class _FlatPairs:
    """Noisy flat patches at random brightness: the best denoiser averages locally."""

    def batch(self, batch_size, patch_size, rng):
        level = np.exp(rng.uniform(np.log(0.5), np.log(4.0), size=(batch_size, 1, 1, 1)))
        clean = np.broadcast_to(level, (batch_size, 1, patch_size, patch_size)).astype(np.float32)
        noisy = clean + rng.normal(size=clean.shape).astype(np.float32) * 0.5 * np.sqrt(clean)
        return torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(clean.copy())


def test_trained_tiny_model_averages_in_a_flat_region(one_torch_thread):
    from emcore.train.config import TrainConfig
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss

    torch.manual_seed(0)
    pad = dict(padding=2, padding_mode="replicate", bias=False)
    # bias-free, as in Mohan et al. 2020: f(a x) = a f(x), so a flat-region filter is an average
    net = nn.Sequential(nn.Conv2d(1, 4, 5, **pad), nn.ReLU(), nn.Conv2d(4, 4, 5, **pad), nn.ReLU(),
                        nn.Conv2d(4, 1, 5, **pad))
    res = train(net, _FlatPairs(), MSELoss(),
                TrainConfig(steps=100, batch_size=8, patch_size=24, lr=3e-3, val_every=50, device="cpu", seed=0))
    assert res.status == "done"
    net = net.cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def apply(x):
        return net(x[None, None])[0, 0]

    flat = (2.0 + 0.5 * np.sqrt(2.0) * np.random.default_rng(5).normal(size=(64, 64))).astype(np.float32)
    f = pixel_filter({"apply": apply, "receptive_field": 13, "min_size": 1}, flat, 32, 30)
    assert f.weight_sum == pytest.approx(1.0, abs=0.15)
    assert f.participation > 10  # it averages many pixels, it does not copy the input pixel
    assert f.weights.shape[0] >= 13


def test_noise2sr_view_follows_fewer_sub_samplings_and_says_so(one_torch_thread):
    from emcore import sim
    from emcore.evaluate.filter_view import describe_filter
    from emcore.methods.noise2sr import FILTER_VIEW_SAMPLES
    from emcore.methods.registry import denoise

    ds = sim.hrem_example(seed=1, size=64)
    samples = FILTER_VIEW_SAMPLES + 4
    res = denoise(ds, "noise2sr", seed=0, steps=2, batch_size=2, patch_size=32, mmse_samples=samples)
    art = res.artifacts
    assert callable(art["filter_apply"]) and f"averages {samples} random sub-samplings" in art["filter_note"]
    x = torch.from_numpy(ds.data.copy())
    full, view = art["apply"](x), art["filter_apply"](x)
    assert full.shape == view.shape == x.shape and not torch.equal(full, view)
    f = pixel_filter(res, ds.data, 30, 33)
    assert f.note == art["filter_note"] and f.note in describe_filter(f)
    assert f.output == pytest.approx(float(view[30, 33]), rel=1e-4, abs=1e-5)  # the cheaper function was followed
    # with no more sub-samplings than the view uses, the view follows the result's own function
    few = denoise(ds, "noise2sr", seed=0, steps=2, batch_size=2, patch_size=32, mmse_samples=FILTER_VIEW_SAMPLES,
                  prior="off")
    assert "filter_apply" not in few.artifacts and pixel_filter(few, ds.data, 30, 33).note == ""
    # ... and with the Wiener prior channel it is that function too, and the note says the prior is held fixed
    held = denoise(ds, "noise2sr", seed=0, steps=2, batch_size=2, patch_size=32, mmse_samples=FILTER_VIEW_SAMPLES)
    assert held.artifacts["filter_apply"] is held.artifacts["apply"] and "prior" in pixel_filter(held, ds.data, 30, 33).note


def test_description_separates_a_darkening_filter_from_a_network_offset():
    """0.3 × box average: the filter darkens. 0.3 × box average + a constant that restores the
    level: the filter passes part of the brightness and the network adds the rest."""
    from emcore.evaluate.filter_view import describe_filter

    box = np.full((5, 5), 0.3 / 25, np.float32)
    img = np.full((40, 40), 2.0, np.float32)
    plain = _conv_apply(box)
    dark = pixel_filter(plain, img, 20, 20)
    text = describe_filter(dark)
    assert "darkens the local average" in text and "offset" not in text

    def with_offset(x):
        return plain["apply"](x) + 1.4

    biased = pixel_filter({**plain, "apply": with_offset}, img, 20, 20)
    assert biased.weight_sum == pytest.approx(0.3, abs=1e-5)
    assert biased.output == pytest.approx(2.0, abs=1e-4) and biased.linear_estimate == pytest.approx(0.6, abs=1e-4)
    text = describe_filter(biased)
    assert "darkens" not in text and "adds the rest itself" in text and "own offset" in text

    def detail_only(x):  # the box minus its own level spread over the window (sums to 0), plus a constant
        return plain["apply"](x) - 0.3 * x.mean() + 2.0

    zero_sum = pixel_filter({**plain, "apply": detail_only}, img, 20, 20)
    assert abs(zero_sum.weight_sum) < 0.1
    text = describe_filter(zero_sum)
    assert "almost none of the local brightness" in text and "not trained" not in text
