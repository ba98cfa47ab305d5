"""CachedPairs: training pairs from a cached (multislice) image set, on a tiny synthetic cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emcore import EmcoreError
from emcore.train.config import TrainConfig
from emcore.train.loop import train
from emcore.train.losses import MSELoss
from emcore.train.physics_set import CachedPairs, load_cache


def _lattice(h, w, period, phase=0.0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return 0.45 + 0.1 * np.cos(2 * np.pi * x / period + phase) * np.cos(2 * np.pi * y / period)


def _write_cache(path, n_waves=4, per_wave=2, size=(96, 80), **extra):
    imgs = np.stack([_lattice(*size, period=8 + 2 * i, phase=j) for i in range(n_waves) for j in range(per_wave)])
    arrays = dict(images=imgs.astype(np.float32),
                  pixel_size_nm=np.full(len(imgs), 0.008, np.float32),
                  wave_index=np.repeat(np.arange(n_waves), per_wave).astype(np.int32),
                  defocus_nm=np.zeros(len(imgs), np.float32),
                  meta=np.array(json.dumps({"generator": "test"})))
    arrays.update(extra)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def cache(tmp_path):
    return _write_cache(tmp_path / "set.npz")


def test_shapes_normalisation_and_dtype(cache):
    src = CachedPairs(cache, dose_range=(1.0, 3.0), noise="poisson")
    noisy, clean = src.batch(5, 32, np.random.default_rng(0))
    assert noisy.shape == clean.shape == (5, 1, 32, 32)
    assert noisy.dtype == clean.dtype == torch.float32
    # noisy patches have mean 1; the clean target is divided by the same number
    assert torch.allclose(noisy.mean(dim=(1, 2, 3)), torch.ones(5), atol=1e-4)
    ratio = clean.mean(dim=(1, 2, 3))
    assert float(ratio.min()) > 0.5 and float(ratio.max()) < 2.0
    assert src.meta == {"generator": "test"} and len(src) == 8


def test_same_seed_same_batch_other_seed_other_batch(cache):
    src = CachedPairs(cache)
    a = src.batch(3, 24, np.random.default_rng(7))
    b = src.batch(3, 24, np.random.default_rng(7))
    c = src.batch(3, 24, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_native_pixels_are_exact_crops(tmp_path):
    path = _write_cache(tmp_path / "s.npz", n_waves=1, per_wave=1)
    src = CachedPairs(path, pixel_size_range=None, augment=False, dose_range=(1e4, 1e4), noise="poisson")
    noisy, clean = src.batch(2, 40, np.random.default_rng(3))
    img = load_cache(path)["images"][0]
    # the clean target, scaled back, is a crop of the stored image
    for k in range(2):
        patch = clean[k, 0].numpy()
        patch = patch / patch.mean()
        found = any(np.allclose(img[y:y + 40, x:x + 40] / img[y:y + 40, x:x + 40].mean(), patch, atol=1e-4)
                    for y in range(img.shape[0] - 39) for x in range(img.shape[1] - 39))
        assert found
    # high dose: noisy ≈ clean
    assert float(((noisy - clean) ** 2).mean()) < 1e-3


def test_pixel_size_rescaling_changes_the_lattice_scale(tmp_path):
    path = _write_cache(tmp_path / "s.npz", n_waves=1, per_wave=1, size=(200, 200))
    period = 8  # stored px; 0.008 nm/px
    fine = CachedPairs(path, pixel_size_range=(0.004, 0.004), augment=False, noise="poisson", dose_range=(1e4, 1e4))
    coarse = CachedPairs(path, pixel_size_range=(0.016, 0.016), augment=False, noise="poisson", dose_range=(1e4, 1e4))

    def dominant_period(src):
        _, clean = src.batch(1, 64, np.random.default_rng(0))
        patch = clean[0, 0].numpy()
        spec = np.abs(np.fft.fft2(patch - patch.mean()))
        ky, kx = np.unravel_index(np.argmax(spec), spec.shape)
        return 64 / min(kx, 64 - kx)

    assert dominant_period(fine) == pytest.approx(2 * period, rel=0.15)
    assert dominant_period(coarse) == pytest.approx(period / 2, rel=0.15)


def test_lower_dose_is_noisier(cache):
    lo = CachedPairs(cache, dose_range=(0.5, 0.5), noise="poisson", augment=False)
    hi = CachedPairs(cache, dose_range=(50.0, 50.0), noise="poisson", augment=False)
    n_lo, c_lo = lo.batch(4, 32, np.random.default_rng(0))
    n_hi, c_hi = hi.batch(4, 32, np.random.default_rng(0))
    assert float(((n_lo - c_lo) ** 2).mean()) > 20 * float(((n_hi - c_hi) ** 2).mean())


def test_validation_is_fixed_held_out_and_has_clean(cache):
    src = CachedPairs(cache, n_val=3, val_patch=24, holdout=0.25)
    (noisy, target, clean), = src.validation()
    assert noisy.shape == (3, 1, 24, 24) and torch.equal(target, clean)
    assert src.validation()[0][0] is noisy
    # one of the four exit waves (both its defoci) is kept for validation only
    waves = load_cache(cache)["wave_index"]
    assert len(src.val_index) == 2 and len(set(waves[src.val_index])) == 1
    assert not set(src.val_index) & set(src.train_index)
    # the same validation batch from a fresh source
    again = CachedPairs(cache, n_val=3, val_patch=24, holdout=0.25).validation()[0][0]
    assert torch.equal(again, noisy)


def test_single_image_cache_validates_on_it(tmp_path):
    path = _write_cache(tmp_path / "one.npz", n_waves=1, per_wave=1)
    src = CachedPairs(path, n_val=2, val_patch=16)
    assert list(src.val_index) == list(src.train_index) == [0]
    assert src.validation()[0][0].shape == (2, 1, 16, 16)


def test_trains_a_tiny_model(cache):
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    res = train(model, CachedPairs(cache, n_val=2, val_patch=24), MSELoss(),
                TrainConfig(steps=4, batch_size=2, patch_size=24, val_every=2, seed=0, device="cpu"))
    assert res.status == "done"


@pytest.mark.parametrize("arrays, match", [
    (dict(images=np.array([object(), object()], dtype=object)), "pickled"),
    (dict(images=np.ones((16, 16), np.float32)), "stack"),
    (dict(images=np.ones((2, 3, 16, 16), np.float32)), "stack"),
    (dict(images=np.where(np.eye(16)[None], np.nan, 0.4).astype(np.float32)), "NaN"),
    (dict(images=np.full((1, 16, 16), -0.1, np.float32)), "negative"),
    (dict(images=np.ones((2, 16, 16), np.complex64)), "real numbers"),
    (dict(images=np.zeros((1, 16, 16), np.float32)), "blank"),
    (dict(other=np.ones((2, 16, 16), np.float32)), "no 'images'"),
    (dict(images=np.ones((2, 16, 16), np.float32), pixel_size_nm=np.ones(3)), "pixel_size_nm"),
    (dict(images=np.ones((2, 16, 16), np.float32), wave_index=np.zeros(2)), "wave_index"),
])
def test_bad_cache_is_refused_with_a_sentence(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(EmcoreError, match=match):
        CachedPairs(path)


def test_unreadable_or_missing_cache(tmp_path):
    with pytest.raises(EmcoreError, match="no training-set cache"):
        CachedPairs(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(EmcoreError, match="not a readable"):
        CachedPairs(junk)
    single = tmp_path / "single.npy"
    np.save(single, np.ones((2, 16, 16), np.float32))
    with pytest.raises(EmcoreError, match="single array"):
        CachedPairs(single)


def test_bad_settings_and_patch_too_large(cache, tmp_path):
    with pytest.raises(EmcoreError, match="dose range"):
        CachedPairs(cache, dose_range=(0.0, 1.0))
    with pytest.raises(EmcoreError, match="Unknown training noise"):
        CachedPairs(cache, noise="speckle")
    with pytest.raises(EmcoreError, match="hold-out"):
        CachedPairs(cache, holdout=1.0)
    src = CachedPairs(cache, pixel_size_range=None)
    with pytest.raises(EmcoreError, match="smaller than"):
        src.batch(1, 200, np.random.default_rng(0))
    nopx = tmp_path / "nopx.npz"
    np.savez(nopx, images=np.ones((2, 32, 32), np.float32))
    with pytest.raises(EmcoreError, match="pixel_size_range=None"):
        CachedPairs(nopx)
    assert CachedPairs(nopx, pixel_size_range=None).batch(1, 16, np.random.default_rng(0))[0].shape == (1, 1, 16, 16)


def test_cache_is_not_modified(cache):
    before = cache.read_bytes()
    src = CachedPairs(cache)
    src.batch(2, 32, np.random.default_rng(0))
    src.validation()
    assert cache.read_bytes() == before
