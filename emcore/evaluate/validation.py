"""Scoring results against a dataset: with a ground truth, and without one.

The Compare page and the benchmark call these; each returns plain numbers (and, for the
residual check, a map) so the UI only renders.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped
from emcore.evaluate.count_split import count_split, count_split_error, counts_of, half_dataset, rank_runs  # noqa: F401  (counts_of: re-exported)
from emcore.evaluate.frame_pairs import frame_pair_error
from emcore.evaluate.frc import fourier_ring_correlation, frc_resolution
from emcore.evaluate.reference import psnr, ssim
from emcore.evaluate.residuals import residual_checks
from emcore.noise.models import Poisson
from emcore.progress import ProgressFn, StopFn, report

_SLICE_AXIS = {"image": 0, "stack": 0, "cube": 2}


def reference_metrics(ds: Dataset, result: np.ndarray, lines: Sequence[str] = ()) -> dict[str, float]:
    """PSNR and SSIM against the ground truth (data range = ground truth max − min).

    For cubes SSIM is the mean over energy slices, and each X-ray line in ``lines`` adds the
    PSNR of its element map (``psnr_<line>``).
    """
    if ds.ground_truth is None:
        return {}
    _check_shape(ds, result)
    out = {"psnr": psnr(result, ds.ground_truth)}
    gt_range = float(ds.ground_truth.max() - ds.ground_truth.min())
    if gt_range > 0:
        try:
            out["ssim"] = ssim(result, ds.ground_truth, axis=_SLICE_AXIS[ds.kind])
        except EmcoreError:
            pass  # slices smaller than SSIM's 7×7 window: PSNR only
    if ds.kind == "cube" and lines:
        from emcore.spectral import element_map

        for line in lines:
            gt_map = element_map(ds.ground_truth, line, ds.calibration)
            if gt_map.max() > gt_map.min():
                out[f"psnr_{line}"] = psnr(element_map(result, line, ds.calibration), gt_map)
    return out


def noise_model_of(ds: Dataset):
    """The dataset's noise model: known, Poisson for counts, else a blind estimate."""
    if ds.noise is not None:
        return ds.noise
    if ds.is_counts:
        return Poisson(1.0)
    from emcore.noise.estimation import estimate_noise

    return estimate_noise(ds.data, ds.kind).model()


def residual_report(ds: Dataset, result: np.ndarray, noise_model=None):
    """:func:`emcore.evaluate.residuals.residual_checks` of input − result under the dataset's noise model."""
    _check_shape(ds, result)
    return residual_checks(ds.data, result, noise_model or noise_model_of(ds), axis=_SLICE_AXIS[ds.kind])


def count_split_validation(
    ds: Dataset,
    runs: Mapping[str, tuple[str, Mapping[str, Any]]],
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict[str, Any]:
    """Rank methods on data without a ground truth by count splitting.

    Each run ``label -> (method, params)`` is re-run on half A of a binomial split of the
    counts and scored against half B (:func:`emcore.evaluate.count_split.count_split_error`); the raw
    half ("no denoising") is scored too, as the baseline every method must beat.

    Returns
    -------
    dict
        ``{"results": {label: CountSplitResult}, "ranking": [labels, best first]}``.
    """
    from emcore.methods.registry import denoise

    counts = counts_of(ds)
    if counts is None:
        raise EmcoreError(
            f"{ds.name} does not hold raw counts, so it cannot be split into two independent halves; "
            "use the residual checks, or frame pairs for a stack."
        )
    def score(method, params):
        rng = np.random.default_rng(seed)  # the same split for every run: a fair comparison
        if method is None:
            return count_split_error(lambda a: a.astype(np.float32), counts, rng)
        return count_split_error(lambda a: denoise(half_dataset(ds, a), method, seed=seed, should_stop=should_stop,
                                                   **params).data, counts, rng)

    results = _each_run({"no denoising (raw half)": (None, {}), **runs}, score, "count splitting", progress, should_stop)
    return {"results": results, "ranking": rank_runs(results)}


def count_split_frc(ds: Dataset, method: str, params: Mapping[str, Any], *, seed: int = 0,
                    should_stop: StopFn | None = None) -> dict[str, Any]:
    """FRC between the two count-split halves, each denoised by ``method`` (images only)."""
    from emcore.methods.registry import denoise

    if ds.kind != "image":
        raise EmcoreError("The Fourier ring correlation is computed for single images only.")
    counts = counts_of(ds)
    if counts is None:
        raise EmcoreError(f"{ds.name} does not hold raw counts, so it cannot be split for an FRC.")
    a, b = count_split(counts, np.random.default_rng(seed))
    if method == "none":
        da, db = a.astype(np.float32), b.astype(np.float32)
    else:
        da = denoise(half_dataset(ds, a), method, seed=seed, should_stop=should_stop, **params).data
        db = denoise(half_dataset(ds, b), method, seed=seed, should_stop=should_stop, **params).data
    freq, frc = fourier_ring_correlation(da, db)
    return {"frequencies": freq, "frc": frc, "resolution_px": frc_resolution(freq, frc)}


def frame_pair_validation(
    ds: Dataset,
    runs: Mapping[str, tuple[str, Mapping[str, Any]]],
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict[str, Any]:
    """Rank methods on a stack by denoising odd frames and scoring against even ones."""
    from emcore.methods.registry import denoise

    if ds.kind != "stack":
        raise EmcoreError("Frame-pair validation needs a stack of frames (a movie).")
    def score(method, params):
        if method is None:
            return frame_pair_error(lambda s: s.astype(np.float32), ds.data)
        return frame_pair_error(lambda s: denoise(replace(ds, data=s, ground_truth=None, name=f"{ds.name} (odd frames)"),
                                                  method, seed=seed, should_stop=should_stop, **params).data, ds.data)

    results = _each_run({"no denoising (raw frames)": (None, {}), **runs}, score, "frame pairs", progress, should_stop)
    return {"results": results, "ranking": rank_runs(results)}


def frc_curves(ds: Dataset, runs: Mapping[str, tuple[str, Mapping[str, Any]]], *, seed: int = 0,
               progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> dict[str, dict[str, Any]]:
    """:func:`count_split_frc` of the raw halves ("no denoising") and of every run."""
    return _each_run({"no denoising": ("none", {}), **runs},
                     lambda m, p: count_split_frc(ds, m, p, seed=seed, should_stop=should_stop),
                     "Fourier ring correlation", progress, should_stop)


VALIDATIONS = {"count_split": count_split_validation, "frame_pair": frame_pair_validation, "frc": frc_curves}


def run_validation(kind: str, ds: Dataset, runs: Mapping[str, tuple[str, Mapping[str, Any]]], *, seed: int = 0,
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> dict[str, Any]:
    """One of the no-reference checks by name (``count_split``, ``frame_pair``, ``frc``): what
    the app submits to its job manager, with progress and a stop request between and within
    the re-runs."""
    if kind not in VALIDATIONS:
        raise EmcoreError(f"Unknown validation '{kind}'; the validations are: {', '.join(VALIDATIONS)}.")
    return VALIDATIONS[kind](ds, runs, seed=seed, progress=progress, should_stop=should_stop)


def _each_run(todo: Mapping[str, tuple[Any, Mapping[str, Any]]], score, what: str, progress: ProgressFn | None,
              should_stop: StopFn | None) -> dict[str, Any]:
    """``score(method, params)`` for every ``label -> (method, params)``, with progress and stop."""
    out, t0 = {}, time.perf_counter()
    for i, (label, (method, params)) in enumerate(todo.items()):
        if should_stop is not None and should_stop():
            raise Stopped(f"{what.capitalize()} stopped on request after {i} of {len(todo)} runs; nothing was kept.")
        report(progress, i, len(todo), t0, f"{what}: {label}")
        out[label] = score(method, dict(params))
    report(progress, len(todo), len(todo), t0, f"{what}: done")
    return out


def _check_shape(ds: Dataset, result: np.ndarray) -> None:
    if np.shape(result) != ds.data.shape:
        raise EmcoreError(
            f"This result has shape {np.shape(result)} but {ds.name} has shape {ds.data.shape}: "
            "it belongs to another dataset."
        )
