"""HDF5 files (``.hspy``, ``.hdf5``, Velox and NCEM ``.emd``): checked with h5py before any
reader opens them.

An HDF5 file can make its reader open *other* files: an external link names a dataset in
another file (absolute or relative path), a virtual dataset (VDS) maps pieces of other files,
and external storage keeps a dataset's bytes in raw files beside it. An uploaded 5 KB file
could so load a spectrum image from anywhere the app can read. :func:`_check_hdf5` walks every
link of the file without following any (``visititems_links`` lists soft and external links
without resolving them and only descends through hard links) and refuses all three, as well as
files that ask for a driver other than the plain one (split/multi files name companion files).

It also reads every dataset's declared shape and dtype from the header and refuses arrays
that the file cannot hold — a 26 KB chunked file claiming 100000³ values — before HyperSpy
builds a lazy graph over them.
"""

from __future__ import annotations

import re
from pathlib import Path

from emcore.errors import EmcoreError
from emcore.io.guards import _check_plausible, _human, _Limits, _quiet, _reading, _unreadable

#: First bytes of an HDF5 superblock; it sits at 0, 512, 1024, 2048… (after a user block).
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    """Whether an HDF5 superblock is where the library would look for one."""
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                if f.read(8) == _SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _short(name) -> str:
    """A name from the file, quoted on one line (repr escapes newlines) and at most ~80 characters."""
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _refusal(label: str, what: str) -> EmcoreError:
    return EmcoreError(
        f"{label} contains {what}, which would make the reader open another file; for safety such "
        "HDF5 files are refused, so save the data into one self-contained file (in HyperSpy: "
        "load it and save it again) and load that."
    )


def _check_hdf5(path: Path, label: str, limits: _Limits):
    """Refuse external links, virtual datasets, external storage and impossible dataset sizes.

    The one gate every HDF5-based file passes before HyperSpy / RosettaSciIO open it.
    """
    import h5py

    file_size = path.stat().st_size
    try:
        with _quiet():
            f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        stored = re.search(r"stored_eof = (\d+)", str(exc))
        if "truncated file" in str(exc) and stored:
            raise EmcoreError(
                f"{label} is truncated: the HDF5 file says it is {_human(int(stored.group(1)))} long but "
                f"only {_human(file_size)} are there. Copy or export it again."
            ) from None
        raise _unreadable(label, "an HDF5 file", exc) from exc
    with f:
        driver = f.id.get_access_plist().get_driver()
        if driver != h5py.h5fd.SEC2:
            raise _refusal(label, "a multi-file (split or family) layout")

        # h5py stops a visit when the callback returns something: the refusal, raised after.
        def visit(name: str, link):
            if isinstance(link, h5py.ExternalLink):
                return _refusal(label, f"an external link ({_short(name)} points to {_short(link.filename)})")
            if isinstance(link, h5py.SoftLink):
                return None  # a path inside this file; its target is visited through its hard link
            if not isinstance(link, h5py.HardLink):
                return _refusal(label, f"a user-defined link ({_short(name)})")
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                try:
                    _check_dataset(obj, name, label, file_size, limits)
                except EmcoreError as exc:
                    return exc
            return None

        with _reading(label, "an HDF5 file"):
            refusal = f.visititems_links(visit)
        if refusal is not None:
            raise refusal


def _check_dataset(dset, name: str, label: str, file_size: int, limits: _Limits):
    if dset.is_virtual:
        raise _refusal(label, f"a virtual dataset ({_short(name)})")
    if dset.external:
        raise _refusal(label, f"a dataset stored in external raw files ({_short(name)})")
    shape = dset.shape
    if shape is None:  # a null dataspace holds nothing
        return
    try:
        dtype = dset.dtype
    except (TypeError, ValueError):  # an HDF5 type NumPy has no match for; the reader says so
        return
    _check_plausible(label, f"its dataset {_short(name)}", shape, dtype, file_size, limits)
