"""Small, UI-agnostic helpers that prepare arrays for display.

Pages call these instead of doing arithmetic themselves, so every viewer stretches contrast
and sums spectral windows the same way.
"""

from __future__ import annotations

import numpy as np

from emcore.errors import EmcoreError


def contrast_limits(image: np.ndarray, clip_percent: float = 0.5) -> tuple[float, float]:
    """Display range that clips ``clip_percent`` % of pixels at each end.

    A percentile stretch keeps a few hot pixels (or a dark vacuum hole) from flattening the
    contrast of the whole field, which a min–max stretch of low-dose data always does.
    """
    a = np.asarray(image, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0, 1.0
    if finite.size > 1_000_000:
        # The percentiles of a regular subsample are indistinguishable on screen and 10× cheaper.
        finite = finite[:: finite.size // 1_000_000 + 1]
    p = float(np.clip(clip_percent, 0.0, 49.0))
    lo, hi = np.percentile(finite, [p, 100.0 - p])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
        if not hi > lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def downsample_for_display(image: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, int]:
    """Block-average ``image`` so that neither side exceeds ``max_side``; return it and the factor."""
    a = np.asarray(image, dtype=np.float32)
    f = int(np.ceil(max(a.shape[:2]) / max_side)) if max(a.shape[:2]) > max_side else 1
    if f == 1:
        return a, 1
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), f


def summed_spectrum(cube: np.ndarray) -> np.ndarray:
    """Spectrum summed over all pixels of an ``(H, W, E)`` cube (float64 accumulation)."""
    c = _cube(cube)
    return c.reshape(-1, c.shape[2]).sum(axis=0, dtype=np.float64)


def energy_window_map(cube: np.ndarray, channel: int, width: int = 1) -> np.ndarray:
    """Map of counts summed over ``width`` channels centred on ``channel``."""
    c = _cube(cube)
    n = c.shape[2]
    width = max(1, int(width))
    lo = int(np.clip(channel - width // 2, 0, n - 1))
    hi = int(np.clip(lo + width, lo + 1, n))
    return c[:, :, lo:hi].sum(axis=2, dtype=np.float32)


def _cube(cube) -> np.ndarray:
    c = np.asarray(cube)
    if c.ndim != 3:
        raise EmcoreError(f"A spectrum image must be (H, W, E); this array has shape {c.shape}.")
    return c
