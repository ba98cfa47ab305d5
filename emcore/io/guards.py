"""Guards every reader goes through: extensions, file checks, the memory cap, error wording.

Names with a leading underscore are private to :mod:`emcore.io`; the package re-exports the
public ones (:data:`SUPPORTED_EXTENSIONS`, :func:`default_max_bytes`, …).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

import numpy as np

from emcore.errors import EmcoreError, TooLargeError

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


#: Deflate (zlib/gzip, what HDF5, TIFF and PNG use) cannot shrink data by more than 1032:1
#: (RFC 1951: a 258-byte match costs at least 2 bits). A header declaring more than this many
#: times the whole file describes data that are not there: a corrupt or hostile header, or
#: chunks that were never written.
_MAX_DEFLATE_RATIO = 1100
#: Declared-but-absent arrays smaller than this are left to the reader (fill values are harmless).
_IMPLAUSIBLE_FLOOR = 64 * 1024**2

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
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(nbytes) < 1024 or unit == "EiB":
            if unit == "EiB" and abs(nbytes) >= 1024**2:
                return f"{float(nbytes):.1e} EiB"  # lying headers can claim 10^72 values
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} EiB"  # pragma: no cover


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
    """The path must name a regular, non-empty file (not a folder, device, pipe or /proc entry).

    A FIFO would block the reader for ever and a device (``/dev/zero``) never ends; both, and
    kernel pseudo-files whose size reads as 0, are refused before anything opens them.
    """
    try:
        st = path.stat()  # follows symlinks: what a reader would open
    except FileNotFoundError:
        what = "a link to a file that does not exist" if path.is_symlink() else "no such file"
        raise EmcoreError(f"{label}: {what}; check the path.") from None
    except OSError as exc:
        raise EmcoreError(f"{label} cannot be opened ({exc.strerror or exc}); check the path and its permissions.") from exc
    if stat.S_ISDIR(st.st_mode):
        raise EmcoreError(f"{label} is a folder, not a file; choose a data file inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise EmcoreError(
            f"{label} is not a regular file but {_special_kind(st.st_mode)}; choose the data file "
            "itself (a link may point to it, but not to a device or pipe)."
        )
    if _on_pseudo_filesystem(path, st):
        raise EmcoreError(
            f"{label} is a system pseudo-file (under /proc or /sys), not a data file; "
            "choose the data file itself."
        )
    if st.st_size == 0:
        raise EmcoreError(f"{label} is empty (0 bytes); the upload or copy probably failed, so copy it again.")


def _special_kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return what
    return "a special file"


def _on_pseudo_filesystem(path: Path, st: os.stat_result) -> bool:
    # /proc and /sys files are regular files whose size reads as 0 (or 4096) whatever they hold.
    # (Devices under /dev are caught as such; /dev/shm holds ordinary files.)
    real = os.path.realpath(path)
    if real.split(os.sep)[1:2] in (["proc"], ["sys"]):
        return True
    for root in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            if os.stat(root).st_dev == st.st_dev:
                return True
    return False


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


# ---------------------------------------------------------------------------------------
# what headers declare, checked before any reader runs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Limits:
    """The memory cap and the reduction asked for: what a declared array is measured against."""

    cap: int
    k: int = 1
    m: int = 1
    energy_range: object = None

    def least_float32(self, shape) -> int:
        """Fewest bytes the data could take as float32 after the requested reduction.

        With an energy range any one axis might be cropped to a single channel, so the
        longest is discounted.
        """
        n = math.prod(int(s) for s in shape)
        div = self.k * self.k * self.m
        if self.energy_range is not None and shape:
            div *= max(1, max(int(s) for s in shape))
        return n * 4 // div


def _dtype_str(dtype) -> str:
    try:
        return str(np.dtype(dtype))
    except TypeError:
        return str(dtype)


def _check_dims(label: str, where: str, dims: dict, *, zero_ok: bool = True):
    """Refuse negative sizes (``dims``: header field name -> value) as a corrupt header; zero
    sizes too unless ``zero_ok`` (formats whose readers drop such axes silently)."""
    bad = {k: v for k, v in dims.items() if int(v) < 0}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise EmcoreError(
            f"{label}: {where} declares a negative size ({shown}), which no data can have, so the "
            "header is corrupt; export the file again from the acquisition software."
        )
    zero = {k: v for k, v in dims.items() if int(v) == 0}
    if zero and not zero_ok:
        shown = ", ".join(f"{k}=0" for k in zero)
        raise EmcoreError(
            f"{label}: {where} declares a size of zero ({shown}), so the file holds no data; "
            "export it again from the acquisition software."
        )


def _truncated(label: str, where: str, shape, dtype, need: int, have: int) -> EmcoreError:
    return EmcoreError(
        f"{label} is truncated: {where} announces a {_shape_str(shape)} {_dtype_str(dtype)} array "
        f"({_human(need)}) but the file holds only {_human(max(have, 0))} of data. Copy or export it again."
    )


def _check_plausible(label: str, where: str, shape, dtype, file_size: int, limits: _Limits):
    """Refuse a compressed array whose declared size no file of ``file_size`` bytes can hold.

    Over the memory cap this is the memory-cap refusal (:class:`TooLargeError`), worded with
    what is really wrong; under it, a plain :class:`EmcoreError`.
    """
    n = math.prod(int(s) for s in shape)
    native = n * np.dtype(dtype).itemsize if isinstance(dtype, np.dtype) else n
    if native <= max(_MAX_DEFLATE_RATIO * file_size, _IMPLAUSIBLE_FLOOR):
        return
    tail = (
        f"although the whole file is only {_human(file_size)}: its header is corrupt or its data "
        "were never written, so export it again."
    )
    if limits.least_float32(shape) > limits.cap:
        raise TooLargeError(
            f"{label}: {where} declares {_shape_str(shape)} {_dtype_str(dtype)} values = "
            f"{_human(n * 4)} as float32, over the memory cap of {_human(limits.cap)} "
            f"(EMCORE_MAX_BYTES), {tail}",
            shape=shape, nbytes=n * 4, max_bytes=limits.cap, suggestion={},
        )  # fmt: skip
    raise EmcoreError(
        f"{label}: {where} declares {_shape_str(shape)} {_dtype_str(dtype)} values "
        f"({_human(native)}), far more than the file can hold even compressed, {tail}"
    )
