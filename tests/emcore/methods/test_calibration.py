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


def test_auto_ranks_like_the_truth_and_lists_the_ranking(tmp_path, capsys):
    """Auto on a lattice phantom: its pick is within 0.5 dB of the best candidate's true PSNR,
    and the CLI's JSON line lists the ranking."""
    import json

    from emcore.cli import main
    from emcore.methods.auto import rank

    ds = sim.example("hrem", seed=3, dose=2.0, size=128)
    out = rank(ds, 30.0)
    truth = [r["psnr"] for r in out["ranking"]]
    assert truth[0] >= max(truth) - 0.5, out["ranking"]
    assert out["criterion"] == "count-split" and set(out["results"]) == {r["method"] for r in out["ranking"]}
    path = tmp_path / "h.npy"
    np.save(path, ds.data)
    assert main(["denoise", str(path), "--method", "auto", "--set", "budget_seconds=15", "--out",
                 str(tmp_path / "o.npy")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["method"] == "auto" and line["ranking"] and line["params"]["chosen"] == line["ranking"][0]["method"]


def test_auto_says_when_nothing_fits_the_budget(lattice):
    from emcore.methods.auto import rank

    with pytest.raises(EmcoreError, match="No method fits a budget"):
        rank(lattice, 0.001)
    flat = lattice.__class__(np.ones((32, 32), np.float32), "image", name="flat")
    from emcore.methods.registry import denoise

    with pytest.raises(EmcoreError, match="constant"):
        denoise(flat, "auto")


def test_one_transform_for_every_wiener_setting_gives_the_same_images_and_curve(lattice):
    """FrameSpectrum (one FFT, one smoothing per window) equals filtering setting by setting, and
    calibrating with ``make_many`` scores every candidate exactly as one by one does, under both
    criteria. Would fail if the shared spectrum were modified in place by a filter, or the
    batched scores were paired with the wrong candidates."""
    from emcore.methods.wiener import FrameSpectrum

    y = lattice.data
    spec = FrameSpectrum(y)
    assert spec.noise_variance == estimate_noise_variance(y)
    for window, scale in ((3, 2.0), (9, 1.0), (3, 4.0), (3, 2.0)):
        one = denoise_wiener(y, window=window, noise_power=estimate_noise_variance(y) * scale)
        np.testing.assert_array_equal(spec.filter(window, scale), one)

    def one_by_one(p):
        return lambda x: denoise_wiener(x, window=p["window"], noise_power=estimate_noise_variance(x) * p["scale"])

    def together(cands):
        return lambda x: [FrameSpectrum(x).filter(p["window"], p["scale"]) for p in cands]

    cands = grid(window=(3, 9, 15), scale=(1.0, 3.0))
    counts = np.round(np.clip(y, 0, None) * 20.0)
    for kw in ({}, {"counts": counts}):
        image = counts if kw else y
        slow = calibrate(one_by_one, image, cands, **kw)
        fast = calibrate(one_by_one, image, cands, make_many=together, **kw)
        assert fast.curve == slow.curve and fast.best == slow.best and fast.criterion == slow.criterion
        assert len({v for _, v in fast.curve}) == len(cands)  # the settings really differ
