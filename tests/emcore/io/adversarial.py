"""Malformed and hostile input files for the reader tests (built on the fly, never stored).

Each :class:`Case` writes its file(s) into a folder and says what must happen: ``"refuse"``
(one-sentence :class:`~emcore.errors.EmcoreError`, CLI exit status 2) or ``"load"`` (odd but
valid data, e.g. float16 or big-endian arrays). ``match`` is a regular expression the refusal
must contain, so that each sentence names what is actually wrong.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

EXTENSIONS = (".dm3", ".dm4", ".emd", ".bcf", ".hspy", ".hdf5", ".emi", ".ser", ".mrc",
              ".rpl", ".raw", ".tif", ".tiff", ".png", ".npy", ".npz")  # fmt: skip

LYING = 100_000  # a header claiming LYING³ voxels (1.8 PiB of int16) in a few kilobytes


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[Path]]  # writes the file(s); returns [main, *companions]
    expect: str = "refuse"  # or "load"
    match: str = ""  # regex the refusal must contain
    upload: bool = True  # also try load_bytes (not for FIFOs and devices)
    shared: bool = False  # needs ../shared/data


# ---------------------------------------------------------------------------------------
# small writers
# ---------------------------------------------------------------------------------------
def _npy_bytes(header: dict, body: bytes = b"") -> bytes:
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + body


def _npy(arr) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _write(d: Path, name: str, payload: bytes) -> list[Path]:
    p = d / name
    p.write_bytes(payload)
    return [p]


def _mrc_header(nx: int, ny: int, nz: int, mode: int, n_ext: int = 0) -> bytes:
    h = bytearray(1024)
    struct.pack_into("<4i", h, 0, nx, ny, nz, mode)
    struct.pack_into("<i", h, 92, n_ext)
    h[208:212] = b"MAP "
    h[212:214] = b"\x44\x44"
    return bytes(h)


def _rpl(width, height, depth, *, dtype="unsigned", length=2, drop: str = "") -> str:
    lines = {
        "width": width, "height": height, "depth": depth, "offset": 0, "data-length": length,
        "data-type": dtype, "byte-order": "little-endian", "record-by": "vector",
    }  # fmt: skip
    return "key\tvalue\n" + "".join(f"{k}\t{v}\n" for k, v in lines.items() if k != drop)


def _rpl_pair(d: Path, name: str, rpl: str, raw: bytes) -> list[Path]:
    (d / f"{name}.rpl").write_text(rpl)
    (d / f"{name}.raw").write_bytes(raw)
    return [d / f"{name}.rpl", d / f"{name}.raw"]


def template_hspy(d: Path) -> Path:
    """A small valid HyperSpy cube, the starting point of the HDF5 cases (built once)."""
    p = d / "_template.hspy"
    if not p.exists():
        from emcore import io

        cube = np.random.default_rng(0).poisson(1.0, (16, 16, 64)).astype(np.float32)
        io.save(cube, p, kind="cube")
    return p


def _hspy_data_path(f) -> str:
    return f"Experiments/{next(iter(f['Experiments']))}/data"


def _hspy_variant(d: Path, name: str, change) -> list[Path]:
    """A copy of the template whose data dataset ``change(file, data_path)`` replaces."""
    import h5py

    p = d / name
    shutil.copy(template_hspy(d), p)
    with h5py.File(p, "r+") as f:
        path = _hspy_data_path(f)
        attrs = dict(f[path].attrs)
        change(f, path)
        if isinstance(f.get(path, getlink=True), h5py.HardLink) and path in f:
            for k, v in attrs.items():
                f[path].attrs[k] = v
    return [p]


def _replace_data(shape, dtype, **kw):
    def change(f, path):
        del f[path]
        ds = f.create_dataset(path, shape=shape, dtype=dtype, **kw)
        if kw.get("chunks"):
            with contextlib.suppress(OSError):  # HDF5 cannot address a chunk of a 10^72 array
                ds[tuple(slice(0, min(4, n)) for n in shape)] = 1  # one chunk written, the rest absent
    return change


def secret_file(root: Path) -> Path:
    """A spectrum image in a folder of its own: what an external link must never reach."""
    import h5py

    other = root / "elsewhere"
    other.mkdir(exist_ok=True)
    p = other / "secret.h5"
    if not p.exists():
        with h5py.File(p, "w") as f:
            f["cube"] = np.full((16, 16, 64), 7.0, np.float32)
    return p


def _external_link(relative: bool):
    def build(d: Path) -> list[Path]:
        import h5py

        target = secret_file(d.parent)
        name = os.path.relpath(target, d) if relative else str(target)

        def change(f, path):
            del f[path]
            f[path] = h5py.ExternalLink(name, "/cube")

        return _hspy_variant(d, f"extlink_{'rel' if relative else 'abs'}.hspy", change)

    return build


def _virtual(d: Path) -> list[Path]:
    import h5py

    target = secret_file(d.parent)

    def change(f, path):
        del f[path]
        layout = h5py.VirtualLayout(shape=(16, 16, 64), dtype="f4")
        layout[:] = h5py.VirtualSource(str(target), "cube", shape=(16, 16, 64))
        f.create_virtual_dataset(path, layout)

    return _hspy_variant(d, "virtual.hdf5", change)


def _external_storage(d: Path) -> list[Path]:
    raw = d.parent / "elsewhere" / "raw.bin"
    raw.parent.mkdir(exist_ok=True)
    raw.write_bytes(np.full(16 * 16 * 64, 7.0, np.float32).tobytes())

    def change(f, path):
        del f[path]
        f.create_dataset(path, shape=(16, 16, 64), dtype="f4", external=[(str(raw), 0, 16 * 16 * 64 * 4)])

    return _hspy_variant(d, "external_storage.hspy", change)


def _metadata_external_link(d: Path) -> list[Path]:
    import h5py

    target = secret_file(d.parent)

    def change(f, path):
        f[path.rsplit("/", 1)[0] + "/metadata/elsewhere"] = h5py.ExternalLink(str(target), "/cube")

    return _hspy_variant(d, "metadata_link.emd", change)


def _lying_metadata(d: Path) -> list[Path]:
    """A metadata list (read whole by the HSPY reader) claiming 10^10 values in a chunk or two."""

    def change(f, path):
        g = f[path.rsplit("/", 1)[0] + "/original_metadata"]
        ds = g.create_dataset("_list_counts", shape=(10**10,), dtype="f8", chunks=(4096,), compression="gzip")
        ds[:10] = 1

    return _hspy_variant(d, "lying_metadata.hspy", change)


def _text_beam_energy(d: Path) -> list[Path]:
    """Valid data whose optional metadata hold text where a number belongs."""

    def change(f, path):
        f.require_group(path.rsplit("/", 1)[0] + "/metadata/Acquisition_instrument/TEM").attrs["beam_energy"] = "abc"

    return _hspy_variant(d, "text_beam_energy.hspy", change)


def _lying_tiff_tiles(d: Path) -> list[Path]:
    """A 16384² tiled TIFF (33 KB) whose 4096 tile offsets all point at one compressed tile."""
    side, t = 16384, 256
    n = (side // t) ** 2
    tile = zlib.compress(bytes(t * t))
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (277, 3, 1, 1), (322, 3, 1, t), (323, 3, 1, t)]  # fmt: skip
    ifd_at = 8
    ifd_len = 2 + 12 * (len(entries) + 2) + 4
    offsets_at = ifd_at + ifd_len
    counts_at = offsets_at + 4 * n
    tile_at = counts_at + 4 * n
    entries += [(324, 4, n, offsets_at), (325, 4, n, counts_at)]
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    out += struct.pack("<I", 0)
    out += struct.pack(f"<{n}I", *([tile_at] * n)) + struct.pack(f"<{n}I", *([len(tile)] * n)) + tile
    return _write(d, "shared_tiles.tif", bytes(out))


def _png(w: int, h: int, body: bytes = b"", colour: int = 0, depth: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def _tif(name: str, arr, **kw):
    def build(d: Path) -> list[Path]:
        import tifffile

        tifffile.imwrite(d / name, arr, **kw)
        return [d / name]

    return build


def _hspy_array(name: str, arr):
    def build(d: Path) -> list[Path]:
        def change(f, path):
            del f[path]
            f.create_dataset(path, data=arr, chunks=True)  # HyperSpy reads lazily only chunked data

        return _hspy_variant(d, name, change)

    return build


def _hyperspy_signal(name: str, arr):
    def build(d: Path) -> list[Path]:
        import hyperspy.api as hs

        hs.signals.Signal2D(arr).save(d / name)
        return [d / name]

    return build


def _truncated_shared(rel: str, fraction: float, companion: str | None = None):
    def build(d: Path) -> list[Path]:
        from tests.conftest import SHARED_DATA

        src = SHARED_DATA / rel
        b = src.read_bytes()
        p = d / f"cut{int(fraction * 100)}_{src.name}"
        if companion is not None:  # keep the TIA pair's names: <stem>.emi + <stem>_1.ser
            p = d / src.name
        p.write_bytes(b[: int(len(b) * fraction)])
        out = [p]
        if companion is not None:
            c = SHARED_DATA / companion
            cb = c.read_bytes()
            (d / c.name).write_bytes(cb[: int(len(cb) * fraction)])
            out.append(d / c.name)
        return out

    return build


def _random(ext: str, seed: int):
    def build(d: Path) -> list[Path]:
        payload = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        return _write(d, f"random{ext}", payload)

    return build


def _fifo(d: Path) -> list[Path]:
    p = d / "pipe.npy"
    os.mkfifo(p)
    return [p]


def _link_to(target: str, name: str):
    def build(d: Path) -> list[Path]:
        p = d / name
        os.symlink(target, p)
        return [p]

    return build


# ---------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------
def cases() -> list[Case]:
    out: list[Case] = []
    for ext in EXTENSIONS:
        out.append(Case(f"empty{ext}", lambda d, ext=ext: _write(d, f"empty{ext}", b""), match="empty"))
    for i, ext in enumerate(EXTENSIONS):
        out.append(Case(f"random{ext}", _random(ext, i)))

    cube16 = np.random.default_rng(1).poisson(2.0, (16, 16, 64)).astype(np.uint16)
    out += [
        # --- lying headers: refused from the header, before any reader builds anything
        Case("lying.mrc", lambda d: _write(d, "lying.mrc", _mrc_header(LYING, LYING, LYING, 1) + bytes(4096)),
             match="truncated.*100000×100000×100000"),
        Case("lying.rpl", lambda d: _rpl_pair(d, "lying", _rpl(LYING, LYING, LYING), bytes(5000)),
             match="truncated.*100000×100000×100000"),
        Case("lying_gzip.hspy", lambda d: _hspy_variant(
            d, "lying_gzip.hspy", _replace_data((LYING,) * 3, "u2", chunks=(64, 64, 64), compression="gzip")),
             match="memory cap.*header is corrupt"),
        Case("lying_1e72.hdf5", lambda d: _hspy_variant(
            d, "lying_1e72.hdf5", _replace_data((10**18,) * 4, "u1", chunks=(1, 1, 4, 4), compression="gzip")),
             match="memory cap.*header is corrupt"),
        Case("lying_tiles.tif", _lying_tiff_tiles, match="header is corrupt|memory cap"),
        Case("lying.png", lambda d: _write(d, "lying.png", _png(LYING, LYING)), match="memory cap"),
        Case("lying_small.png", lambda d: _write(d, "lying_small.png", _png(9000, 9000)), match="header is corrupt"),
        Case("lying.npy", lambda d: _write(d, "lying.npy", _npy_bytes(
            {"descr": "<i2", "fortran_order": False, "shape": (LYING,) * 3}, bytes(4096))), match="truncated"),
        Case("lying_member.npz", lambda d: _zip(d, "lying_member.npz", {"data.npy": _npy_bytes(
            {"descr": "<f4", "fortran_order": False, "shape": (LYING,) * 3}, bytes(4096))}), match="truncated"),
        # --- negative and zero sizes, unknown types: the header is named
        Case("negative.mrc", lambda d: _write(d, "negative.mrc", _mrc_header(64, 64, -3, 1) + bytes(64 * 64 * 2)),
             match="negative size.*nz=-3"),
        Case("zero.mrc", lambda d: _write(d, "zero.mrc", _mrc_header(64, 0, 1, 1) + bytes(64)), match="size of zero"),
        Case("mode3.mrc", lambda d: _write(d, "mode3.mrc", _mrc_header(16, 16, 1, 3) + bytes(16 * 16 * 4)),
             match="data mode 3"),
        Case("negative.rpl", lambda d: _rpl_pair(d, "negative", _rpl(64, 64, -5), bytes(5000)),
             match="negative size.*depth=-5"),
        Case("nowidth.rpl", lambda d: _rpl_pair(d, "nowidth", _rpl(64, 64, 8, drop="width"), bytes(64 * 64 * 16)),
             match="'width'"),
        Case("badtype.rpl", lambda d: _rpl_pair(d, "badtype", _rpl(8, 8, 8, dtype="complex"), bytes(1024))),
        Case("negative.npy", lambda d: _write(d, "negative.npy", _npy_bytes(
            {"descr": "<f4", "fortran_order": False, "shape": (64, -64)}, bytes(1024))), match="negative size"),
        Case("no_rpl.raw", lambda d: _write(d, "no_rpl.raw", bytes(1024)), match=r"\.rpl"),
        Case("no_ser.emi", lambda d: _write(d, "no_ser.emi", np.random.default_rng(5).bytes(2048))),
        # --- external files: never followed
        Case("extlink_abs.hspy", _external_link(False), match="external link"),
        Case("extlink_rel.hspy", _external_link(True), match="external link"),
        Case("metadata_link.emd", _metadata_external_link, match="external link"),
        Case("virtual.hdf5", _virtual, match="virtual dataset"),
        Case("external_storage.hspy", _external_storage, match="external raw files"),
        Case("lying_metadata.hspy", _lying_metadata, match="declares 10000000000 "),
        Case("text_beam_energy.hspy", _text_beam_energy, expect="load"),
        # --- pickles and odd dtypes
        Case("pickle.npy", lambda d: _write(d, "pickle.npy", _pickled()), match="pickled"),
        Case("pickle.npz", lambda d: _zip(d, "pickle.npz", {"data.npy": _pickled()}), match="pickled"),
        Case("pickle_haadf.npz", lambda d: _zip(d, "pickle_haadf.npz", {
            "data.npy": _npy(cube16), "haadf.npy": _pickled()}), match="'haadf'.*pickled"),
        Case("string_haadf.npz", lambda d: _zip(d, "string_haadf.npz", {
            "data.npy": _npy(cube16), "haadf.npy": _npy(np.array([["abc"] * 16] * 16))}), match="'haadf'.*not numbers"),
        Case("complex.npy", lambda d: _write(d, "complex.npy", _npy(np.ones((32, 32), np.complex64))),
             match="complex64"),
        Case("structured.npy", lambda d: _write(d, "structured.npy", _npy(np.zeros((32, 32), "u1,f4"))),
             match="not real numbers"),
        Case("datetime.npy", lambda d: _write(d, "datetime.npy", _npy(np.zeros((32, 32), "M8[s]")))),
        Case("complex.hspy", _hspy_array("complex.hspy", np.ones((16, 16, 64), np.complex64)), match="complex"),
        Case("complex.tif", _tif("complex.tif", np.ones((32, 32), np.complex64)), match="complex"),
        Case("float16.npy", lambda d: _write(d, "float16.npy", _npy(np.ones((32, 32), np.float16))), expect="load"),
        Case("bigendian.npy", lambda d: _write(d, "bigendian.npy", _npy(np.ones((32, 32), ">f4"))), expect="load"),
        Case("bool.npy", lambda d: _write(d, "bool.npy", _npy(np.ones((32, 32), bool))), expect="load"),
        Case("bigendian.tiff", _tif("bigendian.tiff", np.ones((32, 32), ">u2"), byteorder=">"), expect="load"),
        # --- odd shapes
        Case("zero_size.npy", lambda d: _write(d, "zero_size.npy", _npy(np.zeros((0, 64), np.float32))), match="empty"),
        Case("one_d.npy", lambda d: _write(d, "one_d.npy", _npy(np.ones(64, np.float32))), match="1-D"),
        Case("five_d.npy", lambda d: _write(d, "five_d.npy", _npy(np.ones((2, 2, 2, 8, 8), np.float32))), match="5-D"),
        Case("five_d.hspy", _hyperspy_signal("five_d.hspy", np.ones((2, 2, 2, 8, 8), np.float32)), match="5-D"),
        Case("zero_size.hspy", _hspy_array("zero_size.hspy", np.ones((0, 16, 64), np.float32))),
        Case("tiny.png", lambda d: _write(d, "tiny.png", _png(4, 4, bytes(4 * 5))), match="too small"),
        Case("tagged_cube_2d.tif", _tif("tagged_cube_2d.tif", np.zeros((16, 16), np.float32), imagej=True,
                                        metadata={"axes": "YX", "emcore_kind": "cube"}),
             match="ImageJ metadata .emcore_kind='cube'."),
        Case("bad_escale.tif", _tif("bad_escale.tif", np.zeros((32, 16, 16), np.float32), imagej=True,
                                    metadata={"axes": "ZYX", "emcore_kind": "cube", "energy_scale": "abc"}),
             match="energy_scale='abc'"),
        # --- NaN / Inf
        Case("nan.npy", lambda d: _write(d, "nan.npy", _npy(np.full((32, 32), np.nan, np.float32))), match="NaN"),
        Case("inf.tif", _tif("inf.tif", np.full((32, 32), np.inf, np.float32)), match="NaN or infinite"),
        Case("inf.hspy", _hspy_array("inf.hspy", np.full((16, 16, 64), np.inf, np.float32)), match="NaN or infinite"),
        # --- not regular files
        Case("pipe.npy", _fifo, match="not a regular file.*pipe", upload=False),
        Case("devzero.raw", _link_to("/dev/zero", "devzero.raw"), match="not a regular file.*device", upload=False),
        Case("proc.tif", _link_to("/proc/self/status", "proc.tif"), match="pseudo-file", upload=False),
        Case("dangling.npy", _link_to("/nonexistent/nothing.npy", "dangling.npy"), match="does not exist", upload=False),
        # --- truncated real files
        Case("trunc_raw.tif", _truncated_tif, match="truncated"),
        Case("trunc_raw.mrc", lambda d: _write(d, "trunc_raw.mrc", _mrc_header(64, 64, 4, 2) + bytes(5000)),
             match="truncated"),
        Case("trunc.rpl", lambda d: _rpl_pair(d, "trunc", _rpl(64, 64, 64), bytes(64 * 64 * 32)), match="truncated"),
        Case("trunc.npy", lambda d: _write(d, "trunc.npy", _npy(np.ones((64, 64), np.float32))[:3000]),
             match="truncated"),
    ]
    for fraction in (0.05, 0.3, 0.5, 0.75, 0.99):
        out.append(Case(f"cut{int(fraction * 100)}.bcf", _truncated_shared("eds/bruker_test_TEM.bcf", fraction),
                        match="truncated|corrupt", shared=True))
    for rel, fraction in (("formats/EELS_SI.dm4", 0.5), ("formats/test_STEM_image.dm3", 0.6),
                          ("eds/sio2_haadf.hspy", 0.5), ("eds/velox_SI_16x16.emd", 0.5),
                          ("formats/FEI-Helios-Ebeam-16bits.tif", 0.5), ("hrem/si110_stem.png", 0.5),
                          ("formats/HAADFscan.mrc", 0.5)):  # fmt: skip
        out.append(Case(f"cut{int(fraction * 100)}_{Path(rel).name}", _truncated_shared(rel, fraction),
                        match="truncated", shared=True))
    out.append(Case("cut50_tia.emi", _truncated_shared("formats/128x128_TEM_acquire-sum1.emi", 0.5,
                                                       companion="formats/128x128_TEM_acquire-sum1_1.ser"),
                    match="truncated", shared=True))  # fmt: skip
    return out


def _pickled() -> bytes:
    from tests.conftest import pickled_npy_bytes

    return pickled_npy_bytes([{"a": 1}, None])


def _zip(d: Path, name: str, members: dict[str, bytes]) -> list[Path]:
    import zipfile

    p = d / name
    with zipfile.ZipFile(p, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return [p]


def _truncated_tif(d: Path) -> list[Path]:
    import tifffile

    p = d / "trunc_raw.tif"
    tifffile.imwrite(p, np.arange(256 * 256, dtype=np.uint16).reshape(256, 256))
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])
    return [p]
