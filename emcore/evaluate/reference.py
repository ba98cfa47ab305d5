"""Metrics against a clean reference (simulations): :func:`psnr` and :func:`ssim`.

Convention (stated wherever a number is shown): both use the data range of the ground truth,
``max(gt) - min(gt)``, not the dtype range — EM intensities have no fixed scale. Each number
shown comes with a one-line plain explanation in :data:`EXPLANATIONS`.

Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13 (2004) 600–612.
"""

from __future__ import annotations

import numpy as np

from emcore.errors import EmcoreError

EXPLANATIONS: dict[str, str] = {
    "psnr": "Peak signal-to-noise ratio against the clean image, in dB; higher is better "
    "(peak = range of the clean image).",
    "ssim": "Structural similarity to the clean image (local brightness, contrast and "
    "structure); 1 means identical, higher is better.",
    "count_split": "Estimated mean squared error against the unknown true signal: the counts "
    "are split into two independent halves, one is denoised and compared with the other, "
    "and the known Poisson noise of that half is subtracted; lower is better.",
    "frame_pair": "Estimated mean squared error against the unknown true signal: odd frames "
    "are denoised and compared with the aligned even frames, whose noise level is subtracted; "
    "lower is better.",
    "residual": "What the method removed, divided by the expected noise: it should look like "
    "pure noise (mean ≈ 0, variance ≈ 1, no correlation between neighbours); variance above 1 "
    "means real structure was removed, below 1 means noise was left in.",
    "frc": "Fourier ring correlation between two independent halves: how far in detail "
    "(spatial frequency) they agree; the resolution is where the curve drops below the "
    "threshold — smaller is finer.",
}


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


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

_SSIM_WIN = 7  # scikit-image's default window (uniform 7 × 7), kept so numbers are comparable


def ssim(
    estimate: np.ndarray,
    ground_truth: np.ndarray,
    data_range: float | None = None,
    *,
    axis: int = 0,
) -> float:
    """Structural similarity index (Wang et al. 2004), averaged over 2-D slices for 3-D data.

    Parameters
    ----------
    estimate, ground_truth : ndarray
        Arrays of the same shape: an image ``(H, W)``, a stack ``(T, H, W)`` or a spectrum
        image ``(H, W, E)``.
    data_range : float, optional
        Peak-to-peak range. Convention: defaults to ``ground_truth.max() - ground_truth.min()``
        over the whole array (as for :func:`psnr`), not the dtype range.
    axis : int, default 0
        For 3-D inputs, the axis that indexes the 2-D slices: the SSIM is computed on each
        image ``take(array, i, axis)`` and the mean is returned. Use ``axis=0`` for a stack
        ``(T, H, W)`` (one image per frame) and ``axis=2`` for a spectrum image ``(H, W, E)``
        (one energy-slice image per channel). Ignored for 2-D inputs.

    Returns
    -------
    float
        SSIM in ``[-1, 1]``; 1 means identical.

    Notes
    -----
    Computed with :func:`skimage.metrics.structural_similarity` and its defaults (uniform
    7 × 7 window, sample covariance, K1 = 0.01, K2 = 0.03 from Wang et al. 2004, Sec. III-B),
    so numbers match what scikit-image users report.

    References
    ----------
    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13 (2004) 600–612.
    """
    from skimage.metrics import structural_similarity

    x = np.asarray(estimate, dtype=np.float64)
    y = np.asarray(ground_truth, dtype=np.float64)
    if x.shape != y.shape:
        raise EmcoreError(f"Cannot compare arrays of shapes {x.shape} and {y.shape}; they must match.")
    if x.ndim not in (2, 3):
        raise EmcoreError(
            f"SSIM needs an image, a stack or a spectrum image (2-D or 3-D), not an array of shape {x.shape}."
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise EmcoreError("SSIM cannot be computed: the images hold NaN or Inf values.")
    if data_range is None:
        data_range = float(y.max() - y.min())
    if not data_range > 0:
        raise EmcoreError("The ground truth is constant, so SSIM (which uses its range) is undefined.")
    if x.ndim == 2:
        xs, ys = x[None], y[None]
    else:
        if axis not in (0, 1, 2, -1, -2, -3):
            raise EmcoreError(f"The slice axis must be 0, 1 or 2 for 3-D data, not {axis}.")
        xs, ys = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)
    if min(xs.shape[1:]) < _SSIM_WIN:
        raise EmcoreError(
            f"SSIM needs images of at least {_SSIM_WIN} × {_SSIM_WIN} pixels; these slices are "
            f"{xs.shape[1]} × {xs.shape[2]}."
        )
    values = [structural_similarity(a, b, data_range=data_range) for a, b in zip(xs, ys)]
    return float(np.mean(values))
