"""Tiled inference: one tiler for every method that runs a network over a large input.

:func:`tiled_apply` runs a model over a large image in overlapping tiles blended with
raised-cosine weights (:func:`tile_weights`); :func:`axis_plan` places the tiles along one
axis. Mohan et al., IEEE Trans. Comput. Imaging 8 (2022) 585–597: 400-px tiles with a 350-px
step beat whole-image inference for large UNets.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from emcore.errors import EmcoreError, Stopped
from emcore.progress import Progress, ProgressFn, StopFn
from emcore.train.loop import _empty_cache, _is_oom

# ---------------------------------------------------------------------- inference


def axis_plan(n: int, tile: int, step: int, multiple: int = 1, fit: bool = False) -> tuple[int, int, list[int]]:
    """Tile length, padded length and tile starts along one axis of length ``n``.

    One tile (rounded up to ``multiple``, for networks that downsample) when ``n <= tile``;
    otherwise tiles of ``tile`` every ``step``, the last one reaching past ``n`` (padding).
    ``fit=True`` keeps the number of tiles and the overlap ``tile - step`` but shrinks the
    tiles (to a multiple of ``multiple``, never below twice the overlap) until they just cover
    ``n``: a 2048-px side in 1024-px tiles overlapping by 128 px is then three 768-px tiles
    (2304 px computed) instead of three 1024-px ones (3072 px).
    """
    if n <= tile:
        t = -(-n // multiple) * multiple
        return t, t, [0]
    count = -(-(n - tile) // step) + 1
    if fit:
        overlap = tile - step
        t = -(-(n + (count - 1) * overlap) // count)  # count tiles of t, overlapping by `overlap`, cover n
        t = min(tile, -(-max(t, 2 * overlap) // multiple) * multiple)
        tile, step = t, t - overlap
    padded = tile + (count - 1) * step
    return tile, padded, [i * step for i in range(count)]


def _reflect_index(padded: int, n: int) -> np.ndarray:
    """Source index of each position of an axis of length ``n`` padded to ``padded`` by
    reflection (numpy's "reflect": the edge pixel not repeated); needs ``padded - n < n``."""
    i = np.arange(padded)
    return np.where(i < n, i, 2 * (n - 1) - i)


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
    channels: bool = False,
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
        Progress per batch of tiles; a stop raises :class:`~emcore.errors.Stopped`.
    channels : bool
        ``image`` is one multi-channel image ``(C, H, W)`` (e.g. the noisy frame and a prior
        estimate of it), or a list of its ``C`` channels, each ``(H, W)``: the tiles are then
        stacked from them one by one, with no ``(C, H, W)`` copy of a large image; ``fn``
        gets ``[B, C, h, w]`` tiles and returns ``[B, 1, h, w]``; the result is ``(H, W)``.

    Returns
    -------
    ndarray, float32, same shape as ``image`` (``(H, W)`` with ``channels``)
        Tiles blended with raised-cosine weights that sum to 1 everywhere
        (:func:`tile_weights`), assembled in a float32 array on the CPU.
    """
    if channels and isinstance(image, (list, tuple)):
        return _apply_planes(fn, [np.asarray(a, dtype=np.float32) for a in image], tile, step, batch, device,
                             multiple, guard, progress, should_stop)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim < 2:
        raise EmcoreError(f"Tiled inference needs an image of at least two dimensions; got shape {img.shape}.")
    if channels and img.ndim != 3:
        raise EmcoreError(f"Tiled inference of a multi-channel image needs shape (C, H, W); got {img.shape}.")
    if img.ndim > 2 and not channels:
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
    return _apply_planes(fn, list(img if channels else img[None]), tile, step, batch, device, multiple, guard,
                         progress, should_stop)


def _apply_planes(fn, planes: list[np.ndarray], tile, step, batch, device, multiple, guard, progress,
                  should_stop) -> np.ndarray:
    """:func:`tiled_apply` of one image given as its channels, each a 2-D float32 array."""
    if not planes or any(p.ndim != 2 or p.shape != planes[0].shape for p in planes):
        raise EmcoreError("Tiled inference of a multi-channel image needs channels of one and the same 2-D shape.")
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

    H, W = planes[0].shape
    th, ph, ys = axis_plan(H, tile, step, multiple, fit=True)
    tw, pw, xs = axis_plan(W, tile, step, multiple, fit=True)
    if (ph, pw) == (H, W) or (ph - H < H and pw - W < W and min(H, W) > 1):
        # Each tile is cut with the reflection applied to its own indices (the same pixels as
        # padding the whole image by reflection): no padded copy of a large image in memory.
        rows = _reflect_index(ph, H)
        cols = _reflect_index(pw, W)

        def cut(y: int, x: int) -> np.ndarray:
            r, c = rows[y:y + th], cols[x:x + tw]
            if r[-1] - r[0] == th - 1 and c[-1] - c[0] == tw - 1:  # inside the image: views
                return np.stack([p[r[0]:r[0] + th, c[0]:c[0] + tw] for p in planes])
            return np.stack([p[r[:, None], c[None, :]] for p in planes])
    else:  # tiny images, padded by more than their own size: numpy's repeated reflection
        pad = ((0, 0), (0, ph - H), (0, pw - W))
        padded = np.pad(np.stack(planes), pad, mode="reflect" if min(H, W) > 1 else "edge")

        def cut(y: int, x: int) -> np.ndarray:
            return padded[:, y:y + th, x:x + tw]
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
            tiles = np.stack([cut(ys[iy], xs[ix]) for iy, ix in chunk])
            oom = False
            try:
                result = fn(torch.from_numpy(tiles).to(device))
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
    if (ph, pw) == (H, W):
        return out
    return out[:H, :W].copy()
