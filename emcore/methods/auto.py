"""Auto: run the methods that fit the data and the time budget, rank them by a no-reference
score, and return the best one's result (all of them are kept for Compare).

The score is the one self-calibration uses (:mod:`emcore.methods.calibration`): for raw
counts, count splitting — each method denoises one binomial half and is scored against the
other half, ``mean((f(A) − B)²) − mean(B)``, an unbiased estimate of its squared error at
half the dose (Poisson variance equals the mean); otherwise the J-invariant loss of
Noise2Self — each method denoises a central crop whose grid pixels were replaced by their
neighbours' mean and is scored at those pixels. Both estimate the true error up to a
constant shared by every method, so the ranking is the ranking by true error. Each score
comes with a standard error from 16 × 16-pixel blocks; two methods within two standard
errors of each other are called a tie.

References
----------
J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
Neufeld et al., "Data thinning for convolution-closed distributions", JMLR 25 (2024).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped
from emcore.evaluate.count_split import count_split, counts_of, half_dataset
from emcore.evaluate.reference import psnr
from emcore.methods.calibration import CROP, GRID, PHASES, central_crop, hidden_errors, masked_input
from emcore.methods.lesson import Curve, Lesson, LessonFigure, Panel, example_image
from emcore.methods.registry import Method, Param, RunContext, denoise, methods_for, register

# Runs predicted to take at least this long teach Auto how much slower than estimated this
# machine is now (shorter ones are dominated by fixed costs); the factor is capped.
_LEARN_FROM_S = 2.0
_MAX_SLOWDOWN = 5.0
# Blocks of the standard error (pixels are correlated within a denoised neighbourhood).
_BLOCK = 16


def _score_runs(ds: Dataset, counts) -> float:
    """Scoring costs this many full runs on top of the run kept: one half (count split), or
    four masked crops of at most CROP² pixels (J-invariant; a stack scores one frame)."""
    if counts is not None:
        return 1.0
    h, w = ds.spatial_shape
    frames = ds.data.shape[0] if ds.kind == "stack" else 1
    return 4.0 * min(h, CROP) * min(w, CROP) / (h * w * frames)


def _blocks(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Means of per-pixel values over 16 × 16 blocks (2-D or (.., H, W)): the units of the
    standard error, since pixels are correlated within a denoised neighbourhood."""
    v = values if values.ndim == 2 else values.reshape(-1, *values.shape[-2:]).mean(axis=0)
    m = np.ones(v.shape, bool) if mask is None else (mask if mask.ndim == 2 else mask.reshape(-1, *mask.shape[-2:]).any(0))
    h, w = (v.shape[0] // _BLOCK) * _BLOCK, (v.shape[1] // _BLOCK) * _BLOCK
    if h < 2 * _BLOCK or w < _BLOCK:  # too small for blocks: every pixel is one
        return v[m].astype(np.float64)
    sums = (v * m)[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).sum(axis=(1, 3))
    counts = m[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).sum(axis=(1, 3))
    ok = counts > 0
    return (sums[ok] / counts[ok]).astype(np.float64)


def _mean_se(blocks: np.ndarray) -> tuple[float, float]:
    return float(blocks.mean()), float(blocks.std(ddof=1) / math.sqrt(blocks.size)) if blocks.size > 1 else 0.0


def _spatial_last(a: np.ndarray, kind: str) -> np.ndarray:
    """Per-pixel values with the two spatial axes last (cubes are (H, W, E))."""
    return np.moveaxis(a, 2, 0) if kind == "cube" else a


def _score_counts(ds: Dataset, name: str, counts: np.ndarray, seed: int, stop) -> np.ndarray:
    a, b = count_split(counts, np.random.default_rng(seed))
    est = denoise(half_dataset(ds, a), name, seed=seed, should_stop=stop).data.astype(np.float64)
    per_pixel = (est - b) ** 2 - b  # E[(f(A) − B)² − B] = E[(f(A) − signal/2)²]
    return _blocks(_spatial_last(per_pixel, ds.kind))


def _score_j_invariant(ds: Dataset, name: str, seed: int, stop) -> np.ndarray:
    if ds.kind == "stack":
        base = ds.data[ds.data.shape[0] // 2]
        sub = lambda x: replace(ds, data=x[None], ground_truth=None)  # noqa: E731
    elif ds.kind == "image":
        base = ds.data
        sub = lambda x: replace(ds, data=x, ground_truth=None)  # noqa: E731
    else:  # a cube: hide grid pixels at every energy, interpolated slice by slice
        r0, c0 = max(0, (ds.data.shape[0] - CROP) // 2), max(0, (ds.data.shape[1] - CROP) // 2)
        cube = ds.data[r0:r0 + CROP, c0:c0 + CROP]
        losses, masks = [], []
        for phase in PHASES:
            slices = [masked_input(cube[:, :, e], phase, GRID) for e in range(cube.shape[2])]
            x = np.stack([s[0] for s in slices], axis=2)
            mask = slices[0][1]
            out = denoise(replace(ds, data=x, ground_truth=None, haadf=None), name, seed=seed, should_stop=stop).data
            losses.append(np.where(mask, ((out - cube) ** 2).mean(axis=2), 0.0))
            masks.append(mask)
        return _blocks(np.sum(losses, axis=0) / np.maximum(np.sum(masks, axis=0), 1), np.any(masks, axis=0))
    def fn(x):
        out = denoise(sub(x), name, seed=seed, should_stop=stop).data
        return out[0] if ds.kind == "stack" else out

    return _blocks(*hidden_errors(fn, central_crop(base)))


def rank(ds: Dataset, budget_seconds: float = 60.0, *, seed: int = 0, progress=None, should_stop=None,
         exclude: tuple[str, ...] = ("auto",)) -> dict:
    """Run and score every method that fits ``ds`` and the budget; best first.

    Returns a dict: ``criterion``, ``why``, ``ranking`` (one dict per method: method, label,
    score, se, tie (with the best), seconds, psnr when a ground truth exists), ``skipped``
    (method → reason), ``results`` (method → DenoiseResult) and ``seconds``.
    """
    from emcore.progress import report

    t0 = time.perf_counter()
    counts = counts_of(ds)
    criterion = "count-split" if counts is not None else "J-invariant"
    why = ("Count splitting: the data are counts, so each method is scored on one half against the other — an "
           "unbiased estimate of its error." if counts is not None else
           "J-invariant loss (Noise2Self): the data are not raw counts, so each method is scored on pixels it did "
           "not see. It assumes noise independent from pixel to pixel; floats of unknown origin may break that.")
    todo, skipped = [], {}
    for m in methods_for(ds.kind):
        if m.name in exclude:
            continue
        est = m.estimate(ds.data.shape, ds.kind)
        todo.append((est if est is not None else math.inf, m))
    todo.sort(key=lambda t: t[0])
    ranking, results = [], {}
    factor = _score_runs(ds, counts)
    # Estimates are rough (2× either way on a shared machine): once a method has run, later
    # estimates are scaled by the largest measured/estimated ratio so far.
    slowdown = 1.0
    for i, (est, m) in enumerate(todo):
        if should_stop is not None and should_stop():
            raise Stopped(f"Auto stopped on request after {i} of {len(todo)} methods.")
        left = budget_seconds - (time.perf_counter() - t0)
        cost = est * (1 + factor) * slowdown
        if cost > left:
            skipped[m.name] = (f"would take about {cost:.1f} s, more than the {max(left, 0):.1f} s left of the budget"
                               if math.isfinite(cost) else "no time estimate")
            continue
        report(progress, i, len(todo), t0, f"Auto: {m.label}")
        t1 = time.perf_counter()
        try:
            res = denoise(ds, m.name, seed=seed, should_stop=should_stop)
            blocks = (_score_counts(ds, m.name, counts, seed, should_stop) if counts is not None
                      else _score_j_invariant(ds, m.name, seed, should_stop))
        except Stopped:
            raise
        except EmcoreError as err:
            skipped[m.name] = str(err)
            continue
        score, se = _mean_se(blocks)
        predicted = est * (1 + factor)
        if math.isfinite(predicted) and predicted >= _LEARN_FROM_S:  # fixed overheads swamp tiny estimates
            slowdown = min(_MAX_SLOWDOWN, max(slowdown, (time.perf_counter() - t1) / predicted))
        row = {"method": m.name, "label": m.label, "score": score, "se": se, "seconds": time.perf_counter() - t1,
               "_blocks": blocks}
        if ds.ground_truth is not None:
            row["psnr"] = psnr(res.data, ds.ground_truth)
        ranking.append(row)
        results[m.name] = res
    if not ranking:
        raise EmcoreError(
            f"No method fits a budget of {budget_seconds:g} s for {ds.name}"
            + (f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else "")
            + "; give Auto more time, or pick a method yourself.")
    ranking.sort(key=lambda r: r["score"])
    best = ranking[0]
    for r in ranking:
        # every method is scored on the same split / the same hidden pixels: compare them pair-wise
        diff = r["_blocks"] - best["_blocks"] if r["_blocks"].shape == best["_blocks"].shape else None
        spread = _mean_se(diff)[1] if diff is not None else math.hypot(r["se"], best["se"])
        r["tie"] = r is not best and abs(r["score"] - best["score"]) <= 2 * spread
    for r in ranking:
        del r["_blocks"]
    report(progress, len(todo), len(todo), t0, "Auto: done")
    return {"criterion": criterion, "why": why, "ranking": ranking, "skipped": skipped, "results": results,
            "seconds": time.perf_counter() - t0}


def _run_auto(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    if np.ptp(ds.data) == 0:
        raise EmcoreError(f"{ds.name} is constant: there is no noise to remove and nothing to rank.")
    out = rank(ds, params["budget_seconds"], seed=ctx.seed, progress=ctx.progress, should_stop=ctx.should_stop)
    best = out["ranking"][0]
    ctx.resolved["chosen"] = best["method"]
    ctx.log.append(f"Auto ranked {len(out['ranking'])} method(s) by {out['criterion']} in {out['seconds']:.0f} s; "
                   f"best: {best['label']}" + (" (a tie with " + ", ".join(r["label"] for r in out["ranking"] if r["tie"])
                                               + ")" if any(r["tie"] for r in out["ranking"]) else "") + ".")
    for name, reason in out["skipped"].items():
        ctx.log.append(f"Not run: {name} — {reason}.")
    ctx.artifacts["auto"] = out
    ctx.summary["ranking"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                              for r in out["ranking"]]
    ctx.summary["criterion"] = out["criterion"]
    return out["results"][best["method"]].data


def _lesson_figure() -> LessonFigure:
    """Gaussian blurs of the Learn example: the J-invariant score against the true error."""
    from scipy import ndimage as ndi

    from emcore.methods.calibration import j_invariant_loss

    clean, noisy = example_image()
    sigmas = np.array([0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    score = np.array([j_invariant_loss(lambda x, s=s: ndi.gaussian_filter(x, s), noisy) for s in sigmas])
    true = np.array([float(np.mean((ndi.gaussian_filter(noisy, s) - clean) ** 2)) for s in sigmas])
    shift = float(score.min() - true.min())  # the noise variance, shared by every setting
    return LessonFigure((Panel(
        "Score from the noisy image alone vs the true error", x_title="Gaussian blur σ (px)",
        y_title="mean squared error", curves=(
            Curve(sigmas, score - shift, name="J-invariant score (shifted by the noise variance)"),
            Curve(sigmas, true, name="true error (needs the clean image)"))),), height=320, legend_below=True)


LESSON = Lesson(
    assumes="Noise independent from pixel to pixel (true of shot noise and of most detector read-out). For raw "
            "counts nothing else: splitting the counts gives two independent images of the same sample.",
    needs="Only the noisy data and a time budget. Each method is run once on the data and once more (count "
          "splitting) or four times on a crop (J-invariant) to be scored.",
    choose_when="You do not know which method suits your file, or you want to see how they compare. The ranking "
                "is only as good as its criterion: where two methods are within the score's noise they are called "
                "a tie, and you should look at both on the Compare page.",
    parameters="**Time budget** (seconds): methods whose estimated time does not fit are left out, and say so; "
               "the zero-shot methods, which train on your image, only run with a generous budget.",
    reference="J. Batson, L. Royer, “Noise2Self: Blind Denoising by Self-Supervision”, ICML 2019; A. Neufeld et "
              "al., “Data thinning for convolution-closed distributions”, JMLR 25 (2024).",
    caption="How can a score tell which result is best without the clean image? **Count splitting** (for raw "
            "counts) splits every pixel's counts at random into two halves that share the sample but not the "
            "noise: a method denoises one half and is compared with the other, whose noise it never saw, so only "
            "its error against the true signal differs from method to method. The **J-invariant loss** (for "
            "other data) hides a grid of pixels, fills each with its neighbours' mean, lets the method denoise "
            "that, and compares its output at the hidden pixels with their noisy values: the method could not "
            "copy noise it did not see.\n\nThe figure blurs the Learn example with Gaussians of growing width. "
            "The score, computed from the noisy image alone, falls and rises with the true error (which needs "
            "the clean image): its minimum picks the same blur. The same scores choose Wiener's window and noise "
            "floor ('self-calibration') and rank the methods in Auto.",
    figure=_lesson_figure,
)


register(Method(
    name="auto",
    label="Auto (rank the methods)",
    description="Runs the methods that fit your data within a time budget, scores each from the data alone "
                "(count splitting for counts, the J-invariant loss otherwise) and keeps them all; the best one's "
                "result is this run's.",
    kind="meta",
    accepts=("image", "stack", "cube"),
    params=(
        Param("budget_seconds", "float", 60.0, min=5.0, max=24 * 3600.0, label="Time budget (s)",
              help="Methods whose estimated time (run plus scoring) does not fit in what is left are not run; "
                   "the result says which and why."),
    ),
    run=_run_auto,
    estimate_seconds=lambda shape, kind, p: float(p["budget_seconds"]),
    lesson=LESSON,
    quick={"budget_seconds": 30.0},
))
