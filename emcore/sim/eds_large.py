"""The EDS phantom of :mod:`emcore.sim.eds` at any size, made block by block of rows.

:func:`eds_example` builds the whole cube in memory (at most 64 M voxels). For data larger
than memory, :func:`eds_blocks` describes the same kind of specimen — Fe/Pt core-shell and
alloy particles on a C/SiOx film, the same X-ray lines, detector and Poisson counts — and
returns a function that makes rows ``start:stop`` of the counts on demand, for
:func:`emcore.io.lazy.write_blocks` to write one block at a time. The element amounts are
simulated on a grid of at most 512 px and each of its pixels covers ``size / grid`` × ``size /
grid`` pixels of the cube (nearest neighbour: the particles' edges are steps of that many
pixels); the counts of every pixel are drawn independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from emcore.data.dataset import Calibration
from emcore.errors import EmcoreError
from emcore.noise.models import Poisson
from emcore.sim.eds import _EDS_FIELD_NM, _GRID_CU_FRACTION, EDS_ELEMENTS, _eds_phantom, _element_spectra, _xray_lines

#: Side of the grid the element amounts are simulated on (that of :func:`eds_example`'s largest map).
PHANTOM_GRID = 512


@dataclass(frozen=True)
class BlockCube:
    """A simulated spectrum image made on demand: ``make(start, stop)`` gives rows
    ``start:stop`` of the counts ``(stop - start, W, E)`` float32 (the same rows always give the
    same counts for a block that starts at the same row), with the calibration, the HAADF image and the noise model of the whole cube."""

    shape: tuple[int, int, int]
    make: Callable[[int, int], np.ndarray]
    calibration: Calibration
    haadf: np.ndarray
    noise: Poisson
    counts_per_pixel: float


def eds_blocks(size: int = 2048, channels: int = 512, *, counts_per_pixel: float = 50.0,
               energy_scale: float = 0.04, energy_offset: float = 0.0, seed: int = 0) -> BlockCube:
    """A ``size × size × channels`` EDS spectrum image of the :func:`eds_example` specimen.

    Parameters
    ----------
    size : int
        Side of the map in pixels (8–65536); a multiple of the phantom grid
        (min(size, 512)) when above 512.
    channels, energy_scale, energy_offset, counts_per_pixel
        As for :func:`emcore.sim.eds.eds_example` (default 0–20.4 keV in 512 channels).
    seed : int
        Seeds the specimen; the counts of rows ``start:stop`` come from ``(seed, start)``.
    """
    grid = min(size, PHANTOM_GRID)
    if not 8 <= size <= 65536 or size % grid:
        raise EmcoreError(f"The map side must be 8–65536 pixels and a multiple of {grid}, not {size}.")
    rep = size // grid
    rng = np.random.default_rng(seed)
    amounts, _pixel, _mask = _eds_phantom(grid, rng)
    spectra, line_counts = _element_spectra(float(energy_offset), float(energy_scale), int(channels))
    _, z = _xray_lines()
    # As eds_example: the grid's Cu reaches the detector wherever the beam is (a uniform term),
    # and the dose sets the mean total counts per pixel.
    cu = EDS_ELEMENTS.index("Cu")
    flat = amounts.reshape(-1, amounts.shape[2])
    grid_cu = _GRID_CU_FRACTION * (flat @ line_counts).mean() / max(line_counts[cu], 1e-12)
    spectral = amounts.copy()
    spectral[..., cu] += grid_cu
    spectra32 = spectra.astype(np.float32)
    total = float((spectral.reshape(-1, len(EDS_ELEMENTS)).astype(np.float32) @ spectra32).sum(axis=1).mean())
    if not total > 0:
        raise EmcoreError("The energy axis holds no X-rays from the beam; use an axis within about 0.1–200 keV.")
    weights = (spectral * (counts_per_pixel / total)).astype(np.float32)
    zeta = np.array([z[el] for el in EDS_ELEMENTS], float) ** 1.7
    haadf_grid = amounts @ zeta
    haadf_grid = (haadf_grid / haadf_grid.max()).astype(np.float32)
    haadf = np.repeat(np.repeat(haadf_grid, rep, axis=0), rep, axis=1)
    haadf += 0.02 * np.random.default_rng([seed, 1 << 40]).standard_normal(haadf.shape).astype(np.float32)

    def make(start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop) // rep
        w = np.repeat(weights[rows], rep, axis=1)  # (rows, size, n_el)
        expected = w.reshape(-1, w.shape[2]) @ spectra32
        counts = np.random.default_rng([seed, start]).poisson(expected)
        return counts.astype(np.float32).reshape(stop - start, size, channels)

    cal = Calibration(pixel_size=_EDS_FIELD_NM / size, pixel_unit="nm", energy_offset=float(energy_offset),
                      energy_scale=float(energy_scale), energy_unit="keV")
    return BlockCube(shape=(size, size, int(channels)), make=make, calibration=cal, haadf=haadf, noise=Poisson(1.0),
                     counts_per_pixel=float(counts_per_pixel))
