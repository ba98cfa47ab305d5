"""Simulated example datasets with ground truth: HRTEM nanoparticle, EDS + HAADF, drift movie.

Three built-in examples, each a :class:`~emcore.data.dataset.Dataset` holding noisy data, the
noise-free ``ground_truth`` and the noise model, so that every denoiser can be scored:

* ``"hrem"`` — an HRTEM image of a faceted Pt nanoparticle on a CeO2 support in profile
  view, the system of Mohan et al. (2022), built by :func:`hrem_phantom`;
* ``"eds"`` — an EDS spectrum image ``(H, W, E)`` of Fe-core/Pt-shell and alloy particles on
  a C/SiOx film, with X-ray lines from exspy's element database and a HAADF image of the
  same phantom (:func:`eds_example`);
* ``"movie"`` — a stack of low-dose HRTEM frames of one phantom drifting by a known,
  sub-pixel amount (:func:`movie_example`).

The phantoms are cheap stand-ins for multislice and Monte-Carlo simulation: they reproduce
what a denoiser sees (lattice periods, contrast, shapes, dose statistics), not a quantitative
image or spectrum. All randomness comes from an explicit ``numpy.random.Generator``; the same
seed gives the same arrays. Arrays are float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.sim.eds import _EDS_DOSE, eds_example
from emcore.sim.hrem import _HREM_DOSE, hrem_example
from emcore.sim.movie import movie_example

# =====================================================================================
# Registry of examples
# =====================================================================================


@dataclass(frozen=True)
class ExampleInfo:
    """What the app and the CLI show about one built-in example.

    ``dose_*`` are in the example's own dose unit (``dose_label``): electrons per pixel for
    the HRTEM image and movie, mean X-ray counts per pixel for the EDS cube.
    """

    name: str
    label: str
    description: str
    dose_label: str
    dose_default: float
    dose_min: float
    dose_max: float
    kind: str
    build: Callable[..., Dataset] = field(repr=False, compare=False)


def _build_hrem(seed, dose, size):
    return hrem_example(seed=seed, dose=dose, **({} if size is None else {"size": size}))


def _build_eds(seed, dose, size):
    return eds_example(seed=seed, counts_per_pixel=dose, **({} if size is None else {"size": size}))


def _build_movie(seed, dose, size):
    return movie_example(seed=seed, dose=dose, **({} if size is None else {"size": size}))


EXAMPLES: dict[str, ExampleInfo] = {
    "hrem": ExampleInfo(
        "hrem",
        "HRTEM image — Pt nanoparticle on CeO₂",
        "Simulated 300 kV HRTEM image of a faceted Pt nanoparticle on a CeO₂ support with "
        "shot noise at the chosen dose (Mohan et al. 2022 worked at ~0.45 e⁻/px).",
        "Dose (e⁻/pixel)",
        1.0,
        *_HREM_DOSE,
        "image",
        _build_hrem,
    ),
    "eds": ExampleInfo(
        "eds",
        "EDS spectrum image + HAADF — Fe/Pt nanoparticles",
        "Simulated 200 kV EDS map (128×128×1024) of Fe-core/Pt-shell and alloy particles on "
        "C/SiOx, with real X-ray line energies, Poisson counts and a matching HAADF image.",
        "Counts per pixel",
        50.0,
        *_EDS_DOSE,
        "cube",
        _build_eds,
    ),
    "movie": ExampleInfo(
        "movie",
        "HRTEM movie — 10 drifting frames",
        "Ten low-dose frames of the Pt/CeO₂ phantom drifting by up to 3 px (known, sub-pixel), "
        "each with independent shot noise: for frame registration and multi-frame methods.",
        "Dose per frame (e⁻/pixel)",
        1.0,
        *_HREM_DOSE,
        "stack",
        _build_movie,
    ),
}


def example(name: str, seed=0, dose: float | None = None, size: int | None = None) -> Dataset:
    """Build a built-in example by name.

    Parameters
    ----------
    name : {"hrem", "eds", "movie"}
        Which example (see :data:`EXAMPLES`).
    seed : int or numpy.random.Generator
        Seed for the phantom and the noise.
    dose : float, optional
        e⁻/pixel for ``"hrem"`` and ``"movie"``, counts/pixel for ``"eds"``; None for the
        example's default.
    size : int, optional
        Image side in pixels; None for the example's default.

    Returns
    -------
    Dataset

    Raises
    ------
    EmcoreError
        For an unknown name or a dose or size out of range.
    """
    info = EXAMPLES.get(name) if isinstance(name, str) else None
    if info is None:
        raise EmcoreError(f"Unknown example {name!r}; the built-in examples are {', '.join(EXAMPLES)}.")
    return info.build(seed, info.dose_default if dose is None else dose, size)
