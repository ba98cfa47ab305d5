"""Uploads for a batch: many files or ``.zip`` archives of them, unpacked safely; and the
results packed into one ``.zip`` for download.

Nothing on disk is named after an upload or a zip member: files are written as
``0001_<letters of the stem>.<ext>`` (only ``[A-Za-z0-9_-]`` kept) in the caller's folder,
and the original name is kept only for display. Archives are read member by member with
limits on the number of files, on each file's size and on the total (counted while reading,
not taken from the archive's header), and members that compress too well to be data (a zip
bomb) are refused.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

from emcore.errors import EmcoreError

MAX_FILES = 2000
MAX_RATIO = 200  # EM data compress a few times, raw counts maybe 50×; 200× is not data
_CHUNK = 1 << 20
_SER_INDEX = re.compile(r"_(\d+)$")


def _limits(max_file_bytes: int | None, max_total_bytes: int | None) -> tuple[int, int]:
    from emcore.io import default_max_bytes

    per = int(max_file_bytes or 2 * default_max_bytes())
    return per, int(max_total_bytes or 4 * per)


def _shown(name: str) -> str:
    return PurePosixPath(str(name).replace("\\", "/")).name or "unnamed file"


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40] or "file"


class _Budget:
    def __init__(self, per: int, total: int):
        self.per, self.total, self.used, self.count = per, total, 0, 0

    def take(self, shown: str, nbytes: int) -> None:
        self.count += 1
        if self.count > MAX_FILES:
            raise EmcoreError(f"More than {MAX_FILES} files were uploaded; run bigger sessions from the command line "
                              "(python -m emcore batch FOLDER ...).")
        if nbytes > self.per:
            raise EmcoreError(f"{shown} is {nbytes / 2**20:.0f} MiB, over the {self.per / 2**20:.0f} MiB allowed per "
                              "file; bin it first or use the command line.")
        self.used += nbytes
        if self.used > self.total:
            raise EmcoreError(f"The uploads unpack to more than {self.total / 2**30:.1f} GiB; upload fewer files at a "
                              "time or use the command line.")


def unpack_uploads(files, folder: str | os.PathLike, *, max_file_bytes: int | None = None,
                   max_total_bytes: int | None = None) -> tuple[list[tuple[Path, str]], list[str]]:
    """Write uploaded files, and the data files inside uploaded ``.zip`` archives, into ``folder``.

    Parameters
    ----------
    files : list of (name, bytes)
        What the app received; names are used for display and for the extension only.
    folder : path
        An existing private folder (e.g. a ``tempfile.mkdtemp()``).
    max_file_bytes, max_total_bytes : int, optional
        Limits per file and for everything unpacked; default twice the memory cap
        (``EMCORE_MAX_BYTES``) per file and four times that in all.

    Returns
    -------
    inputs : list of (Path, str)
        The batch inputs written and the names to show for them. A ``.ser`` or ``.raw``
        beside its ``.emi`` / ``.rpl`` is written under the matching name, not listed.
    notes : list of str
        Sentences about members that were left out (other file types, folders).

    Raises
    ------
    EmcoreError
        Too many files, a file or total over the limits, a zip bomb, a broken archive.
    """
    from emcore.io import SUPPORTED_EXTENSIONS

    per, total = _limits(max_file_bytes, max_total_bytes)
    budget = _Budget(per, total)
    out = Path(folder)
    groups: dict[tuple[int, str], int] = {}
    written: list[tuple[Path, str, str]] = []  # (path, shown, ext)
    notes: list[str] = []
    skipped = 0

    def place(archive: int, member: str, payload_writer) -> None:
        nonlocal skipped
        shown = _shown(member)
        ext = PurePosixPath(shown).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            skipped += 1
            return
        stem = PurePosixPath(shown).stem
        index = ""
        if ext == ".ser" and (mm := _SER_INDEX.search(stem)):
            stem, index = stem[: mm.start()], mm.group(0)
        key = (archive, str(PurePosixPath(member.replace("\\", "/")).parent / stem.lower()))
        gid = groups.setdefault(key, len(groups) + 1)
        path = out / f"{gid:04d}_{_safe(stem)}{index}{ext}"
        payload_writer(path, shown)
        written.append((path, shown, ext))

    for n, item in enumerate(_as_pairs(files)):
        name, data = item
        if PurePosixPath(_shown(name)).suffix.lower() == ".zip":
            _unzip(data, _shown(name), n, place, budget)
        else:
            budget.take(_shown(name), len(data))
            place(n, _shown(name), lambda path, shown, d=data: path.write_bytes(d))
    if skipped:
        notes.append(f"{skipped} uploaded file{'s' if skipped > 1 else ''} of other types were left out "
                     f"(data files are {', '.join(SUPPORTED_EXTENSIONS)}).")
    stems = {(p.stem, ext) for p, _, ext in written}
    inputs = [(p, shown) for p, shown, ext in written
              if not (ext == ".raw" and (p.stem, ".rpl") in stems)
              and not (ext == ".ser" and (_SER_INDEX.sub("", p.stem), ".emi") in stems)]
    if not inputs:
        raise EmcoreError("No data files were uploaded; choose files of the types "
                          f"{', '.join(SUPPORTED_EXTENSIONS)} or a .zip of them.")
    return inputs, notes


def _as_pairs(files) -> list[tuple[str, bytes]]:
    out = []
    for item in files:
        try:
            name, payload = item
        except (TypeError, ValueError):
            raise EmcoreError("Uploaded files must be given as (filename, bytes) pairs.") from None
        if hasattr(payload, "getvalue"):
            payload = payload.getvalue()
        out.append((str(name), bytes(payload)))
    if not out:
        raise EmcoreError("No file was uploaded; choose data files or a .zip of them.")
    return out


def _unzip(data: bytes, shown: str, archive: int, place, budget: _Budget) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise EmcoreError(f"{shown} is not a readable .zip archive; make it again, or upload the files one by one.") from None
    with zf:
        for info in members:
            if info.is_dir() or _shown(info.filename).startswith(".") or "__MACOSX" in info.filename:
                continue
            if info.flag_bits & 0x1:
                raise EmcoreError(f"{shown} is encrypted; upload an archive without a password.")
            member = _shown(info.filename)
            budget.take(member, info.file_size)
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > _CHUNK:
                raise EmcoreError(f"{member} in {shown} compresses {info.file_size // max(info.compress_size, 1)}× — "
                                  "far more than any image — so the archive was refused as a possible zip bomb.")

            def write(path: Path, _shown_name: str, _info=info, _member=member) -> None:
                got = 0
                try:
                    with zf.open(_info) as src, open(path, "wb") as dst:
                        while chunk := src.read(_CHUNK):
                            got += len(chunk)
                            if got > _info.file_size:  # the header lied about the size
                                raise EmcoreError(f"{_member} in {shown} is larger than its archive says; the archive "
                                                  "was refused.")
                            dst.write(chunk)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
                    path.unlink(missing_ok=True)
                    raise EmcoreError(f"{_member} in {shown} could not be unpacked ({type(err).__name__}); make the "
                                      "archive again.") from None
                except EmcoreError:
                    path.unlink(missing_ok=True)
                    raise

            place(archive, info.filename, write)


def zip_results(out_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Pack the results, previews and manifest of a batch in ``out_dir`` into ``dest`` (.zip).

    Results are stored as they are (TIFF and HDF5 do not compress further); the manifest is
    deflated.
    """
    from emcore.batch.manifest import read_rows

    src, dst = Path(out_dir), Path(dest)
    tmp = dst.with_name(f".{dst.name}.partial")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in ("manifest.csv", "manifest.json"):
            if (src / name).is_file():
                zf.write(src / name, name, compress_type=zipfile.ZIP_DEFLATED)
        for row in read_rows(src):
            for key, arc in (("output", "results"), ("preview", "previews")):
                p = Path(row.get(key) or "")
                if row.get(key) and p.is_file() and p.parent.resolve() in (src.resolve(), (src / "previews").resolve()):
                    zf.write(p, f"{arc}/{p.name}", compress_type=zipfile.ZIP_STORED)
    os.replace(tmp, dst)
    return dst
