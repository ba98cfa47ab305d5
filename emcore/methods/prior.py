"""The prior channel of the supervised networks: a self-calibrated Fourier Wiener filter.

A lattice image repeats over the whole field, and the Fourier Wiener filter
(:mod:`emcore.methods.wiener`, window and noise floor chosen on the data itself) averages each
reflection over all of it — an effectively global receptive field. A UNet sees 116 px around a
pixel. Measured on the reference Pt/CeO₂ images at 0.45–1 e⁻/px, the self-calibrated Wiener
filter alone was 4–6 dB above both BM3D and a UNet trained on the same multislice set
(``benchmarks/RESULTS.md``), but it smears what does not repeat: the particle's surface, the
vacuum, defects. A network with ``prior=True`` (:class:`models.UNet`, :class:`models.DnCNN`)
reads the noisy image *and* this filter's output of the whole frame, and returns the filter's
output plus a learned local correction.

The same function makes the prior in training (:mod:`emcore.train.prior_fields`, on whole
simulated fields) and at inference (on whole frames, before tiling), so the network always
sees the prior it was trained with.
"""

from __future__ import annotations

import numpy as np

from emcore.data.dataset import Dataset
from emcore.methods.registry import denoise

PRIORS = ("wiener",)


# Frames wider than BLOCK px get their prior in overlapping BLOCK² blocks, blended smoothly,
# so its memory stays bounded (an 8192² frame would need several GB of spectra at once); a
# 2048-px block holds dozens to hundreds of lattice periods, all the periodicity the filter needs.
BLOCK, BLOCK_OVERLAP = 2048, 256


def wiener_prior(frame: np.ndarray) -> tuple[np.ndarray, dict]:
    """The self-calibrated Fourier Wiener filter of one whole frame, in the frame's units.

    Returns the filtered frame (float32) and the parameters the calibration chose (window,
    noise power; of the first block for frames filtered in blocks). Deterministic: the
    calibration runs with seed 0.
    """
    a = np.asarray(frame, np.float32)
    h, w = a.shape
    if max(h, w) <= BLOCK:
        return _whole(a)
    ys, xs = _starts(h), _starts(w)
    wy = [_ramp(min(BLOCK, h), i > 0, i < len(ys) - 1) for i in range(len(ys))]
    wx = [_ramp(min(BLOCK, w), j > 0, j < len(xs) - 1) for j in range(len(xs))]
    sy, sx = np.zeros(h, np.float32), np.zeros(w, np.float32)
    for y, r in zip(ys, wy):
        sy[y:y + len(r)] += r
    for x, r in zip(xs, wx):
        sx[x:x + len(r)] += r
    out = np.zeros((h, w), np.float32)
    first = None
    for y, ry in zip(ys, wy):
        for x, rx in zip(xs, wx):
            block, chosen = _whole(a[y:y + len(ry), x:x + len(rx)])
            first = first or chosen
            out[y:y + len(ry), x:x + len(rx)] += block * np.outer(ry / sy[y:y + len(ry)], rx / sx[x:x + len(rx)])
    return out, {**first, "blocks": len(ys) * len(xs)}


def _whole(a: np.ndarray) -> tuple[np.ndarray, dict]:
    res = denoise(Dataset(np.ascontiguousarray(a), "image"), "wiener", device="cpu", seed=0)
    return np.asarray(res.data, np.float32), dict(res.params)


def _starts(n: int) -> list[int]:
    if n <= BLOCK:
        return [0]
    count = -(-(n - BLOCK) // (BLOCK - BLOCK_OVERLAP)) + 1
    return [int(round(v)) for v in np.linspace(0, n - BLOCK, count)]


def _ramp(n: int, left: bool, right: bool) -> np.ndarray:
    """Blending weight of one block along one axis: raised-cosine ramps over the overlap, never 0."""
    r = np.ones(n, np.float32)
    rise = (0.01 + 0.99 * np.sin(0.5 * np.pi * (np.arange(BLOCK_OVERLAP) + 0.5) / BLOCK_OVERLAP) ** 2)
    if left:
        r[:BLOCK_OVERLAP] = rise
    if right:
        r[n - BLOCK_OVERLAP:] = rise[::-1]
    return r


def network_input(frame: np.ndarray, prior: np.ndarray | None, scale: float) -> np.ndarray:
    """The network's input for one frame: ``(H, W)`` or, with a prior, ``(2, H, W)``, divided by ``scale``."""
    x = np.asarray(frame, np.float32) / np.float32(scale)
    if prior is None:
        return x
    return np.stack([x, np.asarray(prior, np.float32) / np.float32(scale)])
