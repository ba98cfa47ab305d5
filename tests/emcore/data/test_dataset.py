import numpy as np
import pytest

from emcore import Calibration, Dataset, EmcoreError
from emcore.data.display import (
    contrast_limits,
    downsample_for_display,
    energy_window_map,
    summed_spectrum,
)
from emcore.evaluate.reference import psnr
from emcore.noise.models import Gaussian, Poisson, PoissonGaussian, noise_from_dict


def test_dataset_converts_to_float32_without_touching_input():
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8)
    before = raw.copy()
    ds = Dataset(raw, "image")
    assert ds.data.dtype == np.float32
    ds.data[0, 0] = 99
    np.testing.assert_array_equal(raw, before)


@pytest.mark.parametrize("kind,shape", [("image", (4, 4, 4)), ("stack", (8, 8)), ("cube", (2, 2, 2, 2))])
def test_dataset_rejects_wrong_ndim(kind, shape):
    with pytest.raises(EmcoreError, match=f"a {kind} needs"):
        Dataset(np.zeros(shape), kind)


def test_dataset_rejects_nan_and_names_it():
    a = np.ones((8, 8))
    a[2, 3] = np.nan
    with pytest.raises(EmcoreError, match=r"scan\.dm3.*1 NaN"):
        Dataset(a, "image", name="scan.dm3")


def test_dataset_rejects_object_arrays():
    with pytest.raises(EmcoreError, match="not numbers"):
        Dataset(np.array([[object()] * 8] * 8), "image", name="x.npy")


def test_haadf_must_match_grid_and_only_for_cubes():
    cube = np.zeros((16, 12, 32))
    Dataset(cube, "cube", haadf=np.zeros((16, 12)))
    with pytest.raises(EmcoreError, match="16×12"):
        Dataset(cube, "cube", haadf=np.zeros((12, 16)), name="si.bcf")
    with pytest.raises(EmcoreError, match="only be attached to a spectrum image"):
        Dataset(np.zeros((16, 16)), "image", haadf=np.zeros((16, 16)))


def test_ground_truth_shape_checked():
    with pytest.raises(EmcoreError, match="ground truth has shape"):
        Dataset(np.zeros((8, 8)), "image", ground_truth=np.zeros((8, 9)))


def test_summary_and_counts_per_pixel():
    cube = np.ones((4, 5, 10))
    ds = Dataset(cube, "cube", calibration=Calibration(0.5, "nm", 0.1, 0.02, "keV"), is_counts=True)
    s = ds.summary()
    assert s["kind"] == "cube" and s["shape"] == [4, 5, 10]
    assert s["counts_per_pixel"] == pytest.approx(10.0)
    assert s["energy_range"] == pytest.approx([0.1, 0.1 + 9 * 0.02])
    np.testing.assert_allclose(ds.energy_axis()[:2], [0.1, 0.12])


def test_calibration_binning_keeps_channel_centres():
    cal = Calibration(1.0, "nm", 0.0, 0.01, "keV")
    b = cal.binned(spatial=2, energy=4)
    assert b.pixel_size == 2.0 and b.energy_scale == pytest.approx(0.04)
    # first binned channel covers centres 0, .01, .02, .03 -> centre .015
    assert b.energy_offset == pytest.approx(0.015)


def test_noise_models_statistics_and_determinism():
    clean = np.full((200, 200), 0.5)
    rng = np.random.default_rng(1)
    p = Poisson(dose=4.0).sample(clean, rng)
    assert p.dtype == np.float32
    assert p.mean() == pytest.approx(0.5, rel=0.02)
    assert p.var() == pytest.approx(0.5 / 4.0, rel=0.05)
    pg = PoissonGaussian().sample(clean, np.random.default_rng(2))
    assert pg.var() == pytest.approx(0.05 * 0.5 + 0.02**2, rel=0.05)
    g1 = Gaussian(0.1).sample(clean, np.random.default_rng(3))
    g2 = Gaussian(0.1).sample(clean, np.random.default_rng(3))
    np.testing.assert_array_equal(g1, g2)
    for m in (Poisson(2.0), PoissonGaussian(0.1, 0.01), Gaussian(0.2)):
        assert noise_from_dict(m.to_dict()) == m


@pytest.mark.parametrize("make", [lambda: Poisson(0), lambda: Gaussian(-1), lambda: PoissonGaussian(0, 0)])
def test_noise_models_reject_bad_parameters(make):
    with pytest.raises(EmcoreError):
        make()


def test_psnr_convention_uses_ground_truth_range():
    gt = np.linspace(0, 2, 100).reshape(10, 10)
    est = gt + 0.02
    assert psnr(est, gt) == pytest.approx(10 * np.log10(4 / 0.0004))
    assert psnr(gt, gt) == float("inf")
    with pytest.raises(EmcoreError):
        psnr(gt, np.ones_like(gt))


def test_display_helpers():
    img = np.zeros((100, 100), np.float32)
    img[0, 0] = 1e6  # one hot pixel must not set the contrast
    img[50:, :] = 1.0
    lo, hi = contrast_limits(img, 0.5)
    assert lo == 0.0 and hi == 1.0
    big = np.ones((3000, 1500), np.float32)
    small, f = downsample_for_display(big, 1024)
    assert f == 3 and small.shape == (1000, 500)
    cube = np.zeros((3, 4, 20), np.float32)
    cube[..., 10] = 2.0
    assert summed_spectrum(cube)[10] == 24.0
    np.testing.assert_array_equal(energy_window_map(cube, 10, 3), np.full((3, 4), 2.0))
    np.testing.assert_array_equal(energy_window_map(cube, 0, 3), np.zeros((3, 4)))


def test_fingerprint_is_a_content_identity():
    from emcore import sim

    a = sim.example("hrem", seed=1, dose=2.0, size=64)
    b = sim.example("hrem", seed=1, dose=2.0, size=64)
    c = sim.example("hrem", seed=2, dose=2.0, size=64)
    assert a.fingerprint() == b.fingerprint()  # the same example made twice is recognised
    assert a.fingerprint() != c.fingerprint()
    from dataclasses import replace

    assert replace(a, ground_truth=None).fingerprint() != a.fingerprint()
