"""Image-quality metrics, with and without a ground truth.

With a clean reference (simulations): :func:`psnr` and :func:`ssim`. Convention (stated
wherever a number is shown): both use the data range of the ground truth,
``max(gt) - min(gt)``, not the dtype range — EM intensities have no fixed scale.

Without a clean reference (real data), the module offers estimates that need only the
recorded data:

* :func:`count_split_error` — split the recorded counts into two independent Poisson halves,
  denoise one, score it against the other (Noise2Self-style validation by data thinning);
* :func:`frame_pair_error` — the same idea for a frame series: denoise the odd frames, score
  them against the registered even frames;
* :func:`residual_checks` — is what the method removed statistically just noise?
* :func:`fourier_ring_correlation` / :func:`frc_resolution` — how far in spatial frequency
  two independent halves agree (a resolution-like figure, :func:`count_split_frc`).

Each number comes with a one-line plain explanation in :data:`EXPLANATIONS` for display.

References
----------
Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13 (2004) 600–612.
Batson & Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
arXiv:2301.07276 (2023), JMLR 25 (2024).
Neufeld, Gao, Popp, Battle & Witten, "Inference after latent variable estimation for
single-cell RNA sequencing data" ("count splitting"), Biostatistics 25 (2024).
Saxton & Baumeister, "The correlation averaging of a regularly arranged bacterial cell
envelope protein", J. Microsc. 127 (1982) 127–138 (Fourier ring correlation).
Rosenthal & Henderson, "Optimal determination of particle orientation, absolute hand, and
contrast loss in single-particle electron cryomicroscopy", J. Mol. Biol. 333 (2003) 721–745.
van Heel & Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151
(2005) 250–262.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
from scipy import ndimage as ndi
from scipy.special import gammaln

from .errors import EmcoreError
from .registration import _shift_padding
from .registration import shift_image as _fourier_shift

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


# --------------------------------------------------------------------------------------------
# Count splitting (Poisson data thinning)
# --------------------------------------------------------------------------------------------

# Floor on the predicted mean in the Poisson likelihood (counts): a prediction of exactly 0
# where counts were recorded has infinite loss; the floor keeps the number finite but large.
_NLL_FLOOR = 1e-6


def _as_counts(counts) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(f"Count splitting needs numeric counts, not values of type {arr.dtype}.")
    if arr.size == 0:
        raise EmcoreError("Count splitting needs data; the array is empty.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise EmcoreError("Count splitting needs counts, but the data hold NaN or Inf values.")
        if not np.all(arr == np.round(arr)):
            raise EmcoreError(
                "Count splitting needs whole electron counts, but the data hold fractional values; "
                "use raw counts (for data scaled by a dose, multiply by the dose first)."
            )
    if np.any(arr < 0):
        raise EmcoreError(
            "Count splitting needs counts of zero or more, but the data hold negative values "
            "(was an offset or dark reference subtracted?)."
        )
    return arr.astype(np.int64)


def _check_p(p: float) -> float:
    p = float(p)
    if not (0.0 < p < 1.0):
        raise EmcoreError(f"The split fraction p must lie strictly between 0 and 1, not {p:g}.")
    return p


def count_split(counts: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Split counts into two independent Poisson halves (binomial thinning).

    Each recorded count is sent to half A with probability ``p`` and to half B otherwise:
    ``A = Binomial(counts, p)``, ``B = counts - A``. If ``counts ~ Poisson(λ)`` then
    ``A ~ Poisson(p λ)`` and ``B ~ Poisson((1 - p) λ)`` and — the point of the exercise — A and
    B are *independent* (Neufeld et al. 2023, Sec. 2; the Poisson case is their Example 1).

    Parameters
    ----------
    counts : ndarray of non-negative integers
        Raw counts, any shape (image, stack, spectrum image). Float arrays are accepted when
        every value is a whole number.
    rng : numpy.random.Generator
        Source of randomness (fix its seed for reproducible splits).
    p : float, default 0.5
        Fraction of the counts expected in half A.

    Returns
    -------
    half_a, half_b : ndarray of int64
        Same shape as ``counts``; ``half_a + half_b == counts`` exactly. The input is not
        modified.

    Raises
    ------
    EmcoreError
        If the data are not non-negative whole numbers, or ``p`` is not in ``(0, 1)``.

    References
    ----------
    Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
    arXiv:2301.07276 (2023).
    Neufeld, Gao, Popp, Battle & Witten, "Inference after latent variable estimation for
    single-cell RNA sequencing data", Biostatistics 25 (2024) ("count splitting").
    """
    n = _as_counts(counts)
    p = _check_p(p)
    half_a = rng.binomial(n, p).astype(np.int64)
    return half_a, n - half_a


@dataclass(frozen=True)
class CountSplitResult:
    """Outcome of :func:`count_split_error`. All errors are in counts² of half B per pixel.

    Attributes
    ----------
    estimated_mse : float
        ``raw_mse - noise_variance``: estimate of the mean squared error between the
        (rescaled) denoised half A and the true signal of half B. Can come out slightly
        negative for an excellent denoiser (it is an unbiased estimate of a small number).
    raw_mse : float
        Mean squared difference between the rescaled estimate and half B.
    noise_variance : float
        Poisson variance of half B, estimated by its mean count.
    poisson_nll : float
        Mean Poisson negative log-likelihood per pixel of half B given the rescaled estimate
        (with the ``log(B!)`` term, so it is a true NLL); lower is better.
    p : float
        Fraction of counts in half A.
    scale : float
        ``(1 - p) / p``, the factor applied to the estimate to put it on B's scale.
    n_pixels : int
        Number of values compared.
    """

    estimated_mse: float
    raw_mse: float
    noise_variance: float
    poisson_nll: float
    p: float
    scale: float
    n_pixels: int

    def to_dict(self) -> dict:
        return {
            "estimated_mse": self.estimated_mse,
            "raw_mse": self.raw_mse,
            "noise_variance": self.noise_variance,
            "poisson_nll": self.poisson_nll,
            "p": self.p,
            "scale": self.scale,
            "n_pixels": self.n_pixels,
        }


def _call_denoiser(denoise_fn, data: np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(denoise_fn(data), dtype=np.float64)
    if out.shape != data.shape:
        raise EmcoreError(
            f"The method returned an array of shape {out.shape} for {what} of shape {data.shape}; "
            "it must keep the shape."
        )
    if not np.all(np.isfinite(out)):
        raise EmcoreError(f"The method returned NaN or Inf values for {what}; it cannot be scored.")
    return out


def count_split_error(
    denoise_fn: Callable[[np.ndarray], np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
) -> CountSplitResult:
    """Estimate a denoiser's error on real count data, without a clean reference.

    The counts are split by :func:`count_split` into independent halves A and B. The method
    denoises A alone, ``estimate = denoise_fn(A)``; the estimate is rescaled to B's expected
    level, ``s = estimate · (1 - p) / p``, and compared with B. Because B is independent of A
    (and hence of ``s``) and ``E[B] = μ_B``,

    ``E[(s - B)²] = E[(s - μ_B)²] + Var(B)``,

    the "Noise2Self" decomposition (Batson & Royer 2019, Sec. 3): the error against a noisy
    independent copy is the error against the truth plus the copy's noise variance. For
    Poisson counts ``Var(B) = E[B]``, so the mean noise variance over the image is estimated
    by the mean of B, and

    ``estimated_mse = mean((s - B)²) - mean(B)``

    is an unbiased estimate of the mean squared error between the estimate and the true
    signal of B (the true signal scaled by ``1 - p``). The method is judged on a thinned copy
    of the data (dose ``p`` times the recorded one), so the absolute number describes that
    lower dose; comparing methods on the same split is what it is for (see :func:`rank_runs`).

    The Poisson negative log-likelihood of B given ``s`` is reported too: it is a proper
    scoring rule for counts (lowest in expectation for the true mean), which, unlike the MSE,
    weights errors by the expected noise at each pixel.

    Parameters
    ----------
    denoise_fn : callable
        ``denoise_fn(half_a) -> estimate`` of the same shape. It receives int64 counts and
        should return the denoised counts (any float dtype), on the scale of its input.
    counts : ndarray of non-negative integers
        Raw counts (any shape).
    rng : numpy.random.Generator
        Randomness for the split; fix the seed and reuse it to compare methods on the same
        split.
    p : float, default 0.5
        Fraction of the counts given to the denoised half A.

    Returns
    -------
    CountSplitResult

    Raises
    ------
    EmcoreError
        Bad counts (see :func:`count_split`), or the method changes the shape or returns
        NaN/Inf.

    References
    ----------
    Batson & Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
    Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
    arXiv:2301.07276 (2023).
    Neufeld, Gao, Popp, Battle & Witten, Biostatistics 25 (2024) ("count splitting").
    """
    p = _check_p(p)
    half_a, half_b = count_split(counts, rng, p)
    est = _call_denoiser(denoise_fn, half_a, "half of the counts")
    scale = (1.0 - p) / p
    s = est * scale
    b = half_b.astype(np.float64)
    raw = float(np.mean((s - b) ** 2))
    noise_var = float(np.mean(b))
    mu = np.maximum(s, _NLL_FLOOR)
    nll = float(np.mean(mu - b * np.log(mu) + gammaln(b + 1.0)))
    return CountSplitResult(
        estimated_mse=raw - noise_var,
        raw_mse=raw,
        noise_variance=noise_var,
        poisson_nll=nll,
        p=p,
        scale=scale,
        n_pixels=int(b.size),
    )


def rank_runs(results: Mapping[str, "CountSplitResult | FramePairResult"]) -> list[str]:
    """Names of the runs, best (lowest estimated error) first.

    Parameters
    ----------
    results : dict of str to CountSplitResult or FramePairResult
        One result per run, all from the same split (same data, same seed) so they are
        comparable.

    Returns
    -------
    list of str
        Run names sorted by ``estimated_mse``; ties are broken by the Poisson negative
        log-likelihood when present, then by name.
    """
    def key(name):
        r = results[name]
        return (r.estimated_mse, getattr(r, "poisson_nll", 0.0), name)

    return sorted(results, key=key)


# --------------------------------------------------------------------------------------------
# Frame pairs
# --------------------------------------------------------------------------------------------

def _register(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    from .registration import measure_shift

    return measure_shift(reference, moving, taper=False)


@lru_cache(maxsize=256)
def _shift_gain_1d(n: int, shift: float, start: int, stop: int) -> float:
    """Mean noise-variance gain of :func:`_fourier_shift` along one axis of length ``n``.

    The shift (with its padding) is linear, ``y = A x``; white noise of variance σ² comes out
    with variance ``σ² Σ_j A_ij²`` at pixel ``i``. Sub-pixel interpolation, even an all-pass
    one, changes that by a few per cent near the image edges (the mirrored copy of the noise is
    correlated with the noise itself), enough to matter next to a good denoiser's error, so it
    is computed exactly — impulse by impulse — rather than assumed to be 1.
    """
    pad, extra = _shift_padding(n, shift)
    gain = np.zeros(n)
    for j0 in range(0, n, 512):
        cols = min(512, n - j0)
        imp = np.zeros((n, cols))
        imp[j0 + np.arange(cols), np.arange(cols)] = 1.0
        padded = np.pad(imp, ((pad, pad + extra), (0, 0)), mode="symmetric")
        resp = np.fft.ifft(ndi.fourier_shift(np.fft.fft(padded, axis=0), (shift, 0.0)), axis=0).real
        gain += np.sum(resp[pad : pad + n] ** 2, axis=1)
    return float(np.mean(gain[start:stop]))


def _shift_gain(shape: tuple[int, int], shift: np.ndarray, crop: tuple[slice, slice]) -> float:
    # The 2-D shift on an odd × odd grid is the product of the two 1-D shifts, so its gain is too.
    # Registration shifts are multiples of 1/10 px, so the cache is hit often.
    gr = _shift_gain_1d(int(shape[0]), float(shift[0]), crop[0].start, crop[0].stop)
    return gr * _shift_gain_1d(int(shape[1]), float(shift[1]), crop[1].start, crop[1].stop)


@dataclass(frozen=True)
class FramePairResult:
    """Outcome of :func:`frame_pair_error`, in the data's intensity units squared.

    Attributes
    ----------
    estimated_mse : float
        ``raw_mse - noise_variance``: estimate of the mean squared error of the denoised odd
        frames against their true signal.
    raw_mse : float
        Mean squared difference between denoised odd frames and their aligned even neighbours.
    noise_variance : float
        Noise variance of the aligned reference frames, from the differences of
        neighbouring even frames (corrected for the alignment's interpolation).
    n_pairs : int
        Number of (odd, even) frame pairs compared.
    shifts : tuple of (float, float)
        (row, col) shift applied to even frame ``2k`` to align it with odd frame ``2k + 1``.
    border : int
        Pixels left out on every side (where aligned frames have no data).
    registered : bool
        Whether frames were aligned.
    """

    estimated_mse: float
    raw_mse: float
    noise_variance: float
    n_pairs: int
    shifts: tuple
    border: int
    registered: bool

    def to_dict(self) -> dict:
        return {
            "estimated_mse": self.estimated_mse,
            "raw_mse": self.raw_mse,
            "noise_variance": self.noise_variance,
            "n_pairs": self.n_pairs,
            "shifts": [list(s) for s in self.shifts],
            "border": self.border,
            "registered": self.registered,
        }


def frame_pair_error(
    denoise_fn: Callable[[np.ndarray], np.ndarray],
    stack: np.ndarray,
    register: bool = True,
) -> FramePairResult:
    """Estimate a denoiser's error on a frame series, without a clean reference.

    The odd frames ``stack[1::2]`` are denoised together, ``estimate = denoise_fn(odd)``, and
    each denoised odd frame ``2k + 1`` is compared with the even frame ``2k`` recorded just
    before it, whose noise is independent. With ``register=True`` the even frame is first
    aligned on the odd one: the shift is measured by cross-correlation
    (:func:`skimage.registration.phase_cross_correlation`, 1/10-pixel precision, on copies
    smoothed by a 2-px Gaussian) and applied as a Fourier shift, which leaves the variance of
    white noise unchanged. A border as wide as the largest shift is left out.

    As in :func:`count_split_error` (Batson & Royer 2019), the expected squared difference is
    the error against the truth plus the reference frame's noise variance. The noise variance
    σ² of one frame is estimated from neighbouring even frames ``2k`` and ``2k + 2`` (aligned
    the same way): ``σ² = Var(E_2k - aligned E_2k+2) / 2``. So

    ``estimated_mse = mean((estimate_k - aligned E_2k)²) - σ²``.

    With alignment, the sub-pixel interpolation changes the variance of the aligned frame's
    noise by a factor ``g`` (a few per cent, mostly near the edges); ``g`` is computed exactly
    for each shift (the mean squared norm of the interpolation kernel) and both formulas use
    it: ``σ² = Var(E_2k - aligned E_2k+2) / (1 + g')`` and the subtracted term is ``g σ²``.
    Without it, a good denoiser's error (often a few per cent of σ²) would be misjudged.

    Anything that differs between neighbouring frames besides noise (registration error,
    beam damage, a change of focus) is counted as error in the first term and partly as
    noise in the second; drift in the signal during the series therefore makes the estimate
    less reliable, but it affects all methods alike, so rankings stay meaningful.

    Parameters
    ----------
    denoise_fn : callable
        ``denoise_fn(odd_frames) -> estimate`` with ``odd_frames`` a float32 stack
        ``(T_odd, H, W)``; it must return a stack of the same shape (one denoised frame per
        odd frame).
    stack : ndarray, shape (T, H, W)
        The frame series, at least 3 frames (two even frames are needed for the noise level).
    register : bool, default True
        Align the frames before comparing them (needed when the specimen drifts).

    Returns
    -------
    FramePairResult

    Raises
    ------
    EmcoreError
        Not a stack of at least 3 frames, NaN/Inf in the data, a method that changes the
        shape, or drift so large that no overlap is left.

    References
    ----------
    Batson & Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
    Guizar-Sicairos, Thurman & Fienup, "Efficient subpixel image registration algorithms",
    Opt. Lett. 33 (2008) 156–158.
    """
    s = np.asarray(stack)
    if s.ndim != 3:
        raise EmcoreError(f"Frame-pair validation needs a frame series (T, H, W), not an array of shape {s.shape}.")
    if s.shape[0] < 3:
        raise EmcoreError(
            f"Frame-pair validation needs at least 3 frames (two even ones give the noise level); this series has {s.shape[0]}."
        )
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise EmcoreError("The frame series holds NaN or Inf values; it cannot be used for validation.")
    odd, even = s[1::2], s[0::2]
    n_pairs = odd.shape[0]
    est = _call_denoiser(denoise_fn, odd.astype(np.float32), "the odd frames")

    zero = np.zeros(2)
    ref_shifts = [_register(odd[k], even[k]) if register else zero for k in range(n_pairs)]
    noise_shifts = [_register(even[k], even[k + 1]) if register else zero for k in range(even.shape[0] - 1)]
    h, w = s.shape[1:]
    border = int(math.ceil(float(np.max(np.abs(ref_shifts + noise_shifts))))) + 1 if register else 0
    if 2 * border >= min(h, w) - 2:
        raise EmcoreError(
            f"The frames drift by up to {border - 1} pixels, which leaves no overlap in a {h} × {w} frame; "
            "align the series first."
        )
    crop = (slice(border, h - border), slice(border, w - border))

    def aligned(frame, sh):
        if not register:
            return frame, 1.0
        return _fourier_shift(frame, sh), _shift_gain((h, w), sh, crop)

    # Noise variance of one raw frame: Var(E_2k - aligned E_2k+2) = σ² (1 + gain).
    sigma2 = []
    for k, sh in enumerate(noise_shifts):
        moved, gain = aligned(even[k + 1], sh)
        sigma2.append(np.var(even[k][crop] - moved[crop]) / (1.0 + gain))
    sigma2 = float(np.mean(sigma2))

    raw, ref_noise = [], []
    for k, sh in enumerate(ref_shifts):
        ref, gain = aligned(even[k], sh)
        raw.append(np.mean((est[k][crop] - ref[crop]) ** 2))
        ref_noise.append(gain * sigma2)
    raw, ref_noise = float(np.mean(raw)), float(np.mean(ref_noise))
    return FramePairResult(
        estimated_mse=raw - ref_noise,
        raw_mse=raw,
        noise_variance=ref_noise,
        n_pairs=int(n_pairs),
        shifts=tuple((float(x), float(y)) for x, y in ref_shifts),
        border=border,
        registered=bool(register),
    )


# --------------------------------------------------------------------------------------------
# Residual checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualReport:
    """Outcome of :func:`residual_checks`.

    Attributes
    ----------
    mean : float
        Mean of the normalised residual (≈ 0 when only noise was removed).
    variance : float
        Variance of the normalised residual: ≈ 1 when only noise was removed, > 1 when
        structure was removed too, < 1 when noise was left in.
    autocorr_row : float
        Lag-1 correlation of the residual between horizontal neighbours (along each row,
        ``r[i, j]`` with ``r[i, j + 1]``); ≈ 0 for white noise.
    autocorr_col : float
        Lag-1 correlation between vertical neighbours (along each column, ``r[i, j]`` with
        ``r[i + 1, j]``); ≈ 0 for white noise.
    window : int
        Side (px) of the window of the structure map.
    structure_map : ndarray of float32, shape (H, W)
        Local mean of the squared normalised residual over ``window × window`` pixels:
        ≈ 1 where only noise was removed, > 1 where structure was removed (edges, fine detail),
        < 1 where noise was left. For 3-D data, the mean of the per-slice maps.
    """

    mean: float
    variance: float
    autocorr_row: float
    autocorr_col: float
    window: int
    structure_map: np.ndarray = field(repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """One plain sentence on what the variance says."""
        if self.variance > 1.1:
            return "The method removed more than noise: some structure is in the residual."
        if self.variance < 0.9:
            return "The method left part of the noise in the result."
        return "What the method removed is consistent with the expected noise."

    def to_dict(self) -> dict:
        """Scalar figures (the structure map is left out; use the attribute to display it)."""
        return {
            "mean": self.mean,
            "variance": self.variance,
            "autocorr_row": self.autocorr_row,
            "autocorr_col": self.autocorr_col,
            "window": self.window,
            "verdict": self.verdict,
        }


def _lag1_corr(a: np.ndarray, b: np.ndarray, m: float) -> float:
    a, b = a - m, b - m
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else 0.0


def residual_checks(
    noisy: np.ndarray,
    denoised: np.ndarray,
    noise_model,
    *,
    window: int = 16,
    axis: int = 0,
) -> ResidualReport:
    """Check whether what a method removed is statistically just noise.

    The normalised residual is ``r = (noisy - denoised) / sqrt(noise_model.variance(denoised))``,
    using the denoised image as the signal estimate in the signal-dependent variance. If the
    denoised image were the true signal, ``r`` would have mean 0, variance 1 and no
    correlation between neighbours (white noise); a method that also removes structure gives
    a variance above 1 and correlated residuals, one that leaves noise a variance below 1.
    This is the discrepancy principle of regularisation (Morozov 1966) applied per pixel.

    Parameters
    ----------
    noisy, denoised : ndarray
        Arrays of the same shape: image ``(H, W)``, stack ``(T, H, W)`` or spectrum image
        ``(H, W, E)``.
    noise_model : object with ``variance(signal)``
        A noise model from :mod:`emcore.noise` on the scale of the data. Variances are floored
        at ``1e-6`` times their mean so empty pixels do not divide by zero.
    window : int, default 16
        Side (px) of the local window of the structure map.
    axis : int, default 0
        For 3-D data, the axis indexing the 2-D slices (0 for a stack, 2 for the energy slices
        of a spectrum image). Neighbour correlations and the structure map are computed
        within slices.

    Returns
    -------
    ResidualReport

    References
    ----------
    Morozov, "On the solution of functional equations by the method of regularization",
    Soviet Math. Dokl. 7 (1966) 414–417.
    Makitalo & Foi, "Noise parameter mismatch in variance stabilization, with an application
    to Poisson–Gaussian noise estimation", IEEE TIP 23 (2014) — normalised residuals as a test
    of the noise model.
    """
    y = np.asarray(noisy, dtype=np.float64)
    x = np.asarray(denoised, dtype=np.float64)
    if y.shape != x.shape:
        raise EmcoreError(f"Cannot compare arrays of shapes {y.shape} and {x.shape}; they must match.")
    if y.ndim not in (2, 3):
        raise EmcoreError(f"Residual checks need an image, a stack or a spectrum image, not an array of shape {y.shape}.")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x))):
        raise EmcoreError("Residual checks cannot be made: the images hold NaN or Inf values.")
    window = int(window)
    if window < 2:
        raise EmcoreError(f"The structure-map window must be at least 2 pixels, not {window}.")
    var = np.broadcast_to(np.asarray(noise_model.variance(x), dtype=np.float64), x.shape)
    mean_var = float(np.mean(var))
    if not mean_var > 0:
        raise EmcoreError("The noise model predicts no noise for this image, so residuals cannot be normalised.")
    r = (y - x) / np.sqrt(np.maximum(var, 1e-6 * mean_var))
    if r.ndim == 2:
        slices = r[None]
    else:
        slices = np.moveaxis(r, axis, 0)
    if min(slices.shape[1:]) < 2:
        raise EmcoreError(f"The images are too small for residual checks (slices of {slices.shape[1]} × {slices.shape[2]}).")
    m = float(np.mean(r))
    ac_row = _lag1_corr(slices[:, :, :-1], slices[:, :, 1:], m)
    ac_col = _lag1_corr(slices[:, :-1, :], slices[:, 1:, :], m)
    smap = np.mean([ndi.uniform_filter(sl * sl, size=window, mode="reflect") for sl in slices], axis=0)
    return ResidualReport(
        mean=m,
        variance=float(np.var(r)),
        autocorr_row=ac_row,
        autocorr_col=ac_col,
        window=window,
        structure_map=smap.astype(np.float32),
    )


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
