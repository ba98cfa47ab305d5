"""A stack denoised frame by frame, read and written piece by piece: memory that does not grow
with the number of frames.

:func:`denoise_by_frame` reads one frame of a :class:`~emcore.io.lazy.LazyDataset`, denoises
it with the registered method and writes it to the output file before reading the next
(:func:`~emcore.io.lazy.write_blocks`), so a worker holds one input frame, one result frame and
the method's working memory, whatever the length of the stack.

The result equals a whole-stack :func:`~emcore.methods.registry.denoise` at the same seed, for
the methods that treat each frame on its own (:data:`FRAME_METHODS`). What such a method
chooses on the data is chosen as the whole-stack run chooses it: the self-calibrated Wiener
filter picks its window and noise-floor multiple on the middle frame (count splitting or the
J-invariant loss, :func:`emcore.methods.calibration.calibrate_dataset`) and then measures the
noise floor of every frame, so here the middle frame is calibrated first and the choice held
for every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped
from emcore.io.lazy import LazyDataset, write_blocks
from emcore.progress import ProgressFn, StopFn, report

#: Methods whose whole-stack run treats every frame on its own (given what they chose on the
#: data): a stack of any length can go through them one frame at a time.
FRAME_METHODS = ("wiener", "unet", "dncnn")


def by_frame_refusal(method: str, params: dict) -> str | None:
    """Why ``method`` with ``params`` cannot run frame by frame (a sentence), or None."""
    if method not in FRAME_METHODS:
        return (f"{method} uses all the frames of a stack together, so it cannot run frame by frame; frame by "
                f"frame works with {', '.join(FRAME_METHODS)}.")
    if params.get("weights_source") == "train":
        return f"{method} set to train on the stack needs the whole stack; use shipped or uploaded weights."
    return None


@dataclass
class FrameRun:
    """What :func:`denoise_by_frame` did: parameters used (as a whole-stack run reports them),
    seconds spent denoising, device, the method's log, and two frames kept for a preview and a
    score (the first and the middle one, before and after)."""

    params: dict
    seconds: float
    device: str
    log: tuple
    frames: int
    first: tuple[np.ndarray, np.ndarray]
    middle: tuple[int, np.ndarray, np.ndarray]
    artifacts: dict = field(default_factory=dict)


def _frame_ds(lazy: LazyDataset, i: int, frame: np.ndarray) -> Dataset:
    return Dataset(frame, "image", calibration=lazy.calibration, name=f"{lazy.name}, frame {i}",
                   is_counts=bool(lazy.is_counts), noise=lazy.noise)


def _pin_wiener(lazy: LazyDataset, params: dict, seed: int, mid: np.ndarray):
    """Calibrate the Wiener filter on the middle frame as the whole-stack run does; return a
    function giving each frame's parameters, and the calibration's record."""
    from emcore.methods.registry import denoise
    from emcore.methods.wiener import estimate_noise_variance

    if params.get("window") is not None and params.get("noise_power") is not None:
        return (lambda frame: params), {}, ()
    probe = Dataset(mid[None], "stack", calibration=lazy.calibration, name=lazy.name,
                    is_counts=bool(lazy.is_counts), noise=lazy.noise)
    res = denoise(probe, "wiener", seed=seed, device="cpu", **params)
    best = res.artifacts["calibration"]["best"]

    def frame_params(frame):
        scale = best.get("scale")
        nv = params.get("noise_power") if scale is None else estimate_noise_variance(frame) * scale
        return {**params, "window": int(best["window"]), "noise_power": nv}

    return frame_params, {"calibration": res.artifacts["calibration"]}, res.log[:1]


def denoise_by_frame(
    lazy: LazyDataset,
    output: str | Path,
    method: str,
    *,
    params: dict | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FrameRun:
    """Denoise a stack one frame at a time and write each result frame to ``output`` at once.

    Parameters
    ----------
    lazy : LazyDataset
        A stack opened with :func:`emcore.io.lazy.open_lazy`.
    output : path
        ``.npy``, ``.tif``/``.tiff`` or ``.hspy`` (written under a hidden name, renamed at the end).
    method, params, seed, device
        As for :func:`emcore.methods.registry.denoise`; ``method`` in :data:`FRAME_METHODS`.
    progress, should_stop
        Frames done; a stop request between frames (raises :class:`Stopped`, no output left).

    Returns
    -------
    FrameRun

    Raises
    ------
    EmcoreError
        A method that cannot run frame by frame, and anything the method raises on a frame.
    """
    from emcore.methods.registry import denoise

    params = dict(params or {})
    if lazy.kind != "stack":
        raise EmcoreError(f"{lazy.name} is not a stack; only stacks are denoised frame by frame.")
    why = by_frame_refusal(method, params)
    if why:
        raise EmcoreError(why)
    lazy.scan()  # is_counts, as a whole-stack load decides it
    n = lazy.shape[0]
    mid_i = n // 2
    mid = lazy.frame(mid_i)
    frame_params, artifacts, log = (_pin_wiener(lazy, params, seed, mid) if method == "wiener"
                                    else ((lambda frame: params), {}, ()))
    kept: dict = {"seconds": 0.0, "floors": [], "log": list(log), "done": 0}
    t0 = time.perf_counter()

    def one(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start,) + lazy.shape[1:], np.float32)
        for i in range(start, stop):
            if should_stop is not None and should_stop():
                raise Stopped(f"Stopped after {kept['done']} of {n} frames of {lazy.name}; nothing was written.")
            frame = mid if i == mid_i else lazy.frame(i)
            p = frame_params(frame)
            res = denoise(_frame_ds(lazy, i, frame), method, seed=seed, device=device, **p)
            out[i - start] = res.data
            kept["seconds"] += res.seconds
            kept["floors"].append(p.get("noise_power"))
            if i == 0:
                kept.update(first=(frame, res.data), params=dict(res.params), device=res.device)
                kept["log"] += [line for line in res.log if line not in kept["log"]]
            if i == mid_i:
                kept["middle"] = (mid_i, frame, res.data)
            kept["done"] += 1
            report(progress, kept["done"], n, t0, f"{kept['done']} of {n} frames")
        return out

    # Flags as a whole-file batch result carries them (the input's).
    write_blocks(output, lazy.shape, one, kind="stack", calibration=lazy.calibration, name=f"{lazy.name} — {method}",
                 is_counts=bool(lazy.is_counts), noise=lazy.noise, metadata=lazy.metadata)
    used = kept["params"]
    if method == "wiener" and artifacts:
        # As the whole-stack run reports it: the window chosen and the mean noise floor used.
        used = {**used, "window": int(used["window"]), "noise_power": float(np.mean(kept["floors"]))}
    return FrameRun(params=used, seconds=kept["seconds"], device=kept["device"], log=tuple(kept["log"]), frames=n,
                    first=kept["first"], middle=kept["middle"], artifacts=artifacts)
