"""What a file holds and in which layout: the kind of each signal (image, stack, cube or
unusable, with the reason), the choice among several signals, and the opened source."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import _A_KIND, _NEEDS, MIN_IMAGE_SIDE, _quiet
from emcore.noise.models import NoiseModel

# BT.601 luma weights, the ones Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class _SigInfo:
    index: int
    title: str
    shape: tuple[int, ...]
    kind: str | None  # usable kind, or None
    signal_type: str
    reason: str | None = None  # why unusable (a phrase: "a single 1-D spectrum (shape (2048,))")
    advice: str = ""  # what to do when unusable
    base_kind: str | None = None  # kind ignoring the minimum size (for HAADF images)

    def public(self) -> dict:
        return {
            "index": self.index,
            "title": self.title,
            "shape": tuple(int(s) for s in self.shape),
            "kind": self.kind,
            "signal_type": self.signal_type,
            "reason": self.reason,
        }

    def error(self, label: str, several: bool) -> EmcoreError:
        where = f"{label}: signal {self.index} ({self.title!r})" if several else label
        return EmcoreError(f"{where} is {self.reason}; {self.advice}")


def _classify_array(index: int, title: str, shape, dtype, signal_type: str = "",
                    kind: str | None = None, tif_pages: bool = False,
                    min_side: int = MIN_IMAGE_SIDE, kind_from: str | None = None) -> _SigInfo:
    """Kind of a plain array (npy, npz member, tif, png) from its shape; ``kind`` forces it.

    ``kind_from`` says where a forced kind came from when the user did not set it (e.g. "its
    ImageJ metadata (emcore_kind='cube')"), so that a refusal names what was actually set.
    """
    shape = tuple(int(s) for s in shape)
    info = _SigInfo(index, title, shape, None, signal_type)
    dtype = np.dtype(dtype)
    if 0 in shape:
        info.reason = f"an empty array (shape {shape}, no values at all)"
        info.advice = "the file holds no data; export the data again."
        return info
    if dtype.hasobject:
        info.reason = "an array of Python objects (pickled data)"
        info.advice = (
            "for safety pickled data are never loaded; save a plain numeric array "
            "(np.save(path, array.astype('float32'), allow_pickle=False))."
        )
        return info
    if dtype.kind not in "biuf":
        info.reason = f"an array of {dtype} values, not real numbers"
        info.advice = "export the data as a plain numeric (integer or float) array."
        return info
    # Length-1 axes (a one-frame stack, a singleton channel) carry no layout information.
    squeeze = kind in (None, "image") and len(shape) > 2
    squeezed = tuple(s for s in shape if s != 1) if squeeze else shape
    nd = len(squeezed)
    if nd <= 1:
        what = "a single 1-D spectrum" if nd == 1 else "a single number"
        info.reason = f"{what} (shape {shape})"
        info.advice = f"{_NEEDS}."
        return info
    if nd > 3:
        info.reason = f"{nd}-D data (shape {shape})"
        info.advice = (
            f"{_NEEDS}; reduce it first (for 4D-STEM, e.g. a virtual detector image in HyperSpy) "
            "and save that."
        )
        return info
    if nd == 2:
        base = "image"
    else:
        base = kind if kind in ("stack", "cube") else (_raw_3d_kind(squeezed) if kind is None else None)
    if nd == 3 and tif_pages and kind is None:
        base = "stack"  # a multi-page TIFF is a sequence of images unless told otherwise
    if kind is not None and base != kind:
        info.reason = f"a {nd}-D array (shape {shape})"
        alt = "kind='stack' or kind='cube'" if nd == 3 else "kind='image'"
        if kind_from:
            info.advice = (
                f"{kind_from} mark it as {_A_KIND[kind]}, which it cannot be; load it with {alt} "
                "(which overrides the file) or correct the file."
            )
        else:
            info.advice = f"it cannot be read as {_A_KIND[kind]}; leave kind unset or use {alt}."
        return info
    info.base_kind = base
    return _finish_info(info, squeezed, min_side)


def _raw_3d_kind(shape) -> str:
    """Guess stack ``(T, H, W)`` or cube ``(H, W, E)`` for a 3-D array of unknown layout.

    A cube when the last axis is the longest — spectrum images have hundreds to thousands of
    channels — *and* either the first two axes are equal (a square map) or the last axis is
    more than twice the middle one. The second condition keeps movies with non-square frames,
    e.g. ``(100, 480, 640)``, as stacks, where the bare "longest last" rule would call them
    cubes of 640 channels. ``kind=`` overrides the guess.
    """
    a, b, c = (int(n) for n in shape)
    if c > max(a, b) and (a == b or c > 2 * b):
        return "cube"
    return "stack"


def _finish_info(info: _SigInfo, shape, min_side: int = MIN_IMAGE_SIDE) -> _SigInfo:
    k = info.base_kind
    hw = shape if k == "image" else (shape[1:] if k == "stack" else shape[:2])
    if k in ("image", "stack") and min(hw) < min_side:
        info.reason = f"an image of only {hw[0]}×{hw[1]} pixels, too small to denoise"
        info.advice = f"at least {min_side}×{min_side} pixels are needed; load a larger image."
    else:
        info.kind = k
    return info


def _classify_signal(index: int, s) -> _SigInfo:
    """Kind of a HyperSpy signal from its navigation / signal dimensions."""
    am = s.axes_manager
    title = str(s.metadata.get_item("General.title", "") or "")
    stype = str(s.metadata.get_item("Signal.signal_type", "") or "")
    shape = tuple(int(n) for n in s.data.shape)
    dtype = s.data.dtype
    info = _SigInfo(index, title, shape, None, stype)
    if dtype.names is not None or dtype.kind not in "biuf":
        if dtype.names is not None:
            info.reason = f"an RGB colour image (shape {shape})"
        else:
            info.reason = f"an array of {dtype} values (shape {shape}), not real numbers"
        info.advice = "export it as a single-channel (grey-scale) numeric image."
        return info
    if 0 in shape:
        info.reason = f"an empty signal (shape {shape}, no values at all)"
        info.advice = "the file holds no data there; export the data again."
        return info
    nav, sig = am.navigation_dimension, am.signal_dimension
    nav_shape = tuple(int(n) for n in am.navigation_shape[::-1])
    if sig == 2 and nav == 0:
        info.base_kind = "image"
        return _finish_info(info, shape)
    if sig == 2 and nav == 1:
        if nav_shape[0] == 1:  # a "stack" of one frame is an image
            info.base_kind = "image"
            return _finish_info(info, shape[1:])
        info.base_kind = "stack"
        return _finish_info(info, shape)
    if sig == 1 and nav == 2:
        info.base_kind = "cube"
        return _finish_info(info, shape)
    if sig == 1 and nav == 0:
        info.reason = f"a single 1-D spectrum (shape {shape})"
        info.advice = f"{_NEEDS}; open the spectrum image or image it was taken from."
    elif sig == 1 and nav == 1:
        info.reason = f"a 1-D line scan of spectra (shape {shape}), not a 2-D map"
        info.advice = f"{_NEEDS}."
    elif sig == 0 and len(shape) in (2, 3):
        # A BaseSignal (no signal axes declared): fall back to the array heuristic.
        return _classify_array(index, title, shape, dtype, stype)
    elif len(shape) >= 4:
        info.reason = f"{len(shape)}-D data (shape {shape})"
        info.advice = (
            f"{_NEEDS}; reduce it first (for 4D-STEM, e.g. a virtual detector image in HyperSpy) "
            "and save that."
        )
    else:
        info.reason = (
            f"data with {sig} signal and {nav} navigation dimension(s) (shape {shape})"
        )
        info.advice = f"{_NEEDS}."
    return info


@dataclass
class _Source:
    """Data as opened (lazy dask, memmap or in-memory), already in the workbench layout."""

    data: Any
    kind: str
    calibration: Calibration
    metadata: dict = field(default_factory=dict)
    haadf: Any = None  # (H, W) array or lazy array, unreduced
    ground_truth: Any = None  # same layout as data, unreduced
    counts_hint: bool | None = None  # known is_counts (our own files) or False (8-bit PNG)
    noise: NoiseModel | None = None
    closers: list = field(default_factory=list)

    def close(self):
        """Release file handles the lazy readers keep (HDF5, memory maps)."""
        with _quiet():
            for c in self.closers:
                with contextlib.suppress(Exception):
                    c()


_ELEMENT_TITLE = re.compile(r"^[A-Z][a-z]?(_[A-Za-z0-9]+)?$")  # "Fe", "Pt_La": element maps


def _haadf_rank(info: _SigInfo) -> int | None:
    """Preference for an image as the survey image of a cube (lower is better, None = never)."""
    t = info.title.strip()
    up = t.upper()
    if "HAADF" in up:
        return 0
    if _ELEMENT_TITLE.match(t) or "MAP" in up or "EDS" in up or "EDX" in up or "EELS" in up:
        return None  # an element map is no survey image
    if re.search(r"ADF|DF|BF|STEM|SE\b|SEM|IMAGE|SURVEY", up):
        return 1
    return 2


def _pick_haadf(infos: list[_SigInfo], hw) -> _SigInfo | None:
    cands = []
    for info in infos:
        if info.base_kind == "image" and tuple(info.shape[-2:]) == tuple(hw):
            rank = _haadf_rank(info)
            if rank is not None:
                cands.append((rank, info.index, info))
    return min(cands, key=lambda c: c[:2])[2] if cands else None


def _choose(infos: list[_SigInfo], label: str, signal: int | None) -> _SigInfo:
    several = len(infos) > 1
    if signal is not None:
        if not isinstance(signal, (int, np.integer)) or not 0 <= signal < len(infos):
            raise EmcoreError(
                f"{label} holds {len(infos)} signal(s), numbered 0 to {len(infos) - 1}; "
                f"signal={signal!r} is not one of them."
            )
        info = infos[int(signal)]
        if info.kind is None:
            others = [f"{i.index} ({i.title or i.kind})" for i in infos if i.kind]
            extra = f" Usable signals: {', '.join(others)}." if others else ""
            raise EmcoreError(f"{info.error(label, several)}{extra}")
        return info
    usable = [i for i in infos if i.kind is not None]
    if not usable:
        if not several:
            raise infos[0].error(label, False)
        parts = "; ".join(f"signal {i.index} ({i.title!r}) is {i.reason}" for i in infos)
        raise EmcoreError(f"{label} holds no usable data: {parts}. {_NEEDS[0].upper()}{_NEEDS[1:]}.")
    cubes = [i for i in usable if i.kind == "cube"]
    pool = cubes or usable
    return max(pool, key=lambda i: (int(np.prod(i.shape)), -i.index))


def _reinterpret_3d(data, have: str, want: str | None, label: str):
    """Move a 3-D array between stack (N, H, W) and cube (H, W, N) layouts when asked."""
    if want is None or want == have:
        return data, have
    if want == "image" or have == "image":
        raise EmcoreError(
            f"{label} holds {_A_KIND[have]} (shape {tuple(data.shape)}), which cannot be read "
            f"as {_A_KIND[want]}; leave kind unset or choose {have!r}."
        )
    if have == "stack" and want == "cube":
        return data.transpose(1, 2, 0), "cube"
    return data.transpose(2, 0, 1), "stack"


def _squeeze_to(data, info: _SigInfo):
    """Drop length-1 axes the classification ignored (only when no kind was forced)."""
    if data.ndim == len(info.shape) and data.ndim > 2 and info.base_kind is not None:
        want_nd = 2 if info.base_kind == "image" else 3
        if data.ndim > want_nd:
            idx = tuple(0 if n == 1 else slice(None) for n in data.shape)
            data = data[idx]
    return data


def _luminance(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    return (rgb[..., :3].astype(np.float64) @ _LUMA).astype(np.float32)


def _raw_source(data, info: _SigInfo, label: str, md: dict, kind: str | None) -> _Source:
    if info.kind is None:
        raise info.error(label, len(md.get("signals", [])) > 1)
    data = _squeeze_to(data, info)
    cal = Calibration(energy_unit="channel") if info.kind == "cube" else Calibration()
    return _Source(data=data, kind=info.kind, calibration=cal, metadata=md)
