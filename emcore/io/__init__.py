"""Reading and writing datasets: one :func:`load`, one :func:`save`.

Microscope formats are read through HyperSpy / RosettaSciIO (``.dm3``, ``.dm4``, ``.emd``
Velox and NCEM, ``.bcf``, ``.hspy``/``.hdf5``, ``.emi``/``.ser``, ``.mrc``, ``.rpl``/``.raw``,
``.tif``/``.tiff``), plain formats directly (``.png`` with Pillow, ``.npy``/``.npz`` with
NumPy, ``.tif`` with tifffile when RosettaSciIO cannot read it). Whatever the format, the
result is one :class:`~emcore.data.dataset.Dataset` with the array conventions of the workbench:
image ``(H, W)``, stack ``(T, H, W)``, spectrum image ``(H, W, E)`` with energy last.

Nothing big is read before its size is known: HyperSpy files are opened lazily
(``lazy=True``), ``.npy``/``.npz`` headers and image headers are read first, and data that
would exceed the memory cap as float32 raise :class:`~emcore.errors.TooLargeError` with a
binning that would fit. Binning and energy cropping are applied to the lazy array, before
anything is computed. Readers that can only hand over a whole file at once (``.bcf``, TIFF,
TIA, Velox, ``.npz`` members) are refused beforehand when that one piece would exceed twice
the cap.

HyperSpy, RosettaSciIO, exspy, dask, tifffile and Pillow are imported inside the functions
that need them, so that ``import emcore`` (the training code) works without them.

Every expected problem — unknown extension, corrupt or truncated file, data of the wrong
dimensionality, NaN values, a HAADF image on another pixel grid, data over the memory cap —
raises :class:`~emcore.errors.EmcoreError` whose message names the file, says what is wrong
and what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import numpy as np

from emcore.data.dataset import Calibration, Dataset, check_haadf
from emcore.errors import EmcoreError, TooLargeError
from emcore.noise.models import NoiseModel, noise_from_dict

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MIN_IMAGE_SIDE",
    "SAVE_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "default_max_bytes",
    "list_signals",
    "load",
    "load_bytes",
    "load_haadf",
    "save",
    "save_with_companions",
]

#: Extensions :func:`load` reads (lower case, with the dot), for the app's uploader.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".dm3", ".dm4", ".emd", ".bcf", ".hspy", ".hdf5", ".emi", ".ser", ".mrc",
    ".rpl", ".raw", ".tif", ".tiff", ".png", ".npy", ".npz",
)  # fmt: skip

#: Extensions :func:`save` writes.
SAVE_EXTENSIONS: tuple[str, ...] = (".hspy", ".tif", ".tiff", ".npy")

#: Default memory cap for one dataset as float32 (4 GiB); ``EMCORE_MAX_BYTES`` overrides it.
DEFAULT_MAX_BYTES: int = 4 * 1024**3

#: Smallest image or frame side that can be denoised (patch-based and CNN methods need room).
#: Spectrum images are exempt: their denoisers work along energy and may be tiny spatially.
MIN_IMAGE_SIDE: int = 8

_HYPERSPY_EXTENSIONS = (".dm3", ".dm4", ".emd", ".bcf", ".hspy", ".hdf5", ".emi", ".ser", ".mrc", ".rpl")
_NEEDS = "the workbench needs an image (H, W), a stack of images (T, H, W) or a spectrum image (H, W, E)"
_KIND_WORDS = {"image": "image", "stack": "stack of images", "cube": "spectrum image"}
_A_KIND = {"image": "an image", "stack": "a stack of images", "cube": "a spectrum image"}
# Lengths are normalised to nm when the unit is recognised (factor to nm).
_LENGTH_TO_NM = {
    "m": 1e9, "meter": 1e9, "meters": 1e9, "metre": 1e9, "metres": 1e9,
    "mm": 1e6,
    "\u00b5m": 1e3, "\u03bcm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3,
    "nm": 1.0,
    "\u00c5": 0.1, "\u212b": 0.1, "A": 0.1, "angstrom": 0.1, "ang": 0.1,
    "pm": 1e-3,
}  # fmt: skip
# BT.601 luma weights, the ones Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114])
# Loggers of the readers: they print ERROR lines for files they merely fail to recognise.
_NOISY_LOGGERS = ("hyperspy", "rsciio", "exspy", "tifffile", "PIL", "h5py")


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def default_max_bytes() -> int:
    """The memory cap in bytes: ``EMCORE_MAX_BYTES`` if set, else :data:`DEFAULT_MAX_BYTES`.

    The variable takes a number of bytes, optionally with a suffix (``512M``, ``8GiB``, ``2GB``).
    """
    raw = os.environ.get("EMCORE_MAX_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?", raw)
    if not m:
        raise EmcoreError(
            f"EMCORE_MAX_BYTES={raw!r} is not a size; set it to a number of bytes such as "
            "4294967296 or 4GiB."
        )
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    value = int(float(m.group(1)) * mult)
    if value <= 0:
        raise EmcoreError(f"EMCORE_MAX_BYTES={raw!r} must be a positive size.")
    return value


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover


def _shape_str(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _display_name(name: str) -> str:
    """Last path component of a user-supplied name (either separator), for messages only."""
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    return base or str(name)


@contextlib.contextmanager
def _quiet():
    """Silence the readers' logging and warnings while they run.

    RosettaSciIO logs ERROR lines when a reader does not recognise a file and HyperSpy warns
    about deprecations; our own EmcoreError carries the useful sentence instead.
    """
    saved = []
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _unreadable(label: str, what: str, exc: BaseException) -> EmcoreError:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return EmcoreError(
        f"{label} could not be read as {what} ({detail}). The file may be corrupt, truncated or "
        "not really of that format; check it opens in the acquisition software and export it "
        "again (for example as .hspy, .tif or .npy)."
    )


@contextlib.contextmanager
def _reading(label: str, what: str):
    """Turn a third-party reader's exception into an EmcoreError naming the file.

    Only wraps calls into readers (HyperSpy, tifffile, Pillow, NumPy); our own EmcoreErrors
    pass through unchanged.
    """
    try:
        with _quiet():
            yield
    except EmcoreError:
        raise
    except MemoryError as exc:
        raise EmcoreError(
            f"{label}: ran out of memory while reading it; load it binned (bin_spatial / "
            "bin_energy) or lower the cap EMCORE_MAX_BYTES so the size check stops it earlier."
        ) from exc
    except Exception as exc:  # noqa: BLE001 — readers raise anything from KeyError to struct.error
        raise _unreadable(label, what, exc) from exc


def _hs():
    with _quiet():
        import hyperspy.api as hs
    return hs


def _is_dask(x) -> bool:
    return type(x).__module__.startswith("dask")


def _dense(x) -> np.ndarray:
    # Some lazy readers (Velox EMD) can hand back sparse chunks.
    if hasattr(x, "todense"):
        x = x.todense()
    return np.asarray(x)


def _scalar(v):
    """A metadata value as a plain Python scalar (HyperSpy returns numpy scalars)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------------------
# what the file holds
# ---------------------------------------------------------------------------------------
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
                    min_side: int = MIN_IMAGE_SIDE) -> _SigInfo:
    """Kind of a plain array (npy, npz member, tif, png) from its shape; ``kind`` forces it."""
    shape = tuple(int(s) for s in shape)
    info = _SigInfo(index, title, shape, None, signal_type)
    dtype = np.dtype(dtype)
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


# ---------------------------------------------------------------------------------------
# the opened source, before reduction
# ---------------------------------------------------------------------------------------
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


def _check_nonempty(path: Path, label: str):
    if not path.exists():
        raise EmcoreError(f"{label}: no such file; check the path.")
    if path.is_dir():
        raise EmcoreError(f"{label} is a folder, not a file; choose a data file inside it.")
    if path.stat().st_size == 0:
        raise EmcoreError(f"{label} is empty (0 bytes); the upload or copy probably failed, so copy it again.")


def _ext_of(path: Path, label: str) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "no extension"
        raise EmcoreError(
            f"{label}: files with {shown} are not supported. Supported formats: "
            f"{', '.join(SUPPORTED_EXTENSIONS)}."
        )
    return ext


def _open(path: Path, label: str, *, kind: str | None, signal: int | None, cap: int,
          min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """Open ``path`` without materialising its data; pick the signal and the kind.

    ``min_side`` is the smallest image side accepted (1 for a HAADF image, which only has to
    match its spectrum image).
    """
    _check_nonempty(path, label)
    ext = _ext_of(path, label)
    if kind is not None and kind not in ("image", "stack", "cube"):
        raise EmcoreError(f"Unknown data kind {kind!r}; it must be image, stack or cube.")
    if ext == ".npy":
        return _open_npy(path, label, kind, signal, min_side)
    if ext == ".npz":
        return _open_npz(path, label, kind, signal, cap, min_side)
    if ext == ".png":
        return _open_png(path, label, kind, signal, cap, min_side)
    if ext in (".tif", ".tiff"):
        return _open_tif(path, label, kind, signal, cap, min_side)
    if ext == ".raw":
        rpl = next((p for p in (path.with_suffix(".rpl"), path.with_suffix(".RPL")) if p.exists()), None)
        if rpl is None:
            raise EmcoreError(
                f"{label}: a .raw file is read through its .rpl header, and there is no "
                f"{path.with_suffix('.rpl').name} beside it; put (or upload) both files together."
            )
        path = rpl
    return _open_hyperspy(path, label, kind, signal)


# -- HyperSpy ------------------------------------------------------------------------------
def _hs_read(path: Path, label: str) -> list:
    hs = _hs()
    ext = path.suffix.lower()
    kwargs: dict = {"lazy": True}
    if ext in (".hspy", ".hdf5"):
        # Two readers (HSPY and NCEM EMD) claim .hdf5; ours are HyperSpy files.
        kwargs["reader"] = "HSPY"
    what = {".emi": "an FEI TIA .emi file", ".ser": "an FEI TIA .ser file"}.get(ext, f"a {ext} file")
    with _reading(label, what):
        out = hs.load(str(path), **kwargs)
    signals = out if isinstance(out, list) else [out]
    if not signals:
        hint = (
            " An .emi file only describes the data: its .ser file(s) (same name + _1.ser) must be "
            "beside it (or uploaded with it)."
            if ext == ".emi" else ""
        )
        raise EmcoreError(f"{label} holds no data that could be read.{hint}")
    return signals


def _close_all(signals):
    with _quiet():
        for s in signals:
            with contextlib.suppress(Exception):
                s.close_file()


def _nav_first(s):
    """The data of a signal with axes in array order nav…, sig… (HyperSpy's usual layout)."""
    data = s.data
    axes = sorted(s.axes_manager._axes, key=lambda a: a.index_in_array)
    order = [a.index_in_array for a in axes if a.navigate] + [a.index_in_array for a in axes if not a.navigate]
    if order != list(range(data.ndim)):
        data = data.transpose(order)
    return data, [a for a in axes if a.navigate] + [a for a in axes if not a.navigate]


def _length_calibration(ax) -> tuple[float, str]:
    """(pixel size, unit) of a spatial axis, lengths normalised to nm."""
    if ax is None:
        return 1.0, "px"
    units = ax.units if isinstance(ax.units, str) else ""
    units = units.strip()
    scale = float(getattr(ax, "scale", 1.0) or 1.0)
    return _normalise_length(scale, units)


def _normalise_length(scale: float, units: str) -> tuple[float, str]:
    if not units or units in ("<undefined>", "px", "pixel", "pixels") or not math.isfinite(scale) or scale <= 0:
        return 1.0, "px"
    factor = _LENGTH_TO_NM.get(units, _LENGTH_TO_NM.get(units.lower()))
    if factor is None:
        return scale, units  # e.g. "1 / nm" (diffraction): keep as the file says
    return scale * factor, "nm"


def _energy_calibration(ax) -> dict:
    units = ax.units if isinstance(ax.units, str) else ""
    units = units.strip()
    if getattr(ax, "is_uniform", True):
        offset, scale = float(ax.offset) + 0.0, float(ax.scale)  # + 0.0 turns -0.0 into 0.0
    else:  # a non-uniform axis: keep its start and mean step
        vals = np.asarray(ax.axis, dtype=np.float64)
        offset, scale = float(vals[0]), float(np.mean(np.diff(vals))) if vals.size > 1 else 1.0
    if units in ("", "<undefined>"):
        units = "channel"
    return {"energy_offset": offset, "energy_scale": scale, "energy_unit": units}


def _acquisition(md) -> dict:
    """Acquisition metadata (HyperSpy's metadata tree) under the workbench's keys."""
    out: dict = {}
    title = md.get_item("General.title", "")
    if title:
        out["title"] = str(title)
    stype = md.get_item("Signal.signal_type", "")
    if stype:
        out["signal_type"] = str(stype)
    for mode in ("TEM", "SEM"):
        node = f"Acquisition_instrument.{mode}"
        if not md.has_item(node):
            continue
        be = md.get_item(f"{node}.beam_energy")
        if be is not None and "voltage_kv" not in out:
            out["voltage_kv"] = float(be)
        mic = md.get_item(f"{node}.microscope")
        if mic and "microscope" not in out:
            out["microscope"] = str(mic)
        dwell = md.get_item(f"{node}.dwell_time")
        det_node = md.get_item(f"{node}.Detector")
        if det_node is not None and hasattr(det_node, "as_dictionary"):
            dets = det_node.as_dictionary()
            for det_name, det in dets.items():
                if not isinstance(det, dict):
                    continue
                if "detector" not in out:
                    model = det.get("detector_type") or det.get("spectrometer") or det.get("Name")
                    out["detector"] = f"{det_name} ({model})" if model else str(det_name)
                if dwell is None and det.get("dwell_time") is not None:
                    dwell = det["dwell_time"]
                if det.get("live_time") is not None and "live_time_s" not in out:
                    out["live_time_s"] = float(det["live_time"])
        if dwell is not None and "dwell_time_s" not in out:
            out["dwell_time_s"] = float(dwell)
    return {k: _scalar(v) for k, v in out.items()}


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


def _open_hyperspy(path: Path, label: str, kind: str | None, signal: int | None) -> _Source:
    signals = _hs_read(path, label)
    infos = [_classify_signal(i, s) for i, s in enumerate(signals)]
    info = _choose(infos, label, signal)
    s = signals[info.index]
    data, axes = _nav_first(s)
    if info.base_kind == "image" and data.ndim == 3:  # one-frame stack
        data, axes = data[0], axes[1:]
    have = info.kind
    data, new_kind = _reinterpret_3d(data, have, kind, label)
    # Spatial axes, in array order of the data as HyperSpy stores it.
    if have == "cube":
        spatial, energy_ax = axes[:2], axes[2]
    elif have == "stack":
        spatial, energy_ax = axes[1:], axes[0]
    else:
        spatial, energy_ax = axes, None
    size, unit = _length_calibration(spatial[0])
    cal_kw: dict = {"pixel_size": size, "pixel_unit": unit}
    if new_kind == "cube":
        cal_kw.update(_energy_calibration(energy_ax))
    md = _acquisition(s.metadata)
    md["signals"] = [i.public() for i in infos]
    md["signal_index"] = info.index
    plugin = s.metadata.get_item("General.FileIO.0.io_plugin")
    if plugin:
        md["reader"] = str(plugin)
    src = _Source(data=data, kind=new_kind, calibration=Calibration(**cal_kw), metadata=md)
    src.closers = [getattr(x, "close_file", lambda: None) for x in signals]
    # Our own .hspy files carry the facts a reader cannot guess.
    own = s.metadata.get_item("emcore")
    if own is not None and hasattr(own, "as_dictionary"):
        own_d = own.as_dictionary()
        if "is_counts" in own_d:
            src.counts_hint = bool(own_d["is_counts"])
        if own_d.get("noise"):
            with contextlib.suppress(EmcoreError):
                src.noise = noise_from_dict({k: _scalar(v) for k, v in own_d["noise"].items()})
        if own_d.get("haadf") is not None and new_kind == "cube":
            src.haadf = own_d["haadf"]
            md["haadf_source"] = "emcore metadata"
    if new_kind == "cube" and src.haadf is None:
        h = _pick_haadf([i for i in infos if i.index != info.index], data.shape[:2])
        if h is not None:
            hd = signals[h.index].data
            src.haadf = hd[0] if hd.ndim == 3 else hd
            md["haadf_signal_index"] = h.index
            md["haadf_title"] = h.title
    return src


# -- TIFF ----------------------------------------------------------------------------------
def _imagej_metadata(path: Path) -> dict:
    import tifffile

    try:
        with _quiet(), tifffile.TiffFile(str(path)) as tf:
            return dict(tf.imagej_metadata or {})
    except Exception:  # noqa: BLE001 — a plain peek; the real read reports errors
        return {}


def _luminance(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    return (rgb[..., :3].astype(np.float64) @ _LUMA).astype(np.float32)


def _open_tif(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """TIFF through RosettaSciIO (FEI/Zeiss/DM/ImageJ calibration), else tifffile.

    A 3-D TIFF is a sequence of pages, hence a stack ``(T, H, W)`` by default. Read as a
    cube (``kind="cube"``, or a file written by :func:`save`, which records its kind) the
    pages are energy channels ``(E, H, W)`` — ImageJ's layout — and are moved to
    ``(H, W, E)``, unless the array plainly has the energy last already (e.g. a
    ``(64, 64, 2048)`` cube written as is).
    """
    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single signal (number 0); signal={signal!r} does not exist.")
    ij = _imagej_metadata(path)
    data = None
    cal_kw: dict = {}
    md: dict = {}
    closers: list = []
    try:
        signals = _hs_read(path, label)
        s = signals[0]
        if s.data.dtype.names is None and s.data.dtype.kind in "biuf":
            data = s.data
            axes = sorted(s.axes_manager._axes, key=lambda a: a.index_in_array)
            row_ax = axes[-2] if len(axes) >= 2 else None
            size, unit = _length_calibration(row_ax)
            if unit == "px" and ij.get("unit") and row_ax is not None:
                # RosettaSciIO reads ImageJ resolution but only the unit "micron".
                size, unit = _normalise_length(float(row_ax.scale), str(ij["unit"]))
            cal_kw = {"pixel_size": size, "pixel_unit": unit}
            md = _acquisition(s.metadata)
            md["reader"] = "rsciio.tiff"
            closers = [getattr(s, "close_file", lambda: None)]
    except EmcoreError:
        data = None
    if data is None:
        data, cal_kw = _tifffile_read(path, label, ij, cap)
        md["reader"] = "tifffile"
    shape = tuple(int(n) for n in data.shape)
    want = kind or (ij.get("emcore_kind") if ij.get("emcore_kind") in ("image", "stack", "cube") else None)
    info = _classify_array(0, path.stem, shape, data.dtype, kind=want, tif_pages=True, min_side=min_side)
    md["signals"] = [info.public()]
    md["signal_index"] = 0
    if info.kind is None:
        raise info.error(label, False)
    data = _squeeze_to(data, info)
    if info.kind == "cube":
        # Pages are channels (ImageJ, and our own files, say so) unless the array was written
        # with the energy, its longest axis, already last.
        energy_last = _raw_3d_kind(data.shape) == "cube"
        if ij.get("emcore_kind") == "cube" or not energy_last:
            data = data.transpose(1, 2, 0)
    if info.kind == "cube":
        if "energy_scale" in ij:
            cal_kw.update(
                energy_offset=float(ij.get("energy_offset", 0.0)),
                energy_scale=float(ij["energy_scale"]),
                energy_unit=str(ij.get("energy_unit", "keV")),
            )
        else:
            cal_kw.update(energy_offset=0.0, energy_scale=1.0, energy_unit="channel")
    src = _Source(data=data, kind=info.kind, calibration=Calibration(**cal_kw), metadata=md, closers=closers)
    if "emcore_is_counts" in ij:
        src.counts_hint = str(ij["emcore_is_counts"]).lower() in ("true", "1")
    if ij.get("emcore_noise"):
        with contextlib.suppress(Exception):
            src.noise = noise_from_dict(json.loads(str(ij["emcore_noise"])))
    return src


def _tifffile_read(path: Path, label: str, ij: dict, cap: int):
    import tifffile

    with _reading(label, "a TIFF image"):
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            shape, axes = tuple(series.shape), series.axes
            res = tf.pages[0].tags.get("XResolution")
            xres = res.value if res is not None else None
    rgb = axes.endswith("S") and shape[-1] in (3, 4)
    # A size check before decoding (the float32 result; RGB collapses to one channel).
    n = int(np.prod(shape[:-1] if rgb else shape))
    if n * 4 > 2 * cap:
        raise EmcoreError(
            f"{label}: the TIFF holds {_shape_str(shape)} values ({_human(n * 4)} as float32), far "
            f"over the memory cap of {_human(cap)}; crop or bin it before loading."
        )
    with _reading(label, "a TIFF image"):
        arr = tifffile.imread(str(path))
    if rgb:
        arr = _luminance(arr)
    cal_kw: dict = {}
    if ij.get("unit") and xres and xres[0]:
        size, unit = _normalise_length(xres[1] / xres[0], str(ij["unit"]))
        cal_kw = {"pixel_size": size, "pixel_unit": unit}
    return arr, cal_kw


def _squeeze_to(data, info: _SigInfo):
    """Drop length-1 axes the classification ignored (only when no kind was forced)."""
    if data.ndim == len(info.shape) and data.ndim > 2 and info.base_kind is not None:
        want_nd = 2 if info.base_kind == "image" else 3
        if data.ndim > want_nd:
            idx = tuple(0 if n == 1 else slice(None) for n in data.shape)
            data = data[idx]
    return data


# -- NumPy ---------------------------------------------------------------------------------
def _npy_header(f, label: str):
    fmt = np.lib.format
    with _reading(label, "a NumPy .npy file"):
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = fmt._read_array_header(f, version)
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _raw_source(data, info: _SigInfo, label: str, md: dict, kind: str | None) -> _Source:
    if info.kind is None:
        raise info.error(label, len(md.get("signals", [])) > 1)
    data = _squeeze_to(data, info)
    cal = Calibration(energy_unit="channel") if info.kind == "cube" else Calibration()
    return _Source(data=data, kind=info.kind, calibration=cal, metadata=md)


def _open_npy(path: Path, label: str, kind: str | None, signal: int | None,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """A ``.npy`` file: header first (shape, dtype, size), then a read-only memory map."""
    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single array (number 0); signal={signal!r} does not exist.")
    with open(path, "rb") as f:
        shape, _fortran, dtype = _npy_header(f, label)
        offset = f.tell()
    info = _classify_array(0, path.stem, shape, dtype, kind=kind, min_side=min_side)
    md = {"signals": [info.public()], "signal_index": 0, "reader": "numpy"}
    if info.kind is None:
        raise info.error(label, False)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise EmcoreError(
            f"{label} is truncated: its header announces a {_shape_str(shape)} {dtype} array "
            f"({_human(expected - offset)}) but the file holds only {_human(actual - offset)} of data. "
            "Copy or export it again."
        )
    with _reading(label, "a NumPy .npy file"):
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise EmcoreError(
                    f"{label} holds Python objects (pickled data); for safety these are never "
                    "loaded. Save a plain numeric array instead."
                ) from exc
            raise
    return _raw_source(data, info, label, md, kind)


def _open_npz(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """A ``.npz`` archive: the array ``data`` (else the only / largest one), plus optional
    ``haadf`` and ``ground_truth`` members."""
    headers: dict[str, tuple] = {}
    with _reading(label, "a NumPy .npz archive"):
        with zipfile.ZipFile(path) as zf:
            for zi in zf.infolist():
                if not zi.filename.endswith(".npy"):
                    continue
                with zf.open(zi) as f:
                    headers[zi.filename[:-4]] = _npy_header(f, label)
    if not headers:
        raise EmcoreError(f"{label} holds no arrays; save the data with np.savez(path, data=array).")
    names = list(headers)
    infos = [
        _classify_array(i, n, headers[n][0], headers[n][2], kind=kind, min_side=min_side)
        for i, n in enumerate(names)
    ]
    md = {"signals": [i.public() for i in infos], "reader": "numpy"}
    if signal is not None:
        info = _choose(infos, label, signal)
    elif "data" in headers:
        info = infos[names.index("data")]
        if info.kind is None:
            raise EmcoreError(f"{label}: the array 'data' is {info.reason}; {info.advice}")
    else:
        pool = [i for i in infos if i.title not in ("haadf", "ground_truth")] or infos
        info = _choose(pool, label, None) if len(pool) > 1 else pool[0]
        if info.kind is None:
            raise info.error(label, False)
    md["signal_index"] = info.index
    shape, _, dtype = headers[info.title]
    native = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if native > 2 * cap:
        # Members of an archive are decompressed whole, so binning cannot save that memory.
        raise EmcoreError(
            f"{label}: the array {info.title!r} ({_shape_str(shape)} {dtype}, {_human(native)}) would be "
            f"read whole, more than twice the memory cap of {_human(cap)}; save it as a .npy file "
            "(read piece by piece, so it can be binned while loading) or raise EMCORE_MAX_BYTES."
        )
    with _reading(label, "a NumPy .npz archive"):
        with np.load(path, allow_pickle=False) as z:
            data = z[info.title]
            haadf = z["haadf"] if "haadf" in headers and info.title != "haadf" else None
            gt = z["ground_truth"] if "ground_truth" in headers and info.title != "ground_truth" else None
    src = _raw_source(data, info, label, md, kind)
    src.haadf = haadf if src.kind == "cube" else None
    if haadf is not None and src.kind != "cube":
        raise EmcoreError(
            f"{label}: the archive has a 'haadf' array but its data is {_A_KIND[src.kind]}; "
            "a HAADF image belongs only with a spectrum image."
        )
    src.ground_truth = gt
    return src


# -- PNG -----------------------------------------------------------------------------------
def _open_png(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """A PNG image; colour becomes BT.601 luminance. 8-bit PNGs are display images, never counts."""
    from PIL import Image

    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single image (number 0); signal={signal!r} does not exist.")
    if kind not in (None, "image"):
        raise EmcoreError(f"{label} is a single PNG image; it cannot be read as {_A_KIND[kind]}.")
    with _reading(label, "a PNG image"):
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            info = _classify_array(0, path.stem, (h, w), np.float32, min_side=min_side)
            if info.kind is None:
                raise info.error(label, False)
            if h * w * 4 > 2 * cap:
                raise EmcoreError(
                    f"{label}: the PNG is {w}×{h} pixels ({_human(h * w * 4)} as float32), over the "
                    f"memory cap of {_human(cap)}; crop it before loading."
                )
            if mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.array(im)
            elif mode == "1":
                arr = np.array(im, dtype=np.uint8)
            elif mode == "LA":
                arr = np.array(im.getchannel("L"))
            else:  # RGB, RGBA, P (palette), CMYK, YCbCr …
                arr = _luminance(np.array(im.convert("RGB")))
    eight_bit = mode not in ("I", "I;16", "I;16B", "I;16L", "F")
    md = {"signals": [info.public()], "signal_index": 0, "reader": "pillow", "png_mode": mode}
    src = _Source(data=arr, kind="image", calibration=Calibration(), metadata=md)
    if eight_bit:
        src.counts_hint = False
    return src


# ---------------------------------------------------------------------------------------
# reduction: energy crop, binning, size check, materialisation
# ---------------------------------------------------------------------------------------
def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise EmcoreError(f"{name} must be a whole number ≥ 1, not {v!r}.")
    return int(v)


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
        return int(np.prod(self.shape_out, dtype=np.int64)) * 4


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
            except (TypeError, ValueError) as exc:
                raise EmcoreError(f"energy_range must be a pair (low, high), not {energy_range!r}.") from exc
            cal = src.calibration
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
    """Smallest reduction (fewest values merged, spatial binning last) that fits the cap."""
    shape = plan.shape_in
    if plan.kind == "cube":
        H, W = shape[:2]
        E = len(range(*plan.e_slice.indices(shape[2])))
        min_side = 1
    else:
        H, W = shape[-2:]
        E = 1
        min_side = MIN_IMAGE_SIDE
    T = shape[0] if plan.kind == "stack" else 1
    ks = [k for k in range(plan.k, max(plan.k, min(H, W) // min_side) + 1)] or [plan.k]
    ms = [plan.m]
    if plan.kind == "cube":
        while ms[-1] * 2 <= E:
            ms.append(ms[-1] * 2)
    best, smallest = None, None
    for k in ks:
        for m in ms:
            n = (H // k) * (W // k) * T * (E // m) * 4
            key = (k * k * m, k)
            if n <= max_bytes and (best is None or key < best[0]):
                best = (key, k, m)
            if smallest is None or n < smallest[0]:
                smallest = (n, k, m)
    if best is not None:
        return {"bin_spatial": best[1], "bin_energy": best[2]}, True
    return {"bin_spatial": smallest[1], "bin_energy": smallest[2]}, False


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
    block = int(np.prod([max(c) for c in x.chunks], dtype=np.int64)) * x.dtype.itemsize
    if block > 2 * cap:
        reader = src.metadata.get("reader", "the reader")
        raise EmcoreError(
            f"{label}: {reader} reads this file in one piece of {_human(block)}, more than twice the "
            f"memory cap of {_human(cap)}, so binning while loading cannot keep it under the cap. "
            "Convert it to .hspy with HyperSpy on a machine with more memory (binned or cropped), "
            "or raise EMCORE_MAX_BYTES."
        )


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


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def load(
    path,
    *,
    kind: str | None = None,
    signal: int | None = None,
    haadf=None,
    ground_truth=None,
    max_bytes: int | None = None,
    bin_spatial: int = 1,
    bin_energy: int = 1,
    energy_range: tuple[float, float] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load an image, image stack or spectrum image from a file.

    Parameters
    ----------
    path : str or path-like
        A file with one of :data:`SUPPORTED_EXTENSIONS`. An ``.emi`` needs its ``.ser``
        beside it; a ``.raw`` needs its ``.rpl``.
    kind : {"image", "stack", "cube"}, optional
        Forces the reading of a 3-D array whose layout the file does not state (``.npy``,
        ``.npz``, ``.tif``; a 3-D HyperSpy signal is also moved between stack ``(T, H, W)``
        and cube ``(H, W, E)``). By default a plain 3-D array is a cube when its last axis is
        the longest and the map is square or that axis is over twice the middle one (so
        non-square movie frames stay stacks), else a stack; a multi-page TIFF is a stack
        unless it was written by :func:`save` (which records its kind). Length-1 axes are
        dropped when no kind is given (a one-frame stack is an image).
    signal : int, optional
        Which signal of a multi-signal file (``.bcf``, Velox ``.emd``, ``.dm3``, ``.npz``) to
        load; see :func:`list_signals`. By default the largest spectrum image, else the
        largest image or stack.
    haadf : path-like, list of (filename, bytes) or ndarray, optional
        A survey (HAADF) image on the same pixel grid as a spectrum image. Replaces the one
        found in the file. If it has the unbinned grid it is binned like the data (k×k mean).
    ground_truth : path-like or ndarray, optional
        Noise-free data of the same shape (simulations); reduced like the data.
    max_bytes : int, optional
        Memory cap for the data as float32 after reduction; default
        :func:`default_max_bytes` (``EMCORE_MAX_BYTES`` or 4 GiB).
    bin_spatial : int
        Sum ``bin_spatial``×``bin_spatial`` pixel blocks (the right/bottom remainder is
        cropped). Images and stacks that are not counts are averaged instead, so their
        intensity scale is kept (see Notes).
    bin_energy : int
        Sum ``bin_energy`` adjacent channels of a spectrum image (remainder cropped).
    energy_range : (float, float), optional
        Keep only channels whose energy lies in ``[low, high]`` (in the file's energy unit,
        keV for EDS and eV for EELS) — applied before energy binning.
    name : str, optional
        Label shown in the app; default the file name.

    Returns
    -------
    Dataset
        float32 data with calibration (lengths in nm when the unit is known, else ``"px"``),
        ``is_counts``, the HAADF image when the file has one, and ``metadata`` with
        ``source``, ``signals`` (every signal of the file: index, title, shape, kind or None,
        signal_type, reason), ``signal_index`` and acquisition facts when present
        (``voltage_kv``, ``dwell_time_s``, ``live_time_s``, ``detector``, ``microscope``,
        ``signal_type``, ``title``).

    Raises
    ------
    TooLargeError
        The reduced data would exceed ``max_bytes``; ``suggestion`` holds a binning that fits.
    EmcoreError
        Unknown extension, empty/corrupt/truncated file, 1-D or 4-D data, an image under
        8×8 pixels, NaN/Inf values, pickled ``.npy``, HAADF on another grid. The message names
        the file.

    Notes
    -----
    ``is_counts`` heuristic: a spectrum image is counts when every value is a non-negative
    integer (EDS/EELS counters). An image or stack additionally needs a mean ≤ 100 — only in
    the low-dose counting regime is an integer image worth treating as Poisson; detector
    images in ADC units (e.g. 16-bit HAADF with mean ~10⁴) are integer too but not counts.
    8-bit PNGs are display renderings and never counts. Files written by :func:`save` carry
    their own ``is_counts``.

    Binning: counts are always summed (a sum of Poisson variables is Poisson, so the noise
    model stays valid). Spectra are summed too (the spectrum of a bigger pixel). Images and
    stacks that are not counts are averaged, keeping their intensity scale. The HAADF image
    is always averaged. Readers that cannot read part of a file (``.bcf``, ``.tif``, TIA,
    Velox) hold its raw data once, in the stored dtype, while the reduction runs; such a file
    is refused (EmcoreError) when that would take more than twice ``max_bytes``.
    """
    path = Path(path)
    label = path.name
    return _load_path(
        path, label, kind=kind, signal=signal, haadf=haadf, ground_truth=ground_truth,
        max_bytes=max_bytes, bin_spatial=bin_spatial, bin_energy=bin_energy,
        energy_range=energy_range, name=name,
    )  # fmt: skip


def _load_path(path: Path, label: str, *, kind, signal, haadf, ground_truth, max_bytes,
               bin_spatial, bin_energy, energy_range, name) -> Dataset:
    k = _check_int("bin_spatial", bin_spatial)
    m = _check_int("bin_energy", bin_energy)
    cap = default_max_bytes() if max_bytes is None else int(max_bytes)
    if cap <= 0:
        raise EmcoreError(f"max_bytes must be positive, not {max_bytes!r}.")
    # An explicit HAADF is read first: a wrong file should fail before the big read.
    h_arr, h_label = _haadf_input(haadf) if haadf is not None else (None, label)
    src = _open(path, label, kind=kind, signal=signal, cap=cap)
    try:
        plan = _plan(src, label, k, m, energy_range)
        _check_size(plan, label, cap)
        _check_read_size(src, label, cap)
        if haadf is not None:
            # An explicit HAADF replaces the file's own one: do not read that one at all.
            src.haadf = None
        reduced, stats, file_haadf = _materialise(src, plan, label)
    finally:
        src.close()
    finite = stats[0]
    if not finite:
        raise EmcoreError(
            f"{label}: the data hold NaN or infinite values; replace them (for example with the "
            "local mean, or 0 for empty detector pixels) and save the file again."
        )
    is_counts = _is_counts(src.kind, stats, src.counts_hint)
    spatial_mean = src.kind in ("image", "stack") and not is_counts and k > 1
    data = reduced / (k * k) if spatial_mean else reduced
    data = np.asarray(data, dtype=np.float32)
    cal = src.calibration
    if plan.e_start:
        cal = replace(cal, energy_offset=cal.energy_offset + plan.e_start * cal.energy_scale)
    if k > 1 or m > 1:
        cal = cal.binned(spatial=k, energy=m)

    md = dict(src.metadata)
    md["source"] = label
    md["original_shape"] = tuple(int(n) for n in plan.shape_in)
    if k > 1 or m > 1 or energy_range is not None:
        md["reduction"] = {
            "bin_spatial": k, "bin_energy": m,
            "energy_range": tuple(float(v) for v in energy_range) if energy_range is not None else None,
            "spatial": "mean" if spatial_mean else "sum",
        }  # fmt: skip

    # HAADF: the explicit one, else the file's.
    if h_arr is None and file_haadf is not None:
        h_arr = file_haadf
    if h_arr is not None:
        h_arr = np.asarray(h_arr)
        if src.kind == "cube" and k > 1 and tuple(h_arr.shape) == tuple(plan.shape_in[:2]):
            h_arr = _mean_bin_2d(h_arr, k)
        if h_arr.ndim == 2 and not np.all(np.isfinite(h_arr)):
            raise EmcoreError(f"{h_label}: the HAADF image holds NaN or infinite values; replace them first.")
        h_arr = check_haadf(h_arr, data.shape, src.kind, h_label)

    gt = src.ground_truth
    gt_label = label
    if ground_truth is not None:
        if isinstance(ground_truth, (str, os.PathLike)):
            gt_label = Path(ground_truth).name
            gt = load(ground_truth, kind=src.kind, max_bytes=cap).data
        else:
            gt, gt_label = np.asarray(ground_truth), "ground truth"
    if gt is not None:
        gt = _reduce_like(np.asarray(gt), plan, spatial_mean, gt_label)

    return Dataset(
        data=data,
        kind=src.kind,
        calibration=cal,
        name=name or label,
        haadf=h_arr,
        ground_truth=gt,
        is_counts=is_counts,
        noise=src.noise,
        metadata=md,
    )


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


def _haadf_input(haadf) -> tuple[np.ndarray, str]:
    if isinstance(haadf, np.ndarray):
        return haadf, "HAADF image"
    if isinstance(haadf, (str, os.PathLike)):
        return load_haadf(haadf), Path(haadf).name
    if isinstance(haadf, (list, tuple)):
        files = _as_files(haadf)
        return load_haadf(files), _display_name(files[0][0])
    raise EmcoreError(f"haadf must be a file path, uploaded files or an array, not {type(haadf).__name__}.")


def list_signals(path) -> list[dict]:
    """Describe every signal a file holds, without reading its data.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list of dict
        One dict per signal: ``index``, ``title``, ``shape`` (as stored), ``kind``
        (``"image"``, ``"stack"``, ``"cube"`` or ``None`` when unusable), ``signal_type``
        and ``reason`` (why it is unusable, else ``None``).
    """
    path = Path(path)
    label = path.name
    _check_nonempty(path, label)
    ext = _ext_of(path, label)
    if ext in _HYPERSPY_EXTENSIONS or ext == ".raw":
        if ext == ".raw":
            path = path.with_suffix(".rpl")
            if not path.exists():
                raise EmcoreError(f"{label}: a .raw file needs its .rpl header beside it.")
        signals = _hs_read(path, label)
        try:
            return [_classify_signal(i, s).public() for i, s in enumerate(signals)]
        finally:
            _close_all(signals)
    if ext == ".npz":
        with _reading(label, "a NumPy .npz archive"):
            with zipfile.ZipFile(path) as zf:
                out = []
                for zi in zf.infolist():
                    if zi.filename.endswith(".npy"):
                        with zf.open(zi) as f:
                            shape, _, dtype = _npy_header(f, label)
                        out.append(_classify_array(len(out), zi.filename[:-4], shape, dtype).public())
        return out
    # Single-array formats: open (cheaply) and report the one signal.
    src = _open(path, label, kind=None, signal=None, cap=default_max_bytes())
    src.close()
    return list(src.metadata["signals"])


def load_haadf(path_or_files, *, max_bytes: int | None = None) -> np.ndarray:
    """Read a separate survey (HAADF) image.

    Parameters
    ----------
    path_or_files : path-like or list of (filename, bytes)
        A file (any of :data:`SUPPORTED_EXTENSIONS`) or uploaded files as for
        :func:`load_bytes`. From a file with several signals the image titled HAADF is taken,
        else the first 2-D image.
    max_bytes : int, optional
        Memory cap, as for :func:`load`.

    Returns
    -------
    ndarray
        ``(H, W)`` float32. The minimum image size does not apply (it may match a tiny
        spectrum image).
    """
    if isinstance(path_or_files, (list, tuple)):
        files = _as_files(path_or_files)
        with _upload_dir(files, max_bytes) as (main, label):
            return _load_haadf_path(main, label, max_bytes)
    path = Path(path_or_files)
    return _load_haadf_path(path, path.name, max_bytes)


def _load_haadf_path(path: Path, label: str, max_bytes: int | None) -> np.ndarray:
    _check_nonempty(path, label)
    ext = _ext_of(path, label)
    cap = default_max_bytes() if max_bytes is None else int(max_bytes)
    if ext in _HYPERSPY_EXTENSIONS:
        signals = _hs_read(path, label)
        try:
            infos = [_classify_signal(i, s) for i, s in enumerate(signals)]
            images = [i for i in infos if i.base_kind == "image"]
            if not images:
                found = "; ".join(f"{i.title or 'signal ' + str(i.index)}: {i.reason or _KIND_WORDS[i.kind]}" for i in infos)
                raise EmcoreError(
                    f"{label} holds no 2-D image to use as the HAADF image ({found}); choose the "
                    "file of the survey image itself."
                )
            pick = next((i for i in images if "HAADF" in i.title.upper()), images[0])
            if int(np.prod(pick.shape)) * 4 > cap:
                raise EmcoreError(
                    f"{label}: the HAADF image ({_shape_str(pick.shape)}) is over the memory cap of "
                    f"{_human(cap)}; bin it, or raise EMCORE_MAX_BYTES."
                )
            d = signals[pick.index].data
            with _reading(label, "its HAADF image"):
                arr = _dense(d.compute() if _is_dask(d) else d)
        finally:
            _close_all(signals)
        arr = arr.reshape(pick.shape[-2:]) if arr.ndim == 3 else arr
    else:
        src = _open(path, label, kind="image" if ext == ".png" else None, signal=None, cap=cap, min_side=1)
        try:
            if src.kind != "image":
                raise EmcoreError(
                    f"{label} holds {_A_KIND[src.kind]} (shape {tuple(src.data.shape)}), not a "
                    "2-D HAADF image; choose the file of the survey image itself."
                )
            if int(np.prod(src.data.shape)) * 4 > cap:
                raise EmcoreError(
                    f"{label}: the HAADF image ({_shape_str(src.data.shape)}) is over the memory cap "
                    f"of {_human(cap)}; bin it, or raise EMCORE_MAX_BYTES."
                )
            with _reading(label, "its HAADF image"):
                arr = _dense(src.data)
        finally:
            src.close()
    arr = np.asarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise EmcoreError(f"{label}: the HAADF image holds NaN or infinite values; replace them first.")
    return arr


# -- uploads -------------------------------------------------------------------------------
def _as_files(files) -> list[tuple[str, bytes]]:
    if isinstance(files, tuple) and len(files) == 2 and isinstance(files[0], str):
        files = [files]  # a single (name, bytes) pair
    out = []
    for item in files:
        try:
            fname, payload = item
        except (TypeError, ValueError) as exc:
            raise EmcoreError("Uploaded files must be given as (filename, bytes) pairs.") from exc
        if hasattr(payload, "getvalue"):
            payload = payload.getvalue()
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise EmcoreError(f"{_display_name(fname)}: the upload holds {type(payload).__name__}, not bytes.")
        out.append((str(fname), bytes(payload)))
    if not out:
        raise EmcoreError("No file was uploaded; choose a data file.")
    return out


_SER_INDEX = re.compile(r"_(\d+)\.ser$", re.IGNORECASE)


def _safe_upload_names(files: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """``[(safe_name, display_name)]``: names on disk are never built from the upload name.

    Only the lower-cased extension (checked against :data:`SUPPORTED_EXTENSIONS`) is kept,
    plus, for ``.ser`` files, the ``_<digits>`` index the TIA reader looks for
    (``<emi stem>_1.ser``; it globs ``_[0-9].ser``, so indices ≥ 10 are not found there either).
    """
    out, used = [], set()
    for fname, _ in files:
        disp = _display_name(fname)
        ext = PurePosixPath(disp).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            raise EmcoreError(
                f"{disp}: files with {ext or 'no extension'} are not supported. Supported formats: "
                f"{', '.join(SUPPORTED_EXTENSIONS)}."
            )
        if ext == ".ser":
            mm = _SER_INDEX.search(disp)
            idx = int(mm.group(1)) if mm else 1
            while f"upload_{idx}.ser" in used:
                idx += 1
            safe = f"upload_{idx}.ser"
        else:
            safe = f"upload{ext}"
            if safe in used:
                raise EmcoreError(
                    f"{disp}: two uploaded files are both {ext} files; upload one dataset at a time "
                    "(with its .ser or .raw companion when it has one)."
                )
        used.add(safe)
        out.append((safe, disp))
    return out


def _main_file(names: list[tuple[str, str]]) -> tuple[str, str]:
    safe = [s for s, _ in names]
    disp = dict(names)
    for primary in ("upload.emi", "upload.rpl"):
        if primary in safe:
            return primary, disp[primary]
    if "upload.raw" in safe:
        raise EmcoreError(
            f"{disp['upload.raw']}: a .raw file is read through its .rpl header; upload the .rpl "
            "file together with it."
        )
    sers = [s for s in safe if s.endswith(".ser")]
    others = [s for s in safe if not s.endswith(".ser")]
    if others and len(safe) > 1:
        raise EmcoreError(
            f"Several files were uploaded ({', '.join(disp[s] for s in safe)}); upload one dataset at "
            "a time (an .emi may come with its .ser files, an .rpl with its .raw)."
        )
    if len(sers) > 1:
        raise EmcoreError(
            f"Several .ser files were uploaded ({', '.join(disp[s] for s in sers)}) without their "
            ".emi; upload the .emi together with them, or one .ser at a time."
        )
    return safe[0], disp[safe[0]]


@contextlib.contextmanager
def _upload_dir(files: list[tuple[str, bytes]], max_bytes: int | None):
    cap = default_max_bytes() if max_bytes is None else int(max_bytes)
    names = _safe_upload_names(files)
    for (fname, payload), (_, disp) in zip(files, names):
        if len(payload) == 0:
            raise EmcoreError(f"{disp} is empty (0 bytes); the upload probably failed, so upload it again.")
        if len(payload) > 2 * cap:
            raise EmcoreError(
                f"{disp} is {_human(len(payload))}, more than twice the memory cap of {_human(cap)}; "
                "it cannot be loaded through an upload. Bin or crop it first, or open it with the "
                "command line (python -m emcore) on a machine with a larger EMCORE_MAX_BYTES."
            )
    main, disp = _main_file(names)
    with tempfile.TemporaryDirectory(prefix="emcore-upload-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        for (_, payload), (safe, _) in zip(files, names):
            (root / safe).write_bytes(payload)
        yield root / main, disp


def load_bytes(
    files,
    *,
    kind: str | None = None,
    signal: int | None = None,
    haadf=None,
    ground_truth=None,
    max_bytes: int | None = None,
    bin_spatial: int = 1,
    bin_energy: int = 1,
    energy_range: tuple[float, float] | None = None,
    name: str | None = None,
) -> Dataset:
    """Load uploaded files (what the app receives) through a private temporary folder.

    Parameters
    ----------
    files : list of (filename, bytes)
        The uploaded files: one data file, or an ``.emi`` with its ``.ser`` file(s), or an
        ``.rpl`` with its ``.raw``. The names are used for display and to take the extension
        only: files are written as ``upload.<ext>`` (``.ser`` as ``upload_<n>.ser``, keeping
        the TIA index) in a fresh ``tempfile.TemporaryDirectory()``, so an upload name can
        never choose where anything is written. Files over twice ``max_bytes`` are refused
        before anything is written.
    kind, signal, haadf, ground_truth, max_bytes, bin_spatial, bin_energy, energy_range
        As for :func:`load`.
    name : str, optional
        Display name; default the uploaded file name.

    Returns
    -------
    Dataset
        Fully in memory (the temporary folder is removed on return).

    Raises
    ------
    EmcoreError
        Empty upload, unsupported extension, more than one dataset, a file over twice the
        memory cap, or anything :func:`load` raises (naming the uploaded file).
    """
    files = _as_files(files)
    with _upload_dir(files, max_bytes) as (main, disp):
        return _load_path(
            main, disp, kind=kind, signal=signal, haadf=haadf, ground_truth=ground_truth,
            max_bytes=max_bytes, bin_spatial=bin_spatial, bin_energy=bin_energy,
            energy_range=energy_range, name=name or disp,
        )  # fmt: skip


# -- saving --------------------------------------------------------------------------------
def save(dataset_or_array, path, *, calibration: Calibration | None = None, kind: str | None = None) -> Path:
    """Write a dataset (or a bare array) to ``.hspy``, ``.tif``/``.tiff`` or ``.npy``.

    Parameters
    ----------
    dataset_or_array : Dataset or ndarray
        What to write. A bare array is an image when 2-D; a 3-D array is a stack or a cube
        as ``kind`` says (default: the :func:`load` heuristic, cube when the last axis is
        the longest).
    path : str or path-like
        Destination; the extension picks the format (:data:`SAVE_EXTENSIONS`).
    calibration : Calibration, optional
        Overrides the dataset's calibration (or calibrates a bare array).
    kind : {"image", "stack", "cube"}, optional
        Kind of a bare array (ignored for a Dataset unless it agrees).

    Returns
    -------
    Path
        The path written.

    Notes
    -----
    ``.hspy``: a HyperSpy ``Signal2D`` (image, stack) or, for a cube, an exspy
    ``EDSTEMSpectrum`` (energy in keV) / ``EELSSpectrum`` (eV) / ``Signal1D``, with axis
    calibration and the name as title; ``metadata.emcore`` holds ``is_counts``, ``kind``,
    the noise model and the HAADF image, so :func:`load` restores them.

    ``.tif``: float32 ImageJ TIFF with pixel size and unit (ImageJ and Fiji show the
    calibration). A cube is stored page-per-channel as ``(E, H, W)`` — the layout ImageJ
    expects — with its kind and energy calibration in the ImageJ description; :func:`load`
    restores ``(H, W, E)`` from that (or when called with ``kind="cube"``).

    ``.npy``: the float32 array only (a cube as ``(H, W, E)``); no calibration.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SAVE_EXTENSIONS:
        raise EmcoreError(
            f"{path.name}: cannot save as {ext or 'a file without extension'}; choose one of "
            f"{', '.join(SAVE_EXTENSIONS)}."
        )
    if isinstance(dataset_or_array, Dataset):
        ds = dataset_or_array
        if kind is not None and kind != ds.kind:
            raise EmcoreError(f"The dataset is {_A_KIND[ds.kind]}; it cannot be saved as {_A_KIND.get(kind, repr(kind))}.")
        if calibration is not None:
            ds = replace(ds, calibration=calibration)
    else:
        arr = np.asarray(dataset_or_array)
        if kind is None:
            if arr.ndim == 2:
                kind = "image"
            elif arr.ndim == 3:
                kind = _raw_3d_kind(arr.shape)
            else:
                raise EmcoreError(f"{path.name}: cannot save an array of shape {arr.shape}; {_NEEDS}.")
        ds = Dataset(data=arr, kind=kind, calibration=calibration or Calibration(), name=path.stem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if ext == ".npy":
            np.save(path, np.ascontiguousarray(ds.data, dtype=np.float32), allow_pickle=False)
        elif ext in (".tif", ".tiff"):
            _save_tif(ds, path)
        else:
            _save_hspy(ds, path)
    except OSError as exc:
        raise EmcoreError(f"{path.name}: could not be written ({exc.strerror or exc}); check the folder exists and is writable.") from exc
    return path


def save_with_companions(dataset: Dataset, path) -> dict[str, Path]:
    """Save a dataset and, beside it, its ground truth and HAADF image in the same format.

    Parameters
    ----------
    dataset : Dataset
    path : str or path-like
        Destination of the data (:data:`SAVE_EXTENSIONS`). The ground truth goes to
        ``<stem>_truth<ext>`` and the HAADF image to ``<stem>_haadf<ext>``, when present.

    Returns
    -------
    dict
        ``{"data": path, "ground_truth": path, "haadf": path}`` for what was written.
    """
    path = Path(path)
    written = {"data": save(dataset, path)}
    if dataset.ground_truth is not None:
        truth = replace(dataset, data=dataset.ground_truth, ground_truth=None, noise=None,
                        is_counts=False, name=f"{dataset.name} (ground truth)")  # fmt: skip
        written["ground_truth"] = save(truth, path.with_name(f"{path.stem}_truth{path.suffix}"))
    if dataset.haadf is not None:
        written["haadf"] = save(
            dataset.haadf, path.with_name(f"{path.stem}_haadf{path.suffix}"),
            calibration=dataset.calibration, kind="image",
        )  # fmt: skip
    return written


def _save_tif(ds: Dataset, path: Path):
    import tifffile

    data = np.asarray(ds.data, dtype=np.float32)
    cal = ds.calibration
    meta: dict = {"emcore_kind": ds.kind, "emcore_is_counts": bool(ds.is_counts)}
    if ds.kind == "image":
        meta["axes"] = "YX"
    elif ds.kind == "stack":
        meta["axes"] = "TYX"
    else:
        data = np.ascontiguousarray(np.moveaxis(data, 2, 0))  # (E, H, W): one page per channel
        meta["axes"] = "ZYX"
        meta.update(energy_offset=float(cal.energy_offset), energy_scale=float(cal.energy_scale),
                    energy_unit=str(cal.energy_unit))  # fmt: skip
    if ds.noise is not None:
        meta["emcore_noise"] = json.dumps(ds.noise.to_dict())
    kw: dict = {}
    if cal.is_spatially_calibrated and cal.pixel_size > 0:
        # ImageJ names micrometres "micron"; other units are written as they are.
        meta["unit"] = "micron" if cal.pixel_unit in ("µm", "μm", "um") else cal.pixel_unit
        kw["resolution"] = (1.0 / cal.pixel_size, 1.0 / cal.pixel_size)
    with _quiet():
        tifffile.imwrite(str(path), data, imagej=True, metadata=meta, **kw)


def _save_hspy(ds: Dataset, path: Path):
    hs = _hs()
    cal = ds.calibration
    data = np.asarray(ds.data, dtype=np.float32)
    with _quiet():
        if ds.kind == "cube":
            s = hs.signals.Signal1D(data)
            stype = str(ds.metadata.get("signal_type") or "")
            if stype not in ("EDS_TEM", "EDS_SEM", "EELS"):
                stype = {"keV": "EDS_TEM", "eV": "EELS"}.get(cal.energy_unit, "")
            if stype:
                s.set_signal_type(stype)  # exspy class when installed
        else:
            s = hs.signals.Signal2D(data)
        axes = sorted(s.axes_manager._axes, key=lambda a: a.index_in_array)
        spatial = axes[:2] if ds.kind == "cube" else axes[-2:]
        for ax, nm in zip(spatial, ("y", "x")):
            ax.name = nm
            ax.scale = float(cal.pixel_size)
            ax.offset = 0.0
            if cal.is_spatially_calibrated:
                ax.units = cal.pixel_unit
        if ds.kind == "cube":
            e = axes[2]
            e.name, e.offset, e.scale = "Energy", float(cal.energy_offset), float(cal.energy_scale)
            if cal.energy_unit != "channel":
                e.units = cal.energy_unit
        elif ds.kind == "stack":
            axes[0].name = "frame"
        s.metadata.General.title = ds.name
        if ds.metadata.get("voltage_kv") is not None:
            s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(ds.metadata["voltage_kv"]))
        for key, node in (("microscope", "Acquisition_instrument.TEM.microscope"),):
            if ds.metadata.get(key):
                s.metadata.set_item(node, str(ds.metadata[key]))
        s.metadata.set_item("emcore.is_counts", bool(ds.is_counts))
        s.metadata.set_item("emcore.kind", ds.kind)
        if ds.noise is not None:
            s.metadata.set_item("emcore.noise", ds.noise.to_dict())
        if ds.haadf is not None:
            s.metadata.set_item("emcore.haadf", np.asarray(ds.haadf, dtype=np.float32))
        s.save(str(path), overwrite=True)
