"""One contract test over every registered method, plus the registry's own rules."""

from __future__ import annotations

import numpy as np
import pytest

from emcore import Dataset, EmcoreError, sim
from emcore.data.dataset import Calibration
from emcore.evaluate.filter_view import supports_filter
from emcore.evaluate.reference import psnr
from emcore.methods.registry import Param, denoise, get_method, methods
from emcore.noise.models import Poisson, PoissonGaussian

ALL = [m.name for m in methods()]
rng = np.random.default_rng(0)


def _lattice(h, w):
    r, c = np.mgrid[0:h, 0:w]
    return (0.5 + 0.1 * np.cos(2 * np.pi * r / 7) * np.cos(2 * np.pi * c / 9)).astype(np.float32)


def small(kind: str) -> Dataset:
    g = np.random.default_rng(1)
    if kind == "image":
        clean = _lattice(48, 40)
        return Dataset(PoissonGaussian(0.01, 0.01).sample(clean, g), "image", ground_truth=clean, name="tiny image")
    if kind == "stack":
        clean = np.stack([_lattice(40, 40)] * 3)
        return Dataset(PoissonGaussian(0.01, 0.01).sample(clean, g), "stack", ground_truth=clean, name="tiny stack")
    maps = np.stack([_lattice(24, 20), 1 - _lattice(24, 20)], axis=-1)
    spectra = np.zeros((2, 48))
    spectra[0, 10:14] = 1.0
    spectra[1, 30:36] = 0.7
    clean = (maps @ spectra * 3).astype(np.float32)
    return Dataset(g.poisson(clean).astype(np.float32), "cube", ground_truth=clean, is_counts=True,
                   calibration=Calibration(1.0, "nm", 0.0, 0.02, "keV"), name="tiny cube")


CASES = [(m.name, k) for m in methods() for k in m.accepts]


@pytest.mark.parametrize("name,kind", CASES)
def test_contract(name, kind):
    ds = small(kind)
    before = ds.data.copy()
    quick = get_method(name).quick
    res = denoise(ds, name, seed=3, **quick)
    assert res.data.shape == ds.data.shape
    assert res.data.dtype == np.float32
    assert np.all(np.isfinite(res.data))
    np.testing.assert_array_equal(ds.data, before)  # input unchanged
    assert res.method == name and res.seconds >= 0 and res.device in ("cpu", "cuda", "mps")
    assert set(get_method(name).defaults()) <= set(res.params)
    # The registry's filter-view declaration matches what the result carries.
    assert supports_filter(res.artifacts) == (get_method(name).filter_view is not None)
    again = denoise(ds, name, seed=3, **quick)
    if name == "bm3d" and kind == "image":
        # One image runs with the bm3d library's own threads, which aggregate in thread order:
        # the same up to float32 rounding (stacks and cubes run single-threaded planes: exact).
        np.testing.assert_allclose(res.data, again.data, rtol=1e-5, atol=1e-6 * float(np.abs(res.data).max()))
    else:
        np.testing.assert_array_equal(res.data, again.data)


@pytest.mark.parametrize("name", ALL)
def test_refuses_kinds_it_does_not_accept(name):
    import re

    m = get_method(name)
    words = {"image": "an image", "stack": "a stack of images", "cube": "a spectrum image"}
    plural = {"image": "images", "stack": "stacks of images", "cube": "spectrum images"}
    accepted = " or ".join(plural[k] for k in m.accepts)
    for kind in {"image", "stack", "cube"} - set(m.accepts):
        pattern = (re.escape(m.label) + f" works on {accepted}, but tiny {kind} is {words[kind]}; "
                   f"methods for {words[kind]}: ")
        with pytest.raises(EmcoreError, match=pattern):
            denoise(small(kind), name)


def test_every_entry_is_complete():
    assert {"bm3d", "wiener", "pca"} <= set(ALL)
    for m in methods():
        assert m.label and m.description and m.kind in ("classical", "supervised", "self-supervised", "meta")
        assert m.accepts and set(m.accepts) <= {"image", "stack", "cube"}
        for p in m.params:
            assert p.help, f"{m.name}.{p.name} has no help text"
            if p.default is not None:
                assert p.coerce(p.default, m.name) == p.default


def test_unknown_method_and_parameter_list_the_valid_ones():
    ds = small("image")
    with pytest.raises(EmcoreError, match="Unknown method 'nope'.*bm3d.*wiener"):
        denoise(ds, "nope")
    with pytest.raises(EmcoreError, match="wiener has no parameter 'sigma'.*mode"):
        denoise(ds, "wiener", sigma=3)


def test_parameter_validation_from_cli_strings():
    p = Param("window", "int", 5, "help", min=3, max=31)
    assert p.coerce("7", "x") == 7
    with pytest.raises(EmcoreError, match="between 3 and 31"):
        p.coerce("99", "x")
    with pytest.raises(EmcoreError, match="must be an int"):
        p.coerce("seven", "x")
    q = Param("n", "int", None, "help", auto=True)
    assert q.coerce("auto", "x") is None
    b = Param("flag", "bool", True, "help")
    assert b.coerce("false", "x") is False
    c = Param("mode", "choice", "fft", "help", choices=("fft", "local"))
    with pytest.raises(EmcoreError, match="one of fft, local"):
        c.coerce("gauss", "x")


def test_estimated_noise_is_reported_and_override_used():
    ds = small("image")
    res = denoise(ds, "bm3d")
    assert res.params["noise_a"] is not None and res.params["noise_b"] is not None
    assert any("Noise model" in line for line in res.log)
    given = denoise(ds, "bm3d", noise_a=0.0, noise_b=0.1)
    assert given.params["noise_b"] == pytest.approx(0.1)


def test_constant_image_gets_a_sentence():
    ds = Dataset(np.full((32, 32), 3.0), "image", name="flat")
    for name in ("bm3d", "wiener"):
        with pytest.raises(EmcoreError, match="constant|nothing to denoise"):
            denoise(ds, name)


# -- each method improves PSNR on a simulated case, by a stated margin ---------------
@pytest.fixture(scope="module")
def hrem():
    ds = sim.hrem_example(seed=5, dose=1.0, size=128, noise=PoissonGaussian(0.05, 0.02))
    from dataclasses import replace

    return replace(ds, noise=None)  # blind: the methods estimate the noise


@pytest.mark.parametrize("name,margin", [("bm3d", 12.0), ("wiener", 10.0)])
def test_image_methods_improve_psnr(hrem, name, margin):
    before = psnr(hrem.data, hrem.ground_truth)
    after = psnr(denoise(hrem, name).data, hrem.ground_truth)
    assert after > before + margin, (before, after)


def test_pca_improves_psnr_on_eds_example():
    ds = sim.eds_example(seed=2, counts_per_pixel=20.0, size=48, channels=256)
    before = psnr(ds.data, ds.ground_truth)
    after = psnr(denoise(ds, "pca").data, ds.ground_truth)
    assert after > before + 8.0, (before, after)


def test_progress_and_stop_for_cube_bm3d():
    ds = small("cube")
    seen = []
    denoise(ds, "bm3d", bin_energy=8, progress=seen.append)
    assert seen and seen[-1].step == seen[-1].total
    with pytest.raises(EmcoreError, match="[Ss]topped"):
        denoise(ds, "bm3d", should_stop=lambda: True)


def test_counts_use_poisson_noise():
    ds = small("cube")
    res = denoise(ds, "bm3d", bin_energy=16)
    assert res.params["noise_a"] == 1.0 and res.params["noise_b"] == 0.0
    assert isinstance(Poisson(1.0), Poisson)
