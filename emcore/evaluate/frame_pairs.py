"""Frame-pair validation of a frame series: denoise the odd frames, score them against the
registered even frames (the count-split idea for stacks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from emcore.data.registration import _shift_padding
from emcore.data.registration import shift_image as _fourier_shift
from emcore.errors import EmcoreError
from emcore.evaluate.count_split import _call_denoiser

# --------------------------------------------------------------------------------------------
# Frame pairs
# --------------------------------------------------------------------------------------------

def _register(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    from emcore.data.registration import measure_shift

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
