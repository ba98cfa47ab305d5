"""Rigid registration of frames (drift correction) for movies and frame pairs.

Shifts are measured by cross-correlation with sub-pixel refinement (Guizar-Sicairos,
Thurman & Fienup, Opt. Lett. 33 (2008) 156, as implemented by
``skimage.registration.phase_cross_correlation``) on copies smoothed by a 2-px Gaussian, with
plain (not phase-normalised) correlation: phase normalisation whitens the spectrum and
lets shot noise dominate low-dose frames.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from emcore.errors import EmcoreError

SMOOTH_PX = 2.0
UPSAMPLE = 10  # 1/10-pixel precision


def measure_shift(reference: np.ndarray, moving: np.ndarray, *, taper: bool = True) -> np.ndarray:
    """(row, col) shift that, applied to ``moving``, aligns it on ``reference``.

    ``taper`` applies a Hann window first: best for frames cut from a larger field (a movie
    with drift); frames that are exact circular shifts of each other need none.
    """
    from skimage.registration import phase_cross_correlation

    ref = ndi.gaussian_filter(np.asarray(reference, np.float64), SMOOTH_PX)
    mov = ndi.gaussian_filter(np.asarray(moving, np.float64), SMOOTH_PX)
    # A Hann taper (after removing the mean) keeps the frame edges, which do not move with
    # the specimen, from pulling the correlation peak towards zero shift.
    if taper:
        win = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
        ref, mov = (ref - ref.mean()) * win, (mov - mov.mean()) * win
    shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=UPSAMPLE, normalization=None)
    return np.asarray(shift, dtype=np.float64)


def _shift_padding(n: int, shift: float) -> tuple[int, int]:
    # Mirror padding keeps the wrap-around edge from ringing into the image; an odd padded
    # length leaves no Nyquist coefficient, so the Fourier shift is an exact real orthogonal
    # operator on the padded array (an even length would lose the imaginary part at Nyquist).
    pad = int(np.ceil(abs(float(shift)))) + 16
    return pad, 1 if (n + 2 * pad) % 2 == 0 else 0


def shift_image(image: np.ndarray, shift) -> np.ndarray:
    """Shift a 2-D image by ``(row, col)`` pixels (sub-pixel) by Fourier interpolation.

    The image is mirror-padded to an odd size first, so the shift is an exact orthogonal
    operator: white noise stays white with the same variance.
    """
    image = np.asarray(image, dtype=np.float64)
    (h, w), (sr, sc) = image.shape, shift
    (pr, er), (pc, ec) = _shift_padding(h, sr), _shift_padding(w, sc)
    padded = np.pad(image, ((pr, pr + er), (pc, pc + ec)), mode="symmetric")
    out = np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(padded), shift)).real
    return out[pr : pr + h, pc : pc + w]


def align_stack(stack: np.ndarray, reference: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Align every frame of a ``(T, H, W)`` stack on frame ``reference``.

    Returns
    -------
    aligned : (T, H, W) float32
        Frames shifted by Fourier interpolation (noise statistics stay close to the raw ones).
    shifts : (T, 2) float64
        The (row, col) shift applied to each frame.
    valid : (slice, slice)
        The region every shifted frame covers with real data (edges that wrapped are left out).
    """
    s = np.asarray(stack, dtype=np.float32)
    if s.ndim != 3 or s.shape[0] < 2:
        raise EmcoreError(f"Registration needs a stack of at least 2 frames, not data of shape {s.shape}.")
    t, h, w = s.shape
    shifts = np.zeros((t, 2))
    out = np.empty_like(s)
    for i in range(t):
        if i != reference:
            shifts[i] = measure_shift(s[reference], s[i])
        out[i] = shift_image(s[i], shifts[i]).astype(np.float32)
    m = np.ceil(np.abs(shifts).max(axis=0)).astype(int)
    valid = (slice(int(m[0]), h - int(m[0])), slice(int(m[1]), w - int(m[1])))
    if valid[0].stop - valid[0].start < 16 or valid[1].stop - valid[1].start < 16:
        raise EmcoreError(f"The frames drift by up to {m[0]}×{m[1]} pixels: too much for their {h}×{w} size to keep "
                          "a common region; crop or bin the movie first.")
    return out, shifts, valid
