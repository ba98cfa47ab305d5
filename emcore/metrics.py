"""Image-quality metrics.

Convention (stated wherever a number is shown): PSNR uses the data range of the ground
truth, ``max(gt) - min(gt)``, not the dtype range — EM intensities have no fixed scale.
"""

from __future__ import annotations

import numpy as np

from .errors import EmcoreError


def psnr(estimate: np.ndarray, ground_truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    estimate, ground_truth : ndarray
        Arrays of the same shape.
    data_range : float, optional
        Peak-to-peak range; defaults to ``ground_truth.max() - ground_truth.min()``.

    Returns
    -------
    float
        ``10 log10(data_range² / MSE)``; ``inf`` when the arrays are equal.
    """
    x = np.asarray(estimate, dtype=np.float64)
    y = np.asarray(ground_truth, dtype=np.float64)
    if x.shape != y.shape:
        raise EmcoreError(f"Cannot compare arrays of shapes {x.shape} and {y.shape}; they must match.")
    if data_range is None:
        data_range = float(y.max() - y.min())
    if not data_range > 0:
        raise EmcoreError("The ground truth is constant, so PSNR (which uses its range) is undefined.")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))
