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

Files are untrusted. Before any reader opens one, its header is read by our own code and
checked (:mod:`emcore.io.headers`, :mod:`emcore.io.hdf5`): a path that is not a regular file
(FIFO, device, ``/proc``), a header declaring negative sizes or more data than the file holds
(truncated, or lying: a 5 KB ``.mrc`` claiming 100000³ voxels), an HDF5 file with external
links, virtual datasets or external storage (which would make the reader open other files),
and declared sizes over the memory cap are refused in one sentence, without a lazy graph
built or a byte allocated.

Every expected problem — unknown extension, corrupt or truncated file, data of the wrong
dimensionality, NaN values, a HAADF image on another pixel grid, data over the memory cap —
raises :class:`~emcore.errors.EmcoreError` whose message names the file, says what is wrong
and what to do.

Layout: :mod:`~emcore.io.guards` (extensions, file checks, the cap, error wording),
:mod:`~emcore.io.headers` and :mod:`~emcore.io.hdf5` (header checks), one module per reader
family (:mod:`~emcore.io.hyperspy_reader`, :mod:`~emcore.io.tiff`,
:mod:`~emcore.io.numpy_reader`, :mod:`~emcore.io.png`), :mod:`~emcore.io.layout` (kinds of
signals), :mod:`~emcore.io.metadata` (calibration), :mod:`~emcore.io.reduce` (binning, size
checks, reading), :mod:`~emcore.io.upload` (temporary files, safe names),
:mod:`~emcore.io.loading` (the public readers) and :mod:`~emcore.io.saving`;
:mod:`~emcore.io.lazy` reads data larger than memory piece by piece (:func:`open_lazy`, the same
checks and reduction as :func:`load`) and writes results block by block (:func:`write_blocks`).
"""

from __future__ import annotations

from emcore.io.guards import (
    DEFAULT_MAX_BYTES,
    MIN_IMAGE_SIDE,
    SAVE_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    default_max_bytes,
)
from emcore.io.lazy import LAZY_EXTENSIONS, LazyDataset, open_lazy, write_blocks
from emcore.io.loading import list_signals, load, load_bytes, load_haadf
from emcore.io.saving import save, save_with_companions
from emcore.io.upload import _safe_upload_names  # noqa: F401 — tested directly

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LAZY_EXTENSIONS",
    "MIN_IMAGE_SIDE",
    "SAVE_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "LazyDataset",
    "default_max_bytes",
    "list_signals",
    "load",
    "load_bytes",
    "load_haadf",
    "open_lazy",
    "save",
    "save_with_companions",
    "write_blocks",
]
