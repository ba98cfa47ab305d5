"""Self-calibration from the noisy data alone: the criteria rank denoisers like the truth does."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from emcore import sim
from emcore.errors import EmcoreError
from emcore.evaluate import psnr
from emcore.methods.calibration import calibrate, count_split_loss, grid, j_invariant_loss
from emcore.methods.wiener import denoise_wiener, estimate_noise_variance
from emcore.noise import Poisson, PoissonGaussian


@pytest.fixture(scope="module")
def lattice():
    return sim.hrem_example(seed=5, size=256, noise=PoissonGaussian(0.05, 0.02))


def test_j_invariant_loss_ranks_a_better_denoiser_first(lattice):
    y, gt = lattice.data, lattice.ground_truth
    good, bad = (lambda x: ndi.gaussian_filter(x, 2.0)), (lambda x: ndi.gaussian_filter(x, 0.4))
    assert psnr(good(y), gt) > psnr(bad(y), gt) + 3
    assert j_invariant_loss(good, y) < j_invariant_loss(bad, y)
    # the identity cannot see the hidden pixels: its loss is that of the interpolation, not 0
    assert j_invariant_loss(lambda x: x, y) > j_invariant_loss(good, y)


def test_count_split_loss_ranks_a_better_denoiser_first():
    ds = sim.hrem_example(seed=6, size=128, noise=Poisson(2.0))
    counts = np.round(ds.data * 2.0)
    good, bad = (lambda x: ndi.gaussian_filter(x, 2.0)), (lambda x: ndi.gaussian_filter(x, 0.3))
    assert count_split_loss(good, counts) < count_split_loss(bad, counts)


def test_calibrated_wiener_beats_the_default_on_a_lattice(lattice):
    y, gt = lattice.data, lattice.ground_truth
    nv = estimate_noise_variance(y)
    cal = calibrate(lambda p: (lambda x: denoise_wiener(x, window=p["window"], noise_power=nv * p["scale"])), y,
                    grid(window=(3, 5, 9), scale=(1.0, 2.0, 3.0)))
    b = cal.best
    tuned = psnr(denoise_wiener(y, window=b["window"], noise_power=nv * b["scale"]), gt)
    assert tuned > psnr(denoise_wiener(y), gt) + 3
    assert cal.criterion == "J-invariant" and len(cal.curve) == 9 and "Noise2Self" in cal.why


def test_calibrate_refuses_nothing_to_try(lattice):
    with pytest.raises(EmcoreError, match="nothing to calibrate"):
        calibrate(lambda p: (lambda x: x), lattice.data, [])


def test_wiener_entry_calibrates_itself_and_records_the_choice(lattice):
    from emcore.methods.registry import denoise

    auto = denoise(lattice, "wiener")
    fixed = denoise(lattice, "wiener", window=5)  # the old default window, noise floor as measured ×1..4
    plain = denoise(lattice, "wiener", window=5, noise_power=float(estimate_noise_variance(lattice.data)))
    gt = lattice.ground_truth
    assert psnr(auto.data, gt) > psnr(plain.data, gt) + 3  # the old blind default
    assert psnr(auto.data, gt) >= psnr(fixed.data, gt) - 0.5
    cal = auto.artifacts["calibration"]
    assert cal["criterion"] == "J-invariant" and cal["best"]["window"] == auto.params["window"]
    assert auto.params["noise_power"] > 0 and any("Self-calibrated" in line for line in auto.log)


def test_wiener_calibrates_stacks_by_count_splitting():
    from emcore.methods.registry import denoise

    movie = sim.example("movie", seed=1, size=64)
    res = denoise(movie, "wiener")
    assert res.artifacts["calibration"]["criterion"] == "count-split"
    assert res.data.shape == movie.data.shape and np.isfinite(res.data).all()
