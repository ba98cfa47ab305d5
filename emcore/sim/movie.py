"""HRTEM movie: low-dose frames of one phantom drifting by a known, sub-pixel amount."""

from __future__ import annotations

import math

import numpy as np

from emcore.data.dataset import Calibration, Dataset
from emcore.noise.models import Poisson
from emcore.sim.common import _check_int, _check_range, _make_rng, _seed_meta
from emcore.sim.hrem import _HREM_DOSE, HREM_VOLTAGE_KV, _hrem_render


def movie_example(
    seed=0, frames: int = 10, dose: float = 1.0, size: int = 256, max_drift_px: float = 3.0, *, rng=None
) -> Dataset:
    """A low-dose HRTEM movie: one phantom drifting by a known sub-pixel amount.

    Each frame is the phantom of :func:`hrem_phantom` moved by the drift (an exact Fourier
    shift of the rendered columns, so the field edges are real specimen, not wrap-around),
    with independent Poisson noise.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        Seed (or Generator) for the phantom, the drift and the noise.
    frames : int
        Number of frames, 2–500.
    dose : float
        Electrons per pixel per frame, 0.1–1000.
    size : int
        Frame side in pixels (16–2048).
    max_drift_px : float
        Largest displacement from the first frame, 0–64 pixels.
    rng : numpy.random.Generator, optional
        Overrides ``seed``.

    Returns
    -------
    Dataset
        kind ``"stack"`` ``(T, H, W)``; ``metadata["drift_px"]`` is the ``(T, 2)`` true
        (row, col) displacement of each frame's content relative to frame 0.
    """
    dose = _check_range(dose, *_HREM_DOSE, "dose", "e⁻/pixel")
    frames = _check_int(frames, 2, 500, "number of frames")
    size = _check_int(size, 16, 2048, "frame size")
    max_drift = _check_range(max_drift_px, 0, 64, "maximum drift", "pixels")
    gen = _make_rng(seed, rng)
    # A steady drift plus a small random walk, starting at zero, scaled to stay within
    # `max_drift` (stage drift is mostly linear over a short series).
    direction = gen.uniform(0, 2 * np.pi)
    total = gen.uniform(0.5, 0.9) * max_drift
    ramp = np.linspace(0, 1, frames)[:, None] * total * np.array([math.sin(direction), math.cos(direction)])
    walk = np.cumsum(gen.normal(0, 0.08 * max_drift, (frames, 2)), axis=0)
    drift = ramp + walk - walk[0]
    peak = np.hypot(*drift.T).max()
    if peak > max_drift > 0:
        drift *= max_drift / peak
    clean, params = _hrem_render((size, size), gen, shifts=drift, contrast="bright")
    model = Poisson(dose)
    noisy = model.sample(clean, gen)
    return Dataset(
        data=noisy,
        kind="stack",
        calibration=Calibration(pixel_size=params["pixel_size_nm"], pixel_unit="nm"),
        name=f"Simulated HRTEM movie (Pt on CeO2), {frames} frames, {dose:g} e⁻/px per frame",
        ground_truth=clean,
        is_counts=False,
        noise=model,
        metadata={
            "source": "emcore.sim.movie",
            "seed": _seed_meta(seed, rng),
            "dose": dose,
            "frames": frames,
            "voltage_kv": HREM_VOLTAGE_KV,
            "drift_px": drift.astype(np.float64),
            "phantom": params,
        },
    )
