"""Wiener filters (emcore.methods.wiener): gains on a synthetic lattice, what they keep, bad input."""

import numpy as np
import pytest

from emcore import EmcoreError
from emcore.evaluate.reference import psnr
from emcore.methods.wiener import (
    denoise_wiener,
    denoise_wiener_cube,
    denoise_wiener_stack,
    estimate_noise_variance,
)
from emcore.progress import Progress

SIGMA = 0.3  # Gaussian noise std on a lattice of peak height ~1


def lattice(n: int, period: float = 7.3, angle: float = 0.3, width: float = 1.2) -> np.ndarray:
    """Gaussian atom columns on a square lattice, rotated and with a period that does not
    divide the image (so the reflections fall between Fourier bins, as in a real image)."""
    y, x = np.mgrid[:n, :n].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * x + s * y) / period, (-s * x + c * y) / period
    du, dv = u - np.round(u), v - np.round(v)
    return (0.2 + np.exp(-((du**2 + dv**2) * period**2) / (2 * width**2))).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    clean = lattice(256)
    noisy = (clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape)).astype(np.float32)
    return clean, noisy


# Measured at seed 0: fft +13.5 dB, local +5.2 dB; the margins leave room for BLAS/FFT rounding
# but fail if the filter stops removing the noise floor.
@pytest.mark.parametrize("mode,margin_db", [("fft", 10.0), ("local", 4.0)])
def test_wiener_improves_psnr_on_lattice(pair, mode, margin_db):
    clean, noisy = pair
    out = denoise_wiener(noisy, mode=mode)
    assert psnr(out, clean) > psnr(noisy, clean) + margin_db


def test_fft_wiener_improves_psnr_under_poisson_gaussian_noise():
    clean = lattice(256)
    rng = np.random.default_rng(1)
    # Poisson-Gaussian model of Tian et al. (2024): var = a*clean + b^2, a = 0.05, b = 0.02.
    noisy = (clean + rng.normal(size=clean.shape) * np.sqrt(0.05 * clean + 0.02**2)).astype(np.float32)
    out = denoise_wiener(noisy)
    assert psnr(out, clean) > psnr(noisy, clean) + 8.0  # measured +10.7 dB


def test_fft_wiener_keeps_lattice_reflections_and_removes_the_floor(pair):
    clean, noisy = pair
    out = denoise_wiener(noisy, mode="fft")

    def power(a):
        return np.abs(np.fft.rfft2(a - a.mean())) ** 2

    pc, po, pn = power(clean), power(out), power(noisy)
    pc_no_dc = pc.copy()
    pc_no_dc[0, 0] = 0
    peaks = np.argsort(pc_no_dc.ravel())[::-1][:4]  # the strongest reflections
    ratio = po.ravel()[peaks] / pc.ravel()[peaks]
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    # Between reflections, at high frequency, the noise floor is gone.
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.rfftfreq(256)[None, :]
    outer = np.hypot(fy, fx) > 0.4
    assert np.median(po[outer]) < 0.05 * np.median(pn[outer])


@pytest.mark.parametrize("mode", ["fft", "local"])
def test_wiener_keeps_the_mean_and_returns_float32(pair, mode):
    _, noisy = pair
    out = denoise_wiener(noisy + 100.0, mode=mode)  # an offset, as in counts data
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert abs(out.mean(dtype=np.float64) - (noisy + 100.0).mean(dtype=np.float64)) < 1e-4


@pytest.mark.parametrize("mode", ["fft", "local"])
def test_wiener_does_not_modify_input(mode):
    img = (lattice(64) * 1000).astype(np.uint16)
    before = img.copy()
    out = denoise_wiener(img, mode=mode)
    np.testing.assert_array_equal(img, before)
    assert out.dtype == np.float32


def test_fft_wiener_has_no_edge_artefacts():
    # A ramp makes the image non-periodic: without padding and taper the FFT would see a jump
    # at the borders and smear it into the image.
    n = 256
    yy, xx = np.mgrid[:n, :n]
    clean = lattice(n) + (0.8 * xx / n + 0.5 * yy / n).astype(np.float32)
    noisy = (clean + np.random.default_rng(2).normal(0, SIGMA, clean.shape)).astype(np.float32)
    err = (denoise_wiener(noisy) - clean) ** 2
    border = np.ones_like(err, dtype=bool)
    border[8:-8, 8:-8] = False
    assert np.sqrt(err[border].mean()) < 1.6 * np.sqrt(err[~border].mean())  # measured 1.3x


def test_noise_estimate_and_given_noise_power(pair):
    clean, noisy = pair
    assert estimate_noise_variance(noisy) == pytest.approx(SIGMA**2, rel=0.05)
    given = denoise_wiener(noisy, noise_power=SIGMA**2)
    assert psnr(given, clean) == pytest.approx(psnr(denoise_wiener(noisy), clean), abs=0.5)
    # A given noise power overrides the estimate: zero noise means nothing is removed.
    np.testing.assert_allclose(denoise_wiener(noisy, noise_power=0.0), noisy, atol=1e-5)


@pytest.mark.parametrize("mode", ["fft", "local"])
def test_cube_and_stack_equal_per_image_calls(mode):
    rng = np.random.default_rng(3)
    base = lattice(40, period=5.1)
    cube = np.stack([base * (1 + 0.1 * k) + rng.normal(0, 0.2, base.shape) for k in range(6)], axis=-1)
    cube = cube.astype(np.float32)
    cube[:, :, 2] = 0.0  # an empty channel is passed through, not refused
    before = cube.copy()
    out = denoise_wiener_cube(cube, mode=mode)
    np.testing.assert_array_equal(cube, before)
    assert out.shape == cube.shape and out.dtype == np.float32
    for k in (0, 4):
        np.testing.assert_allclose(out[:, :, k], denoise_wiener(cube[:, :, k], mode=mode), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, :, 2], 0.0)

    stack = np.moveaxis(cube, -1, 0)
    out_s = denoise_wiener_stack(stack, mode=mode)
    np.testing.assert_allclose(out_s[1], denoise_wiener(stack[1], mode=mode), rtol=1e-5, atol=1e-5)


def test_progress_reports_reach_the_total():
    cube = np.random.default_rng(4).normal(size=(16, 16, 5)).astype(np.float32)
    seen = []
    denoise_wiener_cube(cube, progress=seen.append)
    assert seen and all(isinstance(p, Progress) for p in seen)
    assert seen[-1].step == seen[-1].total == 5


@pytest.mark.parametrize(
    "data,kwargs,match",
    [
        (np.full((32, 32), 3.0), {}, "constant: nothing to denoise"),
        (np.ones((6, 32)), {}, "at least 8×8"),
        (np.ones((4, 32, 32)), {}, "denoise_wiener_stack"),
        (np.eye(16), {"mode": "median"}, "Unknown Wiener mode"),
        (np.eye(16), {"window": 4}, "odd whole number"),
        (np.eye(16), {"noise_power": -1.0}, "variance per pixel"),
        (np.eye(16), {"highfreq_fraction": 1.5}, "between 0 and 1"),
        (np.where(np.eye(16) > 0, np.nan, 1.0), {}, "NaN"),
    ],
)
def test_bad_input_raises_plain_sentences(data, kwargs, match):
    with pytest.raises(EmcoreError, match=match):
        denoise_wiener(data, **kwargs)


def test_all_constant_cube_is_refused():
    with pytest.raises(EmcoreError, match="constant"):
        denoise_wiener_cube(np.zeros((16, 16, 4)))
