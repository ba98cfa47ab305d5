"""Spectral helpers for spectrum images: X-ray lines, integration windows, element maps.

Line energies and weights come from exspy's element database (the same tables HyperSpy
uses), never typed by hand. The integration window around a line is ``2 × FWHM`` of the
detector at that energy (exspy's default ``integration_windows=2``), with the FWHM law of
Fiori & Newbury (1978) at 130 eV for Mn Kα.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError

FWHM_MNKA_EV = 130.0
WINDOW_FWHM = 2.0
MAIN_LINES = ("Ka", "La", "Ma")


@dataclass(frozen=True)
class XrayLine:
    """One X-ray line: ``name`` like ``"Fe_Ka"``, energy in keV, relative weight in its family."""

    name: str
    element: str
    line: str
    energy_kev: float
    weight: float


def import_exspy_material():
    """exspy's ``material`` module (element database, mass absorption coefficients).

    exspy pulls in HyperSpy (seconds, and deprecation chatter): imported only when a line
    table or an EDS spectrum is actually needed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from exspy import material
    return material


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, tuple[XrayLine, ...]], dict[str, int], float]:
    """The one X-ray line table of the package, read once from exspy's element database.

    Returns the lines of every element in the database's own order, atomic numbers, and the
    Mn Kα energy (the reference of :func:`fwhm_kev`).
    """
    db = import_exspy_material().elements
    by_element, z = {}, {}
    for el in db.keys():
        entry = db[el]
        props = getattr(entry, "Atomic_properties", None)
        if props is None or not hasattr(props, "Xray_lines"):
            continue
        z[el] = int(entry.General_properties.Z)
        by_element[el] = tuple(
            XrayLine(f"{el}_{line}", el, line, float(info["energy (keV)"]), float(info.get("weight", 1.0)))
            for line, info in props.Xray_lines.as_dictionary().items() if "energy (keV)" in info
        )
    mn_ka = float(db["Mn"].Atomic_properties.Xray_lines.Ka["energy (keV)"])
    return by_element, z, mn_ka


@functools.lru_cache(maxsize=1)
def _database() -> tuple[tuple[XrayLine, ...], float]:
    by_element, _, mn_ka = _table()
    everything = [x for lines in by_element.values() for x in lines]
    return tuple(sorted(everything, key=lambda x: x.energy_kev)), mn_ka


def element_lines(element: str) -> tuple[XrayLine, ...]:
    """Every X-ray line of ``element`` (e.g. ``"Fe"``), in the database's order."""
    try:
        return _table()[0][element]
    except KeyError:
        raise EmcoreError(f"Unknown element '{element}'; write its chemical symbol, for example Fe or Pt.") from None


def atomic_number(element: str) -> int:
    element_lines(element)  # the same sentence for an unknown element
    return _table()[1][element]


def xray_lines(lo_kev: float, hi_kev: float, *, lines: tuple[str, ...] = MAIN_LINES) -> list[XrayLine]:
    """The lines of kind ``lines`` (default the α lines) with energies in ``[lo_kev, hi_kev]``."""
    return [x for x in _database()[0] if x.line in lines and lo_kev <= x.energy_kev <= hi_kev]


def get_line(name: str) -> XrayLine:
    for x in _database()[0]:
        if x.name == name:
            return x
    raise EmcoreError(f"Unknown X-ray line '{name}'; write it as Element_Line, for example Fe_Ka or Pt_La.")


def fwhm_kev(energy_kev, fwhm_mnka_ev: float = FWHM_MNKA_EV):
    """Detector FWHM in keV at ``energy_kev`` (Fiori & Newbury 1978)."""
    mn = _table()[2]
    var = fwhm_mnka_ev**2 + 2.5 * (np.asarray(energy_kev, float) - mn) * 1000.0
    return np.sqrt(np.clip(var, 1.0, None)) / 1000.0


def _to_kev(cal: Calibration) -> float:
    unit = cal.energy_unit.strip().lower()
    if unit == "kev":
        return 1.0
    if unit == "ev":
        return 1e-3
    raise EmcoreError(f"The energy axis is in '{cal.energy_unit}', not eV or keV: X-ray lines cannot be placed on it.")


def line_channels(line: XrayLine | str, cal: Calibration, n_channels: int) -> tuple[int, int]:
    """Channel range ``[lo, hi)`` integrating ``2 × FWHM`` around a line."""
    x = get_line(line) if isinstance(line, str) else line
    k = _to_kev(cal)
    half = WINDOW_FWHM * float(fwhm_kev(x.energy_kev)) / 2
    e0, scale = cal.energy_offset * k, cal.energy_scale * k
    lo = int(np.floor((x.energy_kev - half - e0) / scale + 0.5))
    hi = int(np.ceil((x.energy_kev + half - e0) / scale + 0.5))
    lo, hi = max(lo, 0), min(hi, n_channels)
    if hi <= lo:
        raise EmcoreError(f"{x.name} at {x.energy_kev:.3f} keV lies outside this spectrum image's energy range.")
    return lo, hi


def element_map(cube: np.ndarray, line: XrayLine | str, cal: Calibration) -> np.ndarray:
    """Counts summed over the integration window of ``line``: an ``(H, W)`` float32 map.

    No background is subtracted: the same window is applied to the input, each result and
    the ground truth, so the maps compare like with like.
    """
    lo, hi = line_channels(line, cal, cube.shape[2])
    return np.asarray(cube[:, :, lo:hi], dtype=np.float32).sum(axis=2, dtype=np.float64).astype(np.float32)


def suggest_lines(spectrum: np.ndarray, cal: Calibration, k: int = 6, candidates=None) -> list[str]:
    """The ``k`` α lines that stand highest above the local background of a summed spectrum.

    A quick, transparent guess for an unknown sample; the user chooses the final list. With
    ``candidates`` (line names, e.g. the elements a file's metadata lists), only those lines
    are considered — still ranked by the peaks actually present, one line per element.
    """
    n = spectrum.shape[0]
    try:
        kev = _to_kev(cal)
    except EmcoreError:
        return []
    lo_e, hi_e = cal.energy_offset * kev, (cal.energy_offset + cal.energy_scale * (n - 1)) * kev
    from scipy.ndimage import median_filter

    background = median_filter(np.asarray(spectrum, float), size=max(5, int(0.5 / (cal.energy_scale * kev)) | 1))
    energy = (cal.energy_offset + cal.energy_scale * np.arange(n)) * kev
    excess_all = np.asarray(spectrum, float) - background
    scores = []
    allowed = None if candidates is None else set(candidates)
    for x in xray_lines(max(lo_e, 0.1), hi_e):
        if allowed is not None and x.name not in allowed:
            continue
        lo, hi = line_channels(x, cal, n)
        excess = float(excess_all[lo:hi].sum())
        noise = float(np.sqrt(max(background[lo:hi].sum(), 1.0)))
        # Many lines share a peak (Si Kα, W Mα, Rb Lα...): favour the one whose energy sits
        # on the peak's maximum, within a quarter of the detector FWHM.
        peak = energy[lo + int(np.argmax(excess_all[lo:hi]))]
        offset = (peak - x.energy_kev) / (0.25 * float(fwhm_kev(x.energy_kev)))
        scores.append((excess / noise * float(np.exp(-offset**2)), x))
    scores.sort(key=lambda t: -t[0])
    picked: list[XrayLine] = []
    for score, x in scores:
        if score <= 5 or x.element in {p.element for p in picked}:
            continue
        if any(abs(x.energy_kev - p.energy_kev) < float(fwhm_kev(p.energy_kev)) for p in picked):
            continue  # the same peak is already explained
        if any(o.element in {p.element for p in picked} and abs(x.energy_kev - o.energy_kev) < float(fwhm_kev(o.energy_kev))
               for o in _database()[0]):
            continue  # ... by another line of an element already picked (Pt Mα next to Pt Lα)
        picked.append(x)
        if len(picked) == k:
            break
    return [p.name for p in picked]


def region_spectrum(cube: np.ndarray, row: int, col: int, half: int = 0) -> np.ndarray:
    """Spectrum summed over the ``(2·half+1)²`` pixels around ``(row, col)`` (clipped to the image)."""
    h, w = cube.shape[:2]
    if not (0 <= row < h and 0 <= col < w):
        raise EmcoreError(f"Pixel ({row}, {col}) is outside the {h}×{w} spectrum image.")
    half = max(0, int(half))
    r0, r1 = max(0, row - half), min(h, row + half + 1)
    c0, c1 = max(0, col - half), min(w, col + half + 1)
    return np.asarray(cube[r0:r1, c0:c1, :], dtype=np.float64).sum(axis=(0, 1))
