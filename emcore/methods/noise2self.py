"""Noise2Self (Batson & Royer 2019): a U-Net trained on the one noisy image with J-invariant
grid masking; at inference once on the whole image, or once per grid phase (J-invariant).

.. [Batson2019] J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision",
   ICML 2019, PMLR 97, 524-533.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emcore.data.dataset import Dataset
from emcore.methods.lesson import ZOOM, Lesson, LessonFigure, example_image, image_row
from emcore.methods.registry import FilterViewSpec, Method, Param, RunContext, register
from emcore.methods.zero_shot import (
    _budget_params,
    _check_size,
    _cpu_eval_copy,
    _crops,
    _frames_of,
    _infer_frames,
    _settings,
    _train,
    estimate,
    preset_values,
)

# Neighbour weights of the interpolation that replaces a masked pixel: the 8-neighbourhood,
# diagonal neighbours at half weight, the pixel itself excluded ([Batson2019] code).
_INTERP_KERNEL = np.array([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]], np.float32)
_INTERP_KERNEL /= _INTERP_KERNEL.sum()
# [Batson2019] released code (its Masker, width 4 in the single-image examples): a 4 x 4 grid
# of masked pixels (one pixel in 16 per pass), replaced by an average of their neighbours.
N2S_GRID = 4


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


# ---------------------------------------------------------------------------- Noise2Self


def _run_noise2self(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from emcore.train.simulated import denormalise, normalise
    from models.unet import UNet

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


def lesson_views(noisy: np.ndarray, grid: int = 4, phase: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Self's mask (1 = hidden) and the network input with those pixels interpolated [Batson2019]."""
    mask = grid_mask(noisy.shape, grid, phase)
    x = torch.from_numpy(np.asarray(noisy, np.float32))[None, None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return mask.astype(np.float32), interpolate_masked(x, m)[0, 0].numpy()


def _lesson_figure() -> LessonFigure:
    _, noisy = example_image()
    mask, masked = lesson_views(noisy)
    return image_row([("Noisy image (32×32 px)", noisy[ZOOM]), ("Hidden pixels (1 in 4×4)", mask[ZOOM]),
                      ("Network input", masked[ZOOM])])


LESSON = Lesson(
    assumes="The noise is independent from pixel to pixel (true for counting noise; not for scan streaks or "
            "correlated detector noise), while the signal is not. Then predicting a pixel from its "
            "neighbours only can recover the signal but never the pixel's own noise.",
    needs="Only the noisy data — no clean images and no noise model. It trains on the image itself: "
          "a GPU trains it many times faster than a CPU; the estimate beside Run is for this machine.",
    choose_when="Data unlike any simulation, with pixel-independent noise and nothing else to learn from. "
                "The baseline of self-supervised denoising; Noise2SR usually does better on HREM images.",
    parameters="**Preset** (training budget); **mask grid** (one pixel in grid×grid is hidden per pass); "
               "**inference** ('single' pass, or 'j-invariant' — one pass per mask phase).",
    reference="J. Batson, L. Royer, “Noise2Self: blind denoising by self-supervision”, *ICML* 2019, "
              "PMLR 97, 524–533.",
    caption="The masking scheme on the example: one pixel in every 4×4 block is hidden (middle) and replaced by "
            "the average of its neighbours (right); the network is trained to predict the noisy values of "
            "exactly those hidden pixels.",
    figure=_lesson_figure,
)


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
    estimate_seconds=estimate("noise2self"),
    filter_view=FilterViewSpec(),
    lesson=LESSON,
    preset_values=preset_values("noise2self"),
    cost_hint="The fast preset is meant for a CPU; lower the training steps, choose single-pass inference, or "
              "set a time limit for a quicker result.",
))
