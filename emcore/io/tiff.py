"""TIFF: through RosettaSciIO (FEI/Zeiss/DM/ImageJ calibration), else tifffile."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import MIN_IMAGE_SIDE, _check_plausible, _human, _Limits, _reading, _shape_str
from emcore.io.hyperspy_reader import _close_signal, _hs_read
from emcore.io.layout import _classify_array, _luminance, _raw_3d_kind, _Source, _squeeze_to
from emcore.io.metadata import _acquisition, _length_calibration, _normalise_length
from emcore.io.reduce import _one_piece_error, _precheck_size
from emcore.noise.models import noise_from_dict


def _tiff_header(path: Path, label: str):
    """Shape, axes and dtype of the first page series, and the ImageJ metadata, from the
    header only (tifffile reads the page directories, not the pixel data)."""
    import tifffile

    with _reading(label, "a TIFF image"):
        with tifffile.TiffFile(str(path)) as tf:
            if not tf.series:
                first = _first_ifd(path)
                if first >= path.stat().st_size:
                    raise EmcoreError(
                        f"{label} is truncated: its TIFF header places the first image directory at "
                        f"byte {first} but the file holds only {path.stat().st_size} bytes. Copy or export it again."
                    )
                raise EmcoreError(f"{label} holds no image (the TIFF has no pages); export it again.")
            series = tf.series[0]
            shape, axes, dtype = tuple(int(n) for n in series.shape), series.axes, np.dtype(series.dtype)
            end = _data_end(series)
            size = path.stat().st_size
            if end > size:
                raise EmcoreError(
                    f"{label} is truncated: its TIFF header places image data up to byte {end} but the "
                    f"file holds only {size} bytes. Copy or export it again."
                )
            try:
                ij = dict(tf.imagej_metadata or {})
            except Exception:  # noqa: BLE001 — a malformed description only loses the calibration
                ij = {}
    return shape, axes, dtype, ij


def _first_ifd(path: Path) -> int:
    """Offset of the first image directory, from the 8- (BigTIFF: 16-) byte TIFF header."""
    with open(path, "rb") as f:
        head = f.read(16)
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] == 43:  # BigTIFF
        return struct.unpack(order + "Q", head[8:16])[0]
    return struct.unpack(order + "I", head[4:8])[0]


def _data_end(series) -> int:
    """Where the last strip or tile of a page series ends, from the page directories."""
    end = 0
    if getattr(series, "dataoffset", None) is not None:  # contiguous (ImageJ, our own files)
        end = int(series.dataoffset) + int(series.nbytes)
    for page in series.pages:
        if page is None:
            continue
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        end = max([end] + [int(o) + int(c) for o, c in zip(offsets, counts)])
    return end


def _ij_number(ij: dict, key: str, default: float, label: str) -> float:
    """A number from the ImageJ description; anything else is refused, naming the key."""
    if key not in ij:
        return default
    try:
        value = float(ij[key])
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or (key == "energy_scale" and value == 0):
        shown = repr(ij[key]) if len(repr(ij[key])) <= 40 else repr(ij[key])[:37] + "..."
        raise EmcoreError(
            f"{label}: its ImageJ metadata give {key}={shown}, which is not a usable number; correct "
            "it in the image description, or remove the energy keys to load the cube in channels."
        )
    return value


def _open_tif(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE, limits: _Limits | None = None) -> _Source:
    """TIFF through RosettaSciIO (FEI/Zeiss/DM/ImageJ calibration), else tifffile.

    A 3-D TIFF is a sequence of pages, hence a stack ``(T, H, W)`` by default. Read as a
    cube (``kind="cube"``, or a file written by :func:`save`, which records its kind) the
    pages are energy channels ``(E, H, W)`` — ImageJ's layout — and are moved to
    ``(H, W, E)``, unless the array plainly has the energy last already (e.g. a
    ``(64, 64, 2048)`` cube written as is).

    The header is read first: the kind, the memory cap and the one-piece read are checked on
    the declared shape before any pixel is decoded.
    """
    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single signal (number 0); signal={signal!r} does not exist.")
    limits = limits or _Limits(cap)
    shape, axes, dtype, ij = _tiff_header(path, label)
    want, kind_from = kind, None
    if want is None and ij.get("emcore_kind") in ("image", "stack", "cube"):
        want = ij["emcore_kind"]
        kind_from = f"its ImageJ metadata (emcore_kind={want!r})"
    rgb = axes.endswith("S") and shape[-1] in (3, 4)
    declared = _classify_array(0, path.stem, shape[:-1] if rgb else shape, np.float32 if rgb else dtype,
                               kind=want, tif_pages=True, min_side=min_side, kind_from=kind_from)  # fmt: skip
    if declared.kind is None:
        raise declared.error(label, False)
    _precheck_size(label, _tif_layout(declared, ij), declared.kind, limits)
    # Tiles and strips may all point at the same few bytes: refuse what the file cannot hold.
    _check_plausible(label, "its TIFF header", shape, dtype, path.stat().st_size, limits)
    if not rgb and math.prod(shape) * dtype.itemsize > 2 * cap:
        raise _one_piece_error(label, "rsciio.tiff", math.prod(shape) * dtype.itemsize, cap)
    data = None
    cal_kw: dict = {}
    md: dict = {}
    closers: list = []
    try:
        signals = _hs_read(path, label, limits)
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
            closers = [lambda s=s: _close_signal(s)]
    except EmcoreError:
        data = None
    if data is None:
        data, cal_kw = _tifffile_read(path, label, ij, cap)
        md["reader"] = "tifffile"
    shape = tuple(int(n) for n in data.shape)
    info = _classify_array(0, path.stem, shape, data.dtype, kind=want, tif_pages=True, min_side=min_side,
                           kind_from=kind_from)  # fmt: skip
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
                energy_offset=_ij_number(ij, "energy_offset", 0.0, label),
                energy_scale=_ij_number(ij, "energy_scale", 1.0, label),
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


def _tif_layout(info, ij: dict) -> tuple:
    """The shape :func:`_open_tif` hands on for a declared array: squeezed, a cube energy-last."""
    shape = tuple(info.shape)
    if len(shape) > 2 and info.base_kind is not None:
        want_nd = 2 if info.base_kind == "image" else 3
        if len(shape) > want_nd:
            shape = tuple(n for n in shape if n != 1)
    if info.kind == "cube" and (ij.get("emcore_kind") == "cube" or _raw_3d_kind(shape) != "cube"):
        shape = (shape[1], shape[2], shape[0])
    return shape


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
