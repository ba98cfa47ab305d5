"""Writing datasets: :func:`save` (``.hspy``, ``.tif``/``.tiff``, ``.npy``) and
:func:`save_with_companions`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError
from emcore.io.guards import _A_KIND, _NEEDS, SAVE_EXTENSIONS, _quiet
from emcore.io.hyperspy_reader import _hs
from emcore.io.layout import _raw_3d_kind


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
    if ds.kind == "cube":
        data = np.ascontiguousarray(np.moveaxis(data, 2, 0))  # (E, H, W): one page per channel
    meta, kw = _tif_meta(ds.kind, ds.calibration, ds.is_counts, ds.noise)
    with _quiet():
        tifffile.imwrite(str(path), data, imagej=True, metadata=meta, **kw)


def _tif_meta(kind: str, cal: Calibration, is_counts: bool, noise=None) -> tuple[dict, dict]:
    """The ImageJ metadata and ``tifffile.imwrite`` keywords :func:`save` writes a TIFF with."""
    meta: dict = {"emcore_kind": kind, "emcore_is_counts": bool(is_counts)}
    if kind == "image":
        meta["axes"] = "YX"
    elif kind == "stack":
        meta["axes"] = "TYX"
    else:
        meta["axes"] = "ZYX"
        meta.update(energy_offset=float(cal.energy_offset), energy_scale=float(cal.energy_scale),
                    energy_unit=str(cal.energy_unit))  # fmt: skip
    if noise is not None:
        meta["emcore_noise"] = json.dumps(noise.to_dict())
    kw: dict = {}
    if cal.is_spatially_calibrated and cal.pixel_size > 0:
        # ImageJ names micrometres "micron"; other units are written as they are.
        meta["unit"] = "micron" if cal.pixel_unit in ("µm", "μm", "um") else cal.pixel_unit
        kw["resolution"] = (1.0 / cal.pixel_size, 1.0 / cal.pixel_size)
    return meta, kw


def _save_hspy(ds: Dataset, path: Path):
    with _quiet():
        s = _hspy_signal(np.asarray(ds.data, dtype=np.float32), kind=ds.kind, calibration=ds.calibration,
                         name=ds.name, metadata=ds.metadata, is_counts=ds.is_counts, noise=ds.noise, haadf=ds.haadf)
        s.save(str(path), overwrite=True)


def _hspy_signal(data, *, kind: str, calibration: Calibration, name: str, metadata: dict, is_counts: bool,
                 noise=None, haadf=None):
    """The HyperSpy signal :func:`save` writes: ``data`` in the workbench layout of ``kind`` (a
    dask array gives a lazy signal, which HyperSpy writes chunk by chunk), its calibration, and
    ``metadata.emcore`` (``is_counts``, ``kind``, the noise model, the HAADF image)."""
    hs = _hs()
    cal = calibration
    lazy = hasattr(data, "dask")
    if kind == "cube":
        s = hs.signals.Signal1D(data)
        s = s.as_lazy() if lazy else s
        stype = str(metadata.get("signal_type") or "")
        if stype not in ("EDS_TEM", "EDS_SEM", "EELS"):
            stype = {"keV": "EDS_TEM", "eV": "EELS"}.get(cal.energy_unit, "")
        if stype:
            s.set_signal_type(stype)  # exspy class when installed
    else:
        s = hs.signals.Signal2D(data)
        s = s.as_lazy() if lazy else s
    axes = sorted(s.axes_manager._axes, key=lambda a: a.index_in_array)
    spatial = axes[:2] if kind == "cube" else axes[-2:]
    for ax, nm in zip(spatial, ("y", "x")):
        ax.name = nm
        ax.scale = float(cal.pixel_size)
        ax.offset = 0.0
        if cal.is_spatially_calibrated:
            ax.units = cal.pixel_unit
    if kind == "cube":
        e = axes[2]
        e.name, e.offset, e.scale = "Energy", float(cal.energy_offset), float(cal.energy_scale)
        if cal.energy_unit != "channel":
            e.units = cal.energy_unit
    elif kind == "stack":
        axes[0].name = "frame"
    s.metadata.General.title = name
    if metadata.get("voltage_kv") is not None:
        s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(metadata["voltage_kv"]))
    for key, node in (("microscope", "Acquisition_instrument.TEM.microscope"),):
        if metadata.get(key):
            s.metadata.set_item(node, str(metadata[key]))
    s.metadata.set_item("emcore.is_counts", bool(is_counts))
    s.metadata.set_item("emcore.kind", kind)
    if noise is not None:
        s.metadata.set_item("emcore.noise", noise.to_dict())
    if haadf is not None:
        s.metadata.set_item("emcore.haadf", np.asarray(haadf, dtype=np.float32))
    return s
