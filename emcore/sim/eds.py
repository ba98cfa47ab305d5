"""EDS spectrum image + HAADF example: Fe-core/Pt-shell and alloy particles on a C/SiOx film.

X-ray lines come from exspy's element database through :mod:`emcore.spectral` (the one line
table of the package).

References
----------
.. [Kramers1923] Kramers, H. A. "On the theory of X-ray absorption and of the continuous
   X-ray spectrum", Phil. Mag. 46 (1923) 836–871.
.. [Fiori1978] Fiori, C. E., Newbury, D. E. SEM/1978/I (1978) 401; as given in Goldstein,
   J. I. et al. *Scanning Electron Microscopy and X-ray Microanalysis*, 3rd ed. (2003) p. 315.
.. [Chantler2005] Chantler, C. T. et al. X-Ray Form Factor, Attenuation and Scattering Tables
   v2.1, NIST (2005), doi:10.18434/T4HS32 (mass absorption coefficients, read via exspy).
.. [Howie1979] Howie, A. "Image contrast and localized signal selection techniques",
   J. Microsc. 117 (1979) 11–23.
.. [Pennycook1989] Pennycook, S. J. "Z-contrast STEM for materials science",
   Ultramicroscopy 30 (1989) 58–69.
.. [Rossouw2015] Rossouw, D. et al. "Multicomponent signal unmixing from nanoheterostructures:
   overcoming the traditional challenges of nanoscale X-ray analysis via machine learning",
   Nano Lett. 15 (2015) 2716–2720 (Fe/Pt core-shell particles; shared/data/eds/core_shell).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError
from emcore.noise.models import Poisson
from emcore.sim.common import (
    _check_int,
    _check_range,
    _make_rng,
    _seed_meta,
    _SmoothField,
)
from emcore.spectral import FWHM_MNKA_EV, MAIN_LINES, XrayLine, atomic_number, element_lines, fwhm_kev, import_exspy_material

_EDS_DOSE = (1.0, 1000.0)


# =====================================================================================
# EDS spectrum image + HAADF
# =====================================================================================

EDS_VOLTAGE_KV = 200.0
EDS_ELEMENTS = ("C", "O", "Si", "Fe", "Ni", "Cu", "Pt")
# Relative characteristic X-ray yield per atom for each line family, at 200 kV into an SDD.
# Rough Cliff–Lorimer-style sensitivities (low fluorescence yield of light-element K shells;
# L and M families of heavy elements): good to a factor ~2, they only set how bright each
# element's peaks look. Within a family, exspy's line weights split the intensity.
_FAMILY_YIELD = {
    "C": {"K": 0.12},
    "O": {"K": 0.3},
    "Si": {"K": 1.0},
    "Fe": {"K": 1.0, "L": 0.08},
    "Ni": {"K": 1.0, "L": 0.08},
    "Cu": {"K": 1.0, "L": 0.08},
    "Pt": {"L": 0.7, "M": 0.55},
}
# Atoms per nm³ of the phantom's materials (bulk densities): Fe 7.87, Pt 21.45 g/cm³,
# amorphous C ~2.0 g/cm³, SiO2 glass 2.2 g/cm³.
_RHO_FE, _RHO_PT, _RHO_C, _RHO_SIO2 = 84.9, 66.2, 100.0, 22.0  # SiO2: formula units / nm³
# Kramers (1923) bremsstrahlung, N(E) ∝ Z (E0 − E) / E per unit energy, with a constant set
# so that the major K peaks of a thin film stand ~50× above their background.
_BREMS_PER_Z = 2.5e-5
# Detector: 0.3 µm polymer (C, 1.4 g/cm³) window, 30 nm Al coating, 30 nm Si dead layer,
# 0.45 mm Si crystal: typical values for a thin-window silicon drift detector. The window
# and dead layer give the low-energy roll-off, the crystal thickness the high-energy one.
_DETECTOR_LAYERS = (("C", 1.4, 0.3e-4), ("Al", 2.7, 0.03e-4), ("Si", 2.33, 0.03e-4))
_DETECTOR_CRYSTAL = ("Si", 2.33, 0.045)
_THRESHOLD_KEV = 0.12
# Spurious Cu K/L from the support grid: a spatially uniform few % of the counts.
_GRID_CU_FRACTION = 0.03
_EDS_FIELD_NM = 38.4  # field of view at every size: 0.3 nm/px at 128 px


@functools.lru_cache(maxsize=None)
def _xray_lines() -> tuple[tuple[XrayLine, ...], dict[str, int]]:
    """The lines of :data:`EDS_ELEMENTS` whose family the phantom emits (from the package's
    one line table, :mod:`emcore.spectral`), and the elements' atomic numbers."""
    lines = tuple(x for el in EDS_ELEMENTS for x in element_lines(el) if x.line[0] in _FAMILY_YIELD[el])
    return lines, {el: atomic_number(el) for el in EDS_ELEMENTS}


def main_xray_lines(lo_kev: float, hi_kev: float) -> list[str]:
    """The α line of every element family used, within ``[lo_kev, hi_kev]`` (e.g. ``"Fe_Ka"``)."""
    return [x.name for x in _xray_lines()[0] if x.line in MAIN_LINES and lo_kev <= x.energy_kev <= hi_kev]


@functools.lru_cache(maxsize=8)
def _element_spectra(offset: float, scale: float, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected spectra per unit amount of each element, ``(n_el, E)``, and line counts ``(n_el,)``.

    Each row is the element's characteristic lines (Gaussians integrated over each channel,
    FWHM from :func:`fwhm_kev`) plus its Kramers bremsstrahlung, times the detector
    efficiency. The second array is the detected characteristic counts per unit amount.
    """
    material = import_exspy_material()
    lines, z = _xray_lines()
    edges = offset + scale * (np.arange(channels + 1) - 0.5)
    centres = offset + scale * np.arange(channels)

    # Detector efficiency from the mass absorption coefficients of Chantler et al. (2005).
    e_abs = np.clip(centres, 0.05, None)
    eff = np.ones(channels)
    for el, rho, thick_cm in _DETECTOR_LAYERS:
        eff *= np.exp(-material.mass_absorption_coefficient(el, e_abs) * rho * thick_cm)
    el, rho, thick_cm = _DETECTOR_CRYSTAL
    eff *= 1 - np.exp(-material.mass_absorption_coefficient(el, e_abs) * rho * thick_cm)
    # The pulse processor rejects pulses below ~0.1 keV (noise threshold): a soft cut-off.
    eff *= special.ndtr((centres - _THRESHOLD_KEV) / 0.02)

    index = {el: i for i, el in enumerate(EDS_ELEMENTS)}
    e0 = EDS_VOLTAGE_KV
    kramers = np.where(centres > 0, np.clip(e0 - centres, 0, None) / np.clip(centres, scale / 2, None), 0.0) * scale
    spectra = np.outer([_BREMS_PER_Z * z[el] for el in EDS_ELEMENTS], kramers)
    line_only = np.zeros((len(EDS_ELEMENTS), channels))
    energies = np.array([ln.energy_kev for ln in lines])
    amount = np.array([_FAMILY_YIELD[ln.element][ln.line[0]] * ln.weight for ln in lines])
    sigma = fwhm_kev(energies) / (2 * math.sqrt(2 * math.log(2)))
    # Counts in each channel: the Gaussian integrated between the channel edges.
    cdf = special.ndtr((edges[None, :] - energies[:, None]) / sigma[:, None])
    per_line = amount[:, None] * np.diff(cdf, axis=1)
    rows = np.array([index[ln.element] for ln in lines])
    np.add.at(line_only, rows, per_line)
    spectra = (spectra + line_only) * eff
    line_counts = (line_only * eff).sum(axis=1)
    spectra.setflags(write=False)
    line_counts.setflags(write=False)
    return spectra, line_counts


def _sphere_projection(rows, cols, centre, radius) -> np.ndarray:
    """Projected thickness (nm) of a sphere on the pixel grid (coordinates in nm)."""
    r2 = (rows[:, None] - centre[0]) ** 2 + (cols[None, :] - centre[1]) ** 2
    return 2 * np.sqrt(np.clip(radius**2 - r2, 0, None))


def _eds_phantom(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """Element amounts ``(H, W, n_el)`` (atoms per nm², projected), pixel size, particle mask."""
    pixel = _EDS_FIELD_NM / size
    coords = (np.arange(size) + 0.5) * pixel
    n_el = len(EDS_ELEMENTS)
    idx = {el: i for i, el in enumerate(EDS_ELEMENTS)}
    amounts = np.zeros((size, size, n_el))

    # Support: ~5 nm amorphous C film everywhere, with SiOx patches ~8 nm thick on ~half of it.
    film = _SmoothField(rng, _EDS_FIELD_NM, n_waves=3, max_cycles=1.5)
    patches = _SmoothField(rng, _EDS_FIELD_NM, n_waves=4, max_cycles=2.0)
    amounts[..., idx["C"]] = _RHO_C * 5.0 * (1 + 0.15 * film.grid(coords, coords))
    cover = special.expit(patches.grid(coords, coords) / 0.08)
    sio = _RHO_SIO2 * 8.0 * cover
    amounts[..., idx["Si"]] = sio
    amounts[..., idx["O"]] = 1.8 * sio  # SiOx with x ≈ 1.8

    # Particles: 4–6 Fe-core/Pt-shell spheres, one FePt alloy and one Ni–Cu alloy sphere,
    # placed without overlap (Rossouw et al. 2015 imaged such core-shell particles).
    n_core_shell = int(rng.integers(4, 7))
    kinds = ["core_shell"] * n_core_shell + ["fept", "nicu"]
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        radius = rng.uniform(2.5, 5.0) if kind == "core_shell" else rng.uniform(2.0, 4.0)
        for _ in range(200):
            centre = rng.uniform(radius + 0.5, _EDS_FIELD_NM - radius - 0.5, 2)
            if all(np.hypot(*(centre - c)) > radius + r + 1.0 for c, r in placed):
                break
        else:
            continue  # no room left: fewer particles
        placed.append((centre, radius))
        full = _sphere_projection(coords, coords, centre, radius)
        if kind == "core_shell":
            core = _sphere_projection(coords, coords, centre, radius * rng.uniform(0.5, 0.7))
            amounts[..., idx["Fe"]] += _RHO_FE * core
            amounts[..., idx["Pt"]] += _RHO_PT * (full - core)
        elif kind == "fept":
            amounts[..., idx["Fe"]] += 0.5 * 75.0 * full  # L1₀ FePt: ~75 atoms/nm³
            amounts[..., idx["Pt"]] += 0.5 * 75.0 * full
        else:
            x_ni = rng.uniform(0.4, 0.7)
            amounts[..., idx["Ni"]] += x_ni * 87.0 * full  # Ni–Cu solid solution ~87 atoms/nm³
            amounts[..., idx["Cu"]] += (1 - x_ni) * 87.0 * full
    mask = amounts[..., [idx["Fe"], idx["Ni"], idx["Pt"]]].sum(axis=2) > 0
    return amounts, pixel, mask


def eds_example(
    seed=0,
    counts_per_pixel: float = 50.0,
    size: int = 128,
    channels: int = 1024,
    energy_scale: float = 0.02,
    energy_offset: float = 0.0,
    *,
    rng=None,
) -> Dataset:
    """Simulated EDS spectrum image of Fe/Pt nanoparticles on C/SiOx, with HAADF and truth.

    The phantom holds Fe-core/Pt-shell particles, an FePt and a Ni–Cu alloy particle on an
    amorphous C film with SiOx patches, plus stray Cu from the grid. Each element's spectrum
    has its X-ray lines at exspy's energies and relative weights, Gaussian peaks whose width
    follows the Fiori & Newbury (1978) law (130 eV at Mn Kα), Kramers (1923)
    bremsstrahlung and a thin-window SDD efficiency (Chantler et al. 2005 absorption). The
    expected cube is ``amounts (H, W, n_el) @ spectra (n_el, E)``; the data are Poisson
    counts of it. The HAADF image is the same phantom in Z-contrast, Σ amount·Z^1.7
    (screened Rutherford scattering; Howie 1979, Pennycook 1989), with 2 % Gaussian noise.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        Seed (or Generator) for the phantom and the noise; the phantom does not depend on
        the dose, so the same seed at two doses gives the same specimen.
    counts_per_pixel : float
        Mean total X-ray counts per pixel, 1–1000 (real maps: ~5–300).
    size : int
        Side of the map in pixels (8–512); the field of view stays 38.4 nm.
    channels : int
        Number of energy channels (16–4096).
    energy_scale, energy_offset : float
        keV per channel and energy of channel 0 (keV).
    rng : numpy.random.Generator, optional
        Overrides ``seed``.

    Returns
    -------
    Dataset
        kind ``"cube"`` ``(H, W, E)`` of counts (float32 holding integers), ``is_counts``,
        ``noise = Poisson(1.0)``, ``ground_truth`` the expected counts, ``haadf`` ``(H, W)``.
        ``metadata["element_maps_truth"]`` maps each element to its expected
        characteristic-line counts per pixel (all its lines, as detected; Cu includes the
        uniform grid contribution); ``metadata["haadf_truth"]`` is the clean HAADF image and
        ``metadata["particle_mask"]`` marks the pixels covered by a particle.

    Raises
    ------
    EmcoreError
        For a dose, size or energy axis out of range.
    """
    dose = _check_range(counts_per_pixel, *_EDS_DOSE, "number of counts per pixel")
    size = _check_int(size, 8, 512, "map size")
    channels = _check_int(channels, 16, 4096, "number of energy channels")
    scale = _check_range(energy_scale, 1e-4, 1.0, "energy scale", "keV per channel")
    offset = _check_range(energy_offset, -5.0, 50.0, "energy offset", "keV")
    if size * size * channels > 2**26:
        raise EmcoreError(
            f"A {size}×{size}×{channels} spectrum image is too large to simulate here "
            f"({size * size * channels / 2**20:.0f} M voxels, limit 64 M); use fewer pixels or channels."
        )
    gen = _make_rng(seed, rng)
    amounts, pixel, mask = _eds_phantom(size, gen)
    spectra, line_counts = _element_spectra(offset, scale, channels)
    _, z = _xray_lines()

    # Cu from the grid reaches the detector wherever the beam is: a uniform term.
    cu = EDS_ELEMENTS.index("Cu")
    detected = amounts.reshape(-1, amounts.shape[2]) @ line_counts
    grid_cu = _GRID_CU_FRACTION * detected.mean() / max(line_counts[cu], 1e-12)
    spectral_amounts = amounts.copy()
    spectral_amounts[..., cu] += grid_cu
    flat = spectral_amounts.reshape(-1, len(EDS_ELEMENTS)).astype(np.float32)
    expected = flat @ spectra.astype(np.float32)
    total = float(expected.sum(axis=1, dtype=np.float64).mean())
    if not total > 0:
        raise EmcoreError(
            f"The energy axis {offset:g}–{offset + scale * (channels - 1):g} keV holds no X-rays from a "
            f"{EDS_VOLTAGE_KV:g} kV beam; use an axis within about 0.1–{EDS_VOLTAGE_KV:g} keV."
        )
    norm = dose / total
    expected *= np.float32(norm)
    truth = expected.reshape(size, size, channels)

    zeta = np.array([z[el] for el in EDS_ELEMENTS], float) ** 1.7
    haadf_clean = (amounts @ zeta).astype(np.float64)
    haadf_clean = (haadf_clean / haadf_clean.max()).astype(np.float32)
    # HAADF noise first, so that the HAADF image does not depend on the EDS dose.
    haadf = (haadf_clean + 0.02 * gen.standard_normal(haadf_clean.shape)).astype(np.float32)
    counts = np.empty(truth.shape, np.float32)
    for r in range(0, size, 16):  # in row blocks: keeps the float64/int64 temporaries small
        counts[r : r + 16] = gen.poisson(truth[r : r + 16])

    maps = {el: (spectral_amounts[..., i] * line_counts[i] * norm).astype(np.float32) for i, el in enumerate(EDS_ELEMENTS)}
    hi_e = offset + scale * (channels - 1)
    return Dataset(
        data=counts,
        kind="cube",
        calibration=Calibration(
            pixel_size=pixel, pixel_unit="nm", energy_offset=offset, energy_scale=scale, energy_unit="keV"
        ),
        name=f"Simulated EDS + HAADF (Fe/Pt nanoparticles), {dose:g} counts/px",
        haadf=haadf,
        ground_truth=truth,
        is_counts=True,
        noise=Poisson(1.0),
        metadata={
            "source": "emcore.sim.eds",
            "seed": _seed_meta(seed, rng),
            "counts_per_pixel": dose,
            "elements": list(EDS_ELEMENTS),
            "xray_lines": main_xray_lines(max(offset, 0.1), hi_e),
            "voltage_kv": EDS_VOLTAGE_KV,
            "detector": "simulated SDD",
            "energy_resolution_mnka_ev": FWHM_MNKA_EV,
            "element_maps_truth": maps,
            "haadf_truth": haadf_clean,
            "particle_mask": mask,
        },
    )


def three_phase_cube(rng: np.random.Generator, h: int = 64, w: int = 64, e: int = 512,
                     counts: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """A rank-3 spectrum image for testing PCA-like methods: ``(clean, noisy)``, ``(h, w, e)``.

    Three phases — a matrix and two soft-edged round particles — each with its own spectrum
    (a bremsstrahlung-like exponential plus two Gaussian peaks, normalised to sum 1), mixed
    by abundances that sum to 1 in every pixel. ``clean`` is ``counts`` counts per pixel on
    average (about 0.04 per voxel at ``e = 512``), so before the noise the cube is exactly rank
    3; ``noisy`` is its Poisson sample. Both float32.
    """
    en = np.arange(e) / e

    def peak(c, s):
        return np.exp(-0.5 * ((en - c) / s) ** 2)

    bremsstrahlung = np.exp(-en / 0.25)
    spectra = np.stack([
        0.15 * bremsstrahlung + peak(0.15, 0.008) + 0.5 * peak(0.55, 0.01),
        0.15 * bremsstrahlung + peak(0.30, 0.008) + 0.6 * peak(0.70, 0.01),
        0.15 * bremsstrahlung + peak(0.42, 0.008) + 0.7 * peak(0.85, 0.01),
    ])
    spectra /= spectra.sum(axis=1, keepdims=True)
    yy, xx = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]

    def disk(cy, cx, r):
        return 1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - r) / 0.02))

    p1, p2 = disk(0.3, 0.3, 0.2), disk(0.68, 0.66, 0.24)
    abundance = np.stack([np.clip(1 - p1 - p2, 0, 1) + 0.05, p1, p2])
    abundance /= abundance.sum(axis=0, keepdims=True)
    clean = np.einsum("khw,ke->hwe", abundance, spectra) * counts
    return clean.astype(np.float32), rng.poisson(clean).astype(np.float32)
