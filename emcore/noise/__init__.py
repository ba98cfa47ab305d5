"""Noise: models (:mod:`~emcore.noise.models`), blind estimation from the data
(:mod:`~emcore.noise.estimation`) and variance-stabilising transforms (:mod:`~emcore.noise.vst`)."""

from emcore.noise.models import (
    Gaussian,
    NoiseModel,
    Poisson,
    PoissonGaussian,
    noise_from_dict,
)

__all__ = ["Gaussian", "NoiseModel", "Poisson", "PoissonGaussian", "noise_from_dict"]
