import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import structural_similarity

from emcore import EmcoreError
from emcore.evaluate.count_split import (
    CountSplitResult,
    count_split,
    count_split_error,
    rank_runs,
)
from emcore.evaluate.frame_pairs import frame_pair_error
from emcore.evaluate.frc import (
    count_split_frc,
    fourier_ring_correlation,
    frc_resolution,
    half_bit_threshold,
)
from emcore.evaluate.reference import EXPLANATIONS, psnr, ssim
from emcore.evaluate.residuals import residual_checks
from emcore.noise.models import Gaussian, Poisson


def smooth_scene(n=256, level=20.0):
    r, c = np.mgrid[0:n, 0:n] / n
    return level * (
        1.0
        + 0.6 * np.sin(2 * np.pi * 3 * r) * np.cos(2 * np.pi * 2 * c)
        + 0.3 * np.exp(-((r - 0.5) ** 2 + (c - 0.4) ** 2) / 0.02)
    )


def structured_scene(n=256):
    r, c = np.mgrid[0:n, 0:n] / n
    return 1.0 + 0.5 * np.sin(2 * np.pi * 12 * r) * np.cos(2 * np.pi * 9 * c) + 0.5 * (
        ((r - 0.5) ** 2 + (c - 0.5) ** 2) < 0.05
    )


def gaussian(sigma):
    return lambda a: ndi.gaussian_filter(np.asarray(a, dtype=np.float64), sigma)


def identity(a):
    return np.asarray(a, dtype=np.float64)


def global_mean(a):
    return np.full(np.shape(a), np.mean(a), dtype=np.float64)


def test_explanations_cover_every_metric():
    assert set(EXPLANATIONS) == {"psnr", "ssim", "count_split", "frame_pair", "residual", "frc"}
    assert all(isinstance(v, str) and len(v) > 20 for v in EXPLANATIONS.values())


# ---------------------------------------------------------------- SSIM


def test_ssim_uses_ground_truth_range_and_matches_skimage():
    rng = np.random.default_rng(0)
    gt = structured_scene(64) * 3.0 + 10.0
    est = gt + rng.normal(0, 0.3, gt.shape)
    expected = structural_similarity(est, gt, data_range=gt.max() - gt.min())
    assert ssim(est, gt) == pytest.approx(expected)
    assert ssim(gt, gt) == pytest.approx(1.0)
    # The convention is the range of the ground truth, not of the estimate or the dtype.
    assert ssim(est, gt) != pytest.approx(structural_similarity(est, gt, data_range=est.max() - est.min()))
    assert ssim(est, gt, data_range=100.0) == pytest.approx(structural_similarity(est, gt, data_range=100.0))


def test_ssim_averages_slices_along_axis():
    rng = np.random.default_rng(1)
    gt = np.stack([structured_scene(32) * (k + 1) for k in range(3)])  # (T, H, W)
    est = gt + rng.normal(0, 0.2, gt.shape)
    rng_ = gt.max() - gt.min()
    per_frame = [structural_similarity(est[k], gt[k], data_range=rng_) for k in range(3)]
    assert ssim(est, gt) == pytest.approx(np.mean(per_frame))
    # A cube (H, W, E): energy slices along axis 2.
    cube_gt, cube_est = np.moveaxis(gt, 0, 2), np.moveaxis(est, 0, 2)
    assert ssim(cube_est, cube_gt, axis=2) == pytest.approx(np.mean(per_frame))


def test_ssim_errors():
    with pytest.raises(EmcoreError, match="shapes"):
        ssim(np.zeros((8, 8)), np.zeros((9, 9)))
    with pytest.raises(EmcoreError, match="constant"):
        ssim(np.zeros((16, 16)), np.ones((16, 16)))
    with pytest.raises(EmcoreError, match="at least 7"):
        ssim(np.random.default_rng(0).random((5, 5)), np.random.default_rng(1).random((5, 5)))


def test_psnr_unchanged():
    gt = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert psnr(gt + 0.1, gt) == pytest.approx(10 * np.log10(9 / 0.01))


# ---------------------------------------------------------------- count splitting


def test_count_split_halves_are_independent_poisson_that_sum_back():
    lam = 6.0
    counts = np.random.default_rng(0).poisson(lam, size=(200, 200))
    before = counts.copy()
    a, b = count_split(counts, np.random.default_rng(1), p=0.3)
    np.testing.assert_array_equal(counts, before)  # input untouched
    np.testing.assert_array_equal(a + b, counts)
    assert a.dtype.kind == "i" and a.min() >= 0 and b.min() >= 0
    # Poisson halves: mean = variance = p·λ and (1 - p)·λ (tolerances ≈ 5 standard errors).
    assert a.mean() == pytest.approx(0.3 * lam, abs=0.03)
    assert b.mean() == pytest.approx(0.7 * lam, abs=0.04)
    assert a.var() == pytest.approx(0.3 * lam, rel=0.04)
    assert b.var() == pytest.approx(0.7 * lam, rel=0.04)
    # Independent: the correlation between halves is ≈ 0 (a plain multinomial split of a
    # fixed total would give a strongly negative one).
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.015


def test_count_split_accepts_whole_floats_and_rejects_bad_counts():
    a, b = count_split(np.array([[3.0, 0.0], [7.0, 1.0]]), np.random.default_rng(0))
    np.testing.assert_array_equal(a + b, [[3, 0], [7, 1]])
    with pytest.raises(EmcoreError, match="whole"):
        count_split(np.array([1.5, 2.0]), np.random.default_rng(0))
    with pytest.raises(EmcoreError, match="negative"):
        count_split(np.array([1, -2]), np.random.default_rng(0))
    with pytest.raises(EmcoreError, match="between 0 and 1"):
        count_split(np.array([1, 2]), np.random.default_rng(0), p=1.0)


@pytest.fixture(scope="module")
def poisson_image():
    lam = smooth_scene(256)
    return lam, np.random.default_rng(0).poisson(lam)


def test_count_split_ranks_good_denoiser_first(poisson_image):
    _, counts = poisson_image
    runs = {"identity": identity, "good": gaussian(3.0), "oversmoothed": gaussian(40.0), "mean": global_mean}
    results = {name: count_split_error(fn, counts, np.random.default_rng(7)) for name, fn in runs.items()}
    ranking = rank_runs(results)
    assert ranking[0] == "good"
    assert ranking.index("good") < ranking.index("identity")
    assert ranking.index("good") < ranking.index("oversmoothed")
    # The Poisson likelihood agrees.
    nll = {k: r.poisson_nll for k, r in results.items()}
    assert min(nll, key=nll.get) == "good"
    json.dumps(results["good"].to_dict())


@pytest.mark.parametrize("fn", [identity, gaussian(1.0), gaussian(3.0), gaussian(40.0)], ids=["id", "g1", "g3", "g40"])
def test_count_split_error_estimates_true_mse(poisson_image, fn):
    lam, counts = poisson_image
    p = 0.5
    res = count_split_error(fn, counts, np.random.default_rng(3), p=p)
    half_a, _ = count_split(counts, np.random.default_rng(3), p=p)  # the same split
    true_mse = np.mean((fn(half_a) * (1 - p) / p - (1 - p) * lam) ** 2)
    assert res.noise_variance == pytest.approx((1 - p) * lam.mean(), rel=0.02)
    assert res.raw_mse == pytest.approx(res.estimated_mse + res.noise_variance)
    # Within 20 %, or — for a good denoiser whose error is far below the noise — within 3 % of
    # the noise variance (the statistical floor of the estimate on 256² pixels).
    assert abs(res.estimated_mse - true_mse) < max(0.2 * true_mse, 0.03 * res.noise_variance)


def test_count_split_error_uneven_split_rescales(poisson_image):
    lam, counts = poisson_image
    res = count_split_error(gaussian(2.0), counts, np.random.default_rng(4), p=0.7)
    assert res.scale == pytest.approx(0.3 / 0.7)
    assert res.noise_variance == pytest.approx(0.3 * lam.mean(), rel=0.02)
    assert res.estimated_mse < 0.1 * res.noise_variance


def test_count_split_error_rejects_shape_change():
    with pytest.raises(EmcoreError, match="keep the shape"):
        count_split_error(lambda a: a[:-1], np.ones((8, 8), dtype=int), np.random.default_rng(0))


def test_rank_runs_orders_by_estimated_error():
    mk = lambda e: CountSplitResult(e, e + 1, 1.0, 2.0, 0.5, 1.0, 10)  # noqa: E731
    assert rank_runs({"b": mk(0.5), "a": mk(0.2), "c": mk(-0.1)}) == ["c", "a", "b"]
    assert rank_runs({}) == []


# ---------------------------------------------------------------- frame pairs


def drifting_stack(T=8, n=128, drift=(0.7, -0.45), seed=0):
    def scene(r, c):
        r, c = r / n, c / n
        return 20.0 * (
            1.0
            + 0.6 * np.sin(2 * np.pi * 3 * r) * np.cos(2 * np.pi * 2 * c)
            + 0.5 * np.exp(-((r - 0.5) ** 2 + (c - 0.4) ** 2) / 0.01)
        )

    rr, cc = np.mgrid[0:n, 0:n].astype(float)
    clean = np.stack([scene(rr - drift[0] * t, cc - drift[1] * t) for t in range(T)])
    return clean, np.random.default_rng(seed).poisson(clean).astype(np.float32)


def per_frame(fn):
    return lambda s: np.stack([fn(x) for x in s])


def test_frame_pair_error_ranks_and_estimates_on_drifting_stack():
    clean, noisy = drifting_stack()
    before = noisy.copy()
    runs = {
        "identity": identity,
        "good": per_frame(gaussian(2.0)),
        "oversmoothed": per_frame(gaussian(15.0)),
        "mean": per_frame(global_mean),
    }
    results = {k: frame_pair_error(fn, noisy) for k, fn in runs.items()}
    np.testing.assert_array_equal(noisy, before)
    ranking = rank_runs(results)
    assert ranking[0] == "good"
    assert ranking.index("identity") < ranking.index("oversmoothed")
    good = results["good"]
    assert good.n_pairs == 4 and good.registered and good.border >= 2
    # Drift is (0.7, -0.45) px per frame: the even frame 2k sits one frame before 2k + 1.
    np.testing.assert_allclose(good.shifts, [(0.7, -0.45)] * 4, atol=0.15)
    # Noise variance of the reference ≈ the mean Poisson variance (= mean clean signal).
    assert good.noise_variance == pytest.approx(clean.mean(), rel=0.05)
    b = good.border
    for name, fn in runs.items():
        true_mse = np.mean((fn(noisy[1::2]) - clean[1::2])[:, b:-b, b:-b] ** 2)
        est = results[name].estimated_mse
        assert abs(est - true_mse) < max(0.2 * true_mse, 0.01 * good.noise_variance), name
    json.dumps(good.to_dict())


def test_frame_pair_error_without_registration_and_errors():
    _, noisy = drifting_stack(T=5, n=64, drift=(0.0, 0.0))
    res = frame_pair_error(per_frame(gaussian(2.0)), noisy, register=False)
    assert res.border == 0 and not res.registered and res.n_pairs == 2
    with pytest.raises(EmcoreError, match="at least 3 frames"):
        frame_pair_error(identity, noisy[:2])
    with pytest.raises(EmcoreError, match=r"\(T, H, W\)"):
        frame_pair_error(identity, noisy[0])


# ---------------------------------------------------------------- residuals


def test_residual_checks_flag_oversmoothing():
    clean = structured_scene(256)
    model = Poisson(dose=50.0)
    noisy = model.sample(clean, np.random.default_rng(0))
    truth = residual_checks(noisy, clean, model)
    assert truth.mean == pytest.approx(0.0, abs=0.02)
    assert truth.variance == pytest.approx(1.0, abs=0.03)
    assert abs(truth.autocorr_row) < 0.02 and abs(truth.autocorr_col) < 0.02
    assert truth.structure_map.shape == clean.shape and truth.structure_map.dtype == np.float32
    assert np.median(truth.structure_map) == pytest.approx(1.0, abs=0.1)
    assert "consistent" in truth.verdict

    over = residual_checks(noisy, ndi.gaussian_filter(noisy, 8), model)
    assert over.variance > 1.5
    assert over.autocorr_row > 0.3 and over.autocorr_col > 0.3
    assert float(over.structure_map.max()) > 3.0
    assert "more than noise" in over.verdict

    left = residual_checks(noisy, ndi.gaussian_filter(noisy, 0.7), model)
    assert left.variance < 0.9
    json.dumps(over.to_dict())


def test_residual_checks_on_stack_and_errors():
    rng = np.random.default_rng(2)
    clean = np.stack([structured_scene(64)] * 3)
    noisy = Gaussian(0.1).sample(clean, rng)
    rep = residual_checks(noisy, clean, Gaussian(0.1))
    assert rep.structure_map.shape == (64, 64)
    assert rep.variance == pytest.approx(1.0, abs=0.05)
    with pytest.raises(EmcoreError, match="shapes"):
        residual_checks(noisy, clean[:2], Gaussian(0.1))


# ---------------------------------------------------------------- FRC


def test_frc_of_identical_images_is_one():
    img = structured_scene(128) + np.random.default_rng(0).normal(0, 0.2, (128, 128))
    freq, frc = fourier_ring_correlation(img, img)
    assert freq.shape == frc.shape == (64,)
    assert freq[0] > 0 and freq[-1] < 0.5
    np.testing.assert_allclose(frc, 1.0, atol=1e-9)
    assert frc_resolution(freq, frc) is None  # never crosses: limited by the pixel


def test_frc_of_independent_noisy_copies_drops_to_zero():
    clean = structured_scene(256)
    model = Poisson(dose=50.0)
    rng = np.random.default_rng(1)
    a, b = model.sample(clean, rng), model.sample(clean, rng)
    freq, frc = fourier_ring_correlation(a, b)
    assert np.all(frc[:5] > 0.95)
    assert abs(np.mean(frc[-30:])) < 0.05
    res = frc_resolution(freq, frc)
    assert res is not None and 2.0 < res < 20.0
    half = frc_resolution(freq, frc, "half-bit", shape=a.shape)
    assert half is not None and 2.0 < half < 20.0
    # Pure noise: no correlation anywhere.
    n1, n2 = rng.normal(size=(128, 128)), rng.normal(size=(128, 128))
    assert abs(np.mean(fourier_ring_correlation(n1, n2)[1])) < 0.05


def test_frc_resolution_interpolates_first_crossing_and_thresholds():
    freq = np.array([0.1, 0.2, 0.3, 0.4])
    frc = np.array([1.0, 0.5, 0.0, 0.5])
    # 1/7 is crossed between 0.2 (0.5) and 0.3 (0.0), at f = 0.2 + 0.1 · (0.5 - 1/7) / 0.5.
    f_cross = 0.2 + 0.1 * (0.5 - 1 / 7) / 0.5
    assert frc_resolution(freq, frc) == pytest.approx(1 / f_cross)
    assert frc_resolution(freq, frc, 0.5) == pytest.approx(1 / 0.2)  # touches 0.5 at 0.2, drops after
    assert frc_resolution(freq, np.array([0.1, 0.0, 0.0, 0.0])) == pytest.approx(10.0)  # below at once
    t = half_bit_threshold((128, 128))
    assert t.shape == (64,)
    # Ring 0 holds only the zero frequency (n = 1) → T = 1; ring 1 holds the 8 neighbours.
    assert t[0] == pytest.approx(1.0, abs=1e-4)
    assert t[1] == pytest.approx((0.2071 + 1.9102 / math.sqrt(8)) / (1.2071 + 0.9102 / math.sqrt(8)))
    assert 0.2071 / 1.2071 < t[-1] < 0.25  # towards the 0.1716 asymptote for large rings
    with pytest.raises(EmcoreError, match="shape"):
        frc_resolution(freq, frc, "half-bit")
    with pytest.raises(EmcoreError, match="Unknown FRC threshold"):
        frc_resolution(freq, frc, "one-bit")


def test_count_split_frc_gives_resolution():
    counts = np.random.default_rng(0).poisson(structured_scene(128) * 30)
    res = count_split_frc(gaussian(1.0), counts, np.random.default_rng(1))
    assert res.values.shape == (64,)
    assert res.resolution_px is not None and 2.0 < res.resolution_px < 30.0
    json.dumps(res.to_dict())


def test_residual_check_of_sparse_counts_agrees_with_count_split():
    """EDS cubes hold ~0.05 counts per voxel: the pooled residual variance of a good PCA result
    is close to 1 (only noise removed) — a per-pixel ratio gave ~2000 and "removed more than
    noise" while count splitting ranked PCA far above the raw data."""
    from emcore import sim
    from emcore.evaluate.validation import count_split_validation, residual_report
    from emcore.methods.registry import denoise

    ds = sim.example("eds", seed=0, size=64)
    pca = denoise(ds, "pca").data
    rep = residual_report(ds, pca)
    assert 0.85 < rep.variance < 1.1, rep.variance
    assert "more than noise" not in rep.verdict
    assert residual_report(ds, ds.ground_truth).variance == pytest.approx(1.0, abs=0.03)
    assert count_split_validation(ds, {"pca": ("pca", {})})["ranking"][0] == "pca"
