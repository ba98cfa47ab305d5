"""Training settings (:class:`TrainConfig`), learning-rate schedules and device choice.

References
----------
Kingma & Ba, "Adam: A method for stochastic optimization", ICLR 2015.
Loshchilov & Hutter, "Decoupled weight decay regularization" (AdamW), ICLR 2019.
Loshchilov & Hutter, "SGDR: Stochastic gradient descent with warm restarts", ICLR 2017
(cosine annealing).
Smith & Topin, "Super-convergence: very fast training of neural networks using large
learning rates", Proc. SPIE 11006 (2019) (one-cycle policy).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from emcore.errors import EmcoreError

# One-cycle policy constants, as in Smith & Topin (2019) and torch's OneCycleLR defaults:
# start at lr / 25, peak at lr after 30 % of the run, end at lr / (25 * 1e4).
_ONECYCLE_PCT_START = 0.3
_ONECYCLE_DIV = 25.0
_ONECYCLE_FINAL_DIV = 1e4


# ---------------------------------------------------------------------------- config


Schedule = Literal["constant", "cosine", "onecycle"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]


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
