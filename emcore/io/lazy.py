"""Data larger than memory: read a file piece by piece and write a result piece by piece.

:func:`open_lazy` opens a stack or spectrum image without reading its values and returns a
:class:`LazyDataset`, whose ``data`` is a dask array in the workbench layout (``(T, H, W)``,
``(H, W, E)``), already binned and energy-cropped when asked — the same reduction
:func:`~emcore.io.load` applies, built on the lazy array, so binning an 8 GB cube reads it once,
block by block, and holds only the result. :meth:`LazyDataset.block` reads frames (or rows of
a spectrum image) ``start:stop`` as float32; :func:`write_blocks` writes a result that is
computed block by block (``.npy``, ``.tif`` stacks, ``.hspy``) without ever holding it whole.

Formats read piece by piece: ``.npy`` (C order; the header is checked first, as by
:func:`~emcore.io.load`, then rows are read with plain file reads), multi-page ``.tif`` stacks
(one page per frame, through tifffile) and HyperSpy ``.hspy``/``.hdf5`` files (HyperSpy's lazy
signal; the HDF5 checks of :mod:`emcore.io.hdf5` run first). Plain file reads rather than memory
maps: pages of a mapped file that were read stay in the process's resident memory while the
map is open, so reading a 2 GB ``.npy`` through a map would show 2 GB of RSS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError, TooLargeError
from emcore.io.guards import (
    _A_KIND,
    MIN_IMAGE_SIDE,
    _check_int,
    _check_nonempty,
    _check_plausible,
    _dense,
    _ext_of,
    _human,
    _Limits,
    _quiet,
    _reading,
    _shape_str,
    default_max_bytes,
)
from emcore.io.layout import _classify_array, _Source
from emcore.io.reduce import _is_counts, _mean_bin_2d, _plan, _reduce, _stats_numpy
from emcore.noise.models import NoiseModel

#: Formats :func:`open_lazy` reads piece by piece.
LAZY_EXTENSIONS: tuple[str, ...] = (".npy", ".tif", ".tiff", ".hspy", ".hdf5")
#: Formats :func:`write_blocks` writes piece by piece (a spectrum image: not ``.tif``, whose
#: pages are energy channels, each needing every row).
BLOCK_SAVE_EXTENSIONS: tuple[str, ...] = (".npy", ".tif", ".tiff", ".hspy")
#: Size of the pieces a spectrum image is read in (rows of ``(W, E)`` spectra).
BLOCK_BYTES = 64 * 1024**2
# Headers are checked against this instead of the memory cap: the data need not fit in memory,
# only one frame (or one row of spectra) must; a lying header is still refused by its own checks.
_NO_CAP = 2**62


@dataclass
class LazyDataset:
    """A stack or spectrum image opened without reading its values.

    Attributes
    ----------
    data : dask.array.Array
        ``(T, H, W)`` or ``(H, W, E)`` after the requested binning and energy crop (binned
        values are sums, in float64), read when computed.
    kind : {"stack", "cube"}
    calibration : Calibration
        After the reduction, as :func:`~emcore.io.load` gives it.
    is_counts : bool or None
        From the file when it says (files written by :func:`~emcore.io.save`), else None
        until :meth:`scan` has looked at every value.
    haadf : ndarray or None
        A spectrum image's survey image, read (it is small) and binned like the data.
    """

    data: Any
    kind: str
    calibration: Calibration
    name: str
    is_counts: bool | None = None
    noise: NoiseModel | None = None
    haadf: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    source: Any = None  # the unreduced dask array (what scan() reads)
    bin_spatial: int = 1
    closers: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole (reduced) data as float32."""
        return math.prod(self.shape) * 4

    def scan(self) -> "LazyDataset":
        """Read every value once, block by block: refuse NaN/Inf, decide ``is_counts``.

        The same rule as :func:`~emcore.io.load` (non-negative integers; for a stack also a
        mean of at most 100). Skipped when the file already said whether it holds counts.
        """
        if self.is_counts is not None:
            return self
        x = self.source
        # A stack frame by frame: memory must not grow with the frames, even up to a block's worth.
        rows = 1 if self.kind == "stack" else _rows_per_block(x.shape, max(4, x.dtype.itemsize))
        finite, nonneg, integer, total = True, True, True, 0.0
        for start in range(0, x.shape[0], rows):
            with _reading(self.name, "its data (reading failed part-way)"):
                blk = _dense(x[start:start + rows].compute(scheduler="synchronous"))
            f, n, i, mean = _stats_numpy(blk)
            finite, nonneg, integer = finite and f, nonneg and n, integer and i
            total += mean * blk.size
            if not finite:
                raise _not_finite(self.name)
        self.is_counts = _is_counts(self.kind, (finite, nonneg, integer, total / max(1, x.size)), None)
        return self

    def block(self, start: int, stop: int) -> np.ndarray:
        """Frames (stack) or rows (spectrum image) ``start:stop`` as float32, in one read.

        A stack that is not counts and was binned is averaged, as :func:`~emcore.io.load`
        does (call :meth:`scan` first when ``is_counts`` is None).
        """
        with _reading(self.name, "its data (reading failed part-way)"):
            blk = _dense(self.data[start:stop].compute(scheduler="synchronous"))
        if blk.dtype.kind == "f" and not np.all(np.isfinite(blk)):
            raise _not_finite(self.name)
        k = self.bin_spatial
        if self.kind == "stack" and k > 1 and not self.is_counts:
            blk = blk / (k * k)
        return np.asarray(blk, dtype=np.float32)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of a stack, ``(H, W)`` float32."""
        return self.block(i, i + 1)[0]

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` along the first axis, ``rows`` at a time (default: about
        :data:`BLOCK_BYTES` per block for a spectrum image, one frame for a stack)."""
        n = self.shape[0]
        rows = rows or (1 if self.kind == "stack" else _rows_per_block(self.shape, 4))
        for start in range(0, n, rows):
            yield start, self.block(start, min(n, start + rows))

    def close(self) -> None:
        with _quiet():
            for c in self.closers:
                try:
                    c()
                except Exception:  # noqa: BLE001 — closing a reader must not hide the result
                    pass

    def __enter__(self) -> "LazyDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _not_finite(label: str) -> EmcoreError:
    return EmcoreError(
        f"{label}: the data hold NaN or infinite values; replace them (for example with the "
        "local mean, or 0 for empty detector pixels) and save the file again."
    )


def _rows_per_block(shape, itemsize: int) -> int:
    row = max(1, math.prod(int(n) for n in shape[1:]) * itemsize)
    return max(1, min(int(shape[0]), BLOCK_BYTES // row))


def open_lazy(
    path,
    *,
    kind: str | None = None,
    signal: int | None = None,
    bin_spatial: int = 1,
    bin_energy: int = 1,
    energy_range: tuple[float, float] | None = None,
    max_bytes: int | None = None,
    name: str | None = None,
) -> LazyDataset:
    """Open a stack or spectrum image for reading piece by piece.

    Parameters
    ----------
    path : str or path-like
        One of :data:`LAZY_EXTENSIONS`.
    kind, signal, bin_spatial, bin_energy, energy_range, name
        As for :func:`~emcore.io.load`; the reduction is planned on the lazy array.
    max_bytes : int, optional
        Cap for one frame (stack) or one row of spectra as float32; default
        :func:`~emcore.io.default_max_bytes`. The whole data may be larger.

    Returns
    -------
    LazyDataset
        Close it (or use it in a ``with`` block) to release the file.

    Raises
    ------
    EmcoreError
        A format that cannot be read piece by piece (use :func:`~emcore.io.load`), an image
        (nothing to split), a Fortran-ordered ``.npy``, a TIFF spectrum image, or anything
        :func:`~emcore.io.load` refuses about the file itself (corrupt, truncated, lying
        header, pickled data).
    TooLargeError
        One frame or one row of spectra is over ``max_bytes``.
    """
    path = Path(path)
    label = path.name
    k, m = _check_int("bin_spatial", bin_spatial), _check_int("bin_energy", bin_energy)
    cap = default_max_bytes() if max_bytes is None else int(max_bytes)
    _check_nonempty(path, label)
    ext = _ext_of(path, label)
    if ext not in LAZY_EXTENSIONS:
        raise EmcoreError(
            f"{label}: {ext} files cannot be read piece by piece; load it whole (it must then fit the "
            f"memory cap), or convert it to .hspy or .npy. Read piece by piece: {', '.join(LAZY_EXTENSIONS)}."
        )
    if ext == ".npy":
        src = _open_npy_rows(path, label, kind)
    elif ext in (".tif", ".tiff"):
        src = _open_tif_pages(path, label, kind)
    else:
        from emcore.io.hyperspy_reader import _open_hyperspy

        src = _open_hyperspy(path, label, kind, signal, _Limits(_NO_CAP, k, m, energy_range))
    try:
        if src.kind == "image":
            raise EmcoreError(
                f"{label} is an image; an image is read whole (emcore.io.load). Piece by piece reading is "
                "for stacks (frame by frame) and spectrum images (rows of spectra)."
            )
        piece = src.data.shape[1:]  # one frame, or one row of spectra
        if math.prod(int(n) for n in piece) * 4 > cap:
            what = "one frame" if src.kind == "stack" else "one row of spectra"
            raise TooLargeError(
                f"{label}: {what} ({_shape_str(piece)} values, {_human(math.prod(piece) * 4)} as float32) is "
                f"over the memory cap of {_human(cap)}; bin it in the acquisition software or raise EMCORE_MAX_BYTES.",
                shape=src.data.shape, nbytes=math.prod(src.data.shape) * 4, max_bytes=cap, suggestion={})
        plan = _plan(src, label, k, m, energy_range)
        reduced = _reduce(src.data, plan)
        haadf = None
        if src.haadf is not None:
            with _reading(label, "its HAADF image"):
                h = src.haadf
                h = np.asarray(_dense(h.compute(scheduler="synchronous") if hasattr(h, "dask") else h), np.float32)
            haadf = np.asarray(_mean_bin_2d(h, k), np.float32) if tuple(h.shape) == tuple(plan.shape_in[:2]) else None
    except BaseException:
        src.close()
        raise
    cal = src.calibration
    if plan.e_start:
        cal = Calibration(**{**cal.to_dict(), "energy_offset": cal.energy_offset + plan.e_start * cal.energy_scale})
    if k > 1 or m > 1:
        cal = cal.binned(spatial=k, energy=m)
    md = dict(src.metadata, source=label, original_shape=tuple(int(n) for n in plan.shape_in))
    return LazyDataset(data=reduced, kind=src.kind, calibration=cal, name=name or label, is_counts=src.counts_hint,
                       noise=src.noise, haadf=haadf, metadata=md, source=src.data, bin_spatial=k,
                       closers=[src.close])


# ---------------------------------------------------------------------------------------
# readers: an object with shape, dtype and __getitem__, which dask.array.from_array wraps
# ---------------------------------------------------------------------------------------
def _split_first_axis(key, n: int) -> tuple[tuple[int, int, int], tuple]:
    """``key`` of ``array[key]`` split into the range along the first axis (start, stop, step) and
    the key to apply to the rows read (an integer first index keeps its axis dropped)."""
    key = key if isinstance(key, tuple) else (key,)
    first = key[0] if key else slice(None)
    if isinstance(first, (int, np.integer)):
        first, key = slice(int(first), int(first) + 1), (0,) + tuple(key[1:])
    else:
        key = (slice(None),) + tuple(key[1:])
    return first.indices(n), key


class _RowFile:
    """Rows (first-axis slices) of a C-ordered raw array in a file, read with plain reads."""

    def __init__(self, path: Path, label: str, offset: int, shape: tuple, dtype: np.dtype):
        self.path, self.label, self.offset = path, label, int(offset)
        self.shape, self.dtype, self.ndim = tuple(int(n) for n in shape), np.dtype(dtype), len(shape)

    def __getitem__(self, key):
        (start, stop, step), key = _split_first_axis(key, self.shape[0])
        n = max(0, stop - start)
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        buf = np.empty((n,) + self.shape[1:], self.dtype)
        if n:
            with open(self.path, "rb") as f:
                f.seek(self.offset + start * row)
                got = f.readinto(memoryview(buf).cast("B"))
            if got != n * row:
                raise EmcoreError(f"{self.label} is shorter than its header says (a read of rows {start}–{stop} "
                                  "came back short); copy or export it again.")
        return buf[::step][key] if step != 1 else buf[key]


class _TiffPages:
    """Pages of a TIFF's first series as the frames of a stack, read page by page."""

    def __init__(self, path: Path, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype, self.ndim = path, tuple(int(n) for n in shape), np.dtype(dtype), 3

    def __getitem__(self, key):
        import tifffile

        (start, stop, step), key = _split_first_axis(key, self.shape[0])
        pages = list(range(start, stop, step))
        if not pages:
            return np.empty((0,) + self.shape[1:], self.dtype)[key]
        with tifffile.TiffFile(str(self.path)) as tf:
            arr = tf.asarray(key=pages, series=0)
        return np.asarray(arr, self.dtype).reshape((len(pages),) + self.shape[1:])[key]


def _from_rows(reader, rows: int):
    import dask.array as da

    return da.from_array(reader, chunks=(rows,) + tuple(reader.shape[1:]), lock=False, asarray=False,
                         meta=np.empty((0,) * reader.ndim, reader.dtype))


def _open_npy_rows(path: Path, label: str, kind: str | None) -> _Source:
    """A ``.npy`` file as rows: the header checks of :func:`~emcore.io.load`, then plain reads."""
    from emcore.io.numpy_reader import _npy_header, _open_npy

    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, label)
        offset = f.tell()
    if fortran and len([n for n in shape if n != 1]) > 1:
        raise EmcoreError(f"{label} is stored in Fortran (column) order, whose frames are not contiguous; "
                          "load it whole, or save it again with np.save(path, np.ascontiguousarray(a)).")
    src = _open_npy(path, label, kind, None)  # kind, truncation, pickled data: refused here
    data = src.data
    src.close()
    # Dropping length-1 axes leaves the bytes where they are.
    reader = _RowFile(path, label, offset, tuple(data.shape), dtype)
    del data
    rows = 1 if src.kind == "stack" else _rows_per_block(reader.shape, dtype.itemsize)
    src.data = _from_rows(reader, rows)
    return src


def _open_tif_pages(path: Path, label: str, kind: str | None) -> _Source:
    """A multi-page TIFF as a stack, page by page (header checks of :func:`~emcore.io.load`)."""
    import json

    from emcore.io.metadata import _normalise_length
    from emcore.io.tiff import _tif_layout, _tiff_header
    from emcore.noise.models import noise_from_dict

    shape, axes, dtype, ij = _tiff_header(path, label)
    want = kind or (ij.get("emcore_kind") if ij.get("emcore_kind") in ("image", "stack", "cube") else None)
    if axes.endswith("S") and shape[-1] in (3, 4):
        raise EmcoreError(f"{label} is a colour TIFF; piece by piece reading takes grey-scale stacks only.")
    info = _classify_array(0, path.stem, shape, dtype, kind=want, tif_pages=True, min_side=MIN_IMAGE_SIDE)
    if info.kind is None:
        raise info.error(label, False)
    if info.kind == "cube":
        raise EmcoreError(f"{label} is a spectrum image stored one energy channel per page, so a row of spectra "
                          "needs every page; convert it to .hspy or .npy to read it piece by piece.")
    _check_plausible(label, "its TIFF header", shape, dtype, path.stat().st_size, _Limits(_NO_CAP))
    out_shape = _tif_layout(info, ij)
    cal_kw: dict = {}
    import tifffile

    with _reading(label, "a TIFF image"):
        with tifffile.TiffFile(str(path)) as tf:
            res = tf.pages[0].tags.get("XResolution")
            xres = res.value if res is not None else None
    if ij.get("unit") and xres and xres[0]:
        size, unit = _normalise_length(xres[1] / xres[0], str(ij["unit"]))
        cal_kw = {"pixel_size": size, "pixel_unit": unit}
    md = {"signals": [info.public()], "signal_index": 0, "reader": "tifffile"}
    # An image (no frames to read one by one) is refused by open_lazy on its kind.
    data = _from_rows(_TiffPages(path, out_shape, dtype), 1) if info.kind == "stack" else None
    src = _Source(data=data, kind=info.kind, calibration=Calibration(**cal_kw), metadata=md)
    if "emcore_is_counts" in ij:
        src.counts_hint = str(ij["emcore_is_counts"]).lower() in ("true", "1")
    if ij.get("emcore_noise"):
        try:
            src.noise = noise_from_dict(json.loads(str(ij["emcore_noise"])))
        except Exception:  # noqa: BLE001 — a malformed model only loses the noise model
            src.noise = None
    return src


# ---------------------------------------------------------------------------------------
# writing a result block by block
# ---------------------------------------------------------------------------------------
def write_blocks(
    path,
    shape: tuple[int, ...],
    fn: Callable[[int, int], np.ndarray],
    *,
    kind: str,
    rows: int = 1,
    calibration: Calibration | None = None,
    name: str = "",
    is_counts: bool = False,
    noise: NoiseModel | None = None,
    haadf: np.ndarray | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write a stack or spectrum image that ``fn(start, stop)`` computes ``rows`` at a time.

    ``fn`` returns frames (or rows) ``start:stop`` as an array; it is called once per block
    (in order for ``.npy`` and ``.tif``; HyperSpy's ``.hspy`` writer picks its own order), and
    no more than one block is held at a time. The file is written under a hidden
    name and renamed at the end, so a crash never leaves half a file under ``path``. It reads
    back with :func:`~emcore.io.load` (or :func:`open_lazy`) like a file from
    :func:`~emcore.io.save`.

    Raises
    ------
    EmcoreError
        A format not in :data:`BLOCK_SAVE_EXTENSIONS`, a spectrum image as ``.tif``, a file
        that cannot be written.
    """
    import os

    path = Path(path)
    ext = path.suffix.lower()
    cal = calibration or Calibration()
    if ext not in BLOCK_SAVE_EXTENSIONS or (kind == "cube" and ext in (".tif", ".tiff")):
        allowed = ".hspy or .npy" if kind == "cube" else ", ".join(BLOCK_SAVE_EXTENSIONS)
        raise EmcoreError(f"{path.name}: {_A_KIND.get(kind, 'data')} written piece by piece can be saved as "
                          f"{allowed}, not {ext or 'a file without extension'}.")
    shape = tuple(int(n) for n in shape)
    rows = max(1, min(int(rows), shape[0]))
    starts = list(range(0, shape[0], rows))

    def pieces() -> Iterator[np.ndarray]:
        for s in starts:
            blk = np.asarray(fn(s, min(shape[0], s + rows)), np.float32)
            if blk.shape[1:] != shape[1:]:  # a bug in fn, not user input
                raise RuntimeError(f"a block of shape {blk.shape} for a result of shape {shape}")
            yield blk

    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if ext == ".npy":
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_2_0(f, {"descr": np.dtype(np.float32).str, "fortran_order": False,
                                                         "shape": shape})
                for blk in pieces():
                    f.write(np.ascontiguousarray(blk).data)
        elif ext in (".tif", ".tiff"):
            _write_tif(tmp, shape, pieces(), kind, cal, is_counts, noise)
        else:
            _write_hspy(tmp, shape, fn, rows, kind=kind, calibration=cal, name=name or path.stem, is_counts=is_counts,
                        noise=noise, haadf=haadf, metadata=metadata or {})
        os.replace(tmp, path)
    except OSError as exc:
        raise EmcoreError(f"{path.name}: could not be written ({exc.strerror or exc}); check the folder's space and "
                          "permissions.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_tif(path: Path, shape, pieces: Iterator[np.ndarray], kind: str, cal: Calibration, is_counts: bool, noise):
    import tifffile

    from emcore.io.saving import _tif_meta

    meta, kw = _tif_meta(kind, cal, is_counts, noise)
    frames = (frame for blk in pieces for frame in blk) if len(shape) == 3 else (blk[0] for blk in pieces)
    with _quiet():
        tifffile.imwrite(str(path), data=frames, shape=shape, dtype=np.float32, imagej=True, metadata=meta, **kw)


def _write_hspy(path: Path, shape, fn, rows: int, **signal_kw):
    """HyperSpy writes a lazy signal chunk by chunk: one chunk per block, each computed and
    stored before the next by dask's synchronous scheduler (in the worker's own thread)."""
    import dask
    import dask.array as da

    from emcore.io.saving import _hspy_signal

    parts = []
    for s in range(0, shape[0], rows):
        n = min(shape[0], s + rows) - s
        parts.append(da.from_delayed(dask.delayed(fn, pure=True)(s, s + n), (n,) + tuple(shape[1:]), dtype=np.float32))
    data = da.concatenate(parts, axis=0).astype(np.float32)
    with _quiet(), _synchronous():
        s = _hspy_signal(data, **signal_kw)
        s.save(str(path), overwrite=True, chunks=(rows,) + tuple(shape[1:]), compression=None,
               show_progressbar=False)


def _synchronous():
    """dask's synchronous scheduler for the block that follows, inside a Dask worker too.

    There, the first ``get_client()`` — which ``dask.array.store`` makes to choose its lock —
    installs the worker's client as the global default scheduler, overriding this setting
    half-way through a write; so that client is made first.
    """
    import dask

    try:
        from distributed import get_client, get_worker

        get_worker()
        get_client()
    except (ImportError, ValueError):
        pass  # not in a worker
    return dask.config.set(scheduler="synchronous")
