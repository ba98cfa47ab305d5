"""Faster network inference on a CPU, without changing what the network computes.

Three things cost a UNet's forward pass on a 1024×1024 image on two CPU cores almost as much
as its convolutions (profiled with ``torch.profiler``, ``benchmarks/bench_inference.py``, on
the UNet of 32 base channels shipped until session 4):

* **Page faults.** Each activation of a full-resolution layer is 128 MiB (32 channels of
  1024² float32). glibc's ``malloc`` serves blocks above 32 MiB with a fresh ``mmap`` and
  returns them on ``free``, so every one of the ~60 tensors of a forward pass is faulted in
  page by page again: a 128 MiB copy took 110 ms instead of 15 ms, a 3×3 convolution 255 ms
  instead of 141 ms. :func:`heap_allocation` serves large blocks from the heap, where they
  are reused, for the duration of a ``with`` block and :data:`KEEP_SECONDS` after it
  (a heap trimmed after every image is faulted in again by the next: 0.6 s of 3 s).
* **Batch normalisation as a separate pass** over each activation (14 % of the forward
  pass): in eval mode it is an affine map per channel and folds into the preceding
  convolution (:func:`inference_copy`).
* **Copies around the convolutions** (about 15 % more): each replication-padded 3×3
  convolution first copies its input into a padded tensor, and each skip connection of a
  UNet copies both branches into a concatenated one. For a UNet, :func:`inference_copy`
  returns a :class:`~emcore.methods.fast_unet.PaddedBufferUNet`, whose ReLUs write straight
  into the next convolution's padded (at a skip, concatenated) buffer.

All are exact up to float rounding (folded weights: outputs within a few 1e-6 relative; the
padded buffers change nothing: the same numbers reach the same convolutions).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import platform
import threading
from collections.abc import Iterator

__all__ = ["KEEP_SECONDS", "heap_allocation", "inference_copy", "release_heap"]

# glibc's mallopt parameters (malloc.h) and the values left once a block ends: 32 MiB and
# 64 MiB are the largest mmap and trim thresholds glibc's own dynamic tuning reaches in a
# long-running process, and 65536 its default count of mmapped blocks.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MAP_AS_USUAL = ((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, 32 << 20))
_AFTER = _MAP_AS_USUAL + ((_M_TRIM_THRESHOLD, 64 << 20),)

_lock = threading.Lock()
_depth = 0
_libc = None
_release_timer: threading.Timer | None = None

# Seconds the grown heap is kept after the last block ends before it is trimmed back. Page
# faulting ~1 GB of fresh activations costs a 1024² UNet pass about 0.6 s of its 3 s; frames
# of a stack, files of a batch and a user's next run within this time find the pages mapped.
KEEP_SECONDS = 60.0


def _glibc():
    global _libc
    if _libc is None:
        try:
            if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
                raise OSError
            lib = ctypes.CDLL(None)
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


@contextlib.contextmanager
def heap_allocation() -> Iterator[bool]:
    """Serve large allocations from the reusable heap while the block runs (glibc only).

    Inside the block no memory is returned to the system, so the process's resident size
    stays at its high-water mark. When the last nested block ends, large allocations are
    mapped as usual again, and the free heap is kept for :data:`KEEP_SECONDS` (a block
    starting within that time reuses its pages without faulting them in again), then
    trimmed back by a timer (or at once by :func:`release_heap`). Yields whether it took
    effect (False on other C libraries: nothing changes). Process-wide, so concurrent
    blocks in several threads share one setting (counted).
    """
    global _depth, _release_timer
    lib = _glibc()
    if lib is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            if _release_timer is not None:
                _release_timer.cancel()
                _release_timer = None
            lib.mallopt(_M_MMAP_MAX, 0)
            lib.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for param, value in _MAP_AS_USUAL:  # the trim threshold stays up while the heap is kept
                    lib.mallopt(param, value)
                if KEEP_SECONDS > 0:
                    _release_timer = threading.Timer(KEEP_SECONDS, release_heap)
                    _release_timer.daemon = True
                    _release_timer.start()
                else:
                    _release_locked(lib)


def release_heap() -> None:
    """Trim the heap kept after :func:`heap_allocation` now (nothing while a block runs)."""
    global _release_timer
    lib = _glibc()
    if lib is None:
        return
    with _lock:
        if _depth == 0:
            if _release_timer is not None:
                _release_timer.cancel()
                _release_timer = None
            _release_locked(lib)


def _release_locked(lib) -> None:
    for param, value in _AFTER:
        lib.mallopt(param, value)
    lib.malloc_trim(0)


def inference_copy(model):
    """An eval-mode copy of ``model`` with every ``BatchNorm2d`` folded into its convolution
    (a :class:`models.UNet` comes back wrapped in a
    :class:`~emcore.methods.fast_unet.PaddedBufferUNet`, the same function with fewer copies).

    Folded: a ``Conv2d`` directly followed by an ``nn.BatchNorm2d`` in an ``nn.Sequential``,
    and a module whose ``conv`` and ``norm`` attributes are such a pair applied in that order
    up to operations that commute with a per-channel affine map and keep constants (the
    UNet's 1×1 convolution before bilinear upsampling, whose weights sum to one). The
    bias-free networks' norms are left as they are. ``model`` itself is not changed.
    """
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                        and not p.is_contiguous() for p in m.parameters())
    with torch.no_grad():
        for mod in list(m.modules()):
            if isinstance(mod, nn.Sequential):
                names = list(mod._modules)
                for a, b in zip(names, names[1:]):
                    conv, bn = mod._modules[a], mod._modules[b]
                    if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                        mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                        mod._modules[b] = nn.Identity()
            conv, bn = getattr(mod, "conv", None), getattr(mod, "norm", None)
            if (getattr(mod, "FOLDABLE_NORM", False) and isinstance(conv, nn.Conv2d)
                    and type(bn) is nn.BatchNorm2d and bn.track_running_stats):
                mod.conv = fuse_conv_bn_eval(conv, bn)
                mod.norm = nn.Identity()
    if channels_last:  # keep oneDNN's layout choice (see models.dncnn.init_relu_network)
        m.to(memory_format=torch.channels_last)
    from emcore.methods.fast_unet import PaddedBufferUNet

    return PaddedBufferUNet(m) if PaddedBufferUNet.fits(m) else m
