"""What a file's header declares, checked before HyperSpy / RosettaSciIO open it.

RosettaSciIO trusts headers: a 5 KB ``.mrc`` or ``.rpl`` claiming 100000³ voxels makes it
build a lazy memory map over a petabyte (a dask graph that takes minutes to build), and a
Bruker ``.bcf`` cut in half loads as zeros. :func:`_precheck` reads the few header bytes
itself — MRC: the 1024-byte header (nx, ny, nz, mode, extended-header size); RPL: the
width/height/depth/data-length/data-type keys and the size of the ``.raw``; BCF: the SFS
container header and its file table; HDF5: every dataset (see :mod:`emcore.io.hdf5`) — and
refuses, in one sentence, negative sizes, unknown data types and files shorter than their
header says.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from emcore.errors import EmcoreError
from emcore.io.guards import _check_dims, _check_nonempty, _human, _Limits, _reading, _truncated
from emcore.io.hdf5 import _check_hdf5, _is_hdf5

# MRC data modes RosettaSciIO reads (MRC2014 mode number -> dtype, as rsciio.mrc maps them).
_MRC_MODES = {0: np.uint8, 1: np.int16, 2: np.float32, 4: np.complex64, 6: np.uint16, 12: np.float16}
_MRC_HEADER = 1024


def _precheck(path: Path, label: str, limits: _Limits):
    """The one gate before a HyperSpy reader: HDF5 by content, the raw formats by extension."""
    ext = path.suffix.lower()
    if _is_hdf5(path):
        _check_hdf5(path, label, limits)
    elif ext == ".mrc":
        _check_mrc(path, label)
    elif ext == ".rpl":
        _check_rpl(path, label)
    elif ext == ".bcf":
        _check_bcf(path, label)
    elif ext in (".dm3", ".dm4"):
        _check_dm(path, label)
    elif ext == ".ser":
        _check_ser(path, label)
    elif ext == ".emi":
        for ser in sorted(path.parent.glob(f"{path.stem}_*.ser")):
            ser_label = f"the .ser file uploaded with {label}" if ser.name.startswith("upload_") else ser.name
            _check_nonempty(ser, ser_label)
            _check_ser(ser, ser_label)


def _check_dm(path: Path, label: str):
    """DigitalMicrograph files state their length after the version: refuse a shorter file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12:
        return  # the reader reports a file this short
    (version,) = struct.unpack(">i", head[:4])
    if version not in (3, 4):
        return  # not a DM file after all: the reader says so
    # DM3: a 4-byte length, DM4: an 8-byte one, of the file after its 16- (24-) byte header.
    declared = struct.unpack(">I", head[4:8])[0] + 16 if version == 3 else struct.unpack(">Q", head[4:12])[0] + 24
    if declared > size:
        raise EmcoreError(
            f"{label} is truncated: its DigitalMicrograph header says the file is {_human(declared)} "
            f"long but it holds only {_human(size)}. Copy or export it again."
        )


def _check_ser(path: Path, label: str):
    """An FEI TIA .ser file lists where each data element starts: all must lie in the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(30)
        if len(head) < 30 or head[:2] != b"II":
            return  # not a .ser after all: the reader says so
        version = struct.unpack_from("<H", head, 4)[0]
        (valid,) = struct.unpack_from("<I", head, 18)
        wide = version >= 0x220  # offsets are 8 bytes from series version 0x220 on
        (table,) = struct.unpack_from("<Q" if wide else "<I", head, 22)
        width = 8 if wide else 4
        end = table + valid * width
        if end > size:
            raise _ser_truncated(label, end, size)
        f.seek(table)
        offsets = struct.unpack(f"<{valid}{'Q' if wide else 'I'}", f.read(valid * width)) if valid else ()
    last = max(offsets, default=0)
    if last >= size:
        raise _ser_truncated(label, last, size)


def _ser_truncated(label: str, at: int, size: int) -> EmcoreError:
    return EmcoreError(
        f"{label} is truncated: its TIA header places data at byte {at} but the file holds only "
        f"{size} bytes. Copy or export it again."
    )


def _check_mrc(path: Path, label: str):
    size = path.stat().st_size
    if size < _MRC_HEADER:
        raise EmcoreError(
            f"{label} is truncated: an MRC file starts with a {_MRC_HEADER}-byte header but this one "
            f"holds only {size} bytes. Copy or export it again."
        )
    with open(path, "rb") as f:
        head = f.read(_MRC_HEADER)
    # RosettaSciIO reads the header little-endian; so do we (a big-endian file fails here too).
    nx, ny, nz, mode = struct.unpack_from("<4i", head, 0)
    (n_ext,) = struct.unpack_from("<i", head, 92)
    where = "its MRC header"
    _check_dims(label, where, {"nx": nx, "ny": ny, "nz": nz}, zero_ok=False)
    _check_dims(label, where, {"extended-header size": n_ext})
    if mode not in _MRC_MODES:
        raise EmcoreError(
            f"{label}: {where} gives data mode {mode}, which the reader does not know (it reads modes "
            f"{', '.join(map(str, _MRC_MODES))}); export the data again as MRC mode 2 (float32) or as .tif."
        )
    dtype = np.dtype(_MRC_MODES[mode])
    shape = (nz, ny, nx)
    need = math.prod(shape) * dtype.itemsize
    have = size - _MRC_HEADER - n_ext
    if need > have:
        raise _truncated(label, where, shape, dtype, need, have)


def _check_rpl(path: Path, label: str):
    from rsciio.ripple._api import parse_ripple

    with _reading(label, "a Ripple .rpl header"):
        with open(path, encoding="latin-1", errors="replace") as f:
            try:
                info = parse_ripple(f)
            except KeyError as exc:
                raise EmcoreError(
                    f"{label}: its .rpl header has no {exc.args[0]!r} line, which the reader needs; "
                    "add it (or export the .rpl/.raw pair again)."
                ) from None
    for key in ("width", "height", "offset"):
        if key not in info:
            raise EmcoreError(
                f"{label}: its .rpl header has no {key!r} line, which the reader needs; add it "
                "(or export the .rpl/.raw pair again)."
            )
    where = "its .rpl header"
    w, h, d, offset = (int(info[k]) for k in ("width", "height", "depth", "offset"))
    _check_dims(label, where, {"width": w, "height": h, "depth": d}, zero_ok=False)
    _check_dims(label, where, {"offset": offset})
    kind = {"signed": "i", "unsigned": "u", "float": "f"}[info["data-type"]]
    dtype = np.dtype(f"{kind}{info['data-length']}")
    raw = next((p for p in (path.with_name(path.name[:-3] + "raw"), path.with_name(path.name[:-3] + "RAW"))
                if p.exists() or p.is_symlink()), None)  # fmt: skip
    if raw is None:
        raise EmcoreError(
            f"{label}: the data of an .rpl header are in a .raw file of the same name, and there is "
            f"no {path.stem}.raw beside it; put (or upload) both files together."
        )
    _check_nonempty(raw, raw.name if raw.stem != "upload" else f"the .raw file of {label}")
    shape = (h, w, d) if info["record-by"] == "vector" else (d, h, w)
    need = math.prod(shape) * dtype.itemsize
    have = raw.stat().st_size - offset
    if need > have:
        raise _truncated(label, f"{where} (with its .raw file)", shape, dtype, need, have)


# Bruker .bcf files are AidAim SFS containers: a header, then fixed-size chunks, each with a
# 32-byte header; the file table lists every inner file with its size (layout as read by
# rsciio.bruker.SFS_reader).
_SFS_MAGIC = b"AAMVHFSS"
_SFS_DATA = 0x118  # where chunk 0 starts
_SFS_ITEM = 0x200  # one file-table entry


def _check_bcf(path: Path, label: str):
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(0x14C)
        if len(head) < 0x14C or head[:8] != _SFS_MAGIC:
            raise EmcoreError(
                f"{label} is not a Bruker .bcf file (it does not start like one) or is cut short; "
                "export it again from Esprit (or as .hspy)."
            )
        (chunk,) = struct.unpack_from("<I", head, 0x128)
        tree_at, n_items, n_chunks = struct.unpack_from("<III", head, 0x140)
        if not 0x200 <= chunk <= 1 << 24 or n_items == 0:
            raise EmcoreError(
                f"{label}: its container header is corrupt (chunk size {chunk}, {n_items} files); "
                "export it again from Esprit (or as .hspy)."
            )
        need = _SFS_DATA + chunk * n_chunks
        if size < need:
            raise EmcoreError(
                f"{label} is truncated: its container header announces {n_chunks} blocks of {chunk} bytes "
                f"({_human(need)}) but the file holds only {_human(size)}. Copy or export it again."
            )
        # Every inner file must fit in the container: RosettaSciIO would otherwise read past the
        # end (zeros) or loop over a size it never reaches.
        usable = chunk - 32
        per_chunk = usable // _SFS_ITEM
        table = b""
        at = tree_at
        for _ in range(math.ceil(n_items / per_chunk)):
            if at >= n_chunks:
                break
            f.seek(chunk * at + _SFS_DATA)
            (nxt,) = struct.unpack("<I", f.read(4))
            f.seek(28, 1)
            table += f.read(per_chunk * _SFS_ITEM)
            at = nxt
        if len(table) < n_items * _SFS_ITEM:
            raise EmcoreError(
                f"{label}: its file table is cut short or points outside the file, so the file is "
                "corrupt or truncated; copy or export it again."
            )
        for i in range(n_items):
            item = table[i * _SFS_ITEM : (i + 1) * _SFS_ITEM]
            (item_size,) = struct.unpack_from("<Q", item, 4)
            if item_size > n_chunks * usable:
                name = item[224:480].split(b"\0", 1)[0].decode("utf-8", "replace")
                raise EmcoreError(
                    f"{label}: its inner file {name!r} is said to hold {_human(item_size)}, more than the "
                    f"whole container ({_human(size)}), so the file is corrupt or truncated; copy or export it again."
                )
