"""Zero-shot self-supervised denoisers trained on the noisy data alone: Noise2SR and Noise2Self.

Both learn from the one image (or stack) being denoised, with no clean data and no noise
model, through the shared training loop (:func:`emcore.train.train`).

*Noise2SR* [Tian2024] trains a super-resolving network (:class:`models.Noise2SR`): a random
sub-sampler keeps one randomly chosen pixel of every ``s x s`` cell of the noisy image, the
network predicts the full-resolution image from that ``H/s x W/s`` input, and the loss is the
squared error against the noisy image on the ``s**2 - 1`` pixels per cell that were *not*
fed in, whose noise is independent of the input's (pixel-wise independent noise assumed).
Every draw of the sub-sampler is a new training pair. At inference the outputs for ``M``
independent sub-samplings of the whole image are averaged (the MMSE estimate of [Tian2024]).

*Noise2Self* [Batson2019] is the baseline: a U-Net sees the image with a grid of pixels
replaced by an interpolation of their neighbours and is trained to predict the noisy values
of exactly those pixels (J-invariant masking); at inference the network is applied to the
whole image once, or once per grid phase keeping only the masked pixels (J-invariant).

Both normalise the data by its mean (:func:`emcore.train.simulated.normalise`) before training and
denormalise the result. A stack trains one model on patches drawn from all frames and is
denoised frame by frame.

References
----------
.. [Tian2024] X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, "Zero-Shot
   Image Denoising for High-Resolution Electron Microscopy", IEEE Trans. Comput. Imaging 10,
   1462-1475, 2024 (arXiv:2406.14264).
.. [Batson2019] J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision",
   ICML 2019, PMLR 97, 524-533.

This module holds what both share (presets, crops, training, frame-by-frame inference);
:mod:`emcore.methods.noise2sr` and :mod:`emcore.methods.noise2self` hold each method.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.methods.registry import Param, RunContext
from emcore.progress import Progress

# --------------------------------------------------------------------------- constants

# [Tian2024], experiments and the configuration released with the paper: sub-sampling cell s = 2,
# Adam with learning rate 1e-4, batches of 10 patches of 256 x 256 px, M = 50 sub-samplings
# averaged at inference; about 6000 iterations.
PAPER_SCALE = 2
PAPER_LR = 1e-4
PAPER_BATCH = 10
PAPER_PATCH = 256
PAPER_STEPS = 6000
PAPER_MMSE_SAMPLES = 50

# Smallest image side the methods train on: a 16-px image holds too few independent
# pixels to learn an image prior from (and the U-Net would see only padding).
MIN_SIDE = 16
# Above this many pixels per frame the inference runs on overlapping tiles (memory).
_TILE_ABOVE = 2048 * 2048
_TILE, _TILE_STEP = 1024, 896

# Training settings and network of each preset. "quality" is the paper's training setting
# with a 5-scale U-Net encoder (the released code's depth), meant for a GPU; "fast" is tuned
# for 2 CPU cores. Measured with benchmarks/bench_noise2sr.py on 512 x 512 crops of the four
# Pt/CeO2 simulations with Poisson-Gaussian noise (a = 0.05, b = 0.02; noisy 5.9 dB), medians
# of the four: fast Noise2SR 28.8 dB, fast Noise2Self 24.0 dB, BM3D 24.7 dB, for about 250
# (Noise2SR) and 325 (Noise2Self) CPU seconds on one thread.
PRESETS: dict[str, dict[str, dict]] = {
    "noise2sr": {
        # Tuned on crop 1: a U-Net of base 16 for 2000 steps reaches the PSNR of base 32 for
        # 1500 steps (28.8 vs 29.0 dB) at half the compute; the MMSE average of 50
        # sub-samplings adds 0.8 dB over 8 for 3 % of the time.
        # With the Wiener prior channel (the default) the network starts from the prior: 600 steps
        # gave a median 31.9 dB on the four crops (Poisson-Gaussian), BM3D given the true noise
        # 24.5 dB, the Wiener prior alone 30.65 dB, for 170-215 CPU-s of one thread
        # (benchmarks/RESULTS.md, 2026-12-07 session 2); "prior_steps" is the step count used
        # then, "steps" the one without the prior.
        "fast": dict(steps=2000, prior_steps=600, batch_size=8, patch_size=128, lr=1e-3, schedule="onecycle",
                     mmse_samples=PAPER_MMSE_SAMPLES, scales=4, base=16, features=16),
        "quality": dict(steps=PAPER_STEPS, batch_size=PAPER_BATCH, patch_size=PAPER_PATCH, lr=PAPER_LR,
                        schedule="constant", mmse_samples=PAPER_MMSE_SAMPLES, scales=5, base=32, features=32),
    },
    "noise2self": {
        "fast": dict(steps=1500, batch_size=8, patch_size=64, lr=1e-3, schedule="onecycle",
                     scales=4, base=32),
        "quality": dict(steps=PAPER_STEPS, batch_size=PAPER_BATCH, patch_size=PAPER_PATCH, lr=PAPER_LR,
                        schedule="constant", scales=5, base=32),
    },
}


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replication-pad the last two axes at the bottom/right up to multiples of ``multiple``."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (ph or pw):
        return x
    shape = x.shape
    x4 = x.reshape(-1, 1, *shape[-2:])
    return F.pad(x4, (0, pw, 0, ph), mode="replicate").reshape(*shape[:-2], shape[-2] + ph, shape[-1] + pw)


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random one of the 8 flips / 90° rotations of a square patch."""
    patch = np.rot90(patch, int(rng.integers(4)))
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def _crops(frames: np.ndarray, n: int, p: int, rng: np.random.Generator, augment: bool) -> np.ndarray:
    """``n`` square ``p x p`` crops from random frames and positions, randomly flipped/rotated."""
    t, hh, ww = frames.shape
    out = np.empty((n, p, p), np.float32)
    for i in range(n):
        f = int(rng.integers(t))
        y, x = int(rng.integers(hh - p + 1)), int(rng.integers(ww - p + 1))
        patch = frames[f, y:y + p, x:x + p]
        out[i] = _augment(patch, rng) if augment else patch
    return out


def _frames_of(ds: Dataset) -> np.ndarray:
    return ds.data[None] if ds.kind == "image" else ds.data


def _check_size(ds: Dataset, label: str) -> None:
    hh, ww = ds.data.shape[-2:]
    if min(hh, ww) < MIN_SIDE:
        raise EmcoreError(
            f"{ds.name} is {hh}×{ww} px, too small for {label} to learn from (it needs at least "
            f"{MIN_SIDE}×{MIN_SIDE} px); use a classical method such as BM3D or Wiener."
        )


def _preset(method: str, params: dict) -> dict:
    """The chosen preset's settings; with the Wiener prior channel on (Noise2SR) its own step count."""
    cfg = dict(PRESETS[method][params["preset"]])
    prior_steps = cfg.pop("prior_steps", None)
    if prior_steps is not None and params.get("prior") == "wiener":
        cfg["steps"] = prior_steps
    return cfg


def _settings(method: str, params: dict, ctx: RunContext) -> dict:
    """The preset's settings with the user's overrides (None = the preset's value)."""
    cfg = _preset(method, params)
    for k in _PRESET_KEYS:
        if params.get(k) is not None:
            cfg[k] = params[k]
    ctx.resolved.update({k: cfg[k] for k in _PRESET_KEYS if k in cfg})
    return cfg


# Parameters whose None means "the preset's value".
_PRESET_KEYS = ("steps", "batch_size", "patch_size", "lr", "mmse_samples")


def preset_values(method: str) -> Callable[[dict], dict]:
    """What the chosen preset gives the ``preset=True`` parameters (no time limit in either)."""
    def values(params: dict) -> dict:
        cfg = _preset(method, params)
        return {**{k: cfg[k] for k in _PRESET_KEYS if k in cfg}, "max_minutes": None}

    return values


# CPU seconds per training-patch pixel and step of the fast presets' networks, and per output
# pixel and pass at inference (2 CPU cores; the fast presets on a 512×512 image take about
# 250 s, Noise2SR, and 325 s, Noise2Self, on one thread, see PRESETS). The cost grows with the
# square of the network's base width.
_STEP_SECONDS = {"noise2sr": (1e-6, 16), "noise2self": (6e-6, 32)}
# Fixed cost of a step whatever the patch (optimiser, batch assembly, small kernels), and of the
# Wiener prior of a sub-sampled frame per step (Noise2SR with the prior): measured 0.06 and
# 0.045 s per step on a 3 x 40 x 40 stack, one thread; they dominate on small images.
_STEP_OVERHEAD = 0.06
_PRIOR_STEP_SECONDS = 0.045
_INFER_SECONDS = {"noise2sr": 3e-7, "noise2self": 2e-6}


def estimate(method: str) -> Callable[[tuple, str, dict], float]:
    """The registry's cost estimate of ``method``: training plus inference, on this machine."""
    def seconds(shape: tuple, kind: str, params: dict) -> float:
        from emcore.methods.common import accelerator_speedup

        cfg = _preset(method, params)
        cfg.update({k: params[k] for k in _PRESET_KEYS if params.get(k) is not None})
        per_px, base = _STEP_SECONDS[method]
        width = (cfg["base"] / base) ** 2
        frames = 1 if kind == "image" else shape[0]
        patch = min(int(cfg["patch_size"]), *shape[-2:])
        minutes = params.get("max_minutes")
        per_step = _STEP_OVERHEAD + (_PRIOR_STEP_SECONDS if params.get("prior") == "wiener" else 0.0)
        train = (width * per_px * int(cfg["batch_size"]) * patch ** 2 + per_step) * int(cfg["steps"])
        if minutes:
            train = 60.0 * minutes if params.get("steps") is None else min(train, 60.0 * minutes)
        passes = cfg.get("mmse_samples") or (int(params.get("grid", 1)) ** 2
                                             if params.get("inference") == "j-invariant" else 1)
        infer = width * _INFER_SECONDS[method] * passes * frames * shape[-2] * shape[-1]
        return (train + infer) / accelerator_speedup()

    return seconds


def _train(model, source, cfg: dict, params: dict, ctx: RunContext, frames: np.ndarray, label: str):
    from emcore.train.config import TrainConfig
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss

    p_used = source.patch_side(cfg["patch_size"])
    hh, ww = frames.shape[1:]
    if min(hh, ww) < cfg["patch_size"]:
        ctx.log.append(f"The image ({hh}×{ww} px) is smaller than the {cfg['patch_size']}-px training patches; "
                       f"training on {p_used}-px patches instead.")
    cfg["patch_size"] = ctx.resolved["patch_size"] = p_used
    minutes = float(params.get("max_minutes") or 0.0)
    # A time limit with the preset's step count: the budget is the time alone, and the
    # learning-rate schedule runs its course over it.
    steps = None if minutes > 0 and params.get("steps") is None else int(cfg["steps"])
    config = TrainConfig(
        steps=steps, max_seconds=60.0 * minutes if minutes > 0 else None,
        batch_size=int(cfg["batch_size"]), patch_size=p_used, min_patch=min(p_used, 16), lr=float(cfg["lr"]),
        schedule=cfg["schedule"], val_every=max(1, min(250, steps or 250)), seed=int(ctx.seed),
        device=ctx.device,
    )
    result = train(model, source, MSELoss(), config, progress=ctx.progress, should_stop=ctx.should_stop,
                   log=ctx.log)
    if result.status == "stopped":
        of = f" of {config.steps}" if config.steps is not None else ""
        ctx.log.append(f"Stopped at step {result.steps_done}{of}; {label} result from the best model so far.")
    ctx.artifacts["training"] = result.history
    ctx.resolved["steps_done"] = int(result.steps_done)
    if steps is None:
        ctx.resolved["steps"] = int(result.steps_done)
    return result


def _infer_frames(frames: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                  multiple: int, ctx: RunContext, what: str) -> np.ndarray:
    """Apply ``fn`` ((h, w) tensor -> (h, w) tensor) to every frame, tiled when large;
    reports progress per frame. Runs to the end even after a stop request (the stop
    ended the training; the result is still wanted)."""
    from emcore.methods.tiling import tiled_apply

    out = np.empty_like(frames)
    t0 = time.perf_counter()
    n = len(frames)
    for i, frame in enumerate(frames):
        if frame.size > _TILE_ABOVE:
            def tile_fn(batch: torch.Tensor) -> torch.Tensor:
                return torch.stack([fn(b[0])[None] for b in batch])

            out[i] = tiled_apply(tile_fn, frame, tile=_TILE, step=_TILE_STEP, batch=1, device=device,
                                 multiple=multiple)
        else:
            with torch.inference_mode():
                out[i] = fn(torch.from_numpy(frame).to(device)).float().cpu().numpy()
        if ctx.progress is not None:
            el = time.perf_counter() - t0
            ctx.progress(Progress(step=i + 1, total=n, elapsed=el, eta=el / (i + 1) * (n - i - 1),
                                  message=f"{what}: frame {i + 1} of {n} done." if n > 1 else f"{what}: done."))
    return out


def _cpu_eval_copy(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model).to("cpu").eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _budget_params(method: str) -> tuple[Param, ...]:
    """Training-budget parameters shared by both methods; None means "the preset's value"."""
    f, q = PRESETS[method]["fast"], PRESETS[method]["quality"]
    return (
        Param("steps", "int", None, min=1, max=100_000, label="Training steps", preset=True, group="training",
              help=f"Optimiser steps (preset: fast {f['steps']}"
                   + (f", {f['prior_steps']} with the Wiener prior channel" if "prior_steps" in f else "")
                   + f"; quality {q['steps']})."),
        Param("max_minutes", "float", None, min=0.01, max=24 * 60, label="Time limit (min)", preset=True,
              group="training",
              help="Stop training after this many minutes and denoise with the best model so far; the presets set "
                   "none. With the preset's step count the time alone is the budget and the learning-rate "
                   "schedule is spread over it (not bit-reproducible)."),
        Param("batch_size", "int", None, min=1, max=256, label="Batch size", preset=True, group="training",
              help=f"Patches per step (preset: fast {f['batch_size']}, quality {q['batch_size']})."),
        Param("patch_size", "int", None, min=8, max=2048, label="Patch size (px)", preset=True, group="training",
              help=f"Side of the training patches (preset: fast {f['patch_size']}, quality {q['patch_size']}). "
                   "Images smaller than a patch train on patches of their own size."),
        Param("lr", "float", None, min=1e-7, max=1.0, log=True, label="Learning rate", preset=True, group="training",
              help=f"Peak learning rate of Adam (preset: fast {f['lr']:g} {f['schedule']}, quality {q['lr']:g} "
                   f"{q['schedule']})."),
    )
