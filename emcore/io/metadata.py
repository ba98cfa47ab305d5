"""Calibration and acquisition facts from a HyperSpy signal, under the workbench's keys."""

from __future__ import annotations

import math

import numpy as np

from emcore.io.guards import _scalar

# Lengths are normalised to nm when the unit is recognised (factor to nm).
_LENGTH_TO_NM = {
    "m": 1e9, "meter": 1e9, "meters": 1e9, "metre": 1e9, "metres": 1e9,
    "mm": 1e6,
    "\u00b5m": 1e3, "\u03bcm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3,
    "nm": 1.0,
    "\u00c5": 0.1, "\u212b": 0.1, "A": 0.1, "angstrom": 0.1, "ang": 0.1,
    "pm": 1e-3,
}  # fmt: skip


def _length_calibration(ax) -> tuple[float, str]:
    """(pixel size, unit) of a spatial axis, lengths normalised to nm."""
    if ax is None:
        return 1.0, "px"
    units = ax.units if isinstance(ax.units, str) else ""
    units = units.strip()
    scale = float(getattr(ax, "scale", 1.0) or 1.0)
    return _normalise_length(scale, units)


def _normalise_length(scale: float, units: str) -> tuple[float, str]:
    if not units or units in ("<undefined>", "px", "pixel", "pixels") or not math.isfinite(scale) or scale <= 0:
        return 1.0, "px"
    factor = _LENGTH_TO_NM.get(units, _LENGTH_TO_NM.get(units.lower()))
    if factor is None:
        return scale, units  # e.g. "1 / nm" (diffraction): keep as the file says
    return scale * factor, "nm"


def _energy_calibration(ax) -> dict:
    units = ax.units if isinstance(ax.units, str) else ""
    units = units.strip()
    if getattr(ax, "is_uniform", True):
        offset, scale = float(ax.offset) + 0.0, float(ax.scale)  # + 0.0 turns -0.0 into 0.0
    else:  # a non-uniform axis: keep its start and mean step
        vals = np.asarray(ax.axis, dtype=np.float64)
        offset, scale = float(vals[0]), float(np.mean(np.diff(vals))) if vals.size > 1 else 1.0
    if units in ("", "<undefined>"):
        units = "channel"
    return {"energy_offset": offset, "energy_scale": scale, "energy_unit": units}


def _number(v) -> float | None:
    """A finite number from a metadata value, else None: these facts are optional, and a file
    whose metadata hold text where a number belongs still has readable data."""
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _acquisition(md) -> dict:
    """Acquisition metadata (HyperSpy's metadata tree) under the workbench's keys."""
    out: dict = {}
    title = md.get_item("General.title", "")
    if title:
        out["title"] = str(title)
    stype = md.get_item("Signal.signal_type", "")
    if stype:
        out["signal_type"] = str(stype)
    for mode in ("TEM", "SEM"):
        node = f"Acquisition_instrument.{mode}"
        if not md.has_item(node):
            continue
        be = _number(md.get_item(f"{node}.beam_energy"))
        if be is not None and "voltage_kv" not in out:
            out["voltage_kv"] = be
        mic = md.get_item(f"{node}.microscope")
        if mic and "microscope" not in out:
            out["microscope"] = str(mic)
        dwell = md.get_item(f"{node}.dwell_time")
        det_node = md.get_item(f"{node}.Detector")
        if det_node is not None and hasattr(det_node, "as_dictionary"):
            dets = det_node.as_dictionary()
            for det_name, det in dets.items():
                if not isinstance(det, dict):
                    continue
                if "detector" not in out:
                    model = det.get("detector_type") or det.get("spectrometer") or det.get("Name")
                    out["detector"] = f"{det_name} ({model})" if model else str(det_name)
                if dwell is None and det.get("dwell_time") is not None:
                    dwell = det["dwell_time"]
                live = _number(det.get("live_time"))
                if live is not None and "live_time_s" not in out:
                    out["live_time_s"] = live
        dwell = _number(dwell)
        if dwell is not None and "dwell_time_s" not in out:
            out["dwell_time_s"] = dwell
    return {k: _scalar(v) for k, v in out.items()}
