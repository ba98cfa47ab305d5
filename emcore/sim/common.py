"""Pieces shared by the simulators: seeded generators, argument checks, smooth random fields."""

from __future__ import annotations

import numpy as np

from emcore.errors import EmcoreError


def _make_rng(seed, rng=None) -> np.random.Generator:
    """One Generator from ``rng`` (wins when given) or from an int ``seed`` / Generator."""
    if rng is not None:
        seed = rng
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EmcoreError(f"The seed must be a non-negative whole number or a numpy Generator, not {seed!r}.")
    return np.random.default_rng(int(seed))


def _seed_meta(seed, rng) -> int | None:
    """The seed to record in metadata: None when a Generator supplied the randomness."""
    if rng is None and isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        return int(seed)
    return None


def _check_range(value, lo: float, hi: float, what: str, unit: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and lo <= v <= hi):
        unit = f" {unit}" if unit else ""
        raise EmcoreError(f"The {what} must be between {lo:g} and {hi:g}{unit}; got {value!r}.")
    return v


def _check_int(value, lo: int, hi: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise EmcoreError(f"The {what} must be a whole number between {lo} and {hi}; got {value!r}.")
    return int(value)


class _SmoothField:
    """A slowly varying random field in [-1, 1]: a few long-wavelength plane waves.

    Used for the gradual thickness and defocus changes across a field of view. Drawing a fixed
    number of values keeps the rest of a phantom unchanged when one option is changed.
    """

    def __init__(self, rng: np.random.Generator, extent: float, n_waves: int = 3, max_cycles: float = 1.2):
        angle = rng.uniform(0, 2 * np.pi, n_waves)
        cycles = rng.uniform(0.25, max_cycles, n_waves)
        self.k = np.stack([np.sin(angle), np.cos(angle)], axis=1) * (cycles / extent)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, n_waves)
        amp = rng.uniform(0.3, 1.0, n_waves)
        self.amp = amp / amp.sum()

    def at(self, points: np.ndarray) -> np.ndarray:
        """Field at ``points`` (N, 2) given as (row, col)."""
        arg = 2 * np.pi * points @ self.k.T + self.phase
        return np.cos(arg) @ self.amp

    def grid(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Field on the grid ``rows × cols`` (separable: one outer product per wave)."""
        out = np.zeros((rows.size, cols.size))
        for (ky, kx), ph, a in zip(self.k, self.phase, self.amp):
            er = np.exp(1j * (2 * np.pi * ky * rows + ph))
            ec = np.exp(1j * 2 * np.pi * kx * cols)
            out += a * np.real(np.outer(er, ec))
        return out
