"""Variance stabilisation for Poisson–Gaussian noise: the generalised Anscombe transform.

For data ``z`` whose noise variance is ``a·y + b²`` at clean signal level ``y`` (``a`` the
gain of the Poisson part, ``b`` the standard deviation of the signal-independent Gaussian
part; see :class:`emcore.noise.PoissonGaussian`), the generalised Anscombe transform (GAT)

    f(z) = (2 / a) · sqrt(max(a·z + 3/8·a² + b², 0))

turns the noise into approximately unit-variance Gaussian noise, so that a denoiser for
white Gaussian noise (BM3D, with ``sigma = 1``) can be applied; its result ``D ≈ E[f(z) | y]``
is then mapped back to the signal scale.

The back-mapping matters. The plain algebraic inverse of ``f`` is biased at low counts
because ``E[f(z)] ≠ f(E[z])`` (Jensen); the *exact unbiased inverse* of Mäkitalo & Foi
maps ``E[f(z) | y]`` back to ``y`` exactly, which removes the bias that otherwise makes
low-dose images too dark. It is computed here as the paper describes: ``E[f(z) | y]`` is
tabulated for the Poisson–Gaussian model on a grid of ``y`` and inverted by interpolation,
with the authors' closed-form asymptotic expression beyond the table.

Scaled data
-----------
Counts divided by a dose (``z = counts / dose``, :class:`emcore.noise.Poisson`) have
variance ``y / dose``: that is ``a = 1 / dose, b = 0`` (:func:`vst_parameters` does this
conversion for every noise model in :mod:`emcore.noise`). Pure Gaussian noise (``a = 0``) is
stabilised by ``f(z) = z / b``, the ``a → 0`` limit of the GAT up to a constant.

References
----------
.. [1] J.-L. Starck, F. Murtagh, A. Bijaoui, *Image Processing and Data Analysis: The
       Multiscale Approach*, Cambridge University Press, 1998, Sec. 2.4 (generalised
       Anscombe transformation).
.. [2] M. Mäkitalo, A. Foi, "Optimal inversion of the Anscombe transformation in low-count
       Poisson image denoising", IEEE Trans. Image Process. 20(1), 99–109, 2011.
.. [3] M. Mäkitalo, A. Foi, "A closed-form approximation of the exact unbiased inverse of
       the Anscombe variance-stabilizing transformation", IEEE Trans. Image Process. 20(9),
       2697–2698, 2011.
.. [4] M. Mäkitalo, A. Foi, "Optimal inversion of the generalized Anscombe transformation
       for Poisson–Gaussian noise", IEEE Trans. Image Process. 22(1), 91–103, 2013.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import gammaln

from emcore.errors import EmcoreError
from emcore.noise.models import Gaussian, Poisson, PoissonGaussian

__all__ = [
    "anscombe_forward",
    "anscombe_inverse_exact",
    "anscombe_inverse_closed_form",
    "anscombe_inverse_algebraic",
    "vst_parameters",
]

# Anscombe's constant 3/8 (Anscombe 1948), kept in the generalised transform [1].
_ANSCOMBE_C = 3.0 / 8.0
# Coefficients of the closed-form approximation of the exact unbiased inverse,
# Mäkitalo & Foi 2011 [3], Eq. (1), extended to the GAT in [4], Eq. (17):
#   I(D) ≈ 1/4 D² + 1/4 √(3/2) D⁻¹ − 11/8 D⁻² + 5/8 √(3/2) D⁻³ − 1/8 − σ²
_CF_D1 = 0.25 * np.sqrt(1.5)
_CF_D2 = -11.0 / 8.0
_CF_D3 = 0.625 * np.sqrt(1.5)
_CF_C = -1.0 / 8.0
# The table of E[f | λ] runs up to m = λ + σ² = _TABLE_END; beyond it the asymptotic inverse
# λ = D²/4 − 1/8 − σ² (Mäkitalo & Foi 2013, Sec. III-C) is used. A fourth-order expansion of
# E[2·sqrt(X)] puts its error at σ²/(8m²) ≤ 1/(8·_TABLE_END) ≈ 3e-4 in λ, i.e. under 2e-5
# noise standard deviations (checked in tests/emcore/test_vst.py).
_TABLE_END = 400.0
_TABLE_POINTS = 4000
# Gaussian part of the expectation: trapezoidal rule on ±_GAUSS_HALF_WIDTH standard deviations.
_GAUSS_HALF_WIDTH = 8.0
_GAUSS_POINTS = 1601


def _params(a, b) -> tuple[float, float]:
    try:
        a = float(a)
        b = float(b)
    except (TypeError, ValueError) as exc:
        raise EmcoreError(f"The noise parameters must be numbers, not a={a!r}, b={b!r}.") from exc
    if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0 and (a > 0 or b > 0)):
        raise EmcoreError(f"The Anscombe transform needs a ≥ 0 and b ≥ 0, not both zero (got a={a:g}, b={b:g}).")
    return a, b


def vst_parameters(noise) -> tuple[float, float]:
    """``(a, b)`` of ``variance = a·signal + b²`` for a noise model of :mod:`emcore.noise`.

    ``Poisson(dose)`` (data = counts / dose) gives ``(1/dose, 0)``, ``PoissonGaussian(a, b)``
    gives ``(a, b)``, ``Gaussian(sigma)`` gives ``(0, sigma)``.
    """
    if isinstance(noise, Poisson):
        return 1.0 / noise.dose, 0.0
    if isinstance(noise, PoissonGaussian):
        return float(noise.a), float(noise.b)
    if isinstance(noise, Gaussian):
        return 0.0, float(noise.sigma)
    raise EmcoreError(f"Cannot variance-stabilise for the noise model {noise!r}; use Poisson, PoissonGaussian or Gaussian.")


def anscombe_forward(z, a: float, b: float = 0.0) -> np.ndarray:
    """Generalised Anscombe transform ``f(z) = (2/a)·sqrt(max(a·z + 3/8·a² + b², 0))``.

    Parameters
    ----------
    z : array_like
        Noisy data whose noise variance is ``a·y + b²`` at clean level ``y``.
    a : float
        Gain of the Poisson part (``1/dose`` for counts divided by a dose), ``a ≥ 0``.
    b : float, optional
        Standard deviation of the Gaussian part, ``b ≥ 0``.

    Returns
    -------
    ndarray of float32
        Transformed data with noise of (approximately) unit variance. For ``a = 0`` this is
        ``z / b``. The input is not modified.

    References
    ----------
    Starck, Murtagh & Bijaoui 1998, Sec. 2.4; notation of Mäkitalo & Foi 2013, Eq. (5) with
    ``α = a``, ``σ = b``, ``μ = 0``.
    """
    a, b = _params(a, b)
    z = np.asarray(z, dtype=np.float64)
    if a == 0:
        return (z / b).astype(np.float32)
    return ((2.0 / a) * np.sqrt(np.maximum(a * z + _ANSCOMBE_C * a * a + b * b, 0.0))).astype(np.float32)


def anscombe_inverse_algebraic(d, a: float, b: float = 0.0) -> np.ndarray:
    """Plain algebraic inverse ``f⁻¹(d) = ((a·d/2)² − 3/8·a² − b²) / a``.

    Biased at low counts (it inverts ``f``, not ``E[f]``); kept for comparison with
    :func:`anscombe_inverse_exact`, see Mäkitalo & Foi 2011, Sec. II.
    """
    a, b = _params(a, b)
    d = np.asarray(d, dtype=np.float64)
    if a == 0:
        return (d * b).astype(np.float32)
    return (((a * d / 2.0) ** 2 - _ANSCOMBE_C * a * a - b * b) / a).astype(np.float32)


def _closed_form_lambda(d: np.ndarray, sigma: float) -> np.ndarray:
    """Mäkitalo & Foi 2013, Eq. (17), in the unit-gain domain (λ = y / a, σ = b / a)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = 1.0 / d
        lam = 0.25 * d * d + _CF_D1 * inv + _CF_D2 * inv**2 + _CF_D3 * inv**3 + _CF_C - sigma * sigma
    lam = np.where(d > 0, lam, 0.0)
    return np.maximum(lam, 0.0)


def anscombe_inverse_closed_form(d, a: float, b: float = 0.0) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2011, 2013).

    ``y ≈ a·max(1/4 D² + 1/4 √(3/2) D⁻¹ − 11/8 D⁻² + 5/8 √(3/2) D⁻³ − 1/8 − (b/a)², 0)``.
    Accurate for moderate and large ``D``; :func:`anscombe_inverse_exact` should be preferred
    at very low counts.

    References
    ----------
    Mäkitalo & Foi, IEEE TIP 20(9), 2011, Eq. (1); IEEE TIP 22(1), 2013, Eq. (17).
    """
    a, b = _params(a, b)
    d = np.asarray(d, dtype=np.float64)
    if a == 0:
        return (d * b).astype(np.float32)
    return (a * _closed_form_lambda(d, b / a)).astype(np.float32)


@lru_cache(maxsize=64)
def _expectation_table(sigma: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Tabulate ``E[2·sqrt(max(p + n + 3/8 + σ², 0))]`` for ``p ~ Poisson(λ)``, ``n ~ N(0, σ²)``.

    This is ``E[f(z) | y]`` of the GAT in the unit-gain domain ``λ = y / a``, ``σ = b / a``
    (Mäkitalo & Foi 2013, Eq. (8): a sum over the Poisson counts ``k`` of a Gaussian integral).
    Returns ``(expectation, λ)`` on an increasing grid, or ``None`` where ``σ²`` alone is beyond
    the table's end (the asymptotic inverse is then accurate everywhere).
    """
    s2 = sigma * sigma
    lam_end = _TABLE_END - s2
    if lam_end <= 0:
        return None
    # Denser at low λ where the inverse bends most (uniform in sqrt(λ), as D ≈ 2 sqrt(λ)).
    lam = np.linspace(0.0, np.sqrt(lam_end), _TABLE_POINTS) ** 2
    k = np.arange(int(np.ceil(lam_end + 12.0 * np.sqrt(lam_end) + 30)), dtype=np.float64)
    if sigma == 0:
        g = 2.0 * np.sqrt(k + _ANSCOMBE_C)
    else:
        t = np.linspace(-_GAUSS_HALF_WIDTH, _GAUSS_HALF_WIDTH, _GAUSS_POINTS)
        w = np.exp(-0.5 * t * t)
        w[[0, -1]] *= 0.5  # trapezoid end points
        w /= w.sum()
        g = np.empty_like(k)
        for start in range(0, k.size, 256):  # bounded memory
            kk = k[start:start + 256, None]
            g[start:start + 256] = (2.0 * np.sqrt(np.maximum(kk + _ANSCOMBE_C + s2 + sigma * t[None, :], 0.0))) @ w
    # Poisson weights exp(k log λ − λ − log k!), computed in log space (λ = 0 handled apart).
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lam = np.log(lam)
        logp = k[None, :] * log_lam[:, None] - lam[:, None] - gammaln(k + 1.0)[None, :]
    logp[0, :] = -np.inf
    logp[0, 0] = 0.0
    expectation = np.exp(logp) @ g
    # E[f | λ] increases with λ; guard the interpolation against round-off.
    expectation = np.maximum.accumulate(expectation)
    return expectation, lam


def _asymptotic_lambda(d: np.ndarray, sigma: float) -> np.ndarray:
    """Asymptotically unbiased inverse λ = D²/4 − 1/8 − σ² (Mäkitalo & Foi 2013, Sec. III-C)."""
    return np.maximum(0.25 * d * d + _CF_C - sigma * sigma, 0.0)


def _exact_lambda(d: np.ndarray, sigma: float) -> np.ndarray:
    table = _expectation_table(round(float(sigma), 12))
    if table is None:
        return _asymptotic_lambda(d, sigma)
    expectation, lam = table
    out = np.interp(d, expectation, lam)  # below the table: λ = 0 (np.interp clamps)
    beyond = d > expectation[-1]
    if np.any(beyond):
        out[beyond] = _asymptotic_lambda(d[beyond], sigma)
    return out


def anscombe_inverse_exact(d, a: float, b: float = 0.0) -> np.ndarray:
    """Exact unbiased inverse of the generalised Anscombe transform.

    Returns the ``y`` for which ``E[f(z) | y] = d`` under the Poisson–Gaussian model
    ``z = a·Poisson(y/a) + N(0, b²)``, so that a denoised transformed image (an estimate of
    ``E[f(z)]``) maps back to the signal without the low-count bias of the algebraic inverse.

    Parameters
    ----------
    d : array_like
        Values in the transformed domain (typically the output of a Gaussian denoiser
        applied to :func:`anscombe_forward` output).
    a, b : float
        The noise parameters used in the forward transform.

    Returns
    -------
    ndarray of float32
        Signal estimate, ``≥ 0`` (values of ``d`` below ``E[f | y = 0]`` map to 0). For
        ``a = 0`` this is ``d·b``. The input is not modified.

    Notes
    -----
    The expectation ``E[f(z) | y]`` is tabulated (4000 values of ``λ = y/a`` up to
    ``λ + (b/a)² = 400``) by summing over the Poisson counts with the Gaussian part
    integrated numerically, then inverted by linear interpolation; beyond the table the
    asymptotic inverse ``λ = D²/4 − 1/8 − (b/a)²`` of Mäkitalo & Foi (2013) is used, which
    agrees with the exact one there to within 3e-4 in ``λ = y/a`` (under 2e-5 noise standard
    deviations). A table is computed once per value of ``b/a`` (under 0.1 s) and cached.

    References
    ----------
    Mäkitalo & Foi, IEEE TIP 20(1), 2011 (Poisson, ``b = 0``); IEEE TIP 22(1), 2013, Sec. III
    (Poisson–Gaussian).
    """
    a, b = _params(a, b)
    d = np.asarray(d, dtype=np.float64)
    if a == 0:
        return (d * b).astype(np.float32)
    lam = _exact_lambda(np.array(d, dtype=np.float64, copy=True).ravel(), b / a).reshape(d.shape)
    return (a * lam).astype(np.float32)
