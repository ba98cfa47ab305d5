"""What a Dask worker does with one file: load it, denoise it, write the result, score it.

Everything a user's file can cause ends as a row with a sentence (``status="failed"``); only
bugs raise, so that Dask's ``retries`` re-run them and the driver records what is left.
The function runs in worker processes: it takes and returns plain, picklable values and never
sends arrays back to the driver (the result goes straight to disk).

Learned methods load their weights once per worker, not per file: the network cache of
:mod:`emcore.methods.supervised` is keyed by path and modification time and lives as long as
the worker process does.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, TooLargeError


@dataclass(frozen=True)
class FileTask:
    """One file of a batch: where it is, where its result goes, how to denoise it.

    ``params`` are the parameters the user set (typed), exactly what a one-by-one
    ``denoise(dataset, method, seed=seed, **params)`` would receive.
    """

    input: str
    name: str
    output: str
    preview: str
    method: str
    params: dict
    seed: int
    device: str = "auto"
    score: bool = True
    kind: str | None = None
    stream: str = "auto"  # in pieces: "auto" (when too big for the worker), "always", "never"


def worker_memory_limit() -> int | None:
    """Bytes of memory the current Dask worker may use, or None outside a worker."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None
    return int(limit) if limit else None


def worker_max_bytes() -> int:
    """The data-size cap for one file on this worker: the usual cap, and a quarter of the
    worker's memory (a method holds the input, its result and some working copies)."""
    from emcore.io import default_max_bytes

    cap = default_max_bytes()
    limit = worker_memory_limit()
    return min(cap, limit // 4) if limit else cap


def _human(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def run_file(task: FileTask) -> dict[str, Any]:
    """Denoise one file and write its result and preview; return its manifest row."""
    from emcore.io import load
    from emcore.methods.registry import denoise

    t0 = time.perf_counter()
    row = failed_row(task, "")
    row["worker"] = _worker_name()
    try:
        if task.stream == "always":
            run_in_pieces(task, row)
            return _finish(row, t0)
        try:
            ds = load(task.input, kind=task.kind, max_bytes=worker_max_bytes())
        except TooLargeError as err:
            if task.stream == "auto" and in_pieces_refusal(task) is None:
                run_in_pieces(task, row)
                return _finish(row, t0)
            raise TooLargeError(f"{err} {in_pieces_refusal(task)}" if task.stream == "auto" else str(err),
                                shape=err.shape, nbytes=err.nbytes, max_bytes=err.max_bytes,
                                suggestion=err.suggestion) from None
        res = denoise(ds, task.method, seed=task.seed, device=task.device, **task.params)
        _save_atomically(replace(ds, data=res.data, ground_truth=None, name=f"{ds.name} — {task.method}"), task.output)
        row.update(output=task.output, params=res.params, seconds=round(res.seconds, 4), device=res.device)
        if task.score:
            row.update(no_reference_score(ds, res.data, task.method, task.params, task.seed))
        try:
            write_preview(ds, res.data, task.preview)
            row["preview"] = task.preview
        except (OSError, ValueError):
            pass  # a preview is a convenience; the result is written
        row["status"] = "done"
    except TooLargeError as err:
        limit = worker_memory_limit()
        row["error"] = str(err) + (f" Each Dask worker has {_human(limit)} of memory; start fewer workers with more "
                                   "memory each (--workers, or 'dask worker --memory-limit'), or bin the data first."
                                   if limit else "")
    except EmcoreError as err:
        row["error"] = str(err)
    except MemoryError:
        row["error"] = (f"Not enough memory to denoise {task.name} on this worker; use fewer workers with more "
                        "memory each, or bin or crop the data first.")
    return _finish(row, t0)


def _finish(row: dict, t0: float) -> dict[str, Any]:
    row["total_seconds"] = round(time.perf_counter() - t0, 4)
    return row


def in_pieces_refusal(task: FileTask) -> str | None:
    """Why ``task``'s file cannot be denoised piece by piece (a sentence), or None."""
    from emcore.batch.frames import FRAME_METHODS, by_frame_refusal
    from emcore.io.lazy import LAZY_EXTENSIONS

    ext = Path(task.input).suffix.lower()
    if ext not in LAZY_EXTENSIONS:
        return (f"Only {', '.join(LAZY_EXTENSIONS)} files are read piece by piece (stacks frame by frame with "
                f"{', '.join(FRAME_METHODS)}; spectrum images block by block with pca).")
    if task.method == "pca":
        return None
    return by_frame_refusal(task.method, task.params)


def run_in_pieces(task: FileTask, row: dict) -> dict:
    """Denoise a file too big to hold: a stack frame by frame (:mod:`emcore.batch.frames`), a
    spectrum image by out-of-core PCA (:mod:`emcore.methods.pca_lazy`); the result is written
    block by block. Fills and returns ``row``; expected problems raise EmcoreError."""
    from emcore.batch.frames import _frame_ds, denoise_by_frame
    from emcore.io.lazy import open_lazy

    why = in_pieces_refusal(task)
    if why:
        raise EmcoreError(f"{task.name} cannot be denoised piece by piece: {why}")
    with open_lazy(task.input, kind=task.kind, max_bytes=worker_max_bytes()) as lz:
        if lz.kind == "stack":
            fr = denoise_by_frame(lz, task.output, task.method, params=task.params, seed=task.seed, device=task.device)
            row.update(output=task.output, params=fr.params, seconds=round(fr.seconds, 4), device=fr.device,
                       pieces=f"{fr.frames} frames, one at a time")
            if task.score:
                i, before, after = fr.middle
                score = no_reference_score(_frame_ds(lz, i, before), after, task.method, task.params, task.seed)
                if score.get("score_kind"):
                    score["score"] += f" (frame {i} of {fr.frames})"
                row.update(score)
            views = (_frame_ds(lz, 0, fr.first[0]), fr.first[1])
        elif task.method == "pca":
            views = _pca_in_pieces(task, lz, row)
        else:
            raise EmcoreError(f"{task.name} is a spectrum image: piece by piece it can be denoised with pca only.")
    try:
        write_preview(views[0], views[1], task.preview)
        row["preview"] = task.preview
    except (OSError, ValueError):
        pass
    row["status"] = "done"
    return row


def _pca_in_pieces(task: FileTask, lz, row: dict) -> tuple:
    from emcore.io.lazy import write_blocks
    from emcore.methods.pca_lazy import pca_out_of_core
    from emcore.methods.registry import check_params, get_method

    t0 = time.perf_counter()
    p = check_params(get_method("pca"), task.params)  # every parameter, as a whole-file run records them
    fn, info = pca_out_of_core(lz, n_components=p.get("n_components"), poisson=p.get("poisson", True),
                               seed=task.seed)
    rows = max(1, (64 * 1024**2) // max(1, lz.shape[1] * lz.shape[2] * 4))
    after = np.zeros(lz.shape[:2], np.float32)

    def block(start, stop):
        out = fn(start, stop)
        after[start:stop] = out.sum(axis=2, dtype=np.float64)
        return out

    write_blocks(task.output, lz.shape, block, kind="cube", rows=rows, calibration=lz.calibration,
                 name=f"{lz.name} — pca", is_counts=bool(lz.is_counts), noise=lz.noise, haadf=lz.haadf,
                 metadata=lz.metadata)
    row.update(output=task.output, params={**p, "n_components": info.n_components},
               seconds=round(time.perf_counter() - t0, 4), device="cpu",
               pieces=f"out-of-core PCA in blocks of {rows} rows")
    if task.score:
        row.update(score="not scored: a spectrum image denoised piece by piece is not re-run for a score",
                   score_value=None, score_kind="")
    return Dataset(info.totals, "image", name=task.name), after


def failed_row(task: FileTask, error: str) -> dict[str, Any]:
    """A manifest row for ``task`` with every column, saying it failed with ``error``."""
    return {"input": task.input, "name": task.name, "output": "", "status": "failed", "method": task.method,
            "requested": dict(task.params), "params": {}, "seed": task.seed, "seconds": None, "total_seconds": None,
            "device": "", "score": "", "score_value": None, "score_kind": "", "error": error, "preview": "",
            "worker": ""}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _save_atomically(ds: Dataset, output: str) -> None:
    """Write to a hidden name in the same folder, then rename: a crash never leaves half a file
    under the output name (which a resumed run would take for finished)."""
    from emcore.io import save

    out = Path(output)
    tmp = out.with_name(f".partial-{os.getpid()}-{out.name}")
    try:
        save(ds, tmp)
        os.replace(tmp, out)
    except OSError as err:
        raise EmcoreError(f"Could not write {out}: {err.strerror or err}; check the output folder's space and "
                          "permissions.") from None
    finally:
        tmp.unlink(missing_ok=True)


def no_reference_score(ds: Dataset, result: np.ndarray, method: str, params: dict, seed: int) -> dict[str, Any]:
    """A score that needs no clean reference: the count-split gain for raw counts, the residual
    check otherwise.

    Count-split gain (dB) is ``10 log10(e_raw / e_method)``, with ``e`` the estimated error
    against the other half of a binomial split of the counts
    (:func:`emcore.evaluate.validation.count_split_validation`: the method re-run on half A at
    the same seed, with the parameters the user set so that estimated ones are estimated on
    the half); above 0 dB the method beats the raw data. ``e_method`` is floored at 1/1000 of
    ``e_raw`` (+30 dB), since the estimate is unbiased but can come out ≤ 0 for an excellent
    denoiser. Otherwise the normalised residual's variance and its verdict
    (:func:`emcore.evaluate.validation.residual_report`; ≈ 1 when only noise was removed).
    """
    from emcore.evaluate.validation import count_split_validation, counts_of, residual_report

    try:
        if counts_of(ds) is not None:
            runs = count_split_validation(ds, {method: (method, params)}, seed=seed)["results"]
            raw = runs["no denoising (raw half)"].estimated_mse
            est = runs[method].estimated_mse
            if raw > 0:
                gain = 10.0 * math.log10(raw / max(est, raw * 1e-3))
                return {"score": f"count-split gain {gain:+.1f} dB", "score_value": round(gain, 3),
                        "score_kind": "count_split_gain_db"}
        rep = residual_report(ds, result)
        return {"score": f"residual variance {rep.variance:.2f}: {rep.verdict}", "score_value": round(rep.variance, 4),
                "score_kind": "residual_variance"}
    except EmcoreError as err:
        return {"score": f"not scored: {err}", "score_value": None, "score_kind": ""}


PREVIEW_SIDE = 192


def preview_views(ds: Dataset, result: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D views a thumbnail shows: the image, a stack's first frame, a spectrum image
    summed over energy."""
    if ds.kind == "image":
        return ds.data, result
    if ds.kind == "stack":
        return ds.data[0], result[0]
    return ds.data.sum(axis=2, dtype=np.float64), result.sum(axis=2, dtype=np.float64)


def _to_u8(view: np.ndarray, side: int) -> np.ndarray:
    from emcore.data.display import contrast_limits, downsample_for_display

    small, _ = downsample_for_display(np.asarray(view, np.float32), side)
    lo, hi = contrast_limits(small)
    scaled = (small - lo) / (hi - lo) if hi > lo else np.zeros_like(small)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_preview(ds: Dataset, result: np.ndarray, path: str, side: int = PREVIEW_SIDE) -> None:
    """A PNG thumbnail: before | after, each at most ``side`` px, each with its own percentile
    stretch."""
    from PIL import Image

    before, after = (_to_u8(v, side) for v in preview_views(ds, result))
    gap = np.full((before.shape[0], 4), 255, np.uint8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".partial-{os.getpid()}-{out.name}")
    Image.fromarray(np.concatenate([before, gap, after], axis=1)).save(tmp, format="PNG")
    os.replace(tmp, out)
