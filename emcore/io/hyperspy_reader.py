"""Formats read through HyperSpy / RosettaSciIO: ``.dm3``, ``.dm4``, ``.emd``, ``.bcf``,
``.hspy``/``.hdf5``, ``.emi``/``.ser``, ``.mrc``, ``.rpl``/``.raw`` (TIFF first tries them too).

Always opened lazily (``lazy=True``) so that nothing big is read before its size is known.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import _Limits, _quiet, _reading, _scalar, default_max_bytes
from emcore.io.headers import _precheck
from emcore.io.layout import _choose, _classify_signal, _pick_haadf, _reinterpret_3d, _Source
from emcore.io.metadata import _acquisition, _energy_calibration, _length_calibration
from emcore.noise.models import noise_from_dict

# Graphs up to this many chunks may be searched for a file handle (HyperSpy's close_file).
_SMALL_GRAPH = 1024


def _hs():
    with _quiet():
        import hyperspy.api as hs
    return hs


def _hs_read(path: Path, label: str, limits: _Limits | None = None) -> list:
    """Open every signal of ``path`` lazily, after :func:`~emcore.io.headers._precheck`."""
    _precheck(path, label, limits or _Limits(default_max_bytes()))
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
    for s in signals:
        _close_signal(s)


def _close_signal(s):
    """Close the file a lazy signal keeps open, without walking its dask graph.

    HyperSpy's ``close_file`` looks for the file handle among *all* keys of the graph, which
    for a graph of millions of chunks takes minutes and gigabytes. The h5py dataset sits in a
    one-key layer named ``original-array-…``; other readers' handles are looked up only when the
    graph is small.
    """
    data = getattr(s, "data", None)
    layers = getattr(getattr(data, "dask", None), "layers", None)
    if layers is None:
        return
    with _quiet(), contextlib.suppress(Exception):
        found = False
        for name, layer in list(layers.items()):
            if "original-array" in name or "array-original" in name:
                f = getattr(layer.get(name), "file", None)
                if f is not None:
                    f.close()
                    found = True
        if not found and data.npartitions <= _SMALL_GRAPH:
            s.close_file()


def _nav_first(s):
    """The data of a signal with axes in array order nav…, sig… (HyperSpy's usual layout)."""
    data = s.data
    axes = sorted(s.axes_manager._axes, key=lambda a: a.index_in_array)
    order = [a.index_in_array for a in axes if a.navigate] + [a.index_in_array for a in axes if not a.navigate]
    if order != list(range(data.ndim)):
        data = data.transpose(order)
    return data, [a for a in axes if a.navigate] + [a for a in axes if not a.navigate]


def _open_hyperspy(path: Path, label: str, kind: str | None, signal: int | None,
                   limits: _Limits | None = None) -> _Source:
    signals = _hs_read(path, label, limits)
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
    src.closers = [lambda x=x: _close_signal(x) for x in signals]
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
