"""BM3D for electron-microscopy images, stacks and spectrum images.

BM3D (Dabov et al. 2007; the ``bm3d`` package implements Mäkinen, Azzari & Foi 2020) removes
additive white Gaussian noise. EM noise is Poisson–Gaussian (variance ``a·signal + b²``), so
unless the noise is purely Gaussian the image goes through the generalised Anscombe
transform (:mod:`emcore.noise.vst`), which makes the noise unit-variance Gaussian, is denoised
with ``sigma = 1``, and is mapped back with the exact unbiased inverse of Mäkitalo & Foi
(2013). The transforms are elementwise, so a run costs what the ``bm3d`` call costs.

When no noise model is given it is estimated from the data with
:func:`emcore.noise.estimation.estimate_poisson_gaussian` (stacks and cubes: pooled over
slices, :func:`emcore.noise.estimation.estimate_noise`).

Licence
-------
The ``bm3d`` package (© 2006-2022 Tampere University) may be used only for non-profit,
non-commercial purposes; any commercial use of this module needs a licence from its
authors. Nothing else in ``emcore`` depends on it.

References
----------
.. [1] K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian, "Image denoising by sparse 3-D
       transform-domain collaborative filtering", IEEE Trans. Image Process. 16(8),
       2080–2095, 2007.
.. [2] Y. Mäkinen, L. Azzari, A. Foi, "Collaborative filtering of correlated noise: exact
       transform-domain variance for improved shrinkage and patch matching", IEEE Trans.
       Image Process. 29, 8339–8354, 2020.
.. [3] M. Mäkitalo, A. Foi, "Optimal inversion of the generalized Anscombe transformation
       for Poisson–Gaussian noise", IEEE Trans. Image Process. 22(1), 91–103, 2013.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped
from emcore.methods.common import NOISE_PARAMS, noise_for
from emcore.methods.lesson import Box, Lesson, LessonFigure, Panel, example_image
from emcore.methods.registry import Method, Param, RunContext, register
from emcore.noise.estimation import estimate_noise, estimate_poisson_gaussian
from emcore.noise.models import Gaussian, Poisson, PoissonGaussian
from emcore.noise.vst import anscombe_forward, anscombe_inverse_exact, vst_parameters
from emcore.progress import ProgressFn, StopFn
from emcore.progress import report as _report

__all__ = ["denoise_bm3d", "denoise_bm3d_stack", "denoise_bm3d_cube", "estimate_bm3d_seconds", "PROFILES"]

#: Parameter profiles of the ``bm3d`` package: "np" (normal), "refilter", "vn" (very noisy),
#: "vn_old", "high" (higher quality, slower), "deb" (for deblurring).
PROFILES = ("np", "refilter", "vn", "vn_old", "high", "deb")

# BM3D works on 8×8 patches (Dabov et al. 2007, Table 1); smaller images are refused.
_MIN_SIDE = 8


def _bm3d_module():
    try:
        import bm3d
    except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
        raise EmcoreError("BM3D needs the 'bm3d' package (pip install bm3d); it is not installed here.") from exc
    return bm3d


def _check_profile(profile) -> None:
    if isinstance(profile, str) and profile not in PROFILES:
        raise EmcoreError(f"Unknown BM3D profile {profile!r}; use one of {', '.join(PROFILES)}.")


def _as_array(data, ndim: int, what: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(f"The {what} holds values of type {arr.dtype}, not real numbers; BM3D needs intensities.")
    if arr.ndim != ndim:
        raise EmcoreError(f"BM3D for a {what} needs a {ndim}-D array, not one of shape {arr.shape}.")
    # A float32 copy: the input is never touched, and later in-place work is safe.
    arr = np.array(arr, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(arr)):
        raise EmcoreError(f"The {what} holds NaN or infinite values; replace them before denoising.")
    return arr


def _check_side(h: int, w: int, what: str) -> None:
    if h < _MIN_SIDE or w < _MIN_SIDE:
        raise EmcoreError(f"The {what} is {h}×{w} pixels; BM3D needs at least {_MIN_SIDE}×{_MIN_SIDE}.")


def _params_of(noise) -> tuple[float, float]:
    if not isinstance(noise, (Poisson, PoissonGaussian, Gaussian)):
        raise EmcoreError("BM3D needs a noise model from emcore.noise (Poisson, PoissonGaussian or "
                          f"Gaussian), not {noise!r}.")
    return vst_parameters(noise)



def _check_stop(should_stop: StopFn | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise Stopped(f"Stopped on request {what}.")


_PROFILE_CLASSES = {"np": "BM3DProfile", "refilter": "BM3DProfileRefilter", "vn": "BM3DProfileVN",
                    "vn_old": "BM3DProfileVNOld", "high": "BM3DProfileHigh", "deb": "BM3DProfileDeb"}


def _single_threaded(profile):
    """The named profile with the library's own threading off.

    With ``num_threads != 1`` the bm3d library aggregates in thread order and two runs differ
    in the last bits — enough, after the inverse transform of a low-count slice, to move
    results by ~1e-3 (its own profile notes say so). Stacks and cubes therefore run
    single-threaded planes side by side in our thread pool (the library releases the GIL):
    bit-for-bit reproducible, and faster on 2 cores than the library's threading.
    """
    bm3d = _bm3d_module()
    obj = getattr(bm3d, _PROFILE_CLASSES[profile])() if isinstance(profile, str) else profile
    obj.num_threads = 1
    return obj


def _map_planes(planes, fn, *, progress, should_stop, t0: float, what: str):
    """``[fn(p) for p in planes]`` on a pool of one worker per core, in order, with progress and stop."""
    n = len(planes)
    workers = max(1, min(os.cpu_count() or 1, n))
    out = [None] * n
    done = 0
    with ThreadPoolExecutor(workers) as pool:
        # Submit a window at a time so that a stop request is honoured within a few planes.
        for start in range(0, n, workers * 2):
            _check_stop(should_stop, f"after {done} of {n} {what}s")
            idx = range(start, min(n, start + workers * 2))
            for i, res in zip(idx, pool.map(lambda j: fn(planes[j]), idx)):
                out[i] = res
                done += 1
                _report(progress, done, n, t0, f"BM3D: {what} {done} of {n}")
    return out


def _denoise_plane(x: np.ndarray, a: float, b: float, profile) -> np.ndarray:
    """VST → BM3D(sigma = 1) → exact unbiased inverse; plain BM3D when ``a = 0``."""
    bm3d = _bm3d_module()
    if a == 0.0:
        return np.asarray(bm3d.bm3d(x, sigma_psd=b, profile=profile), dtype=np.float32)
    d = bm3d.bm3d(anscombe_forward(x, a, b), sigma_psd=1.0, profile=profile)
    return anscombe_inverse_exact(d, a, b)


def denoise_bm3d(image, *, noise=None, profile="np", progress: ProgressFn | None = None,
                 should_stop: StopFn | None = None) -> np.ndarray:
    """Denoise a 2-D image with BM3D, through a variance-stabilising transform when needed.

    Parameters
    ----------
    image : (H, W) array_like
        Noisy image, in the units in which ``noise`` holds. Not modified.
    noise : Poisson, PoissonGaussian or Gaussian, optional
        Noise model of :mod:`emcore.noise`. ``None`` (default) estimates a Poisson–Gaussian
        model from the image (:func:`~emcore.noise.estimation.estimate_poisson_gaussian`).
    profile : str or bm3d.BM3DProfile
        Parameter profile of the ``bm3d`` package, one of :data:`PROFILES`; default "np".
    progress : callable, optional
        Receives :class:`~emcore.progress.Progress` reports (step 0 and 1 of 1).
    should_stop : callable, optional
        Checked before the work starts; ``True`` raises :class:`emcore.errors.Stopped`
        (an :class:`~emcore.errors.EmcoreError`). One BM3D call cannot be interrupted.

    Returns
    -------
    ndarray of float32, shape (H, W)

    Raises
    ------
    EmcoreError
        For a constant image ("nothing to denoise"), NaN/Inf values, a wrong shape or an
        unknown profile.

    Notes
    -----
    Gaussian noise: ``bm3d.bm3d(image, sigma_psd=sigma)``. Otherwise, with ``(a, b)`` from
    the model (``Poisson(dose)`` → ``a = 1/dose, b = 0``):
    ``y = I(bm3d.bm3d(f(image), sigma_psd=1))`` with ``f`` the generalised Anscombe
    transform and ``I`` its exact unbiased inverse (:mod:`emcore.noise.vst`).

    References
    ----------
    Dabov et al., IEEE TIP 16(8), 2007; Mäkitalo & Foi, IEEE TIP 22(1), 2013.
    """
    _check_profile(profile)
    x = _as_array(image, 2, "image")
    _check_side(*x.shape, "image")
    if float(x.max()) == float(x.min()):
        raise EmcoreError("The image is constant: there is nothing to denoise.")
    t0 = time.perf_counter()
    _check_stop(should_stop, "before BM3D started")
    if noise is None:
        noise = estimate_poisson_gaussian(x).model()
    a, b = _params_of(noise)
    _report(progress, 0, 1, t0, "BM3D: denoising the image")
    out = _denoise_plane(x, a, b, profile)
    _report(progress, 1, 1, t0, "BM3D: done")
    return out


def denoise_bm3d_stack(stack, *, noise=None, profile="np", progress: ProgressFn | None = None,
                       should_stop: StopFn | None = None) -> np.ndarray:
    """Denoise a ``(T, H, W)`` stack with BM3D, frame by frame.

    Parameters
    ----------
    stack : (T, H, W) array_like
        Not modified.
    noise : noise model, optional
        As in :func:`denoise_bm3d`; ``None`` estimates one model for the whole stack, pooled
        over its frames (:func:`~emcore.noise.estimation.estimate_noise`).
    profile, progress, should_stop
        As in :func:`denoise_bm3d`; progress is reported and the stop request checked
        after every frame.

    Returns
    -------
    ndarray of float32, shape (T, H, W)
        Frames that are constant are returned unchanged.
    """
    _check_profile(profile)
    x = _as_array(stack, 3, "stack")
    _check_side(x.shape[1], x.shape[2], "frame")
    if float(x.max()) == float(x.min()):
        raise EmcoreError("The stack is constant: there is nothing to denoise.")
    t0 = time.perf_counter()
    _check_stop(should_stop, "before BM3D started")
    if noise is None:
        noise = estimate_noise(x, "stack").model()
    a, b = _params_of(noise)
    n = x.shape[0]
    _report(progress, 0, n, t0, f"BM3D: frame 1 of {n}")
    prof = _single_threaded(profile)

    def one(frame):
        return frame if float(frame.max()) == float(frame.min()) else _denoise_plane(frame, a, b, prof)

    frames = _map_planes(list(x), one, progress=progress, should_stop=should_stop, t0=t0, what="frame")
    return np.stack(frames).astype(np.float32, copy=False)


def _energy_groups(n_channels: int, bin_energy: int) -> list[tuple[int, int]]:
    return [(s, min(s + bin_energy, n_channels)) for s in range(0, n_channels, bin_energy)]


def denoise_bm3d_cube(cube, *, noise=None, bin_energy: int = 1, profile="np",
                      progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> np.ndarray:
    """Denoise a ``(H, W, E)`` spectrum image with BM3D, one energy slice at a time.

    Parameters
    ----------
    cube : (H, W, E) array_like
        Spectrum image, energy last. Not modified.
    noise : noise model, optional
        Noise of ONE raw energy channel, as in :func:`denoise_bm3d`. ``None`` estimates it
        from the (binned) cube, pooled over slices.
    bin_energy : int
        Sum this many neighbouring channels before denoising (the last group may be
        shorter); 1 (default) denoises every channel. Fewer, brighter slices: faster and
        better conditioned at low counts.
    profile, progress, should_stop
        As in :func:`denoise_bm3d`; progress is reported and the stop request checked after
        every (binned) slice.

    Returns
    -------
    ndarray of float32, shape (H, W, E)
        The same shape as the input.

    Notes
    -----
    *Binning.* A group of ``k`` channels is summed: counts stay counts, so the Poisson part
    keeps its ``a`` while the Gaussian part grows to ``b·√k``. After denoising, each summed
    slice is spread back over its channels in proportion to the channels' totals over the
    whole image (their share of the mean spectrum), so the output keeps the input's shape,
    the sum over a group equals the denoised summed slice, and the spectral shape inside a
    group is the mean spectrum's. Groups whose channel totals are not all positive are
    split equally. Spectral detail finer than ``bin_energy`` channels is therefore not
    recovered.

    *Slices* that are constant (e.g. channels with no counts at all) are passed through.
    """
    _check_profile(profile)
    if isinstance(bin_energy, bool) or int(bin_energy) != bin_energy or bin_energy < 1:
        raise EmcoreError(f"The energy binning must be a whole number of channels (1 or more), not {bin_energy!r}.")
    bin_energy = int(bin_energy)
    x = _as_array(cube, 3, "spectrum image")
    h, w, e = x.shape
    _check_side(h, w, "spectrum image")
    if bin_energy > e:
        raise EmcoreError(f"Cannot bin {bin_energy} channels together: the spectrum image has only {e}.")
    if float(x.max()) == float(x.min()):
        raise EmcoreError("The spectrum image is constant: there is nothing to denoise.")
    t0 = time.perf_counter()
    _check_stop(should_stop, "before BM3D started")
    groups = _energy_groups(e, bin_energy)
    binned = x if bin_energy == 1 else np.stack(
        [x[:, :, s:t].sum(axis=2, dtype=np.float64).astype(np.float32) for s, t in groups], axis=2)
    if noise is None:
        est = estimate_noise(binned, "cube")
        # The estimate describes full groups of bin_energy channels: b² scales with k.
        a, b_raw = est.a, est.b / math.sqrt(bin_energy)
        if est.model().__class__ is Gaussian:
            a = 0.0
    else:
        a, b_raw = _params_of(noise)
    n = len(groups)
    out = np.empty_like(x)
    _report(progress, 0, n, t0, f"BM3D: energy slice 1 of {n}")
    prof = _single_threaded(profile)

    def one(g):
        plane = np.ascontiguousarray(binned[:, :, g])
        if float(plane.max()) == float(plane.min()):
            return plane
        return _denoise_plane(plane, a, b_raw * math.sqrt(groups[g][1] - groups[g][0]), prof)

    planes = _map_planes(list(range(n)), one, progress=progress, should_stop=should_stop, t0=t0, what="energy slice")
    for g, (s, t) in enumerate(groups):
        den = planes[g]
        k = t - s
        if k == 1:
            out[:, :, s] = den
        else:
            totals = x[:, :, s:t].sum(axis=(0, 1), dtype=np.float64)
            share = totals / totals.sum() if np.all(totals > 0) else np.full(k, 1.0 / k)
            out[:, :, s:t] = den[:, :, None] * share.astype(np.float32)[None, None, :]
    return out


@lru_cache(maxsize=8)
def _bm3d_timing(profile) -> tuple[float, float]:
    """(seconds per call, seconds per pixel) of BM3D here, from two small probes."""
    bm3d = _bm3d_module()
    rng = np.random.default_rng(0)
    sides = (64, 128)
    times = []
    for side in sides:
        yy, xx = np.mgrid[0:side, 0:side]
        probe = 10.0 + 3.0 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + rng.standard_normal((side, side))
        best = math.inf
        for _ in range(2):  # the faster of two: the first may pay for loading the library
            t = time.perf_counter()
            bm3d.bm3d(probe, sigma_psd=1.0, profile=profile)
            best = min(best, time.perf_counter() - t)
        times.append(best)
    per_pixel = max((times[1] - times[0]) / (sides[1] ** 2 - sides[0] ** 2), 1e-9)
    per_call = max(times[0] - per_pixel * sides[0] ** 2, 0.0)
    return per_call, per_pixel


def estimate_bm3d_seconds(shape, *, kind: str | None = None, bin_energy: int = 1, profile="np") -> float:
    """Rough wall-clock seconds that BM3D would take on data of this shape, on this machine.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` image, ``(T, H, W)`` stack or ``(H, W, E)`` spectrum image.
    kind : {"image", "stack", "cube"}, optional
        Needed only to tell a stack from a cube; a 3-D shape is taken as a cube by default.
    bin_energy : int
        Energy binning of a cube, as in :func:`denoise_bm3d_cube`.
    profile : str
        BM3D profile.

    Returns
    -------
    float
        Seconds, from two small timing probes (64² and 128² pixels, about 1 s on first
        use, cached for the process) extrapolated as ``slices × (per-call + per-pixel ×
        H·W)``. Good to a factor of about 1.5; meant for warning before long runs.
    """
    _check_profile(profile)
    shape = tuple(int(s) for s in shape)
    if kind is None:
        kind = "image" if len(shape) == 2 else "cube"
    if kind == "image" and len(shape) == 2:
        (h, w), slices = shape, 1
    elif kind == "stack" and len(shape) == 3:
        slices, h, w = shape
    elif kind == "cube" and len(shape) == 3:
        h, w, e = shape
        slices = math.ceil(e / max(int(bin_energy), 1))
    else:
        raise EmcoreError(f"Cannot time BM3D for a {kind} of shape {shape}; images are (H, W), "
                          "stacks (T, H, W), cubes (H, W, E).")
    per_call, per_pixel = _bm3d_timing(profile)
    return float(slices * (per_call + per_pixel * h * w))



# -- BM3D ------------------------------------------------------------------------------
def _run_bm3d(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    noise = noise_for(ds, params, ctx)
    common = dict(noise=noise, profile=params["profile"], progress=ctx.progress, should_stop=ctx.should_stop)
    if ds.kind == "image":
        return denoise_bm3d(ds.data, **common)
    if ds.kind == "stack":
        return denoise_bm3d_stack(ds.data, **common)
    return denoise_bm3d_cube(ds.data, bin_energy=params["bin_energy"], **common)


# -- the Learn page's figure -------------------------------------------------------------
def block_matching(image: np.ndarray, ref: tuple[int, int], block: int = 12, search: int = 39,
                   n: int = 8, prefilter: float = 2.0) -> list[tuple[int, int]]:
    """Top-left corners of the ``n`` blocks most similar to the block at ``ref`` (itself first).

    BM3D's grouping step [1]_ (Sec. 2.1): ``block``×``block`` blocks within a ``search``-px
    window (39 px in the paper), ranked by the squared distance. The paper uses 8-px blocks at
    moderate noise and larger ones for strong noise; 12 px matches the column size of the
    example. Like the paper's coarse prefiltering for strong noise, the distance is taken on a
    smoothed copy (Gaussian, ``prefilter`` px).
    """
    from scipy import ndimage as ndi

    a = ndi.gaussian_filter(np.asarray(image, np.float64), prefilter) if prefilter else np.asarray(image, np.float64)
    h, w = a.shape
    r0, c0 = ref
    refb = a[r0:r0 + block, c0:c0 + block]
    half = search // 2
    cands = []
    for r in range(max(0, r0 - half), min(h - block, r0 + half) + 1):
        for c in range(max(0, c0 - half), min(w - block, c0 + half) + 1):
            d = float(np.sum((a[r:r + block, c:c + block] - refb) ** 2))
            cands.append((d, r, c))
    cands.sort()
    chosen: list[tuple[int, int]] = []
    for _, r, c in cands:  # keep blocks that overlap little, so the figure shows distinct matches
        if all(abs(r - q) >= block // 2 or abs(c - p) >= block // 2 for q, p in chosen):
            chosen.append((r, c))
        if len(chosen) == n:
            break
    return chosen


def block_group(image: np.ndarray, ref: tuple[int, int], block: int = 12, n: int = 8):
    """BM3D's group for the block at ``ref``: the matched corners, the blocks tiled 2 rows × n/2
    (NaN between them) for display, and their average."""
    matches = block_matching(image, ref, block=block, n=n)
    group = [np.asarray(image[r:r + block, c:c + block], np.float32) for r, c in matches]
    per_row = (len(group) + 1) // 2
    tiles = np.full((2 * block + 1, per_row * (block + 1) - 1), np.nan, np.float32)
    for k, b in enumerate(group):
        r, c = divmod(k, per_row)
        tiles[r * (block + 1):r * (block + 1) + block, c * (block + 1):c * (block + 1) + block] = b
    return matches, tiles, np.mean(group, axis=0)


def _lesson_figure() -> LessonFigure:
    clean, noisy = example_image()
    block = 12
    matches, tiles, mean = block_group(noisy, (47, 46), block=block, n=8)
    r0, c0 = matches[0]
    boxes = tuple(Box(r, c, block, block, "limegreen" if k == 0 else "orange") for k, (r, c) in enumerate(matches))
    return LessonFigure((Panel("Noisy example, 20 e⁻/px", noisy, boxes=boxes),
                         Panel("The group of 8 matched blocks", tiles), Panel("Their average", mean),
                         Panel("The clean block (unknown in practice)", clean[r0:r0 + block, c0:c0 + block])))


LESSON = Lesson(
    assumes="An image contains many small patches that look alike (repeated columns, flat areas, edges "
            "along a facet). The noise is Poisson or Poisson–Gaussian; a variance-stabilising transform "
            "(generalised Anscombe) turns it into noise of constant strength before filtering, and an exact "
            "unbiased inverse brings the result back.",
    needs="Only the noisy data and a noise level (estimated from the image when not given). No clean data, "
          "no GPU. Its time grows with the number of pixels (a spectrum image is done slice by slice, so "
          "it takes far longer than an image); the estimate beside Run is timed on this machine.",
    choose_when="A strong, well-understood baseline for single images and frames, including lattices and "
                "nanoparticles. It rarely invents structure, so it is a good reference against which to "
                "judge the networks. It struggles at the very lowest doses (below ~1 e⁻/px), where similar "
                "patches can no longer be found in the noise.",
    parameters="**Noise gain a and floor b** (variance = a·signal + b²; estimated when unset); **profile** "
               "('np' normal, 'refilter', 'vn' for very noisy data); **energy binning** for spectrum images.",
    reference="K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian, “Image denoising by sparse 3-D transform-domain "
              "collaborative filtering”, *IEEE Trans. Image Process.* 16, 2080–2095 (2007); M. Mäkitalo, A. Foi, "
              "“Optimal inversion of the generalized Anscombe transformation for Poisson–Gaussian noise”, "
              "*IEEE Trans. Image Process.* 22, 91–103 (2013).",
    caption="Block matching, BM3D's first step, on a simulated HRTEM image at 20 e⁻/px: for the reference "
            "block (green, on an atomic column) the most similar blocks in the 39-px search window (orange) "
            "are stacked into a group; averaging the group (right) already shows the column more clearly "
            "than any single noisy block. BM3D then filters each group in a 3-D transform domain.",
    figure=_lesson_figure,
    notice="Licence: BM3D comes from the `bm3d` package of Tampere University, which is free for "
           "non-commercial use only; commercial users need a licence from its authors.",
)


register(Method(
    name="bm3d",
    label="BM3D",
    description="Block-matching and 3-D collaborative filtering, with a variance-stabilising "
                "transform for Poisson and Poisson–Gaussian noise.",
    kind="classical",
    accepts=("image", "stack", "cube"),
    params=NOISE_PARAMS + (
        Param("profile", "choice", "np", choices=("np", "refilter", "vn", "high", "deb"), label="BM3D profile",
              help="Parameter set of the bm3d package: 'np' (normal), 'refilter', 'vn' (very noisy), 'high' (high quality)."),
        Param("bin_energy", "int", 1, min=1, max=64, label="Energy binning (cubes)", kinds=("cube",),
              help="Spectrum images only: denoise sums of this many channels (faster, brighter slices), "
                   "then spread each back over its channels."),
    ),
    run=_run_bm3d,
    details="Groups similar patches into 3-D stacks, shrinks them in a 3-D transform domain and "
            "averages the overlapping estimates (Dabov et al., IEEE TIP 2007; Mäkitalo & Foi 2013 for "
            "the exact unbiased inverse of the generalised Anscombe transform). Stacks are done frame by "
            "frame and spectrum images slice by slice. The bm3d package is free for non-commercial use only.",
    estimate_seconds=lambda shape, kind, p: estimate_bm3d_seconds(shape, kind=kind, bin_energy=p["bin_energy"],
                                                                  profile=p["profile"]),
    lesson=LESSON,
    cost_hint="A spectrum image costs one BM3D per energy slice: bin the energy axis (Energy binning) to divide "
              "the time, or use PCA for a quick look.",
))
