"""TIFF: through RosettaSciIO (FEI/Zeiss/DM/ImageJ calibration), else tifffile."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import MIN_IMAGE_SIDE, _human, _quiet, _reading, _shape_str
from emcore.io.hyperspy_reader import _hs_read
from emcore.io.layout import _classify_array, _luminance, _raw_3d_kind, _Source, _squeeze_to
from emcore.io.metadata import _acquisition, _length_calibration, _normalise_length
from emcore.noise.models import noise_from_dict


def _imagej_metadata(path: Path) -> dict:
    import tifffile

    try:
        with _quiet(), tifffile.TiffFile(str(path)) as tf:
            return dict(tf.imagej_metadata or {})
    except Exception:  # noqa: BLE001 — a plain peek; the real read reports errors
        return {}


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
