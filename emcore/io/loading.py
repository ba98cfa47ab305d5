"""The public readers: :func:`load`, :func:`load_bytes`, :func:`load_haadf`, :func:`list_signals`.

Each opens the file with its format's reader (see the sibling modules), plans the reduction,
checks the memory cap and only then reads the data.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from emcore.data.dataset import Dataset, check_haadf
from emcore.errors import EmcoreError
from emcore.io.guards import (
    _A_KIND,
    _HYPERSPY_EXTENSIONS,
    _KIND_WORDS,
    MIN_IMAGE_SIDE,
    _check_int,
    _check_nonempty,
    _dense,
    _display_name,
    _ext_of,
    _human,
    _is_dask,
    _Limits,
    _reading,
    _shape_str,
    default_max_bytes,
)
from emcore.io.hyperspy_reader import _close_all, _hs_read, _open_hyperspy
from emcore.io.layout import _classify_array, _classify_signal, _Source
from emcore.io.numpy_reader import _npy_header, _open_npy, _open_npz
from emcore.io.png import _open_png
from emcore.io.reduce import _check_read_size, _check_size, _is_counts, _materialise, _mean_bin_2d, _plan, _reduce_like
from emcore.io.tiff import _open_tif
from emcore.io.upload import _as_files, _upload_dir


def _open(path: Path, label: str, *, kind: str | None, signal: int | None, cap: int,
          min_side: int = MIN_IMAGE_SIDE, limits: _Limits | None = None) -> _Source:
    """Open ``path`` without materialising its data; pick the signal and the kind.

    ``min_side`` is the smallest image side accepted (1 for a HAADF image, which only has to
    match its spectrum image). ``limits`` (the cap and the reduction asked for) is what the
    sizes declared in headers are checked against before any reader runs.
    """
    limits = limits or _Limits(cap)
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
        return _open_tif(path, label, kind, signal, cap, min_side, limits)
    if ext == ".raw":
        rpl = next((p for p in (path.with_suffix(".rpl"), path.with_suffix(".RPL")) if p.exists()), None)
        if rpl is None:
            raise EmcoreError(
                f"{label}: a .raw file is read through its .rpl header, and there is no "
                f"{path.with_suffix('.rpl').name} beside it; put (or upload) both files together."
            )
        path = rpl
    return _open_hyperspy(path, label, kind, signal, limits)


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
    src = _open(path, label, kind=kind, signal=signal, cap=cap, limits=_Limits(cap, k, m, energy_range))
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
        if h_arr.dtype.kind not in "biuf":
            check_haadf(h_arr, data.shape, src.kind, h_label)  # refuses it, naming the dtype
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
        signals = _hs_read(path, label, _Limits(cap))
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
