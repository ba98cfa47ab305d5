"""Fourier ring correlation: how far in spatial frequency two independent halves agree.

References
----------
Saxton & Baumeister, "The correlation averaging of a regularly arranged bacterial cell
envelope protein", J. Microsc. 127 (1982) 127–138.
Rosenthal & Henderson, "Optimal determination of particle orientation, absolute hand, and
contrast loss in single-particle electron cryomicroscopy", J. Mol. Biol. 333 (2003) 721–745.
van Heel & Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151
(2005) 250–262.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emcore.errors import EmcoreError
from emcore.evaluate.count_split import _call_denoiser, count_split

# --------------------------------------------------------------------------------------------
# Fourier ring correlation
# --------------------------------------------------------------------------------------------

FIXED_THRESHOLD = 1.0 / 7.0  # Rosenthal & Henderson 2003, Sec. "Resolution criterion"


def _rings(shape: tuple[int, int], n_bins: int | None):
    h, w = shape
    if n_bins is None:
        n_bins = min(h, w) // 2
    n_bins = int(n_bins)
    if n_bins < 2:
        raise EmcoreError(f"The Fourier ring correlation needs at least 2 rings, not {n_bins}.")
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    width = 0.5 / n_bins
    labels = np.floor(radius / width).astype(np.int64)
    labels[radius > 0.5] = n_bins  # corners beyond Nyquist are not used
    labels = np.minimum(labels, n_bins)
    counts = np.bincount(labels.ravel(), minlength=n_bins + 1)[:n_bins]
    centres = (np.arange(n_bins) + 0.5) * width
    return labels, n_bins, centres, counts


def fourier_ring_correlation(
    img1: np.ndarray,
    img2: np.ndarray,
    n_bins: int | None = None,
    *,
    apodize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation between two images of the same scene.

    ``FRC(r) = Re Σ F1 F2* / sqrt(Σ |F1|² Σ |F2|²)`` over the Fourier coefficients in the ring
    of radius ``r`` (Saxton & Baumeister 1982). For two images with independent noise it
    measures, ring by ring, how much of the content is reproducible signal: ≈ 1 where the
    signal dominates, ≈ 0 where only noise is left.

    Parameters
    ----------
    img1, img2 : ndarray, shape (H, W)
        Two images of the same shape (e.g. the two denoised count-split halves).
    n_bins : int, optional
        Number of rings between 0 and the Nyquist frequency 0.5 cycles/pixel; defaults to
        ``min(H, W) // 2`` (rings one Fourier pixel wide).
    apodize : bool, default True
        Subtract the mean and multiply both images by a 2-D Hann window first, so the jump at
        the image edges (which is common to both images) does not add false correlation at
        high frequency.

    Returns
    -------
    frequencies : ndarray of float64
        Ring centres in cycles/pixel (up to 0.5).
    frc : ndarray of float64
        Correlation per ring; NaN for a ring where an image has no power.

    References
    ----------
    Saxton & Baumeister, J. Microsc. 127 (1982) 127–138.
    van Heel & Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151
    (2005) 250–262.
    """
    a = np.asarray(img1, dtype=np.float64)
    b = np.asarray(img2, dtype=np.float64)
    if a.shape != b.shape:
        raise EmcoreError(f"Cannot correlate images of shapes {a.shape} and {b.shape}; they must match.")
    if a.ndim != 2:
        raise EmcoreError(f"The Fourier ring correlation needs two 2-D images, not arrays of shape {a.shape}.")
    if min(a.shape) < 8:
        raise EmcoreError(f"The Fourier ring correlation needs images of at least 8 × 8 pixels, not {a.shape[0]} × {a.shape[1]}.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise EmcoreError("The Fourier ring correlation cannot be computed: the images hold NaN or Inf values.")
    labels, n_bins, centres, _ = _rings(a.shape, n_bins)
    if apodize:
        win = np.hanning(a.shape[0])[:, None] * np.hanning(a.shape[1])[None, :]
        a = (a - a.mean()) * win
        b = (b - b.mean()) * win
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    flat = labels.ravel()
    num = np.bincount(flat, weights=np.real(fa * np.conj(fb)).ravel(), minlength=n_bins + 1)[:n_bins]
    pa = np.bincount(flat, weights=(np.abs(fa) ** 2).ravel(), minlength=n_bins + 1)[:n_bins]
    pb = np.bincount(flat, weights=(np.abs(fb) ** 2).ravel(), minlength=n_bins + 1)[:n_bins]
    den = np.sqrt(pa * pb)
    tiny = 1e-12 * max(float(den.max()), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = np.where(den > tiny, num / np.where(den > tiny, den, 1.0), np.nan)
    return centres, frc


def half_bit_threshold(shape: tuple[int, int], n_bins: int | None = None) -> np.ndarray:
    """The half-bit threshold curve of van Heel & Schatz (2005), per ring.

    ``T(r) = (0.2071 + 1.9102 / sqrt(n_r)) / (1.2071 + 0.9102 / sqrt(n_r))`` with ``n_r`` the
    number of Fourier pixels in ring ``r`` (their Eq. 17, for the comparison of two half data
    sets; the constants are theirs).

    Parameters
    ----------
    shape : (int, int)
        Shape of the images that were correlated.
    n_bins : int, optional
        Number of rings, as passed to :func:`fourier_ring_correlation`.

    Returns
    -------
    ndarray of float64
        Threshold per ring.
    """
    _, _, _, counts = _rings(tuple(int(s) for s in shape), n_bins)
    sq = np.sqrt(np.maximum(counts, 1).astype(np.float64))
    return (0.2071 + 1.9102 / sq) / (1.2071 + 0.9102 / sq)


def frc_resolution(
    freq: np.ndarray,
    frc: np.ndarray,
    threshold: float | str = FIXED_THRESHOLD,
    *,
    shape: tuple[int, int] | None = None,
) -> float | None:
    """Resolution (in pixels) where the FRC first drops below a threshold.

    Parameters
    ----------
    freq, frc : ndarray
        Output of :func:`fourier_ring_correlation`.
    threshold : float or {"1/7", "half-bit"}, default 1/7
        The fixed 1/7 threshold (Rosenthal & Henderson 2003), any other fixed value, or the
        half-bit curve of van Heel & Schatz (2005), which needs ``shape``.
    shape : (int, int), optional
        Shape of the correlated images; required for ``"half-bit"``.

    Returns
    -------
    float or None
        ``1 / f`` in pixels, where ``f`` is the first crossing below the threshold (linear
        interpolation between the rings on either side; rings with NaN are skipped). Multiply
        by the pixel size for a calibrated length. ``None`` when the curve never drops below
        the threshold up to Nyquist — the resolution is then limited by the pixel size (2 px
        or better). If the very first ring is already below the threshold, ``1 / freq[0]`` is
        returned (no reproducible detail at all).

    References
    ----------
    Rosenthal & Henderson, J. Mol. Biol. 333 (2003) 721–745.
    van Heel & Schatz, J. Struct. Biol. 151 (2005) 250–262.
    """
    f = np.asarray(freq, dtype=np.float64)
    c = np.asarray(frc, dtype=np.float64)
    if f.shape != c.shape or f.ndim != 1 or f.size == 0:
        raise EmcoreError("The frequencies and FRC values must be two 1-D arrays of the same length.")
    if isinstance(threshold, str):
        key = threshold.strip().lower().replace("_", "-").replace(" ", "-")
        if key in ("1/7", "fixed"):
            t = np.full(f.shape, FIXED_THRESHOLD)
        elif key in ("half-bit", "halfbit", "1/2-bit"):
            if shape is None:
                raise EmcoreError("The half-bit threshold needs the shape of the correlated images.")
            t = half_bit_threshold(shape, f.size)
        else:
            raise EmcoreError(f"Unknown FRC threshold {threshold!r}; use a number, '1/7' or 'half-bit'.")
    else:
        t = np.full(f.shape, float(threshold))
    ok = np.isfinite(c)
    f, c, t = f[ok], c[ok], t[ok]
    if f.size == 0:
        return None
    below = np.nonzero(c < t)[0]
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(1.0 / f[0])
    # Linear interpolation of the crossing of (c - t) through zero.
    d0, d1 = c[i - 1] - t[i - 1], c[i] - t[i]
    fc = f[i - 1] + (f[i] - f[i - 1]) * d0 / (d0 - d1)
    return float(1.0 / fc)


@dataclass(frozen=True)
class FRCResult:
    """Outcome of :func:`count_split_frc`.

    Attributes
    ----------
    frequencies : ndarray
        Ring centres in cycles/pixel.
    values : ndarray
        FRC per ring.
    threshold : float or str
        Threshold used for the resolution.
    resolution_px : float or None
        Resolution in pixels (see :func:`frc_resolution`); ``None`` when limited by the pixel.
    """

    frequencies: np.ndarray = field(repr=False, compare=False)
    values: np.ndarray = field(repr=False, compare=False)
    threshold: float | str
    resolution_px: float | None

    def to_dict(self) -> dict:
        return {
            "frequencies": [float(v) for v in self.frequencies],
            "values": [None if not np.isfinite(v) else float(v) for v in self.values],
            "threshold": self.threshold,
            "resolution_px": self.resolution_px,
        }


def count_split_frc(
    denoise_fn: Callable[[np.ndarray], np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    threshold: float | str = FIXED_THRESHOLD,
    n_bins: int | None = None,
) -> FRCResult:
    """A resolution-like figure from two independently denoised count-split halves.

    The counts are split in two equal halves (:func:`count_split`, ``p = 0.5``), each half is
    denoised on its own, and the Fourier ring correlation of the two results gives the finest
    detail that both reproduce (:func:`frc_resolution`).

    Note what this measures: reproducibility, not accuracy. A linear, shift-invariant filter
    with a radially symmetric response scales both halves identically in each ring and leaves
    the FRC unchanged; a method that imposes the same pattern on both halves (a learned prior,
    a hallucinated texture) can raise it without being right. Read it next to
    :func:`count_split_error`.

    Parameters
    ----------
    denoise_fn : callable
        ``denoise_fn(half) -> estimate`` for a 2-D half image of counts.
    counts : ndarray of non-negative integers, shape (H, W)
        Raw counts.
    rng : numpy.random.Generator
        Randomness for the split.
    threshold : float or {"1/7", "half-bit"}, default 1/7
        See :func:`frc_resolution`.
    n_bins : int, optional
        See :func:`fourier_ring_correlation`.

    Returns
    -------
    FRCResult

    References
    ----------
    Rosenthal & Henderson, J. Mol. Biol. 333 (2003) 721–745.
    van Heel & Schatz, J. Struct. Biol. 151 (2005) 250–262.
    """
    n = np.asarray(counts)
    if n.ndim != 2:
        raise EmcoreError(f"The FRC resolution needs a 2-D image of counts, not an array of shape {n.shape}.")
    half_a, half_b = count_split(n, rng, 0.5)
    ea = _call_denoiser(denoise_fn, half_a, "half of the counts")
    eb = _call_denoiser(denoise_fn, half_b, "half of the counts")
    freq, values = fourier_ring_correlation(ea, eb, n_bins)
    res = frc_resolution(freq, values, threshold, shape=n.shape)
    return FRCResult(frequencies=freq, values=values, threshold=threshold, resolution_px=res)
