"""Noise models for electron-microscopy data.

Each model is a small class with its parameters in ``__init__`` (as in deepinv), able to
draw a noisy realisation of a clean signal with an explicit ``numpy.random.Generator`` and
to state the variance it implies at a given signal level.

References
----------
Poisson–Gaussian model and its defaults (a = 0.05, b = 0.02): Tian et al., "Zero-Shot Image
Denoising for High-Resolution Electron Microscopy", IEEE TCI 10 (2024), Sec. IV-A.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emcore.errors import EmcoreError


def _check_clean(clean: np.ndarray) -> np.ndarray:
    clean = np.asarray(clean, dtype=np.float64)
    if not np.all(np.isfinite(clean)):
        raise EmcoreError("The clean signal holds NaN or Inf values; noise cannot be added to it.")
    return clean


@dataclass(frozen=True)
class Poisson:
    """Shot noise at a dose of ``dose`` electrons (or counts) per pixel.

    ``noisy = poisson(clean * dose) / dose``: the result stays on the scale of ``clean``;
    ``variance(s) = s / dose``.
    """

    dose: float = 1.0

    def __post_init__(self):
        if not (self.dose > 0 and np.isfinite(self.dose)):
            raise EmcoreError(f"The dose must be a positive number of electrons per pixel, not {self.dose}.")

    def sample(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lam = np.clip(_check_clean(clean), 0, None) * self.dose
        return (rng.poisson(lam) / self.dose).astype(np.float32)

    def variance(self, signal):
        return np.clip(np.asarray(signal, dtype=np.float64), 0, None) / self.dose

    def describe(self) -> str:
        return f"Poisson (shot) noise at {self.dose:g} e⁻/pixel"

    def to_dict(self) -> dict:
        return {"model": "poisson", **asdict(self)}


@dataclass(frozen=True)
class PoissonGaussian:
    """Signal-dependent Gaussian approximation of shot plus read noise.

    ``noisy = clean + N(0, a * clean + b**2)`` (Tian et al. 2024, Sec. IV-A; defaults
    a = 0.05, b = 0.02 are theirs).
    """

    a: float = 0.05
    b: float = 0.02

    def __post_init__(self):
        if not (self.a >= 0 and self.b >= 0 and (self.a > 0 or self.b > 0)):
            raise EmcoreError(f"Poisson–Gaussian noise needs a ≥ 0 and b ≥ 0, not both zero (got a={self.a}, b={self.b}).")

    def sample(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clean = _check_clean(clean)
        std = np.sqrt(self.variance(clean))
        return (clean + std * rng.standard_normal(clean.shape)).astype(np.float32)

    def variance(self, signal):
        return self.a * np.clip(np.asarray(signal, dtype=np.float64), 0, None) + self.b**2

    def describe(self) -> str:
        return f"Poisson–Gaussian noise, variance = {self.a:g}·signal + {self.b:g}²"

    def to_dict(self) -> dict:
        return {"model": "poisson_gaussian", **asdict(self)}


@dataclass(frozen=True)
class Gaussian:
    """Additive white Gaussian noise of standard deviation ``sigma``."""

    sigma: float = 0.05

    def __post_init__(self):
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise EmcoreError(f"The Gaussian noise level must be positive, not {self.sigma}.")

    def sample(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clean = _check_clean(clean)
        return (clean + self.sigma * rng.standard_normal(clean.shape)).astype(np.float32)

    def variance(self, signal):
        return np.full(np.shape(signal), self.sigma**2)

    def describe(self) -> str:
        return f"Gaussian noise, σ = {self.sigma:g}"

    def to_dict(self) -> dict:
        return {"model": "gaussian", **asdict(self)}


NoiseModel = Poisson | PoissonGaussian | Gaussian

_BY_NAME = {"poisson": Poisson, "poisson_gaussian": PoissonGaussian, "gaussian": Gaussian}


def noise_from_dict(d: dict | None) -> NoiseModel | None:
    """Rebuild a noise model from :meth:`to_dict` output (``None`` passes through)."""
    if not d:
        return None
    d = dict(d)
    name = d.pop("model", None)
    if name not in _BY_NAME:
        raise EmcoreError(f"Unknown noise model {name!r}; known models are {', '.join(_BY_NAME)}.")
    try:
        return _BY_NAME[name](**{k: float(v) for k, v in d.items()})
    except TypeError as exc:
        raise EmcoreError(f"The {name} noise model does not take these parameters: {sorted(d)}.") from exc
