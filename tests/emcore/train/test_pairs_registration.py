import numpy as np
import pytest
import torch

from emcore import EmcoreError, sim
from emcore.data.registration import align_stack, measure_shift, shift_image
from emcore.train.pairs import FramePairs, ImagePairs


def test_measure_and_shift_round_trip():
    img = sim.hrem_phantom((96, 96), rng=np.random.default_rng(0), pixel_size_nm=0.015)
    moved = shift_image(img, (2.5, -1.3))
    est = measure_shift(img, moved)
    np.testing.assert_allclose(est, [-2.5, 1.3], atol=0.15)
    back = shift_image(moved, est)
    assert np.abs(back - img)[8:-8, 8:-8].max() < 0.02


def test_align_stack_recovers_simulated_drift():
    # 256 px holds ~5 lattice periods of the phantom; fewer make the correlation ambiguous
    ds = sim.movie_example(seed=2, frames=5, size=256, dose=50.0, max_drift_px=4.0)
    aligned, shifts, valid = align_stack(ds.data)
    # shifts undo the true drift of each frame's content (noisy frames: within 0.8 px)
    np.testing.assert_allclose(shifts, -ds.metadata["drift_px"], atol=0.8)
    # on clean frames the measurement is sub-pixel accurate
    np.testing.assert_allclose(measure_shift(ds.ground_truth[0], ds.ground_truth[-1]), -ds.metadata["drift_px"][-1], atol=0.15)
    clean_aligned = np.stack([shift_image(f, s) for f, s in zip(ds.ground_truth, shifts)])
    spread = clean_aligned[:, valid[0], valid[1]].std(axis=0).mean()
    raw_spread = ds.ground_truth[:, valid[0], valid[1]].std(axis=0).mean()
    assert spread < 0.3 * raw_spread


def test_frame_pairs_are_registered_independent_noise():
    ds = sim.movie_example(seed=3, frames=6, size=256, dose=5.0, max_drift_px=3.0)
    src = FramePairs(ds.data)
    x, y = src.batch(8, 48, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 1, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.ones(8), atol=1e-4)
    assert not torch.equal(x, y)  # two different frames
    # same scene: the pair agrees far better after smoothing than unrelated crops do
    import scipy.ndimage as ndi

    xs = ndi.gaussian_filter(x.numpy(), (0, 0, 6, 6))
    ys = ndi.gaussian_filter(y.numpy(), (0, 0, 6, 6))
    paired = np.mean((xs - ys) ** 2)
    shuffled = np.mean((xs - ys[::-1]) ** 2)
    assert paired < 0.6 * shuffled
    (vx, vy, clean), = src.validation()
    assert clean is None and vx.shape[0] == 4


def test_pairs_refuse_bad_input():
    with pytest.raises(EmcoreError, match="at least 2 frames"):
        FramePairs(np.zeros((1, 32, 32)))
    src = FramePairs(np.random.default_rng(0).random((3, 40, 40)), register=False)
    with pytest.raises(EmcoreError, match="larger than the registered frames"):
        src.batch(2, 64, np.random.default_rng(0))
    with pytest.raises(EmcoreError, match="same shape"):
        ImagePairs(np.zeros((8, 8)), np.zeros((8, 9)))


def test_image_pairs_supervised():
    clean = sim.hrem_phantom((64, 64), rng=np.random.default_rng(1))
    noisy = clean + np.random.default_rng(2).normal(0, 0.05, clean.shape)
    src = ImagePairs(noisy, clean)
    x, y = src.batch(3, 32, np.random.default_rng(0))
    assert x.shape == (3, 1, 32, 32)
    (vx, vy, vc), = src.validation()
    assert torch.equal(vy, vc)
