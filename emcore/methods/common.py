"""What the classical methods share: the noise-model parameters and how a method picks its
noise model (given, known, raw counts, or estimated blindly)."""

from __future__ import annotations

from emcore.data.dataset import Dataset
from emcore.methods.registry import Param, RunContext
from emcore.noise.models import Gaussian, Poisson, PoissonGaussian

NOISE_PARAMS = (
    Param("noise_a", "float", None, auto=True, min=0.0, max=1e6, label="Noise gain a",
          help="Signal-dependent part of the noise variance, variance = a·signal + b² "
               "(a = 1/dose for images scaled by the dose; 1 for raw counts). Estimated from the data when unset."),
    Param("noise_b", "float", None, auto=True, min=0.0, max=1e6, label="Noise floor b",
          help="Standard deviation of the signal-independent (read-out) noise. Estimated from the data when unset."),
)


def noise_for(ds: Dataset, params: dict, ctx: RunContext):
    """The noise model a method should use, and why; records the values in ``ctx``.

    Order: values the user gave, the dataset's known model (simulations), Poisson for raw
    counts, otherwise a blind Poisson–Gaussian estimate (Foi et al. 2008).
    """
    a, b = params.get("noise_a"), params.get("noise_b")
    if a is not None or b is not None:
        a, b = float(a or 0.0), float(b or 0.0)
        model = Gaussian(b) if a == 0 else PoissonGaussian(a, b)
        why = "given"
    elif ds.noise is not None:
        model, why = ds.noise, "known for this dataset"
    elif ds.is_counts:
        model, why = Poisson(1.0), "raw counts, so Poisson"
    else:
        from emcore.noise.estimation import estimate_noise

        model = estimate_noise(ds.data, ds.kind).model()
        why = "estimated from the data (Foi et al. 2008)"
    if isinstance(model, Poisson):
        a_used, b_used = 1.0 / model.dose, 0.0
    elif isinstance(model, PoissonGaussian):
        a_used, b_used = model.a, model.b
    else:
        a_used, b_used = 0.0, model.sigma
    ctx.resolved.update(noise_a=float(a_used), noise_b=float(b_used))
    ctx.log.append(f"Noise model: {model.describe()} ({why}).")
    return model


# How much faster than on the CPU the learned methods run on a CUDA GPU, roughly (training
# and inference of the workbench's networks; the cost estimates divide by it).
GPU_SPEEDUP = 30.0


def accelerator_speedup() -> float:
    """:data:`GPU_SPEEDUP` when a CUDA GPU is there (``device="auto"`` picks it), else 1."""
    import torch

    return GPU_SPEEDUP if torch.cuda.is_available() else 1.0
