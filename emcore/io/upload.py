"""Uploaded files: checked, then written under safe names into a private temporary folder."""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path, PurePosixPath

from emcore.errors import EmcoreError
from emcore.io.guards import SUPPORTED_EXTENSIONS, _display_name, _human, default_max_bytes


def _as_files(files) -> list[tuple[str, bytes]]:
    if isinstance(files, tuple) and len(files) == 2 and isinstance(files[0], str):
        files = [files]  # a single (name, bytes) pair
    out = []
    for item in files:
        try:
            fname, payload = item
        except (TypeError, ValueError) as exc:
            raise EmcoreError("Uploaded files must be given as (filename, bytes) pairs.") from exc
        if hasattr(payload, "getvalue"):
            payload = payload.getvalue()
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise EmcoreError(f"{_display_name(fname)}: the upload holds {type(payload).__name__}, not bytes.")
        out.append((str(fname), bytes(payload)))
    if not out:
        raise EmcoreError("No file was uploaded; choose a data file.")
    return out


_SER_INDEX = re.compile(r"_(\d+)\.ser$", re.IGNORECASE)


def _safe_upload_names(files: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """``[(safe_name, display_name)]``: names on disk are never built from the upload name.

    Only the lower-cased extension (checked against :data:`SUPPORTED_EXTENSIONS`) is kept,
    plus, for ``.ser`` files, the ``_<digits>`` index the TIA reader looks for
    (``<emi stem>_1.ser``; it globs ``_[0-9].ser``, so indices ≥ 10 are not found there either).
    """
    out, used = [], set()
    for fname, _ in files:
        disp = _display_name(fname)
        ext = PurePosixPath(disp).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            raise EmcoreError(
                f"{disp}: files with {ext or 'no extension'} are not supported. Supported formats: "
                f"{', '.join(SUPPORTED_EXTENSIONS)}."
            )
        if ext == ".ser":
            mm = _SER_INDEX.search(disp)
            idx = int(mm.group(1)) if mm else 1
            while f"upload_{idx}.ser" in used:
                idx += 1
            safe = f"upload_{idx}.ser"
        else:
            safe = f"upload{ext}"
            if safe in used:
                raise EmcoreError(
                    f"{disp}: two uploaded files are both {ext} files; upload one dataset at a time "
                    "(with its .ser or .raw companion when it has one)."
                )
        used.add(safe)
        out.append((safe, disp))
    return out


def _main_file(names: list[tuple[str, str]]) -> tuple[str, str]:
    safe = [s for s, _ in names]
    disp = dict(names)
    for primary in ("upload.emi", "upload.rpl"):
        if primary in safe:
            return primary, disp[primary]
    if "upload.raw" in safe:
        raise EmcoreError(
            f"{disp['upload.raw']}: a .raw file is read through its .rpl header; upload the .rpl "
            "file together with it."
        )
    sers = [s for s in safe if s.endswith(".ser")]
    others = [s for s in safe if not s.endswith(".ser")]
    if others and len(safe) > 1:
        raise EmcoreError(
            f"Several files were uploaded ({', '.join(disp[s] for s in safe)}); upload one dataset at "
            "a time (an .emi may come with its .ser files, an .rpl with its .raw)."
        )
    if len(sers) > 1:
        raise EmcoreError(
            f"Several .ser files were uploaded ({', '.join(disp[s] for s in sers)}) without their "
            ".emi; upload the .emi together with them, or one .ser at a time."
        )
    return safe[0], disp[safe[0]]


@contextlib.contextmanager
def _upload_dir(files: list[tuple[str, bytes]], max_bytes: int | None):
    cap = default_max_bytes() if max_bytes is None else int(max_bytes)
    names = _safe_upload_names(files)
    for (fname, payload), (_, disp) in zip(files, names):
        if len(payload) == 0:
            raise EmcoreError(f"{disp} is empty (0 bytes); the upload probably failed, so upload it again.")
        if len(payload) > 2 * cap:
            raise EmcoreError(
                f"{disp} is {_human(len(payload))}, more than twice the memory cap of {_human(cap)}; "
                "it cannot be loaded through an upload. Bin or crop it first, or open it with the "
                "command line (python -m emcore) on a machine with a larger EMCORE_MAX_BYTES."
            )
    main, disp = _main_file(names)
    with tempfile.TemporaryDirectory(prefix="emcore-upload-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        for (_, payload), (safe, _) in zip(files, names):
            (root / safe).write_bytes(payload)
        yield root / main, disp
