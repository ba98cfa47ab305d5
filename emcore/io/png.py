"""PNG images through Pillow (its PNG decoder only), after the header's declared size is checked."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import _A_KIND, MIN_IMAGE_SIDE, _check_plausible, _human, _Limits, _reading
from emcore.io.layout import _classify_array, _luminance, _Source


def _open_png(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """A PNG image; colour becomes BT.601 luminance. 8-bit PNGs are display images, never counts."""
    from PIL import Image

    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single image (number 0); signal={signal!r} does not exist.")
    if kind not in (None, "image"):
        raise EmcoreError(f"{label} is a single PNG image; it cannot be read as {_A_KIND[kind]}.")
    w, h = _png_size(path, label, cap)
    with _reading(label, "a PNG image"):
        # Only the PNG decoder: a file named .png is never handed to Pillow's other formats.
        with Image.open(path, formats=["PNG"]) as im:
            w, h = im.size
            mode = im.mode
            info = _classify_array(0, path.stem, (h, w), np.float32, min_side=min_side)
            if info.kind is None:
                raise info.error(label, False)
            if mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.array(im)
            elif mode == "1":
                arr = np.array(im, dtype=np.uint8)
            elif mode == "LA":
                arr = np.array(im.getchannel("L"))
            else:  # RGB, RGBA, P (palette), CMYK, YCbCr …
                arr = _luminance(np.array(im.convert("RGB")))
    eight_bit = mode not in ("I", "I;16", "I;16B", "I;16L", "F")
    md = {"signals": [info.public()], "signal_index": 0, "reader": "pillow", "png_mode": mode}
    src = _Source(data=arr, kind="image", calibration=Calibration(), metadata=md)
    if eight_bit:
        src.counts_hint = False
    return src


_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA).
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_size(path: Path, label: str, cap: int) -> tuple[int, int]:
    """Width and height from the IHDR chunk, checked before Pillow allocates anything."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        raise EmcoreError(
            f"{label} is not a PNG image (it does not start like one) or is cut short; export it "
            "again as PNG or TIFF."
        )
    w, h = struct.unpack(">II", head[16:24])
    depth, colour = head[24], head[25]
    if w == 0 or h == 0 or w >= 2**31 or h >= 2**31 or colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise EmcoreError(
            f"{label}: its PNG header is corrupt ({w}×{h} pixels, bit depth {depth}, colour type "
            f"{colour}); export the image again."
        )
    if h * w * 4 > 2 * cap:
        raise EmcoreError(
            f"{label}: the PNG is {w}×{h} pixels ({_human(h * w * 4)} as float32), over the "
            f"memory cap of {_human(cap)}; crop it before loading."
        )
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    _check_plausible(label, "its PNG header", (h, w, _CHANNELS[colour]), dtype, path.stat().st_size, _Limits(cap))
    return w, h
