"""One training loop for every learned method.

Every learned denoiser (supervised Noise2Clean / Noise2Noise, self-supervised blind-spot
methods) trains through :func:`train`. What differs between methods lives outside the loop:

* a **data source** (:class:`DataSource`) hands out ``(inputs, targets[, mask])`` batches as
  float32 CPU tensors ``[B, C, H, W]`` (``[B, C, D, H, W]`` for 3-D models) and, optionally,
  fixed validation batches;
* a **loss** (:mod:`emcore.train.losses`) — ``loss(output, target, mask=None)``.

The loop handles devices (CUDA, Apple MPS, CPU), bf16 autocast on CUDA, learning-rate
schedules (:mod:`emcore.train.config`), validation with PSNR, keeping the best and the last
model, checkpoints that resume to the same trajectory, a stop request, a diverging loss and
running out of GPU memory. It reports :class:`~emcore.progress.Progress` and never imports
a UI.

Longer than 600 lines on purpose: :class:`_Run` is one state machine (step, validation,
best/last model, checkpoint, resume, out-of-memory fallback) whose parts share its state;
split apart they would have to pass that state around.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from emcore.errors import EmcoreError
from emcore.progress import Progress, ProgressFn, StopFn
from emcore.train.config import TrainConfig, learning_rate, select_device
from emcore.train.losses import Loss
from emcore.train.weights import (
    _atomic_save,
    _check_architecture,
    _cpu_state,
    _load_state,
    _model_config,
    _read_dict,
)

CHECKPOINT_FORMAT = "emcore-checkpoint-1"

# Smoothing of the training loss used to pick the best model when there is no validation
# set, and to show a readable curve (time constant about 50 steps).
_EMA_BETA = 0.98
# Progress reports at most this often (seconds), except at validation points and the end.
_PROGRESS_INTERVAL = 0.1


# ---------------------------------------------------------------------- protocols


@runtime_checkable
class DataSource(Protocol):
    """Where training batches come from.

    ``batch(batch_size, patch_size, rng)`` returns ``(inputs, targets)`` or
    ``(inputs, targets, mask)``: float32 CPU tensors ``[B, C, H, W]`` (``[B, C, D, H, W]``
    for 3-D models); the loop moves them to the device. All randomness must come from
    ``rng`` so that a seed fixes the batches and a resumed run sees the same ones. The
    source decides what ``patch_size`` means for its data (e.g. rounds it to what the model
    accepts).

    Optionally ``validation()`` returns a list of fixed batches
    ``(inputs, targets, clean_or_None)`` or ``(inputs, targets, mask, clean_or_None)``;
    ``clean`` (same shape as the output, or None) enables validation PSNR. It is called once
    per run.
    """

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator) -> tuple: ...


# ------------------------------------------------------------------------- result


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    status : {"done", "stopped", "diverged"}
    steps_done : int
        Optimiser steps taken in total (a resumed run counts the earlier ones).
    best_step : int
        Step of the weights the model now holds (0: the starting weights).
    best_val : float or None
        Their validation loss, or smoothed training loss when there was no validation data
        (see ``best_on``); None when no comparison point was reached.
    best_on : {"val_loss", "train_loss"}
    history : list of dict
        ``step, train_loss`` (mean since the previous entry), ``val_loss``, ``val_psnr``
        (None when not measured), ``lr``, ``seconds``. About ten entries per ``val_every``.
    device : str
    message : str
        One sentence for a person.
    batch_size, patch_size : int
        Finally used (smaller than asked after running out of memory).
    seconds : float
    log : tuple of str
        Notable events (device, out-of-memory fallbacks, resume, divergence).
    input_psnr : float or None
        Mean PSNR (dB) of the noisy validation inputs against their clean images, measured
        once: the bar the network has to clear (None without clean validation images of the
        input's shape).
    warning : str or None
        Set when the kept model is worse than its input on validation (its PSNR below
        ``input_psnr``); also at the end of ``message``.
    """

    status: Literal["done", "stopped", "diverged"]
    steps_done: int
    best_step: int
    best_val: float | None
    history: list[dict]
    device: str
    message: str
    batch_size: int
    patch_size: int
    best_on: str = "val_loss"
    seconds: float = 0.0
    log: tuple[str, ...] = ()
    input_psnr: float | None = None
    warning: str | None = None


# ------------------------------------------------------------------------ helpers


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _unpack_batch(batch: Sequence) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError("a data source's batch() must return (inputs, targets) or (inputs, targets, mask)")
    inputs, targets = batch[0], batch[1]
    mask = batch[2] if len(batch) == 3 else None
    return inputs, targets, mask


def _unpack_val(item: Sequence) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
        raise TypeError("validation() items must be (inputs, targets, clean) or (inputs, targets, mask, clean)")
    if len(item) == 3:
        return item[0], item[1], None, item[2]
    return item[0], item[1], item[2], item[3]


def _emit(log: list[str] | Callable[[str], None] | None, lines: list[str], line: str) -> None:
    lines.append(line)
    if log is None:
        return
    if callable(log):
        log(line)
    else:
        log.append(line)


def _psnr(estimate: Tensor, clean: Tensor) -> list[float]:
    """Per-image PSNR in dB, data range = clean max - min of each image (as
    :func:`emcore.evaluate.psnr`)."""
    est = estimate.detach().float().cpu().reshape(estimate.shape[0], -1)
    ref = clean.detach().float().cpu().reshape(clean.shape[0], -1)
    out = []
    for e, r in zip(est, ref):
        rng = float(r.max() - r.min())
        mse = float(((e - r) ** 2).mean())
        if rng <= 0:
            rng = 1.0  # a flat reference: fall back to unit range rather than -inf
        out.append(math.inf if mse == 0 else 10.0 * math.log10(rng * rng / mse))
    return out


# -------------------------------------------------------------------------- train


class _Run:
    """State of one training run (kept together so checkpoints can save and restore it)."""

    def __init__(self, model, source, loss, config, device, progress, should_stop, checkpoint_dir, log):
        self.model, self.source, self.loss, self.cfg = model, source, loss, config
        self.device = device
        self.progress, self.should_stop = progress, should_stop
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_target = log
        self.lines: list[str] = []
        self.amp = bool(config.amp and device.type == "cuda")
        if self.amp and not torch.cuda.is_bf16_supported():
            self.amp = False
            self.say("This GPU has no bf16 support; training in float32.")
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0
        self.batch_size, self.patch_size = config.batch_size, config.patch_size
        self.prior_seconds = 0.0
        self.ema_raw, self.ema_n = 0.0, 0
        self.history: list[dict] = []
        self.window: list[float] = []
        self.best_state = _cpu_state(model)
        self.best_step, self.best_val = 0, math.inf
        self.last_val_loss: float | None = None
        self.last_val_psnr: float | None = None
        self.input_psnr: float | None = None
        self.last_eval_step = -1
        self.lr = config.lr
        self.val_items = None
        self.t0 = time.perf_counter()
        self.start_step = 0
        self.last_report = -math.inf
        self.last_loss: float | None = None
        self.message = ""

    # -- small utilities
    def say(self, line: str) -> None:
        _emit(self.log_target, self.lines, line)

    def elapsed(self) -> float:
        return self.prior_seconds + time.perf_counter() - self.t0

    def fraction(self, step: int) -> float:
        if self.cfg.steps is not None:
            return (step - 1) / self.cfg.steps
        return self.elapsed() / float(self.cfg.max_seconds)

    @property
    def ema(self) -> float | None:
        return self.ema_raw / (1 - _EMA_BETA ** self.ema_n) if self.ema_n else None

    def total_and_eta(self) -> tuple[int, float | None]:
        cfg = self.cfg
        done_here = self.step - self.start_step
        spent_here = time.perf_counter() - self.t0
        per_step = spent_here / done_here if done_here > 0 else None
        totals, etas = [], []
        if cfg.steps is not None:
            totals.append(cfg.steps)
            if per_step is not None:
                etas.append(per_step * max(0, cfg.steps - self.step))
        if cfg.max_seconds is not None:
            left = max(0.0, cfg.max_seconds - self.elapsed())
            etas.append(left)
            totals.append(self.step + int(left / per_step) if per_step else max(self.step, 1))
        total = max(min(totals), self.step)
        return total, (min(etas) if etas else None)

    def report(self, message: str = "", force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last_report < _PROGRESS_INTERVAL:
            return
        self.last_report = now
        total, eta = self.total_and_eta()
        losses = {}
        if self.last_loss is not None:
            losses["train"] = self.last_loss
        if self.ema is not None:
            losses["train_smooth"] = self.ema
        metrics = {}
        if self.last_val_loss is not None:
            metrics["val_loss"] = self.last_val_loss
        if self.last_val_psnr is not None:
            metrics["val_psnr"] = self.last_val_psnr
        if self.input_psnr is not None:
            metrics["input_psnr"] = self.input_psnr
        if not message:
            if self.cfg.max_seconds is not None and (self.cfg.steps is None or total < self.cfg.steps):
                # the time limit ends the run: its step count is an estimate that moves with the
                # measured rate, so the message does not promise one
                message = f"Step {self.step}, time limit reached in about {eta or 0:.0f} s"
            else:
                message = f"Step {self.step} of {total}"
            if self.last_loss is not None:
                message += f": training loss {self.last_loss:.4g}"
            if self.last_val_psnr is not None:
                message += f", validation PSNR {self.last_val_psnr:.2f} dB"
            message += "."
        self.progress(Progress(step=self.step, total=total, losses=losses, metrics=metrics,
                               elapsed=self.elapsed(), eta=eta, message=message))

    # -- one optimiser step; raises on OOM, returns the loss value
    def train_step(self, step: int) -> float:
        cfg = self.cfg
        batch = self.source.batch(self.batch_size, self.patch_size, self.rng)
        inputs, targets, mask = _unpack_batch(batch)
        nb = self.device.type == "cuda"
        inputs = inputs.to(self.device, dtype=torch.float32, non_blocking=nb)
        targets = targets.to(self.device, dtype=torch.float32, non_blocking=nb)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=nb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.amp:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                output = self.model(inputs)
        else:
            output = self.model(inputs)
        value = self.loss(output.float(), targets, mask)
        loss_value = float(value.detach())
        if not math.isfinite(loss_value):
            return loss_value  # no update: the weights stay those of the previous step
        value.backward()
        if cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if not math.isfinite(float(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                return math.inf
        self.optimizer.step()
        return loss_value

    def shrink(self, step: int) -> None:
        """After running out of memory: halve the batch, then the patch, or give up."""
        cfg = self.cfg
        _empty_cache(self.device)
        old = f"batch {self.batch_size} of {self.patch_size}-px patches"
        if self.batch_size > cfg.min_batch:
            self.batch_size = max(cfg.min_batch, self.batch_size // 2)
            what = f"batch {self.batch_size}"
        elif self.patch_size > cfg.min_patch:
            self.patch_size = max(cfg.min_patch, self.patch_size // 2)
            what = f"{self.patch_size}-px patches"
        else:
            raise EmcoreError(
                f"Out of memory on {self.device.type} at step {step} even with a batch of {self.batch_size} "
                f"and {self.patch_size}-px patches; use a smaller model, free the GPU, or train on the CPU."
            )
        line = f"Out of memory on {self.device.type} at step {step} with a {old}; continuing with {what}."
        self.say(line)
        self.report(line, force=True)

    # -- validation
    def validate(self) -> tuple[float, float | None]:
        """Validation loss (weighted by batch size) and mean PSNR (None without clean images)."""
        model = self.model
        was_training = model.training
        model.eval()
        total, count, psnrs = 0.0, 0, []
        try:
            with torch.no_grad():
                for item in self.val_items:
                    inputs, targets, mask, clean = _unpack_val(item)
                    n = inputs.shape[0]
                    chunk = n
                    start = 0
                    while start < n:
                        sl = slice(start, start + chunk)
                        oom = False
                        try:
                            out = model(inputs[sl].to(self.device, dtype=torch.float32)).float()
                            value = float(self.loss(out, targets[sl].to(self.device, dtype=torch.float32),
                                                    None if mask is None else mask[sl].to(self.device)))
                        except Exception as err:  # noqa: BLE001 - re-raised unless OOM
                            if not _is_oom(err):
                                raise
                            oom = True
                        if oom:
                            out = None
                            _empty_cache(self.device)
                            if chunk == 1:
                                raise EmcoreError(
                                    f"Out of memory on {self.device.type} while validating even one image at a "
                                    "time; use smaller validation images or train on the CPU."
                                )
                            chunk = max(1, chunk // 2)
                            continue
                        m = out.shape[0]
                        total += value * m
                        count += m
                        if clean is not None:
                            psnrs.extend(_psnr(out, clean[sl]))
                        start += chunk
        finally:
            model.train(was_training)
        loss = total / max(count, 1)
        psnr = float(np.mean(psnrs)) if psnrs else None
        return loss, psnr

    def measure_input(self) -> None:
        """PSNR of the noisy validation inputs themselves, once: what the network must beat."""
        psnrs = []
        for item in self.val_items:
            inputs, _, _, clean = _unpack_val(item)
            if clean is None or tuple(inputs.shape) != tuple(clean.shape):
                return  # masked or extra-channel inputs: not the noisy image itself
            psnrs.extend(_psnr(inputs, clean))
        self.input_psnr = float(np.mean(psnrs)) if psnrs else None

    def worse_than_input(self) -> str | None:
        """A sentence when the kept model's validation PSNR is below the noisy input's."""
        if self.input_psnr is None:
            return None
        kept = [h["val_psnr"] for h in self.history if h["step"] == self.best_step and h.get("val_psnr") is not None]
        if not kept and self.best_step == 0:
            kept = [h["val_psnr"] for h in self.history if h.get("val_psnr") is not None][-1:]
        if not kept or kept[-1] >= self.input_psnr:
            return None
        return (f"Warning: the trained network is worse than its noisy input on the validation images "
                f"(PSNR {kept[-1]:.1f} dB against {self.input_psnr:.1f} dB for the input): its output is less "
                "faithful than the data. Train longer (more steps or a longer time limit), or fine-tune from "
                "the shipped weights.")

    def evaluate(self) -> bool:
        """Compare with the best so far at the current step, write checkpoints.

        Returns False when the validation loss is not finite (divergence)."""
        self.last_eval_step = self.step
        if self.val_items:
            val_loss, val_psnr = self.validate()
            self.last_val_loss, self.last_val_psnr = val_loss, val_psnr
            score = val_loss
        else:
            val_loss, val_psnr = None, None
            score = self.ema if self.ema is not None else math.inf
        self.flush_history(val_loss, val_psnr)
        if not math.isfinite(score):
            return False
        if score < self.best_val:
            self.best_val, self.best_step = score, self.step
            self.best_state = _cpu_state(self.model)
            if self.ckpt_dir is not None:
                self.save_checkpoint(self.ckpt_dir / "best.pt")
        if self.ckpt_dir is not None:
            self.save_checkpoint(self.ckpt_dir / "last.pt")
        return True

    def flush_history(self, val_loss: float | None = None, val_psnr: float | None = None) -> None:
        if self.history and self.history[-1]["step"] == self.step:
            entry = self.history[-1]
            if val_loss is not None:
                entry["val_loss"], entry["val_psnr"] = val_loss, val_psnr
            return
        if not self.window and val_loss is None:
            return
        self.history.append({
            "step": self.step,
            "train_loss": float(np.mean(self.window)) if self.window else None,
            "val_loss": val_loss,
            "val_psnr": val_psnr,
            "lr": self.lr,
            "seconds": round(self.elapsed(), 4),
        })
        self.window = []

    # -- checkpoints
    def checkpoint(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": type(self.model).__name__,
            "model_config": _model_config(self.model),
            "state_dict": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"schedule": self.cfg.schedule, "warmup_steps": self.cfg.warmup_steps, "last_lr": self.lr},
            "torch_rng": torch.get_rng_state(),
            # Only when training on CUDA: asking for the state would otherwise create a context.
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "numpy_rng": self.rng.bit_generator.state,
            "config": self.cfg.to_dict(),
            "best_step": self.best_step,
            "best_val": self.best_val,
            "ema": {"raw": self.ema_raw, "n": self.ema_n},
            "history": self.history,
            "window": list(self.window),
            "seconds": self.elapsed(),
            "batch_size": self.batch_size,
            "patch_size": self.patch_size,
            "last_val": {"loss": self.last_val_loss, "psnr": self.last_val_psnr},
            "device": str(self.device),
        }

    def save_checkpoint(self, path: Path) -> None:
        _atomic_save(self.checkpoint(), path)

    def resume(self) -> None:
        path = self.ckpt_dir / "last.pt" if self.ckpt_dir is not None else None
        if path is None or not path.is_file():
            raise EmcoreError(
                f"Cannot resume: there is no last.pt checkpoint in {self.ckpt_dir}; start a new training instead."
            )
        ck = _read_dict(path, CHECKPOINT_FORMAT, "training checkpoint")
        _check_architecture(self.model, ck.get("model"), ck.get("model_config"), path)
        _load_state(self.model, ck["state_dict"], path)
        self.optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        if ck.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        self.rng.bit_generator.state = ck["numpy_rng"]
        self.step = self.start_step = int(ck["step"])
        self.best_step, self.best_val = int(ck["best_step"]), float(ck["best_val"])
        self.ema_raw, self.ema_n = float(ck["ema"]["raw"]), int(ck["ema"]["n"])
        self.history = list(ck["history"])
        self.window = list(ck.get("window", []))
        self.prior_seconds = float(ck["seconds"])
        self.batch_size, self.patch_size = int(ck["batch_size"]), int(ck["patch_size"])
        self.lr = float(ck["scheduler"]["last_lr"])
        self.last_val_loss = ck.get("last_val", {}).get("loss")
        self.last_val_psnr = ck.get("last_val", {}).get("psnr")
        self.last_eval_step = self.step
        best_path = self.ckpt_dir / "best.pt"
        if best_path.is_file():
            self.best_state = _read_dict(best_path, CHECKPOINT_FORMAT, "training checkpoint")["state_dict"]
        else:
            self.best_state = _cpu_state(self.model)
        if (self.batch_size, self.patch_size) != (self.cfg.batch_size, self.cfg.patch_size):
            self.say(f"Resuming with the batch of {self.batch_size} and {self.patch_size}-px patches that fitted "
                     "in memory before.")
        self.say(f"Resumed from {path} at step {self.step}.")

    def restore_best(self) -> None:
        self.model.load_state_dict(self.best_state)

    def best_words(self) -> str:
        if self.best_step == 0:
            return "the starting weights were kept (no model had been validated yet)"
        what = "validation loss" if self.val_items else "smoothed training loss"
        return f"the best model (step {self.best_step}, {what} {self.best_val:.4g}) was kept"


def train(
    model: nn.Module,
    source: DataSource,
    loss: Loss,
    config: TrainConfig,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    log: list[str] | Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` on batches from ``source``; the one loop for every learned method.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place and moved to the chosen device (it stays there). On return it holds
        the **best** weights seen (see Notes), whatever the status.
    source : DataSource
        ``batch(batch_size, patch_size, rng)`` and optionally ``validation()``.
    loss : Loss
        ``loss(output, target, mask=None)``, e.g. :class:`MSELoss`.
    config : TrainConfig
    progress, should_stop : callables, optional
        Progress reports (every step, throttled to about 10 per second, plus one at every
        validation point and one at the end) and stop request (checked before every step).
    checkpoint_dir : path, optional
        Where ``best.pt`` and ``last.pt`` are written at every validation point and at the
        end. Created if missing.
    resume : bool
        Continue from ``checkpoint_dir/last.pt``: same step count, batches, learning rates and
        optimiser state, so the run continues as if never interrupted (CPU: identical losses).
        ``max_seconds`` counts the time spent before the interruption.
    log : list of str or callable, optional
        Receives notable events (also returned in ``TrainResult.log``).

    Returns
    -------
    TrainResult
        ``status`` is "done" (budget reached), "stopped" (on request) or "diverged" (the
        loss became NaN or infinite; no exception is raised).

    Raises
    ------
    EmcoreError
        Device not available, resume without a checkpoint or with a checkpoint of another
        architecture, or out of memory even at ``min_batch`` and ``min_patch``.

    Notes
    -----
    *Best model.* At every validation point (every ``val_every`` steps and at the end, stop
    included) the validation loss — or, without validation data, the smoothed training
    loss — is compared with the best so far. The model returned always holds the best
    weights: after a stop, the final validation has just compared the latest weights too, so
    "best" is the latest whenever it is better, and never a worse, noisier recent state; after
    divergence, the best is the only trustworthy state. ``last.pt`` keeps the latest weights
    for resuming.

    *Determinism.* Seeds torch (CPU and CUDA, process-wide) and a numpy generator from
    ``config.seed``; batches come only from that generator. GPU kernels may still differ in
    the last bits between runs.

    *Out of memory* (CUDA ``OutOfMemoryError`` or any error saying "out of memory"): the
    step is retried after emptying the cache with half the batch, down to ``min_batch``,
    then half the patch, down to ``min_patch``; each fallback is logged and reported in
    ``Progress.message``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError("model must be a torch.nn.Module")
    device = select_device(config.device)
    torch.manual_seed(config.seed)  # also seeds every CUDA device
    model.to(device)
    model.train()
    run = _Run(model, source, loss, config, device, progress, should_stop, checkpoint_dir, log)
    run.say(f"Training on {device}{' with bf16 autocast' if run.amp else ''}.")
    if run.ckpt_dir is not None:
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        run.resume()
    validation = getattr(source, "validation", None)
    run.val_items = list(validation()) if callable(validation) else []
    run.measure_input()
    run.t0 = time.perf_counter()

    status, diverged_at, diverged_what = "done", None, ""
    hist_every = max(1, config.val_every // 10)
    while True:
        if config.steps is not None and run.step >= config.steps:
            break
        if config.max_seconds is not None and run.elapsed() >= config.max_seconds:
            break
        if should_stop is not None and should_stop():
            status = "stopped"
            break
        step = run.step + 1
        run.lr = learning_rate(config, step, run.fraction(step))
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr
        oom = False
        try:
            value = run.train_step(step)
        except Exception as err:  # noqa: BLE001 - re-raised unless out of memory
            if not _is_oom(err):
                raise
            oom = True
        if oom:
            # Outside the except block, so the traceback's tensors are already freed.
            run.shrink(step)
            continue
        if not math.isfinite(value):
            status, diverged_at = "diverged", step
            diverged_what = "NaN" if math.isnan(value) else "infinite"
            break
        run.step = step
        run.last_loss = value
        run.ema_raw = _EMA_BETA * run.ema_raw + (1 - _EMA_BETA) * value
        run.ema_n += 1
        run.window.append(value)
        if step % config.val_every == 0:
            if not run.evaluate():
                status, diverged_at, diverged_what = "diverged", step, "NaN in validation"
                break
            run.report(force=True)
        else:
            if step % hist_every == 0:
                run.flush_history()
            run.report()

    if status != "diverged" and run.step > max(run.last_eval_step, 0):
        if not run.evaluate():
            status, diverged_at, diverged_what = "diverged", run.step, "NaN in validation"
    seconds = run.elapsed()
    run.restore_best()

    if status == "diverged":
        word = "NaN" if diverged_what.startswith("NaN") else "infinite"
        where = " on the validation data" if diverged_what == "NaN in validation" else ""
        message = (f"The loss became {word}{where} at step {diverged_at}; {run.best_words()} — lower the "
                   "learning rate (or turn on gradient clipping).")
    elif status == "stopped":
        total, _ = run.total_and_eta()
        pct = f" ({100 * run.step / total:.0f} %)" if total else ""
        message = f"Stopped on request after {run.step} of {total} steps{pct}; {run.best_words()}."
    else:
        budget = "time budget" if config.steps is None or run.step < config.steps else "step budget"
        message = f"Trained {run.step} steps in {seconds:.1f} s on {device.type} ({budget}); {run.best_words()}."
    warning = run.worse_than_input()
    if warning:
        message = f"{message} {warning}"
    run.say(message)
    run.report(message, force=True)
    return TrainResult(
        status=status,
        steps_done=run.step,
        best_step=run.best_step,
        best_val=run.best_val if math.isfinite(run.best_val) else None,
        best_on="val_loss" if run.val_items else "train_loss",
        history=list(run.history),
        device=str(device),
        message=message,
        batch_size=run.batch_size,
        patch_size=run.patch_size,
        seconds=seconds,
        log=tuple(run.lines),
        input_psnr=run.input_psnr,
        warning=warning,
    )
