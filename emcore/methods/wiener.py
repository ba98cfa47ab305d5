"""Wiener filtering of images, stacks and spectrum-image slices.

Two filters share one noise estimate:

``mode="fft"``
    What HREM users mean by "Wiener filtering": a filter applied frequency by frequency in
    the Fourier domain, whose signal and noise power spectra are both estimated from the
    image itself (Kilaas 1998). White noise has a flat power spectrum, so its level is read
    in the outer part of the spectrum, where a lattice image has no signal except a few
    sharp reflections; the median ignores those. Every frequency is then weighted by
    ``H = S / (S + N)`` with ``S = max(P - N, 0)``: lattice reflections, which stand far above
    the noise floor, pass almost unchanged and the floor between them is removed.
``mode="local"``
    The local adaptive (spatial) Wiener filter of Lee (1980), as in ``scipy.signal.wiener``:
    each pixel moves towards the mean of its ``window × window`` neighbourhood by the fraction
    of the local variance that is noise.

References
----------
.. [1] R. Kilaas, "Optimal and near-optimal filters in high-resolution electron microscopy",
   J. Microsc. 190 (1998) 45-51.
.. [2] J.-S. Lee, "Digital image enhancement and noise filtering by use of local statistics",
   IEEE Trans. Pattern Anal. Mach. Intell. PAMI-2 (1980) 165-168.
.. [3] N. Wiener, "Extrapolation, Interpolation, and Smoothing of Stationary Time Series",
   MIT Press (1949).

With no window or noise variance given, the registry entry chooses both from the data
(:mod:`emcore.methods.calibration`): a blind filter with a fixed window fell several dB below
a well-chosen Gaussian blur on lattice images.

Longer than 600 lines on purpose: the image, stack and cube filters share one batched-FFT
machinery, and the method's registry entry, self-calibration and lesson belong beside them
(one module per method).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.methods.lesson import EXAMPLE_DOSE, Lesson, LessonFigure, example_image, image_row, psnr_db
from emcore.methods.registry import Method, Param, RunContext, denoise, register
from emcore.noise.models import Poisson
from emcore.progress import ProgressFn
from emcore.progress import report as _report

__all__ = [
    "denoise_wiener",
    "denoise_wiener_stack",
    "denoise_wiener_cube",
    "estimate_noise_variance",
]

MODES = ("fft", "local")

#: Default inner radius of the annulus where the noise floor is read, as a fraction of the
#: Nyquist frequency (radial, so the corners of the spectrum, out to sqrt(2), are included).
#: Kilaas (1998) reads the noise level beyond the information limit; 3/4 of Nyquist keeps
#: the estimate in the outer half of all frequencies while a median ignores the few lattice
#: reflections that may lie out there.
HIGHFREQ_FRACTION = 0.75

#: For a complex Gaussian (white-noise) Fourier coefficient, ``|F|^2`` is exponentially
#: distributed, whose median is ``ln 2`` times its mean: median / ln 2 is the noise power.
_MEDIAN_TO_MEAN = 1.0 / math.log(2.0)

#: Energy slices are filtered in batches of about this many padded pixels (one batched FFT
#: each), which bounds the working memory to a few hundred MB whatever the cube size.
_CUBE_BATCH_PIXELS = 8_000_000


# -- input checks ---------------------------------------------------------------------------
def _as_float32(data, what: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(
            f"The {what} holds values of type {arr.dtype}, not real numbers; "
            "Wiener filtering needs a real-valued (intensity) image."
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise EmcoreError(
            f"The {what} holds NaN or infinite values; replace them (for example with the "
            "local mean) before filtering."
        )
    return arr


def _check_spatial(h: int, w: int, what: str) -> None:
    if h < 8 or w < 8:
        raise EmcoreError(
            f"The {what} is only {h}×{w} pixels; Wiener filtering needs at least 8×8 pixels "
            "to tell signal from noise."
        )


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_params(mode: str, noise_power, window, highfreq_fraction) -> None:
    if mode not in MODES:
        raise EmcoreError(f"Unknown Wiener mode {mode!r}; use 'fft' (Fourier domain) or 'local' (spatial).")
    if noise_power is not None:
        v = _number(noise_power)
        if v is None or not (math.isfinite(v) and v >= 0):
            raise EmcoreError(
                f"The noise power must be a variance per pixel (zero or positive), not {noise_power!r}; "
                "leave it empty to estimate it from the image."
            )
    v = _number(window)
    if v is None or not v.is_integer() or v < 1 or v % 2 == 0 or v > 63:
        raise EmcoreError(f"The Wiener window must be an odd whole number of pixels from 1 to 63, not {window!r}.")
    v = _number(highfreq_fraction)
    if v is None or not (0.0 < v < 1.0):
        raise EmcoreError(
            "The high-frequency fraction (where the noise floor is read) must lie between 0 and 1 "
            f"of the Nyquist frequency, not {highfreq_fraction!r}."
        )



# -- the Fourier-domain machinery (spatial axes first, a batch axis last) --------------------
def _image_to_filter(image, not_2d: str) -> np.ndarray:
    """One 2-D, finite, non-constant image of at least 8×8 pixels as float32; else ``not_2d`` or
    the sentence of the check that failed."""
    img = _as_float32(image, "image")
    if img.ndim != 2:
        raise EmcoreError(not_2d)
    _check_spatial(*img.shape, "image")
    if float(img.max()) == float(img.min()):
        raise EmcoreError("The image is constant: nothing to denoise.")
    return img


def _pad_width(n: int) -> int:
    # Mirror margin: wide enough that the cosine roll-off to the mean is gentle, small enough
    # to cost little (64 px on a 2048-px image is 6 % more pixels per axis).
    return int(min(max(n // 16, 4), 64, n - 1))


class _Plan:
    """Padding, taper and frequency masks for one ``(H, W)`` shape (shared by a batch)."""

    def __init__(self, h: int, w: int, highfreq_fraction: float):
        self.h, self.w = h, w
        self.py, self.px = _pad_width(h), _pad_width(w)
        self.hp = sfft.next_fast_len(h + 2 * self.py, real=True)
        self.wp = sfft.next_fast_len(w + 2 * self.px, real=True)
        # The padded frame is [py mirror | image | rest mirror]; the taper is 1 on the image and
        # falls to 0 across each margin (half a Hann window), so the padded frame has no
        # wrap-around jump: no cross-shaped streak through the origin of the spectrum.
        self.taper_y = _taper(self.hp, self.py, h)
        self.taper_x = _taper(self.wp, self.px, w)
        # Noise bins of the tapered frame carry sigma^2 * sum(taper^2) of power.
        self.taper_energy = float(np.sum(self.taper_y**2) * np.sum(self.taper_x**2))
        fy = sfft.fftfreq(self.hp).astype(np.float32)[:, None]
        fx = sfft.rfftfreq(self.wp).astype(np.float32)[None, :]
        radius = np.sqrt(fy**2 + fx**2) / 0.5  # in units of the Nyquist frequency
        self.highfreq = radius > highfreq_fraction
        # Hermitian neighbours of the half-plane: |F(ky, -kx)| = |F(-ky, kx)|.
        self.row_flip = (-np.arange(self.hp)) % self.hp

    def pad(self, x: np.ndarray) -> np.ndarray:
        """Mirror-pad the spatial axes of ``x`` (``(H, W, B)``, mean already removed) and taper."""
        extra_y = self.hp - self.h - self.py
        extra_x = self.wp - self.w - self.px
        out = np.pad(x, ((self.py, extra_y), (self.px, extra_x), (0, 0)), mode="symmetric")
        out *= self.taper_y[:, None, None]
        out *= self.taper_x[None, :, None]
        return out

    def crop(self, y: np.ndarray) -> np.ndarray:
        return y[self.py : self.py + self.h, self.px : self.px + self.w]

    def smooth(self, power: np.ndarray, size: int) -> np.ndarray:
        """Box-average ``power`` (``(hp, wp//2+1, B)``) over ``size × size`` frequencies.

        The rfft half-plane is extended by its Hermitian mirror along the last frequency axis
        and wrapped along the first, so bins on the borders of the half-plane are averaged over
        true neighbours.
        """
        if size <= 1:
            return power
        r = size // 2
        ncol = power.shape[1]
        j = np.arange(1, r + 1)
        # Column -j is column j seen from -ky; past the last column the same mirror applies
        # about the Nyquist column (even width) or about half a bin beyond it (odd width).
        left_cols = np.clip(j[::-1], 0, ncol - 1)
        right_cols = np.clip((ncol - 1 if self.wp % 2 == 0 else ncol) - j, 0, ncol - 1)
        left = power[:, left_cols][self.row_flip]
        right = power[:, right_cols][self.row_flip]
        ext = np.concatenate([left, power, right], axis=1)
        ext = ndimage.uniform_filter1d(ext, size, axis=0, mode="wrap")
        ext = ndimage.uniform_filter1d(ext, size, axis=1, mode="nearest")
        return ext[:, r : r + ncol]


def _taper(n_pad: int, margin: int, n: int) -> np.ndarray:
    t = np.ones(n_pad, dtype=np.float32)
    if margin > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(margin, dtype=np.float64) + 0.5) / margin)
        t[:margin] = ramp
    tail = n_pad - margin - n
    if tail > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(tail, dtype=np.float64) + 0.5) / tail)
        t[margin + n :] = ramp[::-1]
    return t


def _spectrum(plan: _Plan, x: np.ndarray):
    """Mean-removed, padded, tapered rfft2 of a batch ``(H, W, B)``; returns (F, means)."""
    means = x.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    padded = plan.pad(x - means)
    f = sfft.rfft2(padded, axes=(0, 1), workers=-1)
    return f, means


def _noise_floor(plan: _Plan, power: np.ndarray) -> np.ndarray:
    """Noise power per Fourier bin, per batch item, from the high-frequency annulus."""
    return np.median(power[plan.highfreq], axis=0).astype(np.float64) * _MEDIAN_TO_MEAN


def _wiener_fft_batch(x: np.ndarray, noise_power, window: int, highfreq_fraction: float):
    """FFT Wiener filter of a batch ``(H, W, B)`` float32; returns (filtered, noise variance per item)."""
    plan = _Plan(x.shape[0], x.shape[1], highfreq_fraction)
    f, means = _spectrum(plan, x)
    power = f.real**2 + f.imag**2
    if noise_power is None:
        floor = _noise_floor(plan, power)
    else:
        floor = np.full(x.shape[2], float(noise_power) * plan.taper_energy)
    out = _apply_gain(plan, x, f, means, plan.smooth(power, window), floor, in_place=True)
    return out, floor / plan.taper_energy


def _apply_gain(plan: _Plan, x, f, means, smoothed, floor, in_place: bool) -> np.ndarray:
    """Filter the spectrum ``f`` of ``x`` with the gain of the smoothed power and noise floor."""
    floor32 = floor.astype(np.float32)
    # H = S / (S + N) with S = max(P - N, 0) is 1 - N / P where P > N, else 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(smoothed > floor32, 1.0 - floor32 / smoothed, 0.0).astype(np.float32)
    gain[0, 0] = 1.0  # the DC term (the padded frame's offset) passes untouched
    if in_place:
        f *= gain
    else:
        f = f * gain
    y = sfft.irfft2(f, s=(plan.hp, plan.wp), axes=(0, 1), workers=-1)
    out = plan.crop(y) + means
    # Keep each mean exactly: the filter redistributes a little low-frequency power between the
    # image and its mirrored margin, which would otherwise shift the mean by a hair.
    out += (x.mean(axis=(0, 1), dtype=np.float64) - out.mean(axis=(0, 1), dtype=np.float64)).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


class FrameSpectrum:
    """One image's Fourier transform and measured noise floor, kept to filter it many ways.

    ``FrameSpectrum(img).filter(window, scale)`` equals ``denoise_wiener(img, window=window,
    noise_power=estimate_noise_variance(img) * scale)`` bit for bit, but the image is
    transformed once, and each window's smoothed power spectrum computed once, however many
    settings are tried: the self-calibration scores 20 settings on each of its inputs.
    """

    def __init__(self, image, highfreq_fraction: float = HIGHFREQ_FRACTION):
        _check_params("fft", None, 1, highfreq_fraction)
        img = _image_to_filter(image, f"A Wiener filter needs one 2-D image, not data of shape {np.shape(image)}.")
        self.x = img[:, :, None]
        self.plan = _Plan(img.shape[0], img.shape[1], float(highfreq_fraction))
        self.f, self.means = _spectrum(self.plan, self.x)
        self.power = self.f.real**2 + self.f.imag**2
        # estimate_noise_variance's arithmetic, so the floors match to the bit.
        self.noise_variance = float(_noise_variance(self.plan, self.power)[0])
        self._smoothed: dict[int, np.ndarray] = {}

    def filter(self, window: int, scale: float) -> np.ndarray:
        """The image filtered with ``window`` and ``scale`` times the measured noise floor; (H, W) float32."""
        window = int(window)
        if window not in self._smoothed:
            self._smoothed[window] = self.plan.smooth(self.power, window)
        floor = np.full(1, float(self.noise_variance * scale) * self.plan.taper_energy)
        out = _apply_gain(self.plan, self.x, self.f, self.means, self._smoothed[window], floor, in_place=False)
        return out[:, :, 0]


def _noise_variance_batch(x: np.ndarray, highfreq_fraction: float) -> np.ndarray:
    plan = _Plan(x.shape[0], x.shape[1], highfreq_fraction)
    f, _ = _spectrum(plan, x)
    return _noise_variance(plan, f.real**2 + f.imag**2)


def _noise_variance(plan: _Plan, power: np.ndarray) -> np.ndarray:
    """Noise variance per pixel of each batch item, from its padded power spectrum."""
    return _noise_floor(plan, power) / plan.taper_energy


def _wiener_local_batch(x: np.ndarray, noise_power, window: int, highfreq_fraction: float):
    """Lee (1980) local Wiener filter of a batch ``(H, W, B)`` float32."""
    if noise_power is None:
        noise = _noise_variance_batch(x, highfreq_fraction)
    else:
        noise = np.full(x.shape[2], float(noise_power))
    # Remove each item's mean first so the variance E[x^2] - E[x]^2 does not cancel in float32.
    means = x.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    xc = x - means
    size = (window, window, 1)
    mu = ndimage.uniform_filter(xc, size, mode="reflect")
    var = ndimage.uniform_filter(xc * xc, size, mode="reflect")
    var -= mu * mu
    n32 = noise.astype(np.float32)
    # gain = (v - sigma^2) / v where the local variance exceeds the noise, else 0 (Lee 1980).
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(var > n32, 1.0 - n32 / var, 0.0).astype(np.float32)
    out = mu + gain * (xc - mu)
    # Lee's gain is larger where the local variance is (bright columns, edges), which biases
    # the mean; put each item's mean back exactly, as the FFT mode does.
    out += (means - out.mean(axis=(0, 1), dtype=np.float64)).astype(np.float32)
    return out.astype(np.float32, copy=False), noise


def _filter_batch(x, mode, noise_power, window, highfreq_fraction):
    if mode == "fft":
        return _wiener_fft_batch(x, noise_power, window, highfreq_fraction)
    return _wiener_local_batch(x, noise_power, window, highfreq_fraction)


# -- public API -------------------------------------------------------------------------------
def estimate_noise_variance(image, *, highfreq_fraction: float = HIGHFREQ_FRACTION) -> float:
    """Variance per pixel of the white noise in a 2-D image, read from its power spectrum.

    The image is mirror-padded and tapered, and the median of ``|F|^2`` over frequencies
    beyond ``highfreq_fraction`` of Nyquist, divided by ``ln 2`` (median-to-mean ratio of an
    exponential distribution), is taken as the flat noise floor (Kilaas 1998).

    Parameters
    ----------
    image : (H, W) array_like
        Real-valued image, at least 8×8 pixels.
    highfreq_fraction : float, optional
        Inner radius of the annulus, as a fraction of the Nyquist frequency.

    Returns
    -------
    float
        Estimated noise variance per pixel, in the image's units squared.

    References
    ----------
    .. [1] R. Kilaas, J. Microsc. 190 (1998) 45-51.
    """
    img = _as_float32(image, "image")
    if img.ndim != 2:
        raise EmcoreError(f"A noise estimate needs one 2-D image, not data of shape {img.shape}.")
    _check_spatial(*img.shape, "image")
    _check_params("fft", None, 1, highfreq_fraction)
    return float(_noise_variance_batch(img[:, :, None], highfreq_fraction)[0])


def denoise_wiener(
    image,
    *,
    noise_power: float | None = None,
    mode: str = "fft",
    window: int = 5,
    highfreq_fraction: float = HIGHFREQ_FRACTION,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Wiener-filter a 2-D image (HREM/STEM).

    Parameters
    ----------
    image : (H, W) array_like
        Real-valued image, at least 8×8 pixels. Left unchanged.
    noise_power : float, optional
        Noise variance per pixel, in the image's units squared (for Poisson data at dose
        ``d`` scaled back by ``1/d``, about ``mean / d``). Estimated from the image when not
        given (see :func:`estimate_noise_variance`).
    mode : {"fft", "local"}
        ``"fft"``: Fourier-domain Wiener filter with the signal and noise power spectra
        estimated from the image (Kilaas 1998) — keeps lattice reflections, removes the noise
        floor between them. ``"local"``: local adaptive spatial Wiener filter (Lee 1980).
    window : int
        Odd size in pixels. ``"fft"``: side of the box, in Fourier bins, over which ``|F|^2``
        is averaged before the filter is formed, so a single noisy bin cannot pass on its own.
        ``"local"``: side of the neighbourhood for the local mean and variance.
    highfreq_fraction : float
        Where the noise floor is read: frequencies beyond this fraction of Nyquist (radially,
        corners included). Only used when ``noise_power`` is not given.
    progress : callable, optional
        Receives one :class:`~emcore.progress.Progress` when the image is done.

    Returns
    -------
    (H, W) ndarray of float32
        The filtered image, with exactly the mean of the input.

    Raises
    ------
    EmcoreError
        The image is not 2-D, smaller than 8×8, constant, or holds NaN/Inf; a parameter is
        out of range.

    Notes
    -----
    ``"fft"`` mode: the mean is removed, the image is mirror-padded by up to 64 pixels and the
    margin tapered to zero (half a Hann window), so the periodic FFT sees no edge jump and
    the spectrum has no cross-shaped streak. With ``P`` the ``window × window`` box average
    of ``|F|^2`` and ``N`` the noise floor (the median of ``|F|^2`` beyond
    ``highfreq_fraction`` of Nyquist divided by ``ln 2``), each frequency is multiplied by
    ``H = S / (S + N)``, ``S = max(P - N, 0)`` [1]_ [3]_; ``H(0) = 1``.
    ``"local"`` mode: ``out = m + max(v - N, 0) / v · (x - m)`` with ``m, v`` the local mean
    and variance in a ``window × window`` box [2]_, as ``scipy.signal.wiener`` but with the
    noise variance from the power spectrum instead of the mean local variance (which counts
    lattice contrast as noise).

    References
    ----------
    .. [1] R. Kilaas, "Optimal and near-optimal filters in high-resolution electron
       microscopy", J. Microsc. 190 (1998) 45-51.
    .. [2] J.-S. Lee, "Digital image enhancement and noise filtering by use of local
       statistics", IEEE Trans. PAMI 2 (1980) 165-168.
    .. [3] N. Wiener, "Extrapolation, Interpolation, and Smoothing of Stationary Time
       Series", MIT Press (1949).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:128, :128]
    >>> clean = np.cos(2 * np.pi * x / 8) + np.cos(2 * np.pi * y / 8)
    >>> out = denoise_wiener(clean + rng.normal(0, 1, clean.shape))
    >>> out.dtype
    dtype('float32')
    """
    t0 = time.perf_counter()
    _check_params(mode, noise_power, window, highfreq_fraction)
    img = _image_to_filter(image, f"denoise_wiener takes one 2-D image, but the data has shape {np.shape(image)}; "
                                  "use denoise_wiener_stack for a (T, H, W) stack or denoise_wiener_cube for an "
                                  "(H, W, E) spectrum image.")
    out, _ = _filter_batch(img[:, :, None], mode, noise_power, int(window), float(highfreq_fraction))
    _report(progress, 1, 1, t0, "Wiener filter done")
    return out[:, :, 0]


def denoise_wiener_stack(
    stack,
    *,
    noise_power: float | None = None,
    mode: str = "fft",
    window: int = 5,
    highfreq_fraction: float = HIGHFREQ_FRACTION,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Wiener-filter every frame of a ``(T, H, W)`` stack on its own.

    Parameters are those of :func:`denoise_wiener`; the noise power, when not given, is
    estimated per frame. Constant frames (nothing to filter) are returned unchanged.

    Returns
    -------
    (T, H, W) ndarray of float32

    Raises
    ------
    EmcoreError
        The data is not 3-D, its frames are smaller than 8×8, every frame is constant, or it
        holds NaN/Inf.

    References
    ----------
    .. [1] R. Kilaas, J. Microsc. 190 (1998) 45-51.
    .. [2] J.-S. Lee, IEEE Trans. PAMI 2 (1980) 165-168.
    """
    t0 = time.perf_counter()
    _check_params(mode, noise_power, window, highfreq_fraction)
    data = _as_float32(stack, "stack")
    if data.ndim != 3:
        raise EmcoreError(
            f"denoise_wiener_stack takes a (T, H, W) stack, but the data has shape {data.shape}."
        )
    _check_spatial(data.shape[1], data.shape[2], "frame")
    # Frames are filtered like the energy slices of a cube: batched FFTs over (H, W).
    out = _filter_slices(np.moveaxis(data, 0, -1), mode, noise_power, window, highfreq_fraction,
                         progress, t0, "frame", "Every frame of the stack is constant: nothing to denoise.")
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def denoise_wiener_cube(
    cube,
    *,
    noise_power: float | None = None,
    mode: str = "fft",
    window: int = 5,
    highfreq_fraction: float = HIGHFREQ_FRACTION,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Wiener-filter every energy slice of an ``(H, W, E)`` spectrum image on its own.

    Slices are filtered in batches with one FFT over the spatial axes (0, 1). Parameters are
    those of :func:`denoise_wiener`; the noise power, when not given, is estimated per
    slice. Constant slices (for example empty channels) are returned unchanged. Each slice
    gives the same result as :func:`denoise_wiener` on that slice alone.

    Returns
    -------
    (H, W, E) ndarray of float32

    Raises
    ------
    EmcoreError
        The data is not 3-D, smaller than 8×8 pixels, constant in every slice, or holds NaN/Inf.

    References
    ----------
    .. [1] R. Kilaas, J. Microsc. 190 (1998) 45-51.
    .. [2] J.-S. Lee, IEEE Trans. PAMI 2 (1980) 165-168.
    """
    t0 = time.perf_counter()
    _check_params(mode, noise_power, window, highfreq_fraction)
    data = _as_float32(cube, "spectrum image")
    if data.ndim != 3:
        raise EmcoreError(
            f"denoise_wiener_cube takes an (H, W, E) spectrum image, but the data has shape {data.shape}."
        )
    _check_spatial(data.shape[0], data.shape[1], "spectrum image")
    return _filter_slices(data, mode, noise_power, window, highfreq_fraction, progress, t0, "slice",
                          "Every energy slice of the spectrum image is constant: nothing to denoise.")


def _filter_slices(data, mode, noise_power, window, highfreq_fraction, progress, t0, what: str, all_constant: str):
    """Filter every 2-D slice of an ``(H, W, N)`` array in memory-bounded batches.

    Constant slices (empty channels, blank frames) are passed through unchanged.
    """
    out = np.array(data, dtype=np.float32, copy=True)
    idx = np.flatnonzero(data.max(axis=(0, 1)) > data.min(axis=(0, 1)))
    if idx.size == 0:
        raise EmcoreError(all_constant)
    total = idx.size
    plan = _Plan(data.shape[0], data.shape[1], highfreq_fraction)
    chunk = int(min(256, max(1, _CUBE_BATCH_PIXELS // (plan.hp * plan.wp))))
    for start in range(0, total, chunk):
        sel = idx[start : start + chunk]
        res, _ = _filter_batch(data[:, :, sel], mode, noise_power, int(window), float(highfreq_fraction))
        out[:, :, sel] = res
        done = min(start + chunk, total)
        _report(progress, done, total, t0, f"{what} {done} of {total}")
    return out



# -- Wiener ----------------------------------------------------------------------------
def _run_wiener(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    mode, window, noise_power = params["mode"], params["window"], params["noise_power"]
    if ds.kind == "cube" and window is None:
        window = _DEFAULT_WINDOW
        ctx.log.append(f"Spectrum images are filtered slice by slice with the {window}-px window "
                       "(self-calibration works on images and stacks).")
    if window is not None and (noise_power is not None or ds.kind == "cube"):
        fn = {"image": denoise_wiener, "stack": denoise_wiener_stack, "cube": denoise_wiener_cube}[ds.kind]
        ctx.resolved["window"] = window
        return fn(ds.data, noise_power=noise_power, mode=mode, window=window, progress=ctx.progress)
    # Self-calibration: the window and a multiple of the measured noise floor are chosen on
    # the data itself. Over-subtracting the floor (scale > 1) is what a noisy estimate of the
    # signal spectrum needs; the data say by how much.
    from emcore.methods.calibration import grid, run_calibrated

    def apply(frame, p):
        if mode == "fft" and p["scale"] is not None:
            spectrum = FrameSpectrum(frame)
            return spectrum.filter(p["window"], p["scale"]), spectrum.noise_variance * p["scale"]
        nv = noise_power if p["scale"] is None else estimate_noise_variance(frame) * p["scale"]
        return denoise_wiener(frame, noise_power=nv, mode=mode, window=p["window"]), nv

    def apply_many(frame, cands):
        # One transform of the frame for every setting (fft mode, measured floor).
        spectrum = FrameSpectrum(frame)
        return [spectrum.filter(p["window"], p["scale"]) for p in cands]

    candidates = grid(window=_CAL_WINDOWS if window is None else (window,),
                      scale=_CAL_SCALES if noise_power is None else (None,))
    shared = mode == "fft" and noise_power is None
    out, best, floors = run_calibrated(ds, ctx, apply, candidates, "Wiener filter",
                                       apply_many=apply_many if shared else None)
    ctx.resolved.update(window=int(best["window"]), noise_power=float(np.mean(floors)))
    return out


# Candidates of the self-calibration: the spectrum-smoothing window and the multiple of the
# measured noise floor. On HRTEM phantoms (Poisson 1, 5 e/px; Poisson-Gaussian 0.05, 0.02)
# the best pairs lay within window 3-5 and scale 2-3; the grid spans beyond both.
_CAL_WINDOWS = (3, 5, 9, 15)
_CAL_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
_DEFAULT_WINDOW = 5


# Seconds per pixel (voxel for cubes) of either mode, measured on 2 CPU cores: 512×512 in
# 0.03 s, 64×64×1024 in 0.35 s.
_SECONDS_PER_PIXEL = 1e-7


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """log10 of the centred power spectrum (mean removed), for display."""
    a = np.asarray(image, np.float64)
    p = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2
    return np.log10(p + p.mean() * 1e-6).astype(np.float32)


def _lesson_figure() -> LessonFigure:
    clean, noisy = example_image()
    ds = Dataset(data=noisy, kind="image", noise=Poisson(EXAMPLE_DOSE), name="Learn example")
    out = denoise(ds, "wiener").data
    return image_row([("Noisy, 20 e⁻/px", noisy), ("Power spectrum (log)", power_spectrum(noisy)),
                      (f"Wiener result — PSNR {psnr_db(out, clean):.1f} dB", out)], colorscales={1: "magma"})


LESSON = Lesson(
    assumes="The signal is stationary — the same kind of structure everywhere — and the noise is white "
            "(independent from pixel to pixel), so in the Fourier transform the noise is a flat floor and a "
            "crystal lattice shows as sharp spots standing above it.",
    needs="Only the noisy data. No clean data, no GPU; usually the quickest method here (the estimate beside "
          "Run is for this machine).",
    choose_when="Periodic images (HREM/HRSTEM of crystals) where a quick, transparent filter is enough, or "
                "as a first look. It blurs what is not periodic (surfaces, defects, the particle edge), and "
                "the 'local' mode is the adaptive spatial variant for non-periodic images.",
    parameters="**Mode** ('fft' global Fourier filter, 'local' adaptive spatial filter); **window** "
               "(smoothing of the power spectrum, or the local neighbourhood); **noise variance** "
               "(estimated from the high spatial frequencies when unset).",
    reference="N. Wiener, *Extrapolation, Interpolation, and Smoothing of Stationary Time Series*, MIT Press "
              "(1949); R. Kilaas, “Optimal and near-optimal filters in high-resolution electron microscopy”, "
              "*J. Microsc.* 190, 45–51 (1998).",
    caption="The power spectrum of the noisy example (log scale): the lattice gives bright spots above a flat "
            "noise floor. The Wiener filter keeps each frequency in proportion to how far its power stands "
            "above that floor — the result is on the right.",
    figure=_lesson_figure,
)


register(Method(
    name="wiener",
    label="Wiener filter",
    description="Fourier-domain Wiener filter with signal and noise spectra estimated from the image: "
                "lattice reflections pass, the white-noise floor is removed.",
    kind="classical",
    accepts=("image", "stack", "cube"),
    params=(
        Param("mode", "choice", "fft", choices=("fft", "local"), label="Mode",
              help="'fft': global Wiener filter in Fourier space (for periodic HREM/STEM images); "
                   "'local': adaptive spatial Wiener filter (Lee 1980)."),
        Param("window", "int", None, auto=True, min=3, max=31, label="Window (px)",
              help="Averaging box of the power spectrum (fft) or the local neighbourhood (local). Unset: "
                   "chosen from the data (count splitting for counts, the J-invariant loss otherwise)."),
        Param("noise_power", "float", None, auto=True, min=0.0, max=1e12, label="Noise variance",
              help="Noise variance per pixel. Unset: the high-frequency noise floor times a factor chosen "
                   "from the data with the window."),
    ),
    run=_run_wiener,
    details="H(k) = S(k) / (S(k) + N): N is the flat noise floor measured beyond 3/4 of Nyquist, S the "
            "smoothed power above it (after Kilaas, J. Microsc. 1998). Sharp lattice reflections stand far "
            "above the floor and pass almost untouched; noise between them is removed.",
    estimate_seconds=lambda shape, kind, p: _SECONDS_PER_PIXEL * math.prod(shape),
    lesson=LESSON,
))
