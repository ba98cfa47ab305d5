"""The data model: one :class:`Dataset` type for images, stacks and spectrum images.

Array conventions (see ``shared/STYLE.md``): image ``(H, W)``, stack ``(T, H, W)``, spectrum
image ``(H, W, E)`` with energy last, as HyperSpy stores spectrum images. Data are float32;
the constructor copies nothing it does not have to and never modifies the caller's arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from emcore.errors import EmcoreError
from emcore.noise.models import NoiseModel

Kind = Literal["image", "stack", "cube"]
KINDS: tuple[str, ...] = ("image", "stack", "cube")
_NDIM = {"image": 2, "stack": 3, "cube": 3}


@dataclass(frozen=True)
class Calibration:
    """Spatial (and, for cubes, energy) calibration.

    ``pixel_size`` is the size of one pixel along rows and columns (square pixels) in
    ``pixel_unit``; ``"px"`` with size 1 means uncalibrated. The energy axis of a cube maps
    channel ``k`` to ``energy_offset + k * energy_scale`` in ``energy_unit``.
    """

    pixel_size: float = 1.0
    pixel_unit: str = "px"
    energy_offset: float = 0.0
    energy_scale: float = 1.0
    energy_unit: str = "keV"

    @property
    def is_spatially_calibrated(self) -> bool:
        return self.pixel_unit != "px"

    def energy_axis(self, n: int) -> np.ndarray:
        """Energies of the ``n`` channel centres."""
        return (self.energy_offset + self.energy_scale * np.arange(n)).astype(np.float64)

    def channel_of(self, energy: float, n: int) -> int:
        """Nearest channel index to ``energy`` (clipped to ``[0, n-1]``)."""
        k = int(round((energy - self.energy_offset) / self.energy_scale))
        return min(max(k, 0), n - 1)

    def binned(self, spatial: int = 1, energy: int = 1) -> "Calibration":
        """Calibration after summing ``spatial``×``spatial`` pixels and ``energy`` channels."""
        return replace(
            self,
            pixel_size=self.pixel_size * spatial,
            # The first binned channel's centre is the mean of the first `energy` centres.
            energy_offset=self.energy_offset + self.energy_scale * (energy - 1) / 2,
            energy_scale=self.energy_scale * energy,
        )

    def to_dict(self) -> dict:
        return {
            "pixel_size": self.pixel_size,
            "pixel_unit": self.pixel_unit,
            "energy_offset": self.energy_offset,
            "energy_scale": self.energy_scale,
            "energy_unit": self.energy_unit,
        }


def _as_float32(a, what: str, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(
            f"{name}: the {what} holds values of type {arr.dtype}, not numbers; "
            "export it as a plain numeric image or spectrum image."
        )
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise EmcoreError(
            f"{name}: the {what} holds {bad} NaN or infinite value(s); "
            "replace them (for example with the local mean) before denoising."
        )
    return arr


@dataclass
class Dataset:
    """One loaded or simulated dataset.

    Parameters
    ----------
    data : ndarray
        float32 array: ``(H, W)`` image, ``(T, H, W)`` stack or ``(H, W, E)`` cube.
    kind : {"image", "stack", "cube"}
    calibration : Calibration
    name : str
        Short label shown in the app (a file name or an example name).
    haadf : ndarray or None
        ``(H, W)`` HAADF image on the same pixel grid as a cube.
    ground_truth : ndarray or None
        Noise-free data of the same shape as ``data`` (simulated examples).
    is_counts : bool
        The values are raw integer counts, hence Poisson distributed.
    noise : NoiseModel or None
        The noise model, when it is known (simulated examples).
    metadata : dict
        Acquisition metadata when the file has it (``voltage_kv``, ``dwell_time_s``,
        ``detector``, ...), plus ``source`` and ``signals`` (the signals the file holds).
    """

    data: np.ndarray
    kind: Kind
    calibration: Calibration = field(default_factory=Calibration)
    name: str = "dataset"
    haadf: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    is_counts: bool = False
    noise: NoiseModel | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise EmcoreError(f"Unknown data kind {self.kind!r}; it must be one of {', '.join(KINDS)}.")
        self.data = _as_float32(self.data, "data", self.name)
        want = _NDIM[self.kind]
        if self.data.ndim != want:
            raise EmcoreError(
                f"{self.name}: a {self.kind} needs {want} dimensions but the data has shape "
                f"{self.data.shape}."
            )
        if min(self.data.shape) < 1:
            raise EmcoreError(f"{self.name}: the data is empty (shape {self.data.shape}).")
        if self.ground_truth is not None:
            self.ground_truth = _as_float32(self.ground_truth, "ground truth", self.name)
            if self.ground_truth.shape != self.data.shape:
                raise EmcoreError(
                    f"{self.name}: the ground truth has shape {self.ground_truth.shape} but the data "
                    f"has shape {self.data.shape}; they must match."
                )
        if self.haadf is not None:
            self.haadf = check_haadf(self.haadf, self.data.shape, self.kind, self.name)

    # -- derived views -------------------------------------------------------------
    def fingerprint(self) -> str:
        """A content identity: the same data, ground truth and HAADF give the same string
        (BLAKE2b), whatever loaded them; used to recognise a dataset again. Calibration and
        the counts flag are left out on purpose: correcting them keeps the dataset's results."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.kind.encode())
        for arr in (self.data, self.ground_truth, self.haadf):
            if arr is None:
                h.update(b"-")
                continue
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image, frame or energy slice."""
        return tuple(self.data.shape[:2]) if self.kind == "cube" else tuple(self.data.shape[-2:])

    @property
    def counts_per_pixel(self) -> float:
        """Mean total value per spatial pixel (summed over energy for cubes, per frame for stacks)."""
        if self.kind == "cube":
            return float(self.data.sum(axis=2, dtype=np.float64).mean())
        return float(self.data.mean(dtype=np.float64))

    def energy_axis(self) -> np.ndarray:
        if self.kind != "cube":
            raise EmcoreError(f"{self.name} is a {self.kind}, not a spectrum image: it has no energy axis.")
        return self.calibration.energy_axis(self.data.shape[2])

    def with_haadf(self, haadf: np.ndarray) -> "Dataset":
        """A copy with ``haadf`` attached (checked against the spatial shape)."""
        return replace(self, haadf=haadf)

    def summary(self) -> dict[str, Any]:
        """Plain-JSON summary (what ``python -m emcore info --json`` prints)."""
        d = self.data
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "shape": list(d.shape),
            "dtype": str(d.dtype),
            "calibration": self.calibration.to_dict(),
            "is_counts": bool(self.is_counts),
            "counts_per_pixel": round(self.counts_per_pixel, 6),
            "value_range": [float(d.min()), float(d.max())],
            "haadf_shape": list(self.haadf.shape) if self.haadf is not None else None,
            "has_ground_truth": self.ground_truth is not None,
            "noise": self.noise.to_dict() if self.noise is not None else None,
        }
        if self.kind == "cube":
            out["energy_range"] = [
                float(self.calibration.energy_offset),
                float(self.calibration.energy_offset + self.calibration.energy_scale * (d.shape[2] - 1)),
            ]
        meta = {k: v for k, v in self.metadata.items() if k in ACQUISITION_KEYS}
        if meta:
            out["acquisition"] = meta
        return out


ACQUISITION_KEYS = ("voltage_kv", "dwell_time_s", "live_time_s", "detector", "microscope", "signal_type", "title")


def check_haadf(haadf, data_shape, kind: str, name: str = "HAADF") -> np.ndarray:
    """Validate a HAADF image against the spatial grid of the data; return it as float32."""
    h = _as_float32(haadf, "HAADF image", name)
    if h.ndim != 2:
        raise EmcoreError(f"{name}: a HAADF image must be 2-D (H, W), but this one has shape {h.shape}.")
    if kind != "cube":
        raise EmcoreError(f"{name}: a HAADF image can only be attached to a spectrum image, not to a {kind}.")
    if tuple(h.shape) != tuple(data_shape[:2]):
        raise EmcoreError(
            f"{name}: the HAADF image is {h.shape[0]}×{h.shape[1]} pixels but the spectrum image is "
            f"{data_shape[0]}×{data_shape[1]}; they must share the same pixel grid "
            "(bin or crop one of them, or continue without the HAADF)."
        )
    return h
