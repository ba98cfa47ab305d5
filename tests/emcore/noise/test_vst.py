"""Generalised Anscombe transform and its exact unbiased inverse (emcore.noise.vst)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import poisson

from emcore.errors import EmcoreError
from emcore.noise.models import Gaussian, Poisson, PoissonGaussian
from emcore.noise.vst import (
    anscombe_forward,
    anscombe_inverse_algebraic,
    anscombe_inverse_closed_form,
    anscombe_inverse_exact,
    vst_parameters,
)


def poisson_gaussian(y, a, b, n, rng):
    """True Poisson–Gaussian samples: a·Poisson(y/a) + N(0, b²)."""
    return a * rng.poisson(y / a, n) + b * rng.standard_normal(n)


def expected_anscombe_poisson(lam: float) -> float:
    """E[2·sqrt(k + 3/8)] for k ~ Poisson(λ), summed directly (independent of emcore.noise.vst)."""
    k = np.arange(int(lam + 40 * np.sqrt(lam + 1) + 40))
    return float(np.sum(poisson.pmf(k, lam) * 2.0 * np.sqrt(k + 3.0 / 8.0)))


@pytest.mark.parametrize("lam", [2, 5, 10, 20, 50, 200])
def test_forward_stabilises_variance_to_one(lam):
    # Poisson–Gaussian noise with a = 0.05, b = 0.02: the variance of f(z) is 1 within 5 %
    # from 2 counts up (below that the Anscombe transform under-stabilises: ≈ 0.73 at 0.5).
    a, b = 0.05, 0.02
    rng = np.random.default_rng(lam)
    z = poisson_gaussian(a * lam, a, b, 400_000, rng)
    assert np.var(anscombe_forward(z, a, b).astype(np.float64)) == pytest.approx(1.0, abs=0.05)


def test_forward_stabilises_counts_divided_by_dose():
    dose = 20.0
    a, b = vst_parameters(Poisson(dose))
    assert (a, b) == (1 / dose, 0.0)
    rng = np.random.default_rng(0)
    for signal in (0.25, 1.0, 4.0):  # 5, 20 and 80 counts per pixel
        z = Poisson(dose).sample(np.full(200_000, signal), rng)
        assert np.var(anscombe_forward(z, a, b).astype(np.float64)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("lam", [0.5, 1, 2, 5, 20])
def test_exact_inverse_is_unbiased_at_low_counts(lam):
    d = expected_anscombe_poisson(lam)
    assert float(anscombe_inverse_exact(d, 1.0, 0.0)) == pytest.approx(lam, rel=0.01)
    # Scaled data (counts / dose) are the same problem with a = 1/dose.
    dose = 4.0
    assert float(anscombe_inverse_exact(d, 1 / dose, 0.0)) == pytest.approx(lam / dose, rel=0.01)
    if lam <= 2:  # where the algebraic inverse is visibly biased (−34 % at 0.5, −12 % at 2)
        assert float(anscombe_inverse_algebraic(d, 1.0, 0.0)) < 0.9 * lam


@pytest.mark.parametrize("lam", [0.5, 1, 2, 5, 20])
def test_exact_inverse_poisson_gaussian_monte_carlo(lam):
    a, b = 0.05, 0.02  # b/a = 0.4
    rng = np.random.default_rng(100 + int(10 * lam))
    z = poisson_gaussian(a * lam, a, b, 2_000_000, rng)
    d = float(np.mean(anscombe_forward(z, a, b), dtype=np.float64))
    # Monte-Carlo error of d is 1/sqrt(2e6) = 7e-4, i.e. < 0.2 % of λ at λ = 0.5.
    assert float(anscombe_inverse_exact(d, a, b)) == pytest.approx(a * lam, rel=0.01)
    if lam <= 1:
        assert abs(float(anscombe_inverse_algebraic(d, a, b)) - a * lam) > 0.1 * a * lam


def test_closed_form_close_to_exact_and_switch_is_continuous():
    # Closed form (Mäkitalo & Foi 2011): close to the exact inverse from a few counts up.
    for lam in (5.0, 20.0, 100.0):
        d = expected_anscombe_poisson(lam)
        assert float(anscombe_inverse_closed_form(d, 1.0, 0.0)) == pytest.approx(lam, rel=0.005)
    # Across the end of the tabulated range (λ + (b/a)² = 400) the inverse has no visible jump.
    for sigma in (0.0, 0.4, 5.0, 19.0):
        d = 2 * np.sqrt(400.0 + 1 / 8) + np.linspace(-1e-3, 1e-3, 21)  # D where the table ends
        lam = anscombe_inverse_exact(d, 1.0, sigma).astype(np.float64)
        steps = np.diff(lam)
        # Steps of 1e-4 in D move λ by D/2·1e-4 = 2e-3; the switch adds under 3e-4.
        assert np.all(steps > 1.5e-3) and np.all(steps < 2.5e-3), steps
    # Beyond the table (σ² > 400) the asymptotic inverse is used throughout.
    d = 2 * np.sqrt(900.0 + 1 / 8 + np.array([10.0, 20.0]))
    np.testing.assert_allclose(anscombe_inverse_exact(d, 1.0, 30.0), [10.0, 20.0], atol=1e-3)


def test_inverse_of_forward_and_shapes_dtypes():
    rng = np.random.default_rng(1)
    z = rng.uniform(0.5, 50.0, size=(7, 9))
    before = z.copy()
    f = anscombe_forward(z, 0.5, 0.3)
    assert f.dtype == np.float32 and f.shape == z.shape
    np.testing.assert_array_equal(z, before)
    np.testing.assert_allclose(anscombe_inverse_algebraic(f, 0.5, 0.3), z, rtol=1e-5)
    out = anscombe_inverse_exact(f, 0.5, 0.3)
    assert out.dtype == np.float32 and out.shape == z.shape and np.all(out >= 0)
    # Below E[f | y = 0] the exact inverse returns 0, never a negative signal.
    assert float(anscombe_inverse_exact(0.0, 1.0, 0.0)) == 0.0


def test_gaussian_limit_and_parameters():
    assert vst_parameters(Gaussian(0.1)) == (0.0, 0.1)
    assert vst_parameters(PoissonGaussian(0.05, 0.02)) == (0.05, 0.02)
    z = np.array([-1.0, 0.0, 2.5])
    np.testing.assert_allclose(anscombe_forward(z, 0.0, 0.5), z / 0.5)
    np.testing.assert_allclose(anscombe_inverse_exact(anscombe_forward(z, 0.0, 0.5), 0.0, 0.5), z, rtol=1e-6)


def test_bad_parameters_raise():
    with pytest.raises(EmcoreError, match="not both zero"):
        anscombe_forward(np.ones(3), 0.0, 0.0)
    with pytest.raises(EmcoreError, match="a ≥ 0"):
        anscombe_inverse_exact(np.ones(3), -1.0, 0.1)
    with pytest.raises(EmcoreError, match="noise model"):
        vst_parameters("poisson")
