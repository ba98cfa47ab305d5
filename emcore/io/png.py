"""PNG images through Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.io.guards import _A_KIND, MIN_IMAGE_SIDE, _human, _reading
from emcore.io.layout import _classify_array, _luminance, _Source


def _open_png(path: Path, label: str, kind: str | None, signal: int | None, cap: int,
              min_side: int = MIN_IMAGE_SIDE) -> _Source:
    """A PNG image; colour becomes BT.601 luminance. 8-bit PNGs are display images, never counts."""
    from PIL import Image

    if signal not in (None, 0):
        raise EmcoreError(f"{label} holds a single image (number 0); signal={signal!r} does not exist.")
    if kind not in (None, "image"):
        raise EmcoreError(f"{label} is a single PNG image; it cannot be read as {_A_KIND[kind]}.")
    with _reading(label, "a PNG image"):
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            info = _classify_array(0, path.stem, (h, w), np.float32, min_side=min_side)
            if info.kind is None:
                raise info.error(label, False)
            if h * w * 4 > 2 * cap:
                raise EmcoreError(
                    f"{label}: the PNG is {w}×{h} pixels ({_human(h * w * 4)} as float32), over the "
                    f"memory cap of {_human(cap)}; crop it before loading."
                )
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
