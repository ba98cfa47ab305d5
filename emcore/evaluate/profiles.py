"""Intensity line profiles.

A profile samples an image along the straight segment from ``start`` to ``end``, both given as
``(row, col)`` in pixel coordinates (the centre of pixel ``[i, j]`` is at ``(i, j)``), with
linear interpolation between pixel centres, optionally averaging a band several pixels wide
across the line — the "line width" of ImageJ's / Fiji's profile tool and of
:func:`skimage.measure.profile_line`, which this follows except for the sampling rule below.

Sampling rule: a segment of length ``L`` pixels gets ``n = ceil(L) + 1`` equally spaced samples,
the first at ``start`` and the last at ``end`` (spacing ``L / (n - 1) ≤ 1`` px), so a profile
never skips a pixel and both end points are always sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import ndimage as ndi

from emcore.errors import EmcoreError


@dataclass(frozen=True)
class Profile:
    """A sampled line profile.

    Attributes
    ----------
    distance : ndarray of float64, shape (n,)
        Distance of each sample from ``start`` along the line, in pixels (0 to the length).
    values : ndarray of float64, shape (n,)
        Interpolated intensity at each sample, averaged over ``width`` pixels across the line.
    start, end : (float, float)
        End points as ``(row, col)`` in pixel coordinates.
    width : int
        Number of parallel lines averaged (1 px apart, centred on the segment).
    """

    distance: np.ndarray = field(repr=False, compare=False)
    values: np.ndarray = field(repr=False, compare=False)
    start: tuple[float, float]
    end: tuple[float, float]
    width: int

    @property
    def length(self) -> float:
        """Length of the segment in pixels."""
        return float(math.hypot(self.end[0] - self.start[0], self.end[1] - self.start[1]))

    def to_dict(self) -> dict:
        return {
            "start": list(self.start),
            "end": list(self.end),
            "width": self.width,
            "length_px": self.length,
            "distance": [float(v) for v in self.distance],
            "values": [float(v) for v in self.values],
        }


def _point(p, name: str) -> tuple[float, float]:
    try:
        r, c = (float(v) for v in p)
    except (TypeError, ValueError):
        raise EmcoreError(f"The profile {name} point must be two numbers (row, column), not {p!r}.") from None
    if not (math.isfinite(r) and math.isfinite(c)):
        raise EmcoreError(f"The profile {name} point must be finite, not ({r:g}, {c:g}).")
    return r, c


def _check_width(width) -> int:
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise EmcoreError(f"The profile width must be a whole number of pixels, not {width!r}.") from None
    if not w >= 1:
        raise EmcoreError(f"The profile width must be at least 1 pixel, not {width:g}.")
    if w != int(w):
        raise EmcoreError(f"The profile width must be a whole number of pixels, not {width:g}.")
    return int(w)


def line_profile(image: np.ndarray, start, end, width: int = 1, *, order: int = 1) -> Profile:
    """Sample the intensity along a line segment, averaged over a band ``width`` pixels wide.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        A 2-D image (a single frame of a stack, or an energy slice of a spectrum image). It is
        not modified.
    start, end : (float, float)
        End points ``(row, col)`` in pixel coordinates; both must lie inside the image,
        ``0 ≤ row ≤ H - 1`` and ``0 ≤ col ≤ W - 1``.
    width : int, default 1
        Number of parallel lines averaged across the segment, 1 px apart and centred on it
        (offsets ``-(width-1)/2 … (width-1)/2`` along the unit normal). Parts of the band that
        fall outside the image take the nearest edge value.
    order : int, default 1
        Spline order of the interpolation (:func:`scipy.ndimage.map_coordinates`); 1 is
        bilinear, 0 nearest-neighbour, 3 cubic.

    Returns
    -------
    Profile
        ``n = ceil(length) + 1`` samples from ``start`` to ``end`` inclusive.

    Raises
    ------
    EmcoreError
        Not a 2-D image, ``start == end``, a point outside the image, ``width < 1`` or not
        whole, or an interpolation order outside 0–5.

    References
    ----------
    Schneider, Rasband & Eliceiri, "NIH Image to ImageJ: 25 years of image analysis",
    Nat. Methods 9 (2012) 671–675 (the line-width profile convention).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise EmcoreError(
            f"A line profile needs a 2-D image, not an array of shape {img.shape}; pick one frame or energy slice first."
        )
    if img.dtype.kind not in "biuf":
        raise EmcoreError(f"A line profile needs numeric pixel values, not values of type {img.dtype}.")
    h, w = img.shape
    r0, c0 = _point(start, "start")
    r1, c1 = _point(end, "end")
    for (r, c), name in (((r0, c0), "start"), ((r1, c1), "end")):
        if not (0 <= r <= h - 1 and 0 <= c <= w - 1):
            raise EmcoreError(
                f"The profile {name} point (row {r:g}, column {c:g}) lies outside the image of "
                f"{h} × {w} pixels (rows 0–{h - 1}, columns 0–{w - 1})."
            )
    width = _check_width(width)
    if int(order) != order or not 0 <= int(order) <= 5:
        raise EmcoreError(f"The interpolation order must be a whole number from 0 to 5, not {order!r}.")
    length = math.hypot(r1 - r0, c1 - c0)
    if length == 0:
        raise EmcoreError("The profile line has zero length: pick two different points.")

    n = int(math.ceil(length)) + 1
    t = np.linspace(0.0, 1.0, n)
    rows = r0 + t * (r1 - r0)
    cols = c0 + t * (c1 - c0)
    # Unit normal to the segment; the band is sampled at 1-px offsets along it.
    nr, nc = -(c1 - c0) / length, (r1 - r0) / length
    offsets = np.arange(width, dtype=np.float64) - (width - 1) / 2.0
    coords = np.stack([rows[None, :] + offsets[:, None] * nr, cols[None, :] + offsets[:, None] * nc])
    samples = ndi.map_coordinates(
        img.astype(np.float64, copy=False), coords.reshape(2, -1), order=int(order), mode="nearest"
    ).reshape(width, n)
    return Profile(
        distance=t * length,
        values=samples.mean(axis=0),
        start=(r0, c0),
        end=(r1, c1),
        width=width,
    )


def profile_distance(profile: Profile, pixel_size) -> np.ndarray:
    """Distances along a profile in calibrated units.

    Parameters
    ----------
    profile : Profile
        Output of :func:`line_profile`.
    pixel_size : float or (float, float)
        Size of a pixel (e.g. in nm); a pair ``(row_size, col_size)`` for non-square pixels,
        in which case the calibrated length of the slanted segment is used.

    Returns
    -------
    ndarray of float64
        ``profile.distance`` converted to the unit of ``pixel_size``.
    """
    sizes = np.atleast_1d(np.asarray(pixel_size, dtype=np.float64))
    if sizes.size not in (1, 2) or not np.all(np.isfinite(sizes)) or not np.all(sizes > 0):
        raise EmcoreError(f"The pixel size must be a positive number (or a row, column pair), not {pixel_size!r}.")
    if sizes.size == 1:
        return profile.distance * float(sizes[0])
    dr = (profile.end[0] - profile.start[0]) * sizes[0]
    dc = (profile.end[1] - profile.start[1]) * sizes[1]
    return profile.distance / profile.length * math.hypot(dr, dc)


def profiles_for(images: Mapping[str, np.ndarray], start, end, width: int = 1) -> dict[str, Profile]:
    """The same line profile through several images (e.g. noisy input and each result).

    Parameters
    ----------
    images : dict of str to ndarray
        Named 2-D images, all of the same shape.
    start, end : (float, float)
        End points ``(row, col)``, as for :func:`line_profile`.
    width : int, default 1
        Band width in pixels, as for :func:`line_profile`.

    Returns
    -------
    dict of str to Profile
        One profile per image, in the order given.

    Raises
    ------
    EmcoreError
        If the images differ in shape (the message names the offending one), or any error of
        :func:`line_profile`.
    """
    items = list(images.items())
    if not items:
        return {}
    first_name, first = items[0]
    ref_shape = np.shape(first)
    for name, img in items[1:]:
        if np.shape(img) != ref_shape:
            raise EmcoreError(
                f"The result {name!r} has shape {np.shape(img)} but {first_name!r} has {ref_shape}; "
                "profiles can only be compared between images of the same size."
            )
    return {name: line_profile(img, start, end, width) for name, img in items}
