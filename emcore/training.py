"""One training loop for every learned method, weights files, and tiled inference.

Every learned denoiser (supervised Noise2Clean / Noise2Noise, self-supervised blind-spot
methods) trains through :func:`train`. What differs between methods lives outside the loop:

* a **data source** (:class:`DataSource`) hands out ``(inputs, targets[, mask])`` batches as
  float32 CPU tensors ``[B, C, H, W]`` (``[B, C, D, H, W]`` for 3-D models) and, optionally,
  fixed validation batches;
* a **loss** (:class:`Loss`) — ``loss(output, target, mask=None)`` — such as :class:`MSELoss`
  or :class:`PoissonNLLLoss`; the mask restricts the loss to the blind-spot pixels of
  self-supervised methods.

The loop handles devices (CUDA, Apple MPS, CPU), bf16 autocast on CUDA, learning-rate
schedules, validation with PSNR, keeping the best and the last model, checkpoints that
resume to the same trajectory, a stop request, a diverging loss and running out of GPU
memory. It reports :class:`~emcore.progress.Progress` and never imports a UI.

:func:`save_weights` / :func:`load_weights` write and read a trained model as a plain
dictionary that ``torch.load(..., weights_only=True)`` reads (no pickled code), and
:func:`tiled_apply` runs a model over a large image in overlapping, smoothly blended tiles.

References
----------
Kingma & Ba, "Adam: A method for stochastic optimization", ICLR 2015.
Loshchilov & Hutter, "Decoupled weight decay regularization" (AdamW), ICLR 2019.
Loshchilov & Hutter, "SGDR: Stochastic gradient descent with warm restarts", ICLR 2017
(cosine annealing).
Smith & Topin, "Super-convergence: very fast training of neural networks using large
learning rates", Proc. SPIE 11006 (2019) (one-cycle policy).
Mohan, Manzorro, Vincent, Tang, Sheth, Simoncelli, Matteson, Crozier & Fernandez-Granda,
"Deep denoising for scientific discovery: a case study in electron microscopy", IEEE Trans.
Computational Imaging 8 (2022) 585–597 (400-px tiles with a 350-px step beat whole-image
inference for large UNets).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from .errors import EmcoreError
from .progress import Progress, ProgressFn, StopFn
from .registry import Stopped

__all__ = [
    "CHECKPOINT_FORMAT",
    "WEIGHTS_FORMAT",
    "DataSource",
    "Loss",
    "MSELoss",
    "PoissonNLLLoss",
    "TrainConfig",
    "TrainResult",
    "learning_rate",
    "load_weights",
    "read_weights",
    "save_weights",
    "select_device",
    "tiled_apply",
    "tile_weights",
    "train",
]

WEIGHTS_FORMAT = "emcore-weights-1"
CHECKPOINT_FORMAT = "emcore-checkpoint-1"

Schedule = Literal["constant", "cosine", "onecycle"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]

# One-cycle policy constants, as in Smith & Topin (2019) and torch's OneCycleLR defaults:
# start at lr / 25, peak at lr after 30 % of the run, end at lr / (25 * 1e4).
_ONECYCLE_PCT_START = 0.3
_ONECYCLE_DIV = 25.0
_ONECYCLE_FINAL_DIV = 1e4
# Smoothing of the training loss used to pick the best model when there is no validation
# set, and to show a readable curve (time constant about 50 steps).
_EMA_BETA = 0.98
# Progress reports at most this often (seconds), except at validation points and the end.
_PROGRESS_INTERVAL = 0.1


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run, validated on construction.

    Parameters
    ----------
    steps : int or None
        Budget in optimiser steps. ``None`` trains until ``max_seconds``.
    max_seconds : float or None
        Wall-clock budget in seconds (validation included; on resume the time already spent
        counts). At least one of ``steps`` and ``max_seconds`` must be given; with both, the
        first one reached ends the run.
    batch_size, patch_size : int
        Patches per step and their side in pixels, as asked of the data source. Out of GPU
        memory, the loop halves the batch down to ``min_batch``, then the patch down to
        ``min_patch``.
    lr : float
        Peak learning rate.
    weight_decay : float
        Decoupled weight decay (AdamW; with 0 this is plain Adam).
    schedule : {"constant", "cosine", "onecycle"}
        Learning-rate schedule; see :func:`learning_rate`.
    warmup_steps : int
        Linear warm-up of the learning rate over the first steps ("constant" and "cosine";
        "onecycle" has its own warm-up phase and ignores it).
    val_every : int
        Validate (or, without validation data, compare the smoothed training loss), keep the
        best model and write checkpoints every this many steps, and at the end.
    seed : int
        Seeds torch (CPU and CUDA) and the numpy generator that orders the batches.
    device : {"auto", "cpu", "cuda", "mps"}
        See :func:`select_device`.
    amp : bool
        bf16 autocast of the forward pass on CUDA; ignored on other devices.
    grad_clip : float or None
        Clip the global gradient norm to this value.
    min_batch, min_patch : int
        Smallest batch and patch the out-of-memory fallback may shrink to.
    """

    steps: int | None = 2000
    max_seconds: float | None = None
    batch_size: int = 16
    patch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    val_every: int = 100
    seed: int = 0
    device: DeviceName = "auto"
    amp: bool = True
    grad_clip: float | None = None
    min_batch: int = 1
    min_patch: int = 16

    def __post_init__(self) -> None:
        def whole(name: str, v: Any, low: int) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise EmcoreError(f"Training setting '{name}' must be a whole number of at least {low}; got {v!r}.")

        if self.steps is None and self.max_seconds is None:
            raise EmcoreError("Give the training a budget: a number of steps, a time limit in seconds, or both.")
        if self.steps is not None:
            whole("steps", self.steps, 1)
        if self.max_seconds is not None:
            if not isinstance(self.max_seconds, (int, float)) or not (0 < self.max_seconds < math.inf):
                raise EmcoreError(f"The training time limit must be a positive number of seconds; got {self.max_seconds!r}.")
        whole("min_batch", self.min_batch, 1)
        whole("min_patch", self.min_patch, 1)
        whole("batch_size", self.batch_size, 1)
        whole("patch_size", self.patch_size, 1)
        if self.batch_size < self.min_batch:
            raise EmcoreError(f"The batch size ({self.batch_size}) is below the smallest allowed ({self.min_batch}).")
        if self.patch_size < self.min_patch:
            raise EmcoreError(f"The patch size ({self.patch_size} px) is below the smallest allowed ({self.min_patch} px).")
        if not isinstance(self.lr, (int, float)) or not (0 < self.lr < math.inf):
            raise EmcoreError(f"The learning rate must be a positive number; got {self.lr!r}.")
        if not isinstance(self.weight_decay, (int, float)) or not (0 <= self.weight_decay < math.inf):
            raise EmcoreError(f"The weight decay must be zero or positive; got {self.weight_decay!r}.")
        if self.schedule not in ("constant", "cosine", "onecycle"):
            raise EmcoreError(f"Unknown learning-rate schedule '{self.schedule}'; use constant, cosine or onecycle.")
        whole("warmup_steps", self.warmup_steps, 0)
        whole("val_every", self.val_every, 1)
        whole("seed", self.seed, 0)
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise EmcoreError(f"Unknown device '{self.device}'; use auto, cpu, cuda or mps.")
        if self.grad_clip is not None and (
            not isinstance(self.grad_clip, (int, float)) or not (0 < self.grad_clip < math.inf)
        ):
            raise EmcoreError(f"Gradient clipping must be a positive number or off; got {self.grad_clip!r}.")

    def to_dict(self) -> dict:
        """Plain dictionary (for checkpoints, reports and model cards)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def learning_rate(config: TrainConfig, step: int, fraction: float) -> float:
    """Learning rate for a step.

    Parameters
    ----------
    config : TrainConfig
    step : int
        The step about to be taken, counted from 1.
    fraction : float
        How far the run is through its budget, in [0, 1): ``(step - 1) / steps`` when a step
        budget is given, else the elapsed fraction of ``max_seconds``.

    Returns
    -------
    float
        ``constant``: ``lr``. ``cosine``: ``lr * (1 + cos(pi * fraction)) / 2``, decaying to 0
        (Loshchilov & Hutter 2017, without restarts). Both multiplied by a linear warm-up
        ``min(1, step / warmup_steps)``. ``onecycle``: cosine rise from ``lr / 25`` to ``lr``
        over the first 30 % of the run, then cosine decay to ``lr / 2.5e5`` (Smith & Topin
        2019; torch ``OneCycleLR`` defaults).
    """
    f = min(max(float(fraction), 0.0), 1.0)
    lr = float(config.lr)
    if config.schedule == "onecycle":
        start, end = lr / _ONECYCLE_DIV, lr / (_ONECYCLE_DIV * _ONECYCLE_FINAL_DIV)
        if f < _ONECYCLE_PCT_START:
            t = f / _ONECYCLE_PCT_START
            return start + (lr - start) * (1 - math.cos(math.pi * t)) / 2
        t = (f - _ONECYCLE_PCT_START) / (1 - _ONECYCLE_PCT_START)
        return end + (lr - end) * (1 + math.cos(math.pi * t)) / 2
    value = lr if config.schedule == "constant" else lr * (1 + math.cos(math.pi * f)) / 2
    if config.warmup_steps > 0:
        value *= min(1.0, step / config.warmup_steps)
    return value


def select_device(name: str = "auto") -> torch.device:
    """The torch device to train or infer on.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "mps"}
        ``auto`` picks CUDA, then Apple MPS, then the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    EmcoreError
        For an unknown name, or a device that was asked for but is not available here.
    """
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EmcoreError("CUDA was requested but no CUDA GPU is available here; choose the CPU or 'auto'.")
        return torch.device("cuda")
    if name == "mps":
        if not mps_ok:
            raise EmcoreError("Apple MPS was requested but is not available here; choose the CPU or 'auto'.")
        return torch.device("mps")
    raise EmcoreError(f"Unknown device '{name}'; use auto, cpu, cuda or mps.")


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


class Loss(Protocol):
    """``loss(output, target, mask=None) -> scalar tensor``; with a mask, only pixels where
    ``mask == 1`` count."""

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor: ...


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).expand_as(values)
    # clamp: a batch whose mask is empty contributes 0 rather than 0/0.
    return (values * m).sum() / m.sum().clamp_min(1.0)


class MSELoss:
    """Mean squared error, over the pixels where ``mask == 1`` when a mask is given.

    Computed in float32 whatever the output dtype (autocast).
    """

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return _masked_mean((output.float() - target.float()) ** 2, mask)

    def __repr__(self) -> str:
        return "MSELoss()"


class PoissonNLLLoss:
    """Poisson negative log-likelihood of count targets, for shot-noise-limited data.

    Parameters
    ----------
    link : {"log", "softplus"}
        How the network output ``o`` becomes a rate ``r``. ``"log"``: ``o`` is the log-rate,
        ``r = exp(o)`` and the loss is ``exp(o) - t * o`` (numerically safe, but the network
        must output logarithms). ``"softplus"``: ``r = softplus(o) + eps`` keeps the rate
        positive while the network outputs intensities directly; the loss is
        ``r - t * log(r)``.
    eps : float
        Floor added to the softplus rate so that ``log`` stays finite.

    Notes
    -----
    The constant ``log(t!)`` is left out (it does not depend on the network), so values can be
    negative; only differences matter. Averaged over the pixels where ``mask == 1`` when a
    mask is given.
    """

    def __init__(self, link: Literal["log", "softplus"] = "softplus", eps: float = 1e-6):
        if link not in ("log", "softplus"):
            raise EmcoreError(f"Unknown Poisson link '{link}'; use log or softplus.")
        if not eps > 0:
            raise EmcoreError(f"The Poisson loss floor eps must be positive; got {eps!r}.")
        self.link = link
        self.eps = float(eps)

    def __call__(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        o, t = output.float(), target.float()
        if self.link == "log":
            values = torch.exp(o) - t * o
        else:
            rate = nn.functional.softplus(o) + self.eps
            values = rate - t * torch.log(rate)
        return _masked_mean(values, mask)

    def __repr__(self) -> str:
        return f"PoissonNLLLoss(link={self.link!r}, eps={self.eps:g})"


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


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _model_config(model: nn.Module) -> dict | None:
    cfg = getattr(model, "config", None)
    if callable(cfg):
        return dict(cfg())
    return None


def _atomic_save(obj: Any, path: Path) -> None:
    # Write then rename: a job killed mid-write never leaves a truncated checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    :func:`emcore.metrics.psnr`)."""
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
        if not message:
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
    )


# ------------------------------------------------------------------------ weights


def _read_dict(path: Path, fmt: str, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EmcoreError(f"The {what} file {path} does not exist.")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of foreign files; such files get our sentence.
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem
        raise EmcoreError(
            f"{path.name} is not a {what} saved by this workbench (it could not be read safely: "
            f"{type(err).__name__}); choose another file."
        ) from None
    if not isinstance(data, dict) or data.get("format") != fmt or not isinstance(data.get("state_dict"), dict):
        raise EmcoreError(f"{path.name} is not a {what} saved by this workbench; choose another file.")
    return data


def _describe(name: str | None, config: dict | None) -> str:
    name = name or "model"
    art = "an" if name[:1].lower() in "aeio" else "a"
    if not config:
        return f"{art} {name}"
    return f"{art} {name} with " + ", ".join(f"{k} {v}" for k, v in config.items())


def _plain(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _check_architecture(model: nn.Module, name: str | None, config: dict | None, path: Path) -> None:
    mine, my_cfg = type(model).__name__, _model_config(model)
    same = name == mine and (config is None or my_cfg is None or _plain(config) == _plain(my_cfg))
    if not same:
        raise EmcoreError(
            f"{Path(path).name} holds weights for {_describe(name, config)}, not for {_describe(mine, my_cfg)}; "
            "choose the matching model or weights file."
        )


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) such as '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) such as '{unexpected[0]}'")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape, such as '{k}' {tuple(state[k].shape)} instead of "
                         f"{tuple(own[k].shape)}")
        raise EmcoreError(
            f"{Path(path).name} does not fit this {type(model).__name__}: {'; '.join(parts)}; "
            "choose the weights trained for this architecture."
        )
    model.load_state_dict(state)


def save_weights(model: nn.Module, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Save a trained model as a weights file.

    Parameters
    ----------
    model : torch.nn.Module
        If it has ``config()`` (a dict of plain values rebuilding it: ``type(model)(**config)``)
        that is stored too, so :func:`load_weights` can rebuild the model.
    path : path
    card : dict, optional
        A model card of plain values (str, numbers, bools, None, lists, dicts): what it was
        trained on, method, noise, date, metrics...

    Returns
    -------
    Path
        The file written: a dict ``{"format": "emcore-weights-1", "model": class name,
        "config": model.config() or {}, "state_dict": CPU tensors, "card": card}`` saved with
        ``torch.save`` and readable with ``torch.load(path, weights_only=True)``.
    """
    path = Path(path)
    data = {
        "format": WEIGHTS_FORMAT,
        "model": type(model).__name__,
        "config": _model_config(model) or {},
        "state_dict": _cpu_state(model),
        "card": dict(card or {}),
    }
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(data, path)
    return path


def read_weights(path: str | os.PathLike) -> dict:
    """Read a weights file safely (``weights_only=True``) without building a model.

    Returns
    -------
    dict
        ``format``, ``model``, ``config``, ``state_dict``, ``card``.

    Raises
    ------
    EmcoreError
        When the file is missing, unreadable, or not a weights file of this workbench.
    """
    return _read_dict(Path(path), WEIGHTS_FORMAT, "weights file")


def load_weights(model_factory_or_module: nn.Module | Callable[..., nn.Module], path: str | os.PathLike) -> nn.Module:
    """Load a weights file into a model.

    Parameters
    ----------
    model_factory_or_module : torch.nn.Module or callable
        A model to fill (its class and ``config()`` must match the file), or a class /
        factory called as ``factory(**config)`` with the stored configuration.
    path : path
        A file written by :func:`save_weights`. Read with ``weights_only=True``: a file
        holding pickled code is refused, never run.

    Returns
    -------
    torch.nn.Module
        The model, on the CPU for a factory (a given module keeps its device), in eval mode.
        The model card is available from :func:`read_weights`.

    Raises
    ------
    EmcoreError
        Naming the file, when it is not a weights file of this workbench or holds weights for
        another architecture ("... holds weights for a UNet with base 64, not for a DnCNN ...").
    """
    path = Path(path)
    data = read_weights(path)
    name, config = data.get("model"), data.get("config") or {}
    target = model_factory_or_module
    if isinstance(target, nn.Module):
        model = target
    else:
        if isinstance(target, type) and target.__name__ != name:
            raise EmcoreError(
                f"{path.name} holds weights for {_describe(name, config)}, not for a {target.__name__}; "
                "choose the matching model or weights file."
            )
        try:
            model = target(**config)
        except (TypeError, ValueError) as err:  # unknown keys, or values out of the model's ranges
            raise EmcoreError(
                f"{path.name} holds weights for {_describe(name, config)}, which this model cannot be built "
                f"from ({err}); choose the matching model or weights file."
            ) from None
    _check_architecture(model, name, config or None, path)
    _load_state(model, data["state_dict"], path)
    model.eval()
    return model


# ---------------------------------------------------------------------- inference


def _axis_plan(n: int, tile: int, step: int, multiple: int) -> tuple[int, int, list[int]]:
    """Tile length, padded length and tile starts along one axis."""
    if n <= tile:
        t = -(-n // multiple) * multiple
        return t, t, [0]
    count = -(-(n - tile) // step) + 1
    padded = tile + (count - 1) * step
    return tile, padded, [i * step for i in range(count)]


def tile_weights(length: int, overlap: int, guard: int, first: bool, last: bool) -> np.ndarray:
    """1-D blending weights of one tile along one axis.

    Where two neighbouring tiles overlap (``overlap`` pixels), the left tile's weight falls
    and the right tile's rises along a raised-cosine (``sin**2``) ramp so that the two add to
    exactly 1 (a partition of unity). The outermost ``guard`` pixels of a tile get weight 0,
    so its edge pixels — spoiled by the network's zero padding — never reach the output.
    Sides on the image border (``first`` / ``last``) are not tapered.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap <= 0:
        return w
    ramp_len = overlap - 2 * guard
    j = np.arange(ramp_len, dtype=np.float64)
    rise = np.sin(0.5 * np.pi * (j + 0.5) / ramp_len) ** 2
    up = np.concatenate([np.zeros(guard), rise, np.ones(guard)])
    if not first:
        w[:overlap] *= up
    if not last:
        w[length - overlap:] *= 1.0 - up
    return w


def tiled_apply(
    fn: Callable[[Tensor], Tensor],
    image: np.ndarray,
    tile: int = 400,
    step: int = 350,
    batch: int = 4,
    device: str | torch.device | None = None,
    *,
    multiple: int = 16,
    guard: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> np.ndarray:
    """Apply a network to a large image in overlapping, smoothly blended tiles.

    Mohan et al. (IEEE TCI 2022, "Deep denoising for scientific discovery") found that
    applying large UNets to 400-px tiles taken every 350 px gives better denoising than
    applying them to the whole image; those are the defaults. It also bounds memory.

    Parameters
    ----------
    fn : callable
        Maps a float32 tensor ``[B, 1, h, w]`` on ``device`` to one of the same shape (e.g. a
        model in eval mode). Called under ``torch.inference_mode()``.
    image : ndarray, shape (H, W) or (..., H, W)
        Left unchanged; leading axes (frames of a stack) are processed one by one.
    tile, step : int
        Tile side and distance between tile starts, in pixels; ``tile / 2 <= step <= tile``.
        ``tile`` is rounded up to a multiple of ``multiple``.
    batch : int
        At most this many tiles are on the device at once (halved on out-of-memory).
    device : str or torch.device, optional
        Where the tiles go; by default the device of ``fn``'s parameters when ``fn`` is a
        module, else the CPU.
    multiple : int
        Tile sides are multiples of this (UNets need a multiple of ``2**depth``); an image
        smaller than ``tile`` is padded (by reflection) up to one.
    guard : int, optional
        Pixels at each tile edge given zero weight in overlaps; default ``(tile - step) // 4``.
    progress, should_stop : callables, optional
        Progress per batch of tiles; a stop raises :class:`~emcore.registry.Stopped`.

    Returns
    -------
    ndarray, float32, same shape as ``image``
        Tiles blended with raised-cosine weights that sum to 1 everywhere
        (:func:`tile_weights`), assembled in a float32 array on the CPU.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim < 2:
        raise EmcoreError(f"Tiled inference needs an image of at least two dimensions; got shape {img.shape}.")
    if img.ndim > 2:
        flat = img.reshape(-1, *img.shape[-2:])
        out = np.empty_like(flat)
        t0 = time.perf_counter()
        for i, frame in enumerate(flat):
            if should_stop is not None and should_stop():
                raise Stopped(f"Stopped on request after {i} of {len(flat)} frames.")
            out[i] = tiled_apply(fn, frame, tile, step, batch, device, multiple=multiple, guard=guard)
            if progress is not None:
                el = time.perf_counter() - t0
                progress(Progress(step=i + 1, total=len(flat), elapsed=el, eta=el / (i + 1) * (len(flat) - i - 1),
                                  message=f"Frame {i + 1} of {len(flat)}."))
        return out.reshape(img.shape)
    if multiple < 1 or batch < 1:
        raise EmcoreError("Tiled inference needs a batch and a size multiple of at least 1.")
    tile = -(-int(tile) // multiple) * multiple
    if not (tile / 2 <= step <= tile):
        raise EmcoreError(f"The tile step ({step} px) must lie between half the tile ({tile // 2} px) and the tile ({tile} px).")
    overlap = tile - step
    guard = overlap // 4 if guard is None else int(guard)
    if overlap and not (0 <= 2 * guard < overlap):
        raise EmcoreError(f"The tile guard ({guard} px) must be less than half the overlap ({overlap} px).")
    if device is None:
        params = list(fn.parameters()) if isinstance(fn, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)

    H, W = img.shape
    th, ph, ys = _axis_plan(H, tile, step, multiple)
    tw, pw, xs = _axis_plan(W, tile, step, multiple)
    pad = ((0, ph - H), (0, pw - W))
    padded = np.pad(img, pad, mode="reflect" if min(H, W) > 1 else "edge") if (ph, pw) != (H, W) else img
    wy = [tile_weights(th, overlap if len(ys) > 1 else 0, guard, i == 0, i == len(ys) - 1) for i in range(len(ys))]
    wx = [tile_weights(tw, overlap if len(xs) > 1 else 0, guard, i == 0, i == len(xs) - 1) for i in range(len(xs))]
    out = np.zeros((ph, pw), dtype=np.float32)
    jobs = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]
    t0 = time.perf_counter()
    k = 0
    with torch.inference_mode():
        while k < len(jobs):
            if should_stop is not None and should_stop():
                raise Stopped(f"Stopped on request after {k} of {len(jobs)} tiles.")
            chunk = jobs[k:k + batch]
            tiles = np.stack([padded[ys[iy]:ys[iy] + th, xs[ix]:xs[ix] + tw] for iy, ix in chunk])
            oom = False
            try:
                result = fn(torch.from_numpy(tiles[:, None]).to(device))
                result = result.detach().float().cpu().numpy()
            except Exception as err:  # noqa: BLE001 - re-raised unless out of memory
                if not _is_oom(err):
                    raise
                oom = True
            if oom:
                _empty_cache(device)
                if batch == 1:
                    raise EmcoreError(
                        f"Out of memory on {device.type} even for one {th}×{tw} tile; use smaller tiles or the CPU."
                    )
                batch = max(1, batch // 2)
                continue
            if result.shape != (len(chunk), 1, th, tw):
                raise ValueError(f"fn returned shape {result.shape} for tiles of shape {(len(chunk), 1, th, tw)}")
            for (iy, ix), r in zip(chunk, result[:, 0]):
                w = np.outer(wy[iy], wx[ix]).astype(np.float32)
                out[ys[iy]:ys[iy] + th, xs[ix]:xs[ix] + tw] += w * r
            k += len(chunk)
            if progress is not None:
                el = time.perf_counter() - t0
                progress(Progress(step=k, total=len(jobs), elapsed=el, eta=el / k * (len(jobs) - k),
                                  message=f"Tile {k} of {len(jobs)}."))
    return out[:H, :W].copy()
