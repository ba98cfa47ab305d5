"""Guards every reader goes through: extensions, file checks, the memory cap, error wording.

Names with a leading underscore are private to :mod:`emcore.io`; the package re-exports the
public ones (:data:`SUPPORTED_EXTENSIONS`, :func:`default_max_bytes`, …).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

import numpy as np

from emcore.errors import EmcoreError

#: Extensions :func:`load` reads (lower case, with the dot), for the app's uploader.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".dm3", ".dm4", ".emd", ".bcf", ".hspy", ".hdf5", ".emi", ".ser", ".mrc",
    ".rpl", ".raw", ".tif", ".tiff", ".png", ".npy", ".npz",
)  # fmt: skip

#: Extensions :func:`save` writes.
SAVE_EXTENSIONS: tuple[str, ...] = (".hspy", ".tif", ".tiff", ".npy")

#: Default memory cap for one dataset as float32 (4 GiB); ``EMCORE_MAX_BYTES`` overrides it.
DEFAULT_MAX_BYTES: int = 4 * 1024**3

#: Smallest image or frame side that can be denoised (patch-based and CNN methods need room).
#: Spectrum images are exempt: their denoisers work along energy and may be tiny spatially.
MIN_IMAGE_SIDE: int = 8

_HYPERSPY_EXTENSIONS = (".dm3", ".dm4", ".emd", ".bcf", ".hspy", ".hdf5", ".emi", ".ser", ".mrc", ".rpl")
_NEEDS = "the workbench needs an image (H, W), a stack of images (T, H, W) or a spectrum image (H, W, E)"
_KIND_WORDS = {"image": "image", "stack": "stack of images", "cube": "spectrum image"}
_A_KIND = {"image": "an image", "stack": "a stack of images", "cube": "a spectrum image"}


# Loggers of the readers: they print ERROR lines for files they merely fail to recognise.
_NOISY_LOGGERS = ("hyperspy", "rsciio", "exspy", "tifffile", "PIL", "h5py")


def default_max_bytes() -> int:
    """The memory cap in bytes: ``EMCORE_MAX_BYTES`` if set, else :data:`DEFAULT_MAX_BYTES`.

    The variable takes a number of bytes, optionally with a suffix (``512M``, ``8GiB``, ``2GB``).
    """
    raw = os.environ.get("EMCORE_MAX_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?", raw)
    if not m:
        raise EmcoreError(
            f"EMCORE_MAX_BYTES={raw!r} is not a size; set it to a number of bytes such as "
            "4294967296 or 4GiB."
        )
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    value = int(float(m.group(1)) * mult)
    if value <= 0:
        raise EmcoreError(f"EMCORE_MAX_BYTES={raw!r} must be a positive size.")
    return value


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover


def _shape_str(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _display_name(name: str) -> str:
    """Last path component of a user-supplied name (either separator), for messages only."""
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    return base or str(name)


@contextlib.contextmanager
def _quiet():
    """Silence the readers' logging and warnings while they run.

    RosettaSciIO logs ERROR lines when a reader does not recognise a file and HyperSpy warns
    about deprecations; our own EmcoreError carries the useful sentence instead.
    """
    saved = []
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _unreadable(label: str, what: str, exc: BaseException) -> EmcoreError:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return EmcoreError(
        f"{label} could not be read as {what} ({detail}). The file may be corrupt, truncated or "
        "not really of that format; check it opens in the acquisition software and export it "
        "again (for example as .hspy, .tif or .npy)."
    )


@contextlib.contextmanager
def _reading(label: str, what: str):
    """Turn a third-party reader's exception into an EmcoreError naming the file.

    Only wraps calls into readers (HyperSpy, tifffile, Pillow, NumPy); our own EmcoreErrors
    pass through unchanged.
    """
    try:
        with _quiet():
            yield
    except EmcoreError:
        raise
    except MemoryError as exc:
        raise EmcoreError(
            f"{label}: ran out of memory while reading it; load it binned (bin_spatial / "
            "bin_energy) or lower the cap EMCORE_MAX_BYTES so the size check stops it earlier."
        ) from exc
    except Exception as exc:  # noqa: BLE001 — readers raise anything from KeyError to struct.error
        raise _unreadable(label, what, exc) from exc


def _is_dask(x) -> bool:
    return type(x).__module__.startswith("dask")


def _dense(x) -> np.ndarray:
    # Some lazy readers (Velox EMD) can hand back sparse chunks.
    if hasattr(x, "todense"):
        x = x.todense()
    return np.asarray(x)


def _scalar(v):
    """A metadata value as a plain Python scalar (HyperSpy returns numpy scalars)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _check_nonempty(path: Path, label: str):
    if not path.exists():
        raise EmcoreError(f"{label}: no such file; check the path.")
    if path.is_dir():
        raise EmcoreError(f"{label} is a folder, not a file; choose a data file inside it.")
    if path.stat().st_size == 0:
        raise EmcoreError(f"{label} is empty (0 bytes); the upload or copy probably failed, so copy it again.")


def _ext_of(path: Path, label: str) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "no extension"
        raise EmcoreError(
            f"{label}: files with {shown} are not supported. Supported formats: "
            f"{', '.join(SUPPORTED_EXTENSIONS)}."
        )
    return ext


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise EmcoreError(f"{name} must be a whole number ≥ 1, not {v!r}.")
    return int(v)
