"""PCA denoising of spectrum images (emcore.methods.pca), checked against HyperSpy."""

import warnings

import numpy as np
import pytest

from emcore import EmcoreError
from emcore.evaluate.reference import psnr
from emcore.methods.pca import PCAInfo, denoise_pca, estimate_n_components
from emcore.progress import Progress
from emcore.sim.eds import three_phase_cube

TRUE_RANK = 3


@pytest.fixture(scope="module")
def cube_pair():
    return three_phase_cube(np.random.default_rng(0))


def hyperspy_model(cube, n):
    """HyperSpy's own Poisson-weighted SVD reconstruction with ``n`` components."""
    hs = pytest.importorskip("hyperspy.api")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hs.signals.Signal1D(np.asarray(cube, dtype=np.float64))
        s.decomposition(normalize_poissonian_noise=True, algorithm="SVD", output_dimension=n, print_info=False)
        return s.get_decomposition_model(n).data


def rel_rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2) / np.mean(np.asarray(b, np.float64) ** 2)))


def test_pca_improves_psnr_on_low_rank_poisson_cube(cube_pair):
    clean, noisy = cube_pair
    out, info = denoise_pca(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(out, clean) > psnr(noisy, clean) + 12.0  # measured +17.6 dB at seed 0


def test_auto_component_count_is_the_true_rank(cube_pair):
    _, noisy = cube_pair
    _, info = denoise_pca(noisy)
    assert isinstance(info, PCAInfo)
    assert info.auto is True
    assert info.n_components == TRUE_RANK
    _, given = denoise_pca(noisy, n_components=5)
    assert given.auto is False and given.n_components == 5


def test_explained_variance_ratio_is_the_scree_curve(cube_pair):
    _, noisy = cube_pair
    _, info = denoise_pca(noisy, max_components=20)
    evr = np.array(info.explained_variance_ratio)
    assert len(evr) == 20
    assert np.all(np.diff(evr) <= 1e-12) and 0 < evr.sum() < 1
    # Three components stand clearly above the noise floor, the fourth does not.
    assert evr[2] > 2 * evr[3] and evr[3] < 1.2 * evr[10]


def test_pca_matches_hyperspy_on_synthetic_cube(cube_pair):
    _, noisy = cube_pair
    out, _ = denoise_pca(noisy, n_components=4)
    assert rel_rms(out, hyperspy_model(noisy, 4)) < 1e-5


def test_pca_matches_hyperspy_on_real_core_shell_cube(shared_data):
    hs = pytest.importorskip("hyperspy.api")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = hs.load(shared_data / "eds" / "core_shell.hdf5", reader="HSPY").data
    assert cube.shape == (64, 64, 992)
    out, info = denoise_pca(cube, n_components=5)
    assert rel_rms(out, hyperspy_model(cube, 5)) < 1e-3  # measured 3e-8 (float32 output)
    # The scree of this Fe/Pt core-shell cube has three components above a flat floor.
    _, auto = denoise_pca(cube)
    assert auto.n_components == 3


def test_empty_channels_and_pixels_give_no_nan(cube_pair):
    _, noisy = cube_pair
    cube = noisy.copy()
    cube[..., :40] = 0  # below the detector's low-energy cut-off
    cube[..., 300:310] = 0
    cube[5, 7, :] = 0  # a pixel with no counts
    out, info = denoise_pca(cube)
    assert np.all(np.isfinite(out)) and all(np.isfinite(info.explained_variance_ratio))
    assert np.all(out[..., :40] == 0) and np.all(out[5, 7] == 0)
    assert rel_rms(denoise_pca(cube, n_components=4)[0], hyperspy_model(cube, 4)) < 1e-5


def test_pca_does_not_modify_input(cube_pair):
    _, noisy = cube_pair
    counts = noisy.astype(np.uint32)
    before = counts.copy()
    out, _ = denoise_pca(counts, n_components=3)
    np.testing.assert_array_equal(counts, before)
    assert out.dtype == np.float32


def test_unweighted_pca_accepts_negative_data(cube_pair):
    clean, noisy = cube_pair
    shifted = noisy - noisy.mean()
    out, info = denoise_pca(shifted, poisson=False, n_components=4)
    assert np.all(np.isfinite(out))
    # Plain truncated SVD: the result is the best rank-4 approximation, so closer to the data
    # than any rank-3 one.
    r3, _ = denoise_pca(shifted, poisson=False, n_components=3)
    assert np.sum((out - shifted) ** 2) < np.sum((r3 - shifted) ** 2)


def test_estimate_n_components_on_pure_noise_and_rank_one():
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(2000, 200))
    assert estimate_n_components(np.linalg.svd(noise, compute_uv=False) ** 2, noise.shape) == 1
    spike = noise + 30 * np.outer(rng.normal(size=2000), rng.normal(size=200)) / np.sqrt(200)
    assert estimate_n_components(np.linalg.svd(spike, compute_uv=False) ** 2, spike.shape) == 1


def test_progress_is_reported(cube_pair):
    _, noisy = cube_pair
    seen = []
    denoise_pca(noisy, progress=seen.append)
    assert seen and all(isinstance(p, Progress) for p in seen)
    assert seen[-1].step == seen[-1].total


@pytest.mark.parametrize(
    "data,kwargs,match",
    [
        (np.ones((32, 32)), {}, r"spectrum image \(H, W, E\) with an energy axis.*Wiener filter or BM3D"),
        (-np.ones((8, 8, 16)), {}, "poisson=False"),
        (np.pad(np.ones((8, 8, 1)), ((0, 0), (0, 0), (0, 15))), {}, "at least two non-empty channels"),
        (np.ones((8, 8, 16)), {"n_components": 40}, "only 16"),
        (np.ones((8, 8, 16)), {"n_components": 0}, "at least 1"),
        (np.where(np.ones((8, 8, 16)) > 0, np.nan, 0), {}, "NaN"),
    ],
)
def test_bad_input_raises_plain_sentences(data, kwargs, match):
    with pytest.raises(EmcoreError, match=match):
        denoise_pca(data, **kwargs)


# -- the component count chosen on the data (self-calibration) ---------------------------


@pytest.fixture(scope="module")
def eds_low_dose():
    # 5 counts per pixel over 512 channels: the scree rule keeps 3 components, 2 dB short of the best
    from emcore import sim

    return sim.eds_example(seed=2, counts_per_pixel=5.0, size=64, channels=512)


def test_self_calibrated_count_is_near_the_best_count_by_truth(eds_low_dose):
    from emcore.methods.registry import denoise

    ds = eds_low_dose
    res = denoise(ds, "pca")
    n = res.params["n_components"]
    truth = {k: psnr(denoise_pca(ds.data, n_components=k)[0], ds.ground_truth) for k in (*range(1, 21), 50)}
    best = max(truth.values())
    assert truth[n] >= best - 0.5, (n, truth)  # measured: 9 components, 0.03 dB below the best (8)
    assert psnr(res.data, ds.ground_truth) == pytest.approx(truth[n], abs=1e-6)
    assert truth[n] > truth[1] + 1.0 and truth[n] > truth[50] + 1.0  # clearly bad counts: too few, too many
    assert truth[n] > psnr(denoise_pca(ds.data)[0], ds.ground_truth) + 1.0  # the scree rule (3 components)
    cal = res.artifacts["calibration"]
    assert cal["criterion"] == "count-split" and cal["best"] == {"n_components": n}
    assert [c["params"]["n_components"] for c in cal["curve"]] == list(range(1, 51))
    assert min(cal["curve"], key=lambda c: c["loss"])["params"]["n_components"] == n
    assert any(line.startswith("Self-calibrated by count-split") for line in res.log)


@pytest.mark.parametrize("shape", [(24, 24, 128), (8, 8, 256)])  # Gram matrix of channels, of pixels
def test_count_split_curve_is_the_count_split_error_of_each_reconstruction(shape):
    """The curve comes from one decomposition; each point equals count splitting of a full PCA run."""
    from emcore.evaluate.count_split import count_split_error
    from emcore.methods.pca import _SPLIT_P, calibrate_pca

    _, noisy = three_phase_cube(np.random.default_rng(4), *shape, counts=40.0)
    cal = calibrate_pca(noisy, counts=noisy, seed=7, max_components=12)
    assert len(cal.curve) == 12 and cal.criterion == "count-split"
    for n in (1, 3, 12):
        ref = count_split_error(lambda a, n=n: denoise_pca(a, n_components=n)[0], noisy, np.random.default_rng(7),
                                p=_SPLIT_P)
        assert cal.curve[n - 1][1] == pytest.approx(ref.estimated_mse, rel=1e-5, abs=1e-9)


def test_j_invariant_curve_matches_masked_runs_for_data_that_are_not_counts():
    from emcore.methods.calibration import GRID, PHASES, masked_input
    from emcore.methods.pca import calibrate_pca

    _, noisy = three_phase_cube(np.random.default_rng(5), 16, 16, 64, counts=200.0)
    cal = calibrate_pca(noisy, max_components=6)
    assert cal.criterion == "J-invariant" and "Noise2Self" in cal.why and len(cal.curve) == 6
    for n in (1, 4):
        sse = count = 0
        for phase in PHASES:
            slices = [masked_input(noisy[:, :, e], phase, GRID) for e in range(noisy.shape[2])]
            out = denoise_pca(np.stack([s[0] for s in slices], axis=2), n_components=n)[0]
            hidden = slices[0][1]
            sse += float(((out[hidden] - noisy[hidden].astype(np.float64)) ** 2).sum())
            count += out[hidden].size
        assert cal.curve[n - 1][1] == pytest.approx(sse / count, rel=1e-5)


def test_a_given_count_is_used_as_given(eds_low_dose):
    from emcore.methods.registry import denoise

    res = denoise(eds_low_dose, "pca", n_components=4)
    np.testing.assert_array_equal(res.data, denoise_pca(eds_low_dose.data, n_components=4)[0])
    assert res.params["n_components"] == 4 and "calibration" not in res.artifacts
    assert any("4 components kept (given)" in line for line in res.log)
