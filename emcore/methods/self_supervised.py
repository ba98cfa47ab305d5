"""Zero-shot self-supervised denoisers trained on the noisy data alone: Noise2SR and Noise2Self.

Both learn from the one image (or stack) being denoised, with no clean data and no noise
model, through the shared training loop (:func:`emcore.training.train`).

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

Both normalise the data by its mean (:func:`emcore.sbd.normalise`) before training and
denormalise the result. A stack trains one model on patches drawn from all frames and is
denoised frame by frame.

References
----------
.. [Tian2024] X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, "Zero-Shot
   Image Denoising for High-Resolution Electron Microscopy", IEEE Trans. Comput. Imaging 10,
   1462-1475, 2024 (arXiv:2406.14264).
.. [Batson2019] J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision",
   ICML 2019, PMLR 97, 524-533.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..dataset import Dataset
from ..errors import EmcoreError
from ..progress import Progress
from ..registry import Method, Param, RunContext, register

__all__ = [
    "MaskedPatches",
    "SubsampledPatches",
    "draw_cells",
    "grid_mask",
    "interpolate_masked",
    "j_invariant_apply",
    "mmse_apply",
    "subsample",
]

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
# [Batson2019] released code (its Masker, width 4 in the single-image examples): a 4 x 4 grid
# of masked pixels (one pixel in 16 per pass), replaced by an average of their neighbours.
N2S_GRID = 4
# Neighbour weights of the interpolation that replaces a masked pixel: the 8-neighbourhood,
# diagonal neighbours at half weight, the pixel itself excluded ([Batson2019] code).
_INTERP_KERNEL = np.array([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]], np.float32)
_INTERP_KERNEL /= _INTERP_KERNEL.sum()

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
        "fast": dict(steps=2000, batch_size=8, patch_size=128, lr=1e-3, schedule="onecycle",
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

# ------------------------------------------------------------------ random sub-sampler


def draw_cells(rng: np.random.Generator, n: int, h: int, w: int, s: int) -> np.ndarray:
    """Which pixel of every ``s x s`` cell the sub-sampler keeps.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, h, w : int
        Number of images and cells per column / row (the image is ``s*h x s*w``).
    s : int
        Cell side.

    Returns
    -------
    ndarray of int64, shape (n, h, w)
        Index ``k = row * s + col`` of the kept pixel inside its cell, uniform on
        ``0 .. s**2 - 1`` and independent between cells (the Random Sub-sampler of [Tian2024]).
    """
    return rng.integers(0, s * s, size=(n, h, w), dtype=np.int64)


def subsample(x: torch.Tensor, cells: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random sub-sampler of Noise2SR: one pixel per ``s x s`` cell, and the mask of the others.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W)
        ``H`` and ``W`` multiples of ``s``.
    cells : Tensor of int, shape (B, H/s, W/s)
        Kept pixel in each cell, ``row * s + col`` (:func:`draw_cells`).
    s : int

    Returns
    -------
    low : Tensor, shape (B, C, H/s, W/s)
        The kept pixels (differentiable with respect to ``x``).
    mask : Tensor, shape (B, 1, H, W), dtype of ``x``
        1 on the ``s**2 - 1`` pixels per cell that were not kept (where the loss is taken),
        0 on the kept one.
    """
    b, c, hh, ww = x.shape
    if hh % s or ww % s:
        raise ValueError(f"image sides {hh}x{ww} are not multiples of the cell size {s}")
    h, w = hh // s, ww // s
    # pixel_unshuffle puts pixel (i, j) of each cell of channel c in channel c * s**2 + i * s + j.
    cells = cells.to(device=x.device, dtype=torch.long)
    u = F.pixel_unshuffle(x, s).reshape(b, c, s * s, h, w)
    low = u.gather(2, cells.reshape(b, 1, 1, h, w).expand(b, c, 1, h, w)).squeeze(2)
    kept = F.one_hot(cells, s * s).permute(0, 3, 1, 2).to(x.dtype)
    mask = 1.0 - F.pixel_shuffle(kept, s)
    return low, mask


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


@dataclass
class SubsampledPatches:
    """Noise2SR training pairs from one noisy image or stack (a training data source).

    Each batch draws square patches from random frames and positions (random flips and 90°
    rotations), sub-samples each with a fresh random cell pattern, and returns
    ``(low, patch, mask)``: the network input ``[B, 1, p/s, p/s]``, the noisy target
    ``[B, 1, p, p]`` and the mask of the unsampled pixels, where the loss is taken
    (the super-resolution training of [Tian2024]).

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
        Normalised noisy data (not copied; never modified).
    scale : int
        Cell side ``s``.
    augment : bool
        Random flips / rotations.
    """

    frames: np.ndarray
    scale: int = PAPER_SCALE
    augment: bool = True

    def patch_side(self, patch_size: int) -> int:
        """The patch actually used: at most the image, a multiple of ``scale``."""
        p = min(int(patch_size), *self.frames.shape[1:])
        return max(self.scale, p - p % self.scale)

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        s, p = self.scale, self.patch_side(patch_size)
        target = torch.from_numpy(_crops(self.frames, batch_size, p, rng, self.augment)[:, None])
        cells = torch.from_numpy(draw_cells(rng, batch_size, p // s, p // s, s))
        low, mask = subsample(target, cells, s)
        return low.contiguous(), target, mask


# ------------------------------------------------------------------ Noise2Self masking


def grid_mask(shape: tuple[int, int], grid: int, phase: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels ``(i, j)`` with ``i % grid, j % grid == phase`` ([Batson2019])."""
    h, w = shape
    m = np.zeros((h, w), bool)
    m[phase[0]::grid, phase[1]::grid] = True
    return m


def interpolate_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the masked pixels of ``x`` by the weighted mean of their 8 neighbours.

    Parameters
    ----------
    x : Tensor, shape (B, 1, H, W)
    mask : Tensor, shape (B or 1, 1, H, W)
        1 where a pixel is hidden. Masked pixels must not touch each other (grid >= 2), so
        the interpolation never reads a hidden value: the output at a masked pixel does not
        depend on that pixel (J-invariance, [Batson2019]).
    """
    k = torch.from_numpy(_INTERP_KERNEL).to(x.device, x.dtype).reshape(1, 1, 3, 3)
    pad = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    neighbours = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=pad), k)
    m = mask.to(x.dtype)
    return x * (1 - m) + neighbours * m


@dataclass
class MaskedPatches:
    """Noise2Self training batches: ``(masked input, noisy patch, mask)``.

    Every patch hides the pixels of one random phase of a ``grid x grid`` lattice, replaced
    by an interpolation of their neighbours; the loss is taken on those pixels only.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W)
        Normalised noisy data.
    grid : int
        Lattice spacing, at least 2 (one pixel in ``grid**2`` hidden per patch).
    augment : bool
    """

    frames: np.ndarray
    grid: int = N2S_GRID
    augment: bool = True

    def patch_side(self, patch_size: int) -> int:
        return min(int(patch_size), *self.frames.shape[1:])

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        p = self.patch_side(patch_size)
        target = torch.from_numpy(_crops(self.frames, batch_size, p, rng, self.augment)[:, None])
        mask = np.stack([
            grid_mask((p, p), self.grid, (int(rng.integers(self.grid)), int(rng.integers(self.grid))))
            for _ in range(batch_size)
        ])[:, None]
        mask_t = torch.from_numpy(mask.astype(np.float32))
        return interpolate_masked(target, mask_t), target, mask_t


# ------------------------------------------------------------------------- inference


def mmse_cells(seed: int, m: int, h: int, w: int, s: int) -> np.ndarray:
    """The ``m``-th fixed sub-sampling pattern of an MMSE estimate (one generator per sample,
    so any grouping of the samples into batches gives the same patterns)."""
    return draw_cells(np.random.default_rng([int(seed), int(m)]), 1, h, w, s)[0]


def mmse_apply(
    model: torch.nn.Module,
    image: torch.Tensor,
    samples: int,
    seed: int,
    *,
    chunk: int = 1,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Noise2SR's MMSE estimate: the mean network output over ``samples`` sub-samplings.

    Parameters
    ----------
    model : Noise2SR
        In eval mode, on the device of ``image``.
    image : Tensor, shape (H, W)
        Normalised noisy image, any size (replication-padded to a multiple of the cell side
        internally, cropped back).
    samples : int
        ``M`` ([Tian2024]: 50).
    seed : int
        Fixes the ``M`` patterns (:func:`mmse_cells`), so the estimate is a deterministic,
        differentiable function of ``image``.
    chunk : int
        Patterns evaluated per forward pass.
    progress : callable, optional
        Called with the number of samples done.

    Returns
    -------
    Tensor, shape (H, W)
    """
    s = model.scale
    hh, ww = image.shape[-2:]
    x = _pad_to(image, s)[None, None]
    h, w = x.shape[-2] // s, x.shape[-1] // s
    total = None
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        cells = torch.from_numpy(np.stack([mmse_cells(seed, done + i, h, w, s) for i in range(n)]))
        low, _ = subsample(x.expand(n, -1, -1, -1), cells, s)
        out = model(low).float().sum(0)
        total = out if total is None else total + out
        done += n
        if progress is not None:
            progress(done)
    return (total[0] / samples)[:hh, :ww]


def j_invariant_apply(model: torch.nn.Module, image: torch.Tensor, grid: int) -> torch.Tensor:
    """Noise2Self's J-invariant prediction: for every phase of the ``grid x grid`` lattice,
    run the network on the image with that phase interpolated and keep its output there
    ([Batson2019]). ``image`` is (H, W); returns (H, W)."""
    x = image[None, None]
    out = torch.zeros_like(x)
    for a in range(grid):
        for b in range(grid):
            m = torch.from_numpy(grid_mask(tuple(x.shape[-2:]), grid, (a, b))[None, None].astype(np.float32))
            m = m.to(x.device, x.dtype)
            out = out + model(interpolate_masked(x, m)).float() * m
    return out[0, 0]


def _frames_of(ds: Dataset) -> np.ndarray:
    return ds.data[None] if ds.kind == "image" else ds.data


def _check_size(ds: Dataset, label: str) -> None:
    hh, ww = ds.data.shape[-2:]
    if min(hh, ww) < MIN_SIDE:
        raise EmcoreError(
            f"{ds.name} is {hh}×{ww} px, too small for {label} to learn from (it needs at least "
            f"{MIN_SIDE}×{MIN_SIDE} px); use a classical method such as BM3D or Wiener."
        )


def _settings(method: str, params: dict, ctx: RunContext) -> dict:
    """The preset's settings with the user's overrides (0 = the preset's value)."""
    cfg = dict(PRESETS[method][params["preset"]])
    for k in ("steps", "batch_size", "patch_size", "lr", "mmse_samples"):
        if k in params and params[k]:
            cfg[k] = params[k]
    ctx.resolved.update({k: cfg[k] for k in ("steps", "batch_size", "patch_size", "lr", "mmse_samples") if k in cfg})
    return cfg


def _train(model, source, cfg: dict, params: dict, ctx: RunContext, frames: np.ndarray, label: str):
    from ..training import MSELoss, TrainConfig, train

    p_used = source.patch_side(cfg["patch_size"])
    hh, ww = frames.shape[1:]
    if min(hh, ww) < cfg["patch_size"]:
        ctx.log.append(f"The image ({hh}×{ww} px) is smaller than the {cfg['patch_size']}-px training patches; "
                       f"training on {p_used}-px patches instead.")
    cfg["patch_size"] = ctx.resolved["patch_size"] = p_used
    minutes = float(params.get("max_minutes") or 0.0)
    # A time limit with the preset's step count: the budget is the time alone, and the
    # learning-rate schedule runs its course over it.
    steps = None if minutes > 0 and not params.get("steps") else int(cfg["steps"])
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
    from ..training import tiled_apply

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


# ----------------------------------------------------------------------------- Noise2SR

# Sub-samplings averaged by the adaptive-filter view (emcore.jacobian) of a Noise2SR result.
FILTER_VIEW_SAMPLES = 8


def _run_noise2sr(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from models.noise2sr import Noise2SR

    from ..sbd import denormalise, normalise

    _check_size(ds, "Noise2SR")
    cfg = _settings("noise2sr", params, ctx)
    s = int(params["scale"])
    frames, scale = normalise(_frames_of(ds))
    torch.manual_seed(ctx.seed)  # the initial weights
    model = Noise2SR(scale=s, scales=cfg["scales"], base=cfg["base"], features=cfg["features"])
    _train(model, SubsampledPatches(frames, scale=s), cfg, params, ctx, frames, "Noise2SR")

    model.eval()
    device = next(model.parameters()).device
    samples, seed = int(cfg["mmse_samples"]), int(ctx.seed)
    hh, ww = frames.shape[1:]
    # Samples per forward pass: a few on a GPU for throughput, bounded in memory.
    pixels = hh * ww if hh * ww <= _TILE_ABOVE else _TILE * _TILE
    chunk = 1 if device.type == "cpu" else max(1, min(samples, (4 << 20) // pixels))
    t0 = time.perf_counter()
    n_frames = len(frames)

    def mmse(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(model, x, samples, seed, chunk=chunk)

    if ctx.progress is not None and n_frames == 1 and frames[0].size <= _TILE_ABOVE:
        # One frame: report every sample of the average.
        def said(k: int) -> None:
            el = time.perf_counter() - t0
            ctx.progress(Progress(step=k, total=samples, elapsed=el, eta=el / k * (samples - k),
                                  message=f"MMSE average: sub-sampling {k} of {samples}."))

        with torch.inference_mode():
            out = mmse_apply(model, torch.from_numpy(frames[0]).to(device), samples, seed, chunk=chunk,
                             progress=said).float().cpu().numpy()[None]
    else:
        out = _infer_frames(frames, mmse, device, s * 2 ** (cfg["scales"] - 1), ctx,
                            f"MMSE average of {samples} sub-samplings")
    ctx.log.append(f"Averaged {samples} random sub-samplings (MMSE estimate) in {time.perf_counter() - t0:.1f} s.")

    cpu_model = _cpu_eval_copy(model)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(cpu_model, x / scale, samples, seed) * scale

    # The filter view follows the average of fewer sub-samplings, in one batch: its Jacobian
    # is the mean of the per-sub-sampling Jacobians, so averaging a random subset of them is
    # an unbiased estimate of the full filter, at a fraction of the cost (issue: < 2 s/pixel).
    view = min(samples, FILTER_VIEW_SAMPLES)

    def filter_apply(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(cpu_model, x / scale, view, seed, chunk=view) * scale

    ctx.artifacts.update(apply=apply, receptive_field=s * cpu_model.receptive_field(), min_size=s)
    if view < samples:
        ctx.artifacts.update(
            filter_apply=filter_apply,
            filter_note=f"Noise2SR's result averages {samples} random sub-samplings; to answer in about a second "
                        f"this filter averages the first {view} of them: on average the same filter as the "
                        f"result's, with noisier fine detail.")
    return denormalise(out.reshape(ds.data.shape), scale)


def _budget_params(method: str) -> tuple[Param, ...]:
    """Training-budget parameters shared by both methods; 0 means "the preset's value"."""
    f, q = PRESETS[method]["fast"], PRESETS[method]["quality"]
    return (
        Param("steps", "int", 0, min=0, max=100_000, label="Training steps",
              help=f"Optimiser steps; 0 uses the preset's (fast: {f['steps']}, quality: {q['steps']})."),
        Param("max_minutes", "float", 0.0, min=0.0, max=24 * 60, label="Time limit (min)",
              help="Stop training after this many minutes and denoise with the best model so far; 0: no limit. "
                   "With steps left at 0 the time alone is the budget and the learning-rate schedule is spread "
                   "over it (not bit-reproducible)."),
        Param("batch_size", "int", 0, min=0, max=256, label="Batch size",
              help=f"Patches per step; 0 uses the preset's (fast: {f['batch_size']}, quality: {q['batch_size']})."),
        Param("patch_size", "int", 0, min=0, max=2048, label="Patch size (px)",
              help=f"Side of the training patches; 0 uses the preset's (fast: {f['patch_size']}, quality: "
                   f"{q['patch_size']}). Images smaller than a patch train on patches of their own size."),
        Param("lr", "float", 0.0, min=0.0, max=1.0, log=True, label="Learning rate",
              help=f"Peak learning rate of Adam; 0 uses the preset's (fast: {f['lr']:g} {f['schedule']}, "
                   f"quality: {q['lr']:g} {q['schedule']})."),
    )


register(Method(
    name="noise2sr",
    label="Noise2SR",
    description="Zero-shot denoising of one HREM image: a super-resolving network learns to predict the pixels "
                "a random sub-sampler left out, then many sub-samplings are averaged.",
    kind="self-supervised",
    accepts=("image", "stack"),
    params=(
        Param("preset", "choice", "fast", choices=("fast", "quality"), label="Preset",
              help="'fast': a small network and a short one-cycle schedule, a 512×512 image in a few minutes "
                   "on 2 CPU cores; 'quality': the paper's settings (Adam 1e-4, batches of 10 patches of 256 px, "
                   "6000 steps, 50 sub-samplings averaged) with a deeper network, meant for a GPU."),
    ) + _budget_params("noise2sr") + (
        Param("mmse_samples", "int", 0, min=0, max=1000, label="Sub-samplings averaged",
              help="M, the number of random sub-samplings whose outputs are averaged at the end (MMSE "
                   "estimate); more lowers the variance; 0 uses the preset's (50 as in the paper)."),
        Param("scale", "int", PAPER_SCALE, min=2, max=4, label="Sub-sampling cell (px)",
              help="Side s of the cells of which one pixel is kept; the network super-resolves by s (paper: 2)."),
    ),
    run=_run_noise2sr,
    uses_torch=True,
    details="Noise2SR (Tian et al., IEEE TCI 2024): a random sub-sampler keeps one random pixel of every 2×2 "
            "cell of the noisy image; a U-Net with a sub-pixel (pixel-shuffle) decoder predicts the full image "
            "from it and is trained on the pixels that were left out, whose noise is independent of the input's "
            "(pixel-wise independent noise is assumed: correlated detector noise is learnt as signal). Every "
            "draw is a new training pair from the one image. The result averages the network's output over "
            "many random sub-samplings (MMSE estimate). Stacks train one network on all frames and denoise each "
            "frame. For spectrum images use dcae3d. Stopping keeps the best model so far and still denoises. "
            "On 512×512 crops of simulated Pt/CeO2 images with Poisson–Gaussian noise (5.9 dB), the fast preset "
            "reaches 28.8 dB, against 24.7 dB for BM3D and 24.0 dB for Noise2Self.",
    quick={"steps": 2, "batch_size": 2, "patch_size": 32, "mmse_samples": 2},
))


# ---------------------------------------------------------------------------- Noise2Self


def _run_noise2self(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from models.unet import UNet

    from ..sbd import denormalise, normalise

    _check_size(ds, "Noise2Self")
    cfg = _settings("noise2self", params, ctx)
    grid = int(params["grid"])
    frames, scale = normalise(_frames_of(ds))
    torch.manual_seed(ctx.seed)
    model = UNet(scales=cfg["scales"], base=cfg["base"])
    _train(model, MaskedPatches(frames, grid=grid), cfg, params, ctx, frames, "Noise2Self")

    model.eval()
    device = next(model.parameters()).device
    j_inv = params["inference"] == "j-invariant"

    def predict(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return j_invariant_apply(net, x, grid) if j_inv else net(x[None, None]).float()[0, 0]

    t0 = time.perf_counter()
    out = _infer_frames(frames, lambda x: predict(model, x), device, 2 ** (cfg["scales"] - 1), ctx,
                        "J-invariant prediction" if j_inv else "Prediction")
    ctx.log.append(f"{'J-invariant' if j_inv else 'Single-pass'} prediction in {time.perf_counter() - t0:.1f} s.")

    cpu_model = _cpu_eval_copy(model)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return predict(cpu_model, x / scale) * scale

    # The interpolation of the hidden pixels reads one more pixel on each side.
    field = cpu_model.receptive_field() + (2 if j_inv else 0)
    ctx.artifacts.update(apply=apply, receptive_field=field, min_size=1)
    return denormalise(out.reshape(ds.data.shape), scale)


register(Method(
    name="noise2self",
    label="Noise2Self",
    description="Self-supervised baseline on one image: a U-Net learns to predict pixels hidden behind an "
                "interpolation of their neighbours (J-invariant masking).",
    kind="self-supervised",
    accepts=("image", "stack"),
    params=(
        Param("preset", "choice", "fast", choices=("fast", "quality"), label="Preset",
              help="'fast': a short one-cycle schedule for a CPU; 'quality': the training budget of the "
                   "Noise2SR paper (Adam 1e-4, batches of 10 patches of 256 px, 6000 steps), meant for a GPU."),
    ) + _budget_params("noise2self") + (
        Param("grid", "int", N2S_GRID, min=2, max=8, label="Mask grid (px)",
              help="Spacing of the hidden pixels: one pixel in grid² is hidden per patch (Batson & Royer: 4)."),
        Param("inference", "choice", "j-invariant", choices=("j-invariant", "single"), label="Inference",
              help="'j-invariant': one pass per grid phase, each pixel predicted without seeing itself (grid² "
                   "passes; 0.7 dB better than 'single' on the Pt/CeO2 benchmark); 'single': one pass over the "
                   "whole image, grid² times faster."),
    ),
    run=_run_noise2self,
    uses_torch=True,
    details="Noise2Self (Batson & Royer, ICML 2019): on the one noisy image, a U-Net sees patches in which a "
            "grid of pixels is replaced by the average of their neighbours and is trained to predict the noisy "
            "values of exactly those pixels; since their noise is independent of the rest, it can only learn "
            "the signal. The baseline Noise2SR is measured against. For spectrum images use dcae3d.",
    quick={"steps": 2, "batch_size": 2, "patch_size": 32, "inference": "single"},
))
