"""Reduction of an opened source: energy crop, binning, the size checks, materialisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emcore.errors import EmcoreError, TooLargeError
from emcore.io.guards import (
    _A_KIND,
    _KIND_WORDS,
    MIN_IMAGE_SIDE,
    _dense,
    _human,
    _is_dask,
    _Limits,
    _reading,
    _scalar,
    _shape_str,
)
from emcore.io.layout import _Source


@dataclass(frozen=True)
class _Plan:
    kind: str
    k: int
    m: int
    e_slice: slice
    e_start: int
    shape_in: tuple
    shape_out: tuple

    @property
    def nbytes(self) -> int:
        return math.prod(int(n) for n in self.shape_out) * 4


def _plan(src: _Source, label: str, k: int, m: int, energy_range) -> _Plan:
    shape = tuple(int(n) for n in src.data.shape)
    kind = src.kind
    if kind != "cube" and (m != 1 or energy_range is not None):
        raise EmcoreError(
            f"{label} is {_A_KIND[kind]}, which has no energy axis; bin_energy and "
            "energy_range apply to spectrum images only."
        )
    e_slice, e_start = slice(None), 0
    if kind == "cube":
        E = shape[2]
        if energy_range is not None:
            try:
                lo, hi = (float(v) for v in energy_range)
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    raise ValueError("not finite")
            except (TypeError, ValueError) as exc:
                raise EmcoreError(f"energy_range must be a pair (low, high), not {energy_range!r}.") from exc
            cal = src.calibration
            if not (math.isfinite(cal.energy_scale) and cal.energy_scale != 0 and math.isfinite(cal.energy_offset)):
                raise EmcoreError(
                    f"{label}: its energy axis has no usable calibration (offset {cal.energy_offset:g}, "
                    f"scale {cal.energy_scale:g} per channel), so energy_range cannot be applied; load "
                    "it without energy_range, or correct the calibration in the file."
                )
            lo, hi = min(lo, hi), max(lo, hi)
            i0 = max(0, math.ceil((lo - cal.energy_offset) / cal.energy_scale - 1e-9))
            i1 = min(E - 1, math.floor((hi - cal.energy_offset) / cal.energy_scale + 1e-9))
            if i1 < i0:
                e_lo, e_hi = cal.energy_offset, cal.energy_offset + cal.energy_scale * (E - 1)
                raise EmcoreError(
                    f"{label}: the energy range {lo:g}–{hi:g} {cal.energy_unit} holds no channel; "
                    f"the spectrum image covers {e_lo:g}–{e_hi:g} {cal.energy_unit}."
                )
            e_slice, e_start = slice(i0, i1 + 1), i0
            E = i1 + 1 - i0
        if m > E:
            raise EmcoreError(f"{label}: bin_energy={m} is more than the {E} energy channels; choose a smaller factor.")
        H, W = shape[:2]
        if k > min(H, W):
            raise EmcoreError(f"{label}: bin_spatial={k} is larger than the {H}×{W} pixel grid; choose a smaller factor.")
        out = (H // k, W // k, E // m)
    else:
        H, W = shape[-2:]
        if k > 1 and min(H // k, W // k) < MIN_IMAGE_SIDE:
            raise EmcoreError(
                f"{label}: binning {H}×{W} pixels by {k} leaves {H // k}×{W // k}, under the "
                f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE} needed to denoise; choose a smaller bin_spatial."
            )
        out = (H // k, W // k) if kind == "image" else (shape[0], H // k, W // k)
    return _Plan(kind, k, m, e_slice, e_start, shape, out)


def _suggest(plan: _Plan, max_bytes: int) -> tuple[dict, bool]:
    """Smallest reduction (fewest values merged, spatial binning last) that fits the cap.

    The size only falls as either factor grows, so for each energy factor the smallest
    spatial factor that fits is found by bisection: a header claiming 100000³ values is
    answered as fast as a real file.
    """
    shape = plan.shape_in
    if plan.kind == "cube":
        H, W = shape[:2]
        start, stop, _ = plan.e_slice.indices(shape[2])  # step 1; len(range) overflows past 2**63
        E = max(0, stop - start)
        min_side = 1
    else:
        H, W = shape[-2:]
        E = 1
        min_side = MIN_IMAGE_SIDE
    T = shape[0] if plan.kind == "stack" else 1
    k_lo, k_hi = plan.k, max(plan.k, min(H, W) // min_side)
    ms = [plan.m]
    if plan.kind == "cube":
        while ms[-1] * 2 <= E:
            ms.append(ms[-1] * 2)

    def size(k: int, m: int) -> int:
        return (H // k) * (W // k) * T * (E // m) * 4

    def first_k(m: int, limit: int) -> int:
        a, b = k_lo, k_hi  # smallest k with size(k, m) <= limit; size(k_hi, m) <= limit
        while a < b:
            mid = (a + b) // 2
            if size(mid, m) <= limit:
                b = mid
            else:
                a = mid + 1
        return a

    best = None
    for m in ms:
        if size(k_hi, m) <= max_bytes:
            k = first_k(m, max_bytes)
            if best is None or (k * k * m, k) < best[0]:
                best = ((k * k * m, k), k, m)
    if best is not None:
        return {"bin_spatial": best[1], "bin_energy": best[2]}, True
    smallest = size(k_hi, ms[-1])
    k = first_k(ms[-1], smallest)
    m = next(m for m in ms if size(k, m) == smallest)
    return {"bin_spatial": k, "bin_energy": m}, False


def _check_size(plan: _Plan, label: str, max_bytes: int):
    if plan.nbytes <= max_bytes:
        return
    sugg, fits = _suggest(plan, max_bytes)
    what = _KIND_WORDS[plan.kind]
    msg = (
        f"{label}: the {what} would be {_shape_str(plan.shape_out)} values = {_human(plan.nbytes)} "
        f"as float32, over the memory cap of {_human(max_bytes)} (EMCORE_MAX_BYTES). "
    )
    how = f"bin_spatial={sugg['bin_spatial']}"
    if plan.kind == "cube":
        how += f", bin_energy={sugg['bin_energy']}"
    if fits:
        msg += f"Load it reduced, for example with {how}"
        msg += " or crop the energy range (energy_range=(low, high))." if plan.kind == "cube" else "."
    else:
        msg += (
            f"Even {how} does not fit; crop the data (fewer frames or a smaller region) in the "
            "acquisition software, or raise EMCORE_MAX_BYTES if the machine has the memory."
        )
    raise TooLargeError(msg, shape=plan.shape_in, nbytes=plan.nbytes, max_bytes=max_bytes, suggestion=sugg)


def _check_read_size(src: _Source, label: str, cap: int):
    """Refuse data that the reader would have to hold in one piece far over the cap.

    Some readers (Bruker .bcf, TIFF, TIA, Velox) hand HyperSpy one lazy block for the whole
    file: binning then happens only after that block is in memory in its stored dtype.
    """
    x = src.data
    if not _is_dask(x):
        return
    block = math.prod(max(c) for c in x.chunks) * x.dtype.itemsize
    if block > 2 * cap:
        raise _one_piece_error(label, src.metadata.get("reader", "the reader"), block, cap)


def _one_piece_error(label: str, reader: str, block: int, cap: int) -> EmcoreError:
    return EmcoreError(
        f"{label}: {reader} reads this file in one piece of {_human(block)}, more than twice the "
        f"memory cap of {_human(cap)}, so binning while loading cannot keep it under the cap. "
        "Convert it to .hspy with HyperSpy on a machine with more memory (binned or cropped), "
        "or raise EMCORE_MAX_BYTES."
    )


def _precheck_size(label: str, shape, kind: str, limits: _Limits):
    """The memory-cap check of :func:`_check_size`, on the shape a header declares.

    Run before any reader opens the file, so a header claiming more than the cap allows (even
    after the requested binning) is refused in the same words, without a lazy graph built or
    a byte allocated. Other problems of the reduction are left to :func:`_plan`.
    """
    shape = tuple(int(n) for n in shape)
    k, m = limits.k, limits.m
    if kind == "cube":
        H, W, E = shape
        e_slice = slice(None) if limits.energy_range is None else slice(0, 1)  # at least one channel
        E = E if limits.energy_range is None else min(E, 1)
        out = (H // k, W // k, E // m if m <= E else 0)
    else:
        H, W = shape[-2:]
        e_slice = slice(None)
        out = (H // k, W // k) if kind == "image" else (shape[0], H // k, W // k)
    if math.prod(out) * 4 <= limits.cap:
        return
    _check_size(_Plan(kind, k, m, e_slice, 0, shape, out), label, limits.cap)


def _block_sum(x, factors: dict[int, int]):
    """Sum non-overlapping blocks (``factors[axis]`` long); the array is already cropped."""
    if all(f == 1 for f in factors.values()):
        return x
    if _is_dask(x):
        import dask.array as da

        # coarsen rechunks to multiples of the factors itself; the shape is already cropped.
        return da.coarsen(_sum64, x, {ax: f for ax, f in factors.items() if f > 1})
    new_shape: list[int] = []
    sum_axes = []
    for ax, n in enumerate(x.shape):
        f = factors.get(ax, 1)
        if f > 1:
            new_shape += [n // f, f]
            sum_axes.append(len(new_shape) - 1)
        else:
            new_shape.append(n)
    return np.asarray(x).reshape(new_shape).sum(axis=tuple(sum_axes), dtype=np.float64)


def _sum64(x, axis=None, **kwargs):
    # Accumulate in float64: uint8 counts would overflow, float32 sums lose counts.
    return np.sum(x, axis=axis, dtype=np.float64, **kwargs)


def _reduce(x, plan: _Plan):
    """Energy crop, spatial crop to a multiple of the factor, then block sums (lazy if dask)."""
    k, m = plan.k, plan.m
    if plan.kind == "cube":
        x = x[:, :, plan.e_slice]
        H, W, E = x.shape
        x = x[: H // k * k, : W // k * k, : E // m * m]
        return _block_sum(x, {0: k, 1: k, 2: m})
    H, W = x.shape[-2:]
    if plan.kind == "image":
        return _block_sum(x[: H // k * k, : W // k * k], {0: k, 1: k})
    return _block_sum(x[:, : H // k * k, : W // k * k], {1: k, 2: k})


def _mean_bin_2d(h, k: int):
    """k×k block mean (crop remainder) of a survey image: keeps its intensity scale."""
    if k == 1:
        return h
    H, W = h.shape
    return _block_sum(h[: H // k * k, : W // k * k], {0: k, 1: k}) / (k * k)


def _stats_numpy(x: np.ndarray) -> tuple[bool, bool, bool, float]:
    """(finite, non-negative, integer-valued, mean), in slabs so a memory map is never copied whole."""
    if x.dtype == bool:
        return True, True, True, float(np.mean(x)) if x.size else 0.0
    integer_dtype = x.dtype.kind in "iu"
    finite, nonneg, integer, total = True, True, True, 0.0
    rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    step = max(1, int(2**24 // max(1, rows.shape[1])))
    for i in range(0, rows.shape[0], step):
        blk = np.asarray(rows[i : i + step])
        if not integer_dtype:
            fin = np.isfinite(blk)
            if not fin.all():
                finite = False
                break
            if integer and not np.all(blk == np.round(blk)):
                integer = False
        if nonneg and blk.size and blk.min() < 0:
            nonneg = False
        total += float(blk.sum(dtype=np.float64))
    mean = total / x.size if x.size else 0.0
    return finite, nonneg, integer, mean


def _stats_lazy(x):
    import dask.array as da

    if x.dtype == bool:
        x = x.astype(np.uint8)
    if x.dtype.kind in "iu":
        return (True, x.min() >= 0, True, x.mean(dtype=np.float64))
    return (da.isfinite(x).all(), (x >= 0).all(), (x == da.round(x)).all(), x.mean(dtype=np.float64))


def _is_counts(kind: str, stats, hint: bool | None) -> bool:
    if hint is not None:
        return bool(hint)
    _finite, nonneg, integer, mean = stats
    if kind == "cube":
        return bool(nonneg and integer)
    return bool(nonneg and integer and mean <= 100.0)


def _materialise(src: _Source, plan: _Plan, label: str):
    """Compute the reduced float32 data, the value statistics and the HAADF image.

    For lazy data one ``dask.compute`` does it all, so the file is read once, chunk by chunk.
    """
    x = src.data
    haadf = src.haadf
    reduced = _reduce(x, plan)
    if _is_dask(x) or _is_dask(haadf):
        import dask

        if _is_dask(reduced):
            # Cast inside the graph: only float32 output is ever held whole.
            reduced = reduced.astype(np.float32)
        stats_l = _stats_lazy(x) if _is_dask(x) else None
        with _reading(label, "its data (reading failed part-way)"):
            reduced_v, stats_v, haadf_v = dask.compute(reduced, stats_l, haadf, scheduler="threads")
        stats = tuple(_scalar(np.asarray(v).item()) for v in stats_v) if stats_v is not None else None
        reduced, haadf = reduced_v, haadf_v
        if stats is None:
            with _reading(label, "its data"):
                stats = _stats_numpy(x)
    else:
        with _reading(label, "its data (reading failed part-way)"):
            stats = _stats_numpy(x)
            # Copy out of any memory map: the Dataset must not depend on the file.
            reduced = np.array(reduced, dtype=np.float32)
    reduced = _dense(reduced).astype(np.float32, copy=False)
    if haadf is not None:
        haadf = _dense(haadf)
    return reduced, stats, haadf


def _reduce_like(gt: np.ndarray, plan: _Plan, spatial_mean: bool, label: str) -> np.ndarray:
    """Reduce a ground truth like the data (same crop, same sum or mean)."""
    if tuple(gt.shape) != tuple(plan.shape_in):
        if tuple(gt.shape) == tuple(plan.shape_out):  # already reduced
            return gt.astype(np.float32)
        raise EmcoreError(
            f"{label}: the ground truth has shape {tuple(gt.shape)} but the data has shape "
            f"{tuple(plan.shape_in)}; they must match."
        )
    if not np.all(np.isfinite(gt)):
        raise EmcoreError(f"{label}: the ground truth holds NaN or infinite values; replace them first.")
    out = np.asarray(_reduce(gt, plan), dtype=np.float64)
    if spatial_mean:
        out = out / (plan.k * plan.k)
    return out.astype(np.float32)
