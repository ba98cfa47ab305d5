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
