"""Noise2SR (Tian et al. 2024): zero-shot denoising with a random sub-sampler and a
super-resolving network, MMSE over sub-samplings at inference.

.. [Tian2024] X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, "Zero-Shot
   Image Denoising for High-Resolution Electron Microscopy", IEEE Trans. Comput. Imaging 10,
   1462-1475, 2024 (arXiv:2406.14264).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from emcore.data.dataset import Dataset
from emcore.methods import zero_shot  # tile sizes read at call time (tests change them)
from emcore.methods.lesson import ZOOM, Lesson, LessonFigure, example_image, image_row
from emcore.methods.registry import FilterViewSpec, Method, Param, RunContext, register
from emcore.methods.zero_shot import (
    PAPER_SCALE,
    _budget_params,
    _check_size,
    _cpu_eval_copy,
    _crops,
    _frames_of,
    _infer_frames,
    _pad_to,
    _settings,
    _train,
    estimate,
    preset_values,
)
from emcore.progress import Progress

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
    prior_fn: Callable[[np.ndarray], np.ndarray] | None = None

    def patch_side(self, patch_size: int) -> int:
        """The patch actually used: at most the image, a multiple of ``scale``."""
        p = min(int(patch_size), *self.frames.shape[1:])
        return max(self.scale, p - p % self.scale)

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        s, p = self.scale, self.patch_side(patch_size)
        if self.prior_fn is not None:
            return self._prior_batch(batch_size, p, rng)
        target = torch.from_numpy(_crops(self.frames, batch_size, p, rng, self.augment)[:, None])
        cells = torch.from_numpy(draw_cells(rng, batch_size, p // s, p // s, s))
        low, mask = subsample(target, cells, s)
        return low.contiguous(), target, mask

    def _prior_batch(self, batch_size: int, p: int, rng: np.random.Generator):
        """One sub-sampling of a whole frame and its prior (computed on the kept pixels of the
        whole frame, as at inference), cut into cell-aligned patches."""
        s = self.scale
        t, hh, ww = self.frames.shape
        frame = self.frames[int(rng.integers(t)), :hh - hh % s, :ww - ww % s]
        h, w = frame.shape[0] // s, frame.shape[1] // s
        cells = torch.from_numpy(draw_cells(rng, 1, h, w, s))
        low, mask = subsample(torch.from_numpy(np.ascontiguousarray(frame))[None, None], cells, s)
        low, mask = low[0, 0].numpy(), mask[0, 0].numpy()
        prior = np.asarray(self.prior_fn(low), np.float32)
        q = p // s
        out = {"low": [], "prior": [], "target": [], "mask": []}
        for _ in range(int(batch_size)):
            y, x = int(rng.integers(h - q + 1)), int(rng.integers(w - q + 1))
            parts = {"low": low[y:y + q, x:x + q], "prior": prior[y:y + q, x:x + q],
                     "target": frame[s * y:s * (y + q), s * x:s * (x + q)], "mask": mask[s * y:s * (y + q), s * x:s * (x + q)]}
            if self.augment:
                k, flip = int(rng.integers(4)), rng.random() < 0.5
                parts = {n: (np.rot90(a, k)[:, ::-1] if flip else np.rot90(a, k)) for n, a in parts.items()}
            for n, a in parts.items():
                out[n].append(np.ascontiguousarray(a, np.float32))
        stack = {n: torch.from_numpy(np.stack(a)[:, None]) for n, a in out.items()}
        return torch.cat([stack["low"], stack["prior"]], 1), stack["target"], stack["mask"]


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
    prior_fn: Callable[[np.ndarray], np.ndarray] | None = None,
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
    prior_fn : callable, optional
        For a network with a prior channel: sub-sampled image (numpy) → its prior, computed
        per sub-sampling and held fixed (not differentiated).

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
        if prior_fn is not None:
            pri = np.stack([np.asarray(prior_fn(a[0].detach().float().cpu().numpy()), np.float32) for a in low])
            low = torch.cat([low, torch.from_numpy(pri[:, None]).to(device=low.device, dtype=low.dtype)], 1)
        out = model(low).float().sum(0)
        total = out if total is None else total + out
        done += n
        if progress is not None:
            progress(done)
    return (total[0] / samples)[:hh, :ww]


# ----------------------------------------------------------------------------- Noise2SR

# Sub-samplings averaged by the adaptive-filter view (emcore.evaluate.filter_view) of a Noise2SR result.
FILTER_VIEW_SAMPLES = 8


def _run_noise2sr(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from emcore.train.simulated import denormalise, normalise
    from models.noise2sr import Noise2SR

    _check_size(ds, "Noise2SR")
    cfg = _settings("noise2sr", params, ctx)
    s = int(params["scale"])
    frames, scale = normalise(_frames_of(ds))
    prior_fn = _wiener_prior_fn(frames[0], s, ctx) if params.get("prior") == "wiener" else None
    torch.manual_seed(ctx.seed)  # the initial weights
    model = Noise2SR(in_channels=2 if prior_fn else 1, scale=s, scales=cfg["scales"], base=cfg["base"],
                     features=cfg["features"], prior=prior_fn is not None)
    _train(model, SubsampledPatches(frames, scale=s, prior_fn=prior_fn), cfg, params, ctx, frames, "Noise2SR")

    model.eval()
    device = next(model.parameters()).device
    samples, seed = int(cfg["mmse_samples"]), int(ctx.seed)
    hh, ww = frames.shape[1:]
    # Samples per forward pass: a few on a GPU for throughput, bounded in memory.
    pixels = hh * ww if hh * ww <= zero_shot._TILE_ABOVE else zero_shot._TILE * zero_shot._TILE
    chunk = 1 if device.type == "cpu" else max(1, min(samples, (4 << 20) // pixels))
    t0 = time.perf_counter()
    n_frames = len(frames)

    def mmse(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(model, x, samples, seed, chunk=chunk, prior_fn=prior_fn)

    if ctx.progress is not None and n_frames == 1 and frames[0].size <= zero_shot._TILE_ABOVE:
        # One frame: report every sample of the average.
        def said(k: int) -> None:
            el = time.perf_counter() - t0
            ctx.progress(Progress(step=k, total=samples, elapsed=el, eta=el / k * (samples - k),
                                  message=f"MMSE average: sub-sampling {k} of {samples}."))

        with torch.inference_mode():
            out = mmse_apply(model, torch.from_numpy(frames[0]).to(device), samples, seed, chunk=chunk,
                             progress=said, prior_fn=prior_fn).float().cpu().numpy()[None]
    else:
        out = _infer_frames(frames, mmse, device, s * 2 ** (cfg["scales"] - 1), ctx,
                            f"MMSE average of {samples} sub-samplings")
    ctx.log.append(f"Averaged {samples} random sub-samplings (MMSE estimate) in {time.perf_counter() - t0:.1f} s.")

    cpu_model = _cpu_eval_copy(model)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(cpu_model, x / scale, samples, seed, prior_fn=prior_fn) * scale

    # The filter view follows the average of fewer sub-samplings, in one batch: its Jacobian
    # is the mean of the per-sub-sampling Jacobians, so averaging a random subset of them is
    # an unbiased estimate of the full filter, at a fraction of the cost (issue: < 2 s/pixel).
    view = min(samples, FILTER_VIEW_SAMPLES)

    def filter_apply(x: torch.Tensor) -> torch.Tensor:
        return mmse_apply(cpu_model, x / scale, view, seed, chunk=view, prior_fn=prior_fn) * scale

    ctx.artifacts.update(apply=apply, receptive_field=s * cpu_model.receptive_field(), min_size=s)
    held = (" The network also reads the Wiener filter of each sub-sampled image (its prior channel), held fixed "
            "here: the weights show what its correction takes from the noisy pixels.") if prior_fn else ""
    if view < samples:
        ctx.artifacts.update(
            filter_apply=filter_apply,
            filter_note=f"Noise2SR's result averages {samples} random sub-samplings; to answer in about a second "
                        f"this filter averages the first {view} of them: on average the same filter as the "
                        f"result's, with noisier fine detail." + held)
    elif held:
        ctx.artifacts.update(filter_apply=apply, filter_note=held.strip())
    return denormalise(out.reshape(ds.data.shape), scale)


def _wiener_prior_fn(frame: np.ndarray, s: int, ctx: RunContext) -> Callable[[np.ndarray], np.ndarray]:
    """The prior channel: a Fourier Wiener filter of each sub-sampled image.

    Its window and noise power are self-calibrated once, on one sub-sampling of the first frame
    (every sub-sampling has the same noise), then held fixed: each further prior costs one FFT
    filter. It sees only the kept pixels, so the network stays blind to the pixels its loss
    is taken on.
    """
    from emcore.methods.registry import denoise
    from emcore.methods.wiener import denoise_wiener

    h, w = frame.shape[0] // s, frame.shape[1] // s
    cells = torch.from_numpy(mmse_cells(int(ctx.seed), 1 << 20, h, w, s))[None]
    low, _ = subsample(torch.from_numpy(np.ascontiguousarray(frame[:h * s, :w * s]))[None, None], cells, s)
    res = denoise(Dataset(low[0, 0].numpy(), "image"), "wiener", device="cpu", seed=0)
    window, power = int(res.params["window"]), float(res.params["noise_power"])
    ctx.log.append(f"Prior channel: the Wiener filter of each sub-sampled image (window {window} px, noise power "
                   "self-calibrated once); the network learns the correction to it.")
    ctx.resolved.update(prior_window=window)
    return lambda a: denoise_wiener(a, noise_power=power, window=window)


def lesson_views(noisy: np.ndarray, s: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise2SR's sub-sampled input (H/s, W/s) and its loss mask (H, W; 1 = not fed in) [Tian2024]."""
    h, w = noisy.shape[0] // s * s, noisy.shape[1] // s * s
    x = torch.from_numpy(np.ascontiguousarray(noisy[:h, :w], np.float32))[None, None]
    cells = torch.from_numpy(draw_cells(np.random.default_rng(seed), 1, h // s, w // s, s))
    low, mask = subsample(x, cells, s)
    return low[0, 0].numpy(), mask[0, 0].numpy()


def _lesson_figure() -> LessonFigure:
    _, noisy = example_image()
    low, mask = lesson_views(noisy[ZOOM])
    return image_row([("Noisy image (32×32 px)", noisy[ZOOM]), ("Input: 1 random pixel per 2×2 cell", low),
                      ("Loss on the pixels not fed in", mask)])


LESSON = Lesson(
    assumes="Pixel-independent noise, as Noise2Self. A random sub-sampler keeps one pixel of every 2×2 cell; "
            "a super-resolving network predicts the full image from that, and is scored on the three pixels "
            "per cell it did not see, whose noise is independent of its input.",
    needs="Only the one noisy image (zero-shot). It trains on the image itself, many times faster on a GPU "
          "than on a CPU; the estimate beside Run is for this machine.",
    choose_when="A single HREM image of a structure unlike the simulations, at low dose. Averaging many "
                "sub-samplings at the end gives a smoother estimate.",
    parameters="**Preset** (training budget); **sub-sampling cell** (2 px as in the paper); **sub-samplings "
               "averaged** at inference; **prior channel** (the Wiener filter of the sub-sampled image, or off).",
    reference="X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, “Zero-shot image denoising "
              "for high-resolution electron microscopy”, *IEEE Trans. Comput. Imaging* 10, 1462–1475 (2024).",
    caption="The sub-sampling scheme on the example: the half-size input made of one random pixel per 2×2 "
            "cell (middle), and the pixels the loss is taken on (right, white): the three per cell that the "
            "network did not see. The workbench's network also reads the Wiener filter of the half-size input "
            "(its prior, made from the same kept pixels), starts from it and learns what to correct: a "
            "sensible start that is itself computed from the one image, so the method stays zero-shot.",
    figure=_lesson_figure,
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
              help="'fast': a small network and a short one-cycle schedule, meant for a CPU; 'quality': the paper's settings (Adam 1e-4, batches of 10 patches of 256 px, "
                   "6000 steps, 50 sub-samplings averaged) with a deeper network, meant for a GPU."),
    ) + _budget_params("noise2sr") + (
        Param("mmse_samples", "int", None, min=1, max=1000, label="Sub-samplings averaged", preset=True,
              help="M, the number of random sub-samplings whose outputs are averaged at the end (MMSE "
                   "estimate); more lowers the variance (preset: 50, as in the paper)."),
        Param("scale", "int", PAPER_SCALE, min=2, max=4, label="Sub-sampling cell (px)",
              help="Side s of the cells of which one pixel is kept; the network super-resolves by s (paper: 2)."),
        Param("prior", "choice", "wiener", choices=("wiener", "off"), label="Prior channel",
              choice_labels={"wiener": "Wiener filter of the sub-sampled image", "off": "Off (the paper's network)"},
              help="wiener: the network also reads the Fourier Wiener filter of each sub-sampled image (a zero-shot "
                   "prior computed from the same kept pixels, which uses the lattice's periodicity over the whole "
                   "field) and learns the correction to it; off: the network of Tian et al. alone."),
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
            "By default the network also reads a prior channel: the Fourier Wiener filter of each sub-sampled "
            "image (self-calibrated once), which averages every lattice reflection over the whole field; it is "
            "made from the kept pixels only, so the training stays blind to the pixels the loss is taken on, and "
            "the network starts from it and learns the correction (prior 'off' gives the paper's network). On "
            "512×512 crops of multislice Pt/CeO2 images with Poisson–Gaussian noise the fast preset with the prior "
            "reached 31.9 dB, against 24.5 dB for BM3D given the true noise level and 30.7 dB for the prior alone.",
    quick={"steps": 2, "batch_size": 2, "patch_size": 32, "mmse_samples": 2},
    estimate_seconds=estimate("noise2sr"),
    filter_view=FilterViewSpec(),
    lesson=LESSON,
    preset_values=preset_values("noise2sr"),
    cost_hint="The fast preset is meant for a CPU; lower the training steps or set a time limit for a quicker "
              "result, or run it where a GPU is available.",
))
