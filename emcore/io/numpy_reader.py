"""NumPy ``.npy`` (header first, then a read-only memory map) and ``.npz`` archives.

Pickled (object) arrays are never loaded.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from emcore.errors import EmcoreError
from emcore.io.guards import _A_KIND, MIN_IMAGE_SIDE, _check_dims, _human, _reading, _shape_str, _truncated
from emcore.io.layout import _choose, _classify_array, _raw_source, _Source


def _npy_header(f, label: str, where: str = "its .npy header"):
    fmt = np.lib.format
    with _reading(label, "a NumPy .npy file"):
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = fmt._read_array_header(f, version)
    shape = tuple(int(s) for s in shape)
    _check_dims(label, where, {f"axis {i}": n for i, n in enumerate(shape)})
    return shape, bool(fortran), np.dtype(dtype)


def _check_member_size(label: str, name: str, header, cap: int):
    shape, _, dtype = header
    native = math.prod(shape) * dtype.itemsize
    if native > 2 * cap:
        # Members of an archive are decompressed whole, so binning cannot save that memory.
        raise EmcoreError(
            f"{label}: the array {name!r} ({_shape_str(shape)} {dtype}, {_human(native)}) would be "
            f"read whole, more than twice the memory cap of {_human(cap)}; save it as a .npy file "
            "(read piece by piece, so it can be binned while loading) or raise EMCORE_MAX_BYTES."
        )


def _check_companion(label: str, name: str, header, cap: int):
    """The ``haadf`` / ``ground_truth`` member must be plain numbers, checked before reading it."""
    shape, _, dtype = header
    if dtype.hasobject or dtype.kind not in "biuf":
        what = "Python objects (pickled data)" if dtype.hasobject else f"{dtype} values"
        raise EmcoreError(
            f"{label}: the archive's {name!r} array holds {what} (shape {shape}), not numbers; "
            f"save it as a plain numeric array (np.savez(path, data=..., {name}=array.astype('float32')))."
        )
    _check_member_size(label, name, header, cap)


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
    expected = offset + math.prod(shape) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise _truncated(label, "its header", shape, dtype, expected - offset, actual - offset)
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
                name = zi.filename[:-4]
                where = f"the header of its array {name!r}"
                with zf.open(zi) as f:
                    headers[name] = _npy_header(f, label, where)
                    held = zi.file_size - f.tell()
                shape, _, dtype = headers[name]
                if math.prod(shape) * dtype.itemsize > held and not dtype.hasobject:
                    raise _truncated(label, where, shape, dtype, math.prod(shape) * dtype.itemsize, held)
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
    _check_member_size(label, info.title, headers[info.title], cap)
    for extra in ("haadf", "ground_truth"):
        if extra in headers and info.title != extra:
            _check_companion(label, extra, headers[extra], cap)
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
