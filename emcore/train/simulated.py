"""Simulation-based denoising ("SBD", Mohan et al., IEEE TCI 2022): training pairs made on
the fly by :mod:`emcore.sim`.

Every batch draws fresh phantoms (particle, support, defocus, defects, pixel size) and fresh
noise at a dose drawn log-uniformly from a range, with random flips and 90° rotations. The
network sees each noisy patch divided by its own mean (and the clean target by the same
number), so one set of weights works for data on any intensity scale — counts, counts per
dose, detector units; :func:`normalise` / :func:`denormalise` do the same at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from emcore.errors import EmcoreError
from emcore.noise.models import Poisson, PoissonGaussian
from emcore.sim.hrem import hrem_phantom

NOISE_MODELS = ("poisson", "poisson_gaussian", "mixed")


def frame_scale(image: np.ndarray) -> float:
    """The scale :func:`normalise` divides by: the mean, or 1 when the mean is not positive."""
    m = float(np.mean(image))
    return m if m > 1e-12 else 1.0


def normalise(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image / mean(image)`` and the scale used (1 when the mean is not positive)."""
    scale = frame_scale(image)
    return (np.asarray(image, np.float32) / scale).astype(np.float32), scale


def denormalise(image: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(image, np.float32) * scale).astype(np.float32)


def draw_noise(clean: np.ndarray, dose_range, noise: str, b_range, rng: np.random.Generator):
    """The noise model of one training example: a dose drawn log-uniformly from ``dose_range``
    (e⁻/px), Poisson or Poisson–Gaussian as ``noise`` says ("mixed": either, with equal chance),
    the read noise ``b`` drawn from ``b_range`` times the clean mean."""
    lo, hi = dose_range
    dose = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    kind = noise if noise != "mixed" else ("poisson" if rng.random() < 0.5 else "poisson_gaussian")
    if kind == "poisson":
        return Poisson(dose)
    b = float(rng.uniform(*b_range)) * float(clean.mean())
    return PoissonGaussian(a=1.0 / dose, b=b if b > 0 else 1e-6)


def training_pair(clean: np.ndarray, dose_range, noise: str, b_range, augment: bool,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (noisy input, clean target) pair from a clean patch, both divided by the noisy mean.

    The dose is drawn log-uniformly from ``dose_range`` (e⁻/px); ``noise`` is ``"poisson"``,
    ``"poisson_gaussian"`` (read noise ``b`` drawn from ``b_range`` times the patch mean) or
    ``"mixed"`` (either, with equal chance). ``augment`` applies one of the 8 rotations and
    flips of the square to both. Shared by :class:`SimulatedPairs` and
    :class:`emcore.train.physics_set.CachedPairs`, so phantoms and cached multislice images are
    corrupted in exactly the same way.
    """
    noisy = draw_noise(clean, dose_range, noise, b_range, rng).sample(clean, rng)
    if augment:
        k = int(rng.integers(4))
        noisy, clean = np.rot90(noisy, k), np.rot90(clean, k)
        if rng.random() < 0.5:
            noisy, clean = noisy[:, ::-1], clean[:, ::-1]
    noisy, scale = normalise(noisy)
    return noisy, (np.asarray(clean, np.float32) / scale).astype(np.float32)


@dataclass
class SimulatedPairs:
    """A :class:`emcore.train.DataSource` of (noisy, clean) HRTEM patches.

    Parameters
    ----------
    dose_range : (float, float)
        Electrons per pixel, drawn log-uniformly for each patch (Poisson part).
    noise : {"poisson", "poisson_gaussian", "mixed"}
        Poisson shot noise at the dose; Poisson–Gaussian ``clean + N(0, a·clean + b²)`` with
        ``a`` drawn as ``1/dose`` and ``b`` from ``b_range``; or either at random.
    b_range : (float, float)
        Read-noise standard deviation, relative to the clean mean, for the Gaussian part.
    pixel_size_range : (float, float)
        nm per pixel, drawn log-uniformly: from the heavy oversampling of the reference Pt/CeO2
        simulations (~0.005 nm/px, ~50 px between columns) to ~0.02 nm/px (~12 px), so the
        network meets lattices at the scales real HRTEM/STEM images have.
    augment : bool
        Random flips and 90° rotations.
    n_val : int
        Fixed validation patches (own seed), with their clean images for PSNR.
    val_seed : int
        Seed of the validation set (never used for training batches).
    """

    dose_range: tuple[float, float] = (0.3, 5.0)
    noise: str = "mixed"
    b_range: tuple[float, float] = (0.0, 0.05)
    pixel_size_range: tuple[float, float] = (0.0045, 0.02)
    augment: bool = True
    n_val: int = 8
    val_patch: int = 128
    val_seed: int = 12345

    def __post_init__(self):
        lo, hi = (float(x) for x in self.dose_range)
        if not (0 < lo <= hi <= 1e4):
            raise EmcoreError(f"The dose range must satisfy 0 < low ≤ high ≤ 10000 e⁻/px, not {self.dose_range}.")
        if self.noise not in NOISE_MODELS:
            raise EmcoreError(f"Unknown training noise {self.noise!r}; use one of {', '.join(NOISE_MODELS)}.")
        self._val = None

    def _pair(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p_lo, p_hi = self.pixel_size_range
        pixel = float(math.exp(rng.uniform(math.log(p_lo), math.log(p_hi))))
        clean = hrem_phantom((size, size), rng=rng, pixel_size_nm=pixel)
        return training_pair(clean, self.dose_range, self.noise, self.b_range, self.augment, rng)

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        pairs = [self._pair(int(patch_size), rng) for _ in range(int(batch_size))]
        noisy = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].copy())
        clean = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].copy())
        return noisy, clean

    def validation(self):
        if self._val is None:
            rng = np.random.default_rng(self.val_seed)
            noisy, clean = self.batch(self.n_val, self.val_patch, rng)
            self._val = [(noisy, clean, clean)]
        return self._val
