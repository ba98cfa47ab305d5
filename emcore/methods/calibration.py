"""Self-calibration: choose a denoiser's free parameters from the noisy data alone.

Two no-reference criteria, each an unbiased stand-in for the true error up to a constant:

* **count splitting** (raw counts): a binomial split of the counts gives two independent
  Poisson halves; the denoiser sees one half, its output is scored against the other
  (:func:`emcore.evaluate.count_split.count_split_error`, rescaled to the full dose). Its
  expectation is the true mean squared error of the denoised half plus the known noise
  variance of the other, so ranking by it is ranking by the true error.
* **J-invariant loss** (any data with pixel-wise independent noise; Batson & Royer 2019,
  Sec. 3): a grid of pixels is replaced by an interpolation of their neighbours, the
  denoiser runs on that image, and its output at the hidden pixels is compared with their
  noisy values. A function that does not see a pixel cannot fit that pixel's noise, so the
  loss equals the true error plus the noise variance (Batson & Royer 2019, Prop. 1). The
  denoiser itself is not J-invariant; as in scikit-image's ``calibrate_denoiser`` the
  masking makes the comparison fair.

:func:`calibrate` evaluates a small candidate set on a central crop (bounded time) and
returns the best candidate with the whole curve, so the app can show why it was chosen.

References
----------
J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
scikit-image, ``skimage.restoration.calibrate_denoiser`` (J-invariant calibration).
Neufeld et al., "Data thinning for convolution-closed distributions", JMLR 25 (2024).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from emcore.errors import EmcoreError
from emcore.evaluate.count_split import count_split_error, count_split_errors

# Neighbour weights that replace a hidden pixel: the 8-neighbourhood, diagonals at half
# weight, the pixel itself excluded (as in Batson & Royer's released code).
_KERNEL = np.array([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]], np.float64)
_KERNEL /= _KERNEL.sum()
# Grid of hidden pixels: one pixel in GRID² per pass (Batson & Royer use 4).
GRID = 4
# Passes (grid phases) averaged per candidate: 4 of the 16 phases, spread over the cell.
PHASES = ((0, 0), (2, 2), (0, 2), (2, 0))
# Side of the central crop the criterion is computed on (time stays bounded on big images).
CROP = 256


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes
    ----------
    best : dict
        The candidate parameters with the lowest loss.
    criterion : str
        ``"count-split"`` or ``"J-invariant"``.
    curve : list of (dict, float)
        Every candidate tried and its loss (lower is better), in the order tried.
    seconds : float
        Time spent.
    why : str
        One sentence: which criterion, and why it applies to these data.
    """

    best: dict
    criterion: str
    curve: list = field(default_factory=list)
    seconds: float = 0.0
    why: str = ""

    def to_dict(self) -> dict:
        return {"best": dict(self.best), "criterion": self.criterion, "seconds": round(self.seconds, 3),
                "curve": [{"params": dict(p), "loss": float(v)} for p, v in self.curve], "why": self.why}


def central_crop(image: np.ndarray, side: int = CROP) -> np.ndarray:
    """The central ``side × side`` window of a 2-D image (the whole image when smaller)."""
    r0, c0 = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    return image[r0:r0 + side, c0:c0 + side]


def neighbour_mean(data: np.ndarray) -> np.ndarray:
    """Every pixel replaced by the weighted mean of its 8 neighbours (itself excluded, as in
    :func:`masked_input`), for an image ``(H, W)`` or each slice of an ``(H, W, N)`` array; float64."""
    a = np.asarray(data, np.float64)
    return ndi.convolve(a, _KERNEL if a.ndim == 2 else _KERNEL[:, :, None], mode="reflect")


def masked_input(image: np.ndarray, phase: tuple[int, int], grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """The image with one grid phase of pixels replaced by their neighbours' mean, and that mask."""
    mask = np.zeros(image.shape, bool)
    mask[phase[0]::grid, phase[1]::grid] = True
    interp = ndi.convolve(image.astype(np.float64), _KERNEL, mode="reflect")
    out = image.astype(np.float64).copy()
    out[mask] = interp[mask]
    return out.astype(np.float32), mask


def hidden_errors(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, grid: int = GRID,
                  phases: Sequence[tuple[int, int]] = PHASES) -> tuple[np.ndarray, np.ndarray]:
    """Squared error of ``fn`` at each hidden pixel against its noisy value (0 elsewhere), and
    the mask of the pixels hidden in any of the ``phases``.

    Parameters
    ----------
    fn : callable
        Maps a 2-D float32 image to its denoised version of the same shape.
    image : (H, W) ndarray
        The noisy image (at least ``2 * grid`` pixels on each side).
    """
    errors, hidden = hidden_errors_many(lambda x: [fn(x)], image, grid, phases)
    return errors[0], hidden


def hidden_errors_many(fn_many: Callable[[np.ndarray], Sequence[np.ndarray]], image: np.ndarray,
                       grid: int = GRID, phases: Sequence[tuple[int, int]] = PHASES) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hidden_errors` of several denoisers at once: ``fn_many(x)`` returns one output per
    denoiser. Each masked input is made once and handed to all of them (a filter that shares
    work between its settings does it once per pass). Returns errors ``(N, H, W)`` and the mask.
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or min(img.shape) < 2 * grid:
        raise EmcoreError(f"The J-invariant loss needs an image of at least {2 * grid} × {2 * grid} pixels.")
    errors, hidden = None, np.zeros(img.shape, bool)
    for phase in phases:
        x, mask = masked_input(img, phase, grid)
        outs = list(fn_many(x))
        if errors is None:
            errors = np.zeros((len(outs),) + img.shape)
        for err, out in zip(errors, outs):
            err[mask] = (np.asarray(out, np.float64)[mask] - img[mask]) ** 2
        hidden |= mask
    return errors, hidden


def j_invariant_loss(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, grid: int = GRID,
                     phases: Sequence[tuple[int, int]] = PHASES) -> float:
    """Mean squared error of ``fn`` at hidden pixels against their noisy values (lower is better)."""
    errors, hidden = hidden_errors(fn, image, grid, phases)
    return float(errors[hidden].mean())


def count_split_loss(fn: Callable[[np.ndarray], np.ndarray], counts: np.ndarray, seed: int = 0) -> float:
    """Count-split estimate of ``fn``'s mean squared error, on the full-dose scale (lower is better)."""
    res = count_split_error(fn, np.asarray(counts), np.random.default_rng(seed))
    return float(res.estimated_mse)


def calibrate(
    make_fn: Callable[[dict], Callable[[np.ndarray], np.ndarray]],
    image: np.ndarray,
    candidates: Sequence[dict],
    *,
    counts: np.ndarray | None = None,
    seed: int = 0,
    max_seconds: float | None = None,
    make_many: Callable[[list[dict]], Callable[[np.ndarray], Sequence[np.ndarray]]] | None = None,
) -> CalibrationResult:
    """Pick the candidate parameters whose denoiser scores best on the data itself.

    Parameters
    ----------
    make_fn : callable
        ``make_fn(params)`` returns the denoiser ``f(image) -> image`` for one candidate.
    image : (H, W) ndarray
        The noisy image (a central crop of at most :data:`CROP` px is used).
    candidates : sequence of dict
        Parameter sets to try, in order (the first is also the answer when time runs out).
    counts : ndarray, optional
        Raw counts behind ``image`` (same shape): count splitting is used instead of the
        J-invariant loss, and ``make_fn``'s denoiser must accept counts-scaled images.
    max_seconds : float, optional
        Stop trying candidates after this long (the best so far wins). Not used with ``make_many``.
    make_many : callable, optional
        ``make_many(candidates)`` returns ``g(image) -> [output of each candidate]``, the same
        outputs as ``make_fn``'s denoisers, computed together (a Fourier filter transforms the
        image once for all its settings). Every candidate is then scored on the same inputs
        as with ``make_fn``, in one pass.
    """
    if not candidates:
        raise EmcoreError("There is nothing to calibrate: no candidate parameters were given.")
    t0 = time.perf_counter()
    crop = central_crop(np.asarray(image, np.float32))
    if counts is not None:
        crop_counts = central_crop(np.asarray(counts))
        criterion = "count-split"
        why = ("Count splitting: the data are raw counts, so two independent halves give an unbiased "
               "estimate of each setting's true error.")

        def losses(fn_many):
            rng = np.random.default_rng(seed)
            return [float(r.estimated_mse) for r in count_split_errors(fn_many, crop_counts, rng)]
    else:
        criterion = "J-invariant"
        why = ("J-invariant loss (Noise2Self): the data are not raw counts, so each setting is scored on "
               "pixels it did not see; this needs noise independent from pixel to pixel.")

        def losses(fn_many):
            errors, hidden = hidden_errors_many(fn_many, crop)
            return [float(e[hidden].mean()) for e in errors]
    curve: list[tuple[dict, float]] = []
    if make_many is not None:  # every candidate in one pass
        params = [dict(p) for p in candidates]
        values = losses(make_many([dict(p) for p in params]))
        curve = [(p, v) for p, v in zip(params, values) if math.isfinite(v)]
    else:
        for params in candidates:
            fn = make_fn(dict(params))
            value = losses(lambda x, fn=fn: [fn(x)])[0]
            if not math.isfinite(value):
                continue
            curve.append((dict(params), value))
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    if not curve:
        raise EmcoreError("No candidate setting gave a finite score on these data; set the parameters by hand.")
    best = min(curve, key=lambda pv: pv[1])[0]
    return CalibrationResult(best=best, criterion=criterion, curve=curve, seconds=time.perf_counter() - t0, why=why)


def grid(**axes: Sequence[Any]) -> list[dict]:
    """Every combination of the given parameter values, as a list of dicts (first axis slowest)."""
    out = [{}]
    for name, values in axes.items():
        out = [{**o, name: v} for o in out for v in values]
    return out


def calibrate_dataset(
    ds,
    make_fn: Callable[[dict], Callable[[np.ndarray], np.ndarray]],
    candidates: Sequence[dict],
    *,
    seed: int = 0,
    max_seconds: float | None = None,
    make_many: Callable[[list[dict]], Callable[[np.ndarray], Sequence[np.ndarray]]] | None = None,
) -> CalibrationResult:
    """:func:`calibrate` on what a dataset offers: an image, or the middle frame of a stack.

    Count splitting is used when the dataset holds counts (raw, or counts / dose of a known
    Poisson model), the J-invariant loss otherwise. ``make_fn(params)`` returns a denoiser of
    one 2-D image that does not depend on the image's intensity scale (it measures what it
    needs, such as the noise floor, on the image it is given), so the same candidate means
    the same thing on a count-split half.
    """
    from emcore.evaluate.count_split import counts_of

    if ds.kind not in ("image", "stack"):
        raise EmcoreError("Self-calibration works on images and stacks of images.")
    counts = counts_of(ds)
    pick = (lambda a: a) if ds.kind == "image" else (lambda a: a[a.shape[0] // 2])
    return calibrate(make_fn, pick(ds.data), candidates, counts=None if counts is None else pick(counts),
                     seed=seed, max_seconds=max_seconds, make_many=make_many)


def run_calibrated(ds, ctx, apply: Callable[[np.ndarray, dict], tuple[np.ndarray, Any]], candidates: Sequence[dict],
                   what: str, apply_many: Callable[[np.ndarray, list[dict]], Sequence[np.ndarray]] | None = None,
                   ) -> tuple[np.ndarray, dict, list]:
    """Calibrate, then filter every frame with the chosen setting; for a method's ``run``.

    ``apply(frame, params)`` returns the filtered frame and what the setting resolved to on
    that frame (e.g. the noise floor used). The choice and the whole curve are recorded in
    ``ctx`` (log line, ``ctx.artifacts["calibration"]``). ``apply_many(frame, candidates)``,
    when given, returns the filtered frame of every candidate at once (see :func:`calibrate`'s
    ``make_many``). Returns the result (the dataset's shape), the chosen parameters and the
    per-frame resolved values.
    """
    from emcore.progress import report

    many = None if apply_many is None else (lambda cands: (lambda x: apply_many(x, cands)))
    cal = calibrate_dataset(ds, lambda p: (lambda x: apply(x, p)[0]), candidates, seed=ctx.seed, make_many=many)
    best = cal.best
    shown = ", ".join(f"{k} {v:g}" for k, v in best.items() if isinstance(v, (int, float)))
    ctx.log.append(f"Self-calibrated by {cal.criterion} ({len(cal.curve)} settings, {cal.seconds:.1f} s): {shown}.")
    ctx.artifacts["calibration"] = cal.to_dict()
    frames = ds.data if ds.kind == "stack" else ds.data[None]
    out = np.empty(frames.shape, np.float32)
    resolved, t0 = [], time.perf_counter()
    for i, frame in enumerate(frames):
        out[i], r = apply(frame, best)
        resolved.append(r)
        report(ctx.progress, i + 1, len(frames), t0, f"{what}: frame {i + 1} of {len(frames)}")
    return (out if ds.kind == "stack" else out[0]), best, resolved
