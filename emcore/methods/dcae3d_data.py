"""Spectral preparation and masked training batches of the 3D-DCAE method
(:mod:`emcore.methods.dcae3d`): energy window, binning and spreading back, count
normalisation, context channels and Bernoulli-masked crops."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError

# Pseudo-count added to each channel of the summed spectrum when it sets the shape within a
# bin: a channel with a handful of counts in the whole cube gets a share close to uniform
# instead of one dictated by its Poisson noise.
_SHAPE_PSEUDO_COUNT = 1.0
# Lowest mean rate (in units of the mean count per voxel) the output offset starts from.
_OFFSET_FLOOR = 1e-3
# Floor of the count scale (mean counts per voxel), so an all-zero cube does not divide by 0.
_SCALE_FLOOR = 1e-6


# ------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Prepared:
    """A spectrum image cropped and binned along energy for the network.

    Attributes
    ----------
    lo, hi : int
        Original channels ``[lo, hi)`` the network works on; outside them the result is the
        input unchanged (all-zero channels at the ends, or what the user cropped away).
    bin : int
        Original channels summed into one network channel (the last bin may be short).
    cube : ndarray, (H, W, E') float32
        Binned counts.
    weights : ndarray, (hi - lo,) float32
        Share of its bin's value that each original channel receives when the result is
        spread back (sums to 1 over every bin that holds counts; 0 for channels with no count
        in the whole cube).
    """

    lo: int
    hi: int
    bin: int
    cube: np.ndarray
    weights: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.cube.shape[2])


def _energy_window(ds: Dataset, energy_min: float | None, energy_max: float | None) -> tuple[int, int]:
    e = ds.data.shape[2]
    cal = ds.calibration
    lo, hi = 0, e
    unit = cal.energy_unit
    first, last = cal.energy_offset, cal.energy_offset + cal.energy_scale * (e - 1)
    if energy_min is not None:
        lo = max(lo, int(math.ceil((energy_min - cal.energy_offset) / cal.energy_scale - 1e-9)))
    if energy_max is not None:
        hi = min(hi, int(math.floor((energy_max - cal.energy_offset) / cal.energy_scale + 1e-9)) + 1)
    if hi - lo < 1:
        raise EmcoreError(
            f"The energy range {energy_min if energy_min is not None else first:g}–"
            f"{energy_max if energy_max is not None else last:g} {unit} holds no channel of {ds.name}, whose axis runs "
            f"from {first:g} to {last:g} {unit}; widen the range or leave it empty for the whole axis."
        )
    return lo, hi


def prepare_cube(data: np.ndarray, lo: int, hi: int, bin_energy: int) -> Prepared:
    """Crop ``data`` to channels ``[lo, hi)`` (then to those holding counts) and bin them.

    Parameters
    ----------
    data : (H, W, E) ndarray
        Counts, left unchanged.
    lo, hi : int
        Channel window asked for.
    bin_energy : int
        Channels summed per bin (at least 1).

    Returns
    -------
    Prepared
    """
    totals = data.sum(axis=(0, 1), dtype=np.float64)
    nz = np.flatnonzero(totals[lo:hi] != 0)
    if nz.size:  # drop empty channels at both ends: they stay exactly zero
        lo, hi = lo + int(nz[0]), lo + int(nz[-1]) + 1
    else:
        hi = lo + 1  # nothing to learn from; one channel keeps the shapes valid
    b = max(1, min(int(bin_energy), hi - lo))
    n = -(-(hi - lo) // b)
    h, w = data.shape[:2]
    crop = np.zeros((h, w, n * b), np.float32)
    crop[:, :, : hi - lo] = data[:, :, lo:hi]
    cube = crop.reshape(h, w, n, b).sum(axis=3, dtype=np.float32)
    t = totals[lo:hi]
    shape = np.where(t != 0, np.maximum(t, 0) + _SHAPE_PSEUDO_COUNT, 0.0)
    padded = np.zeros(n * b)
    padded[: hi - lo] = shape
    per_bin = padded.reshape(n, b).sum(axis=1)
    weights = padded.reshape(n, b) / np.where(per_bin > 0, per_bin, 1.0)[:, None]
    return Prepared(lo=lo, hi=hi, bin=b, cube=cube, weights=weights.reshape(-1)[: hi - lo].astype(np.float32))


def spread_back(binned, prep: Prepared):
    """Spread binned values ``(..., E')`` back over the original channels ``(..., hi - lo)``.

    Works on numpy arrays and (differentiably) on torch tensors.
    """
    b = prep.bin
    if isinstance(binned, np.ndarray):
        rep = np.repeat(binned, b, axis=-1)[..., : prep.hi - prep.lo]
        return (rep * prep.weights).astype(np.float32)

    rep = torch.repeat_interleave(binned, b, dim=-1)[..., : prep.hi - prep.lo]
    return rep * torch.as_tensor(prep.weights, dtype=binned.dtype, device=binned.device)


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    sd = float(a.std())
    return ((a - a.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def _spectrum_channel(cube: np.ndarray, scale: float) -> np.ndarray:
    """Log of the mean (absolute) spectrum, standardised: where on the energy axis a voxel lies."""
    mean = np.abs(cube).mean(axis=(0, 1), dtype=np.float64) / scale
    return _standardise(np.log(mean + 1e-3))


def _local_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the 26 neighbours of every voxel of an (E, H, W) array (edges replicated)."""
    from scipy.ndimage import uniform_filter

    s = uniform_filter(x.astype(np.float64), size=3, mode="nearest") * 27.0
    return ((s - x) / 26.0).astype(np.float32)


# ---------------------------------------------------------------------------- data source


class MaskedCubeSource:
    """Noise2Self batches from one spectrum image, for :func:`emcore.train.train`.

    Each item is a random spatial crop (``patch × patch`` pixels, the whole prepared energy
    axis), flipped and transposed at random. In the counts channel a Bernoulli fraction
    ``mask_rate`` of the voxels is hidden — replaced by zero (``fill="zero"``) or by the
    mean of their 26 neighbours (``fill="local_mean"``) — and those voxels, minus the fixed
    hold-out set, are the loss mask. A second channel marks the hidden voxels (1) — the
    network is told which values are missing, as in partial convolutions, so a hidden zero
    is not mistaken for a recorded zero. Context channels (the summed spectrum broadcast
    over the map, the HAADF image broadcast along energy) are never masked.

    Parameters
    ----------
    counts : (E, H, W) ndarray
        Normalised counts (counts / mean count per voxel).
    spectrum : (E,) ndarray
        Spectrum context channel.
    haadf : (H, W) ndarray or None
        Standardised HAADF image.
    mask_rate : float
        Fraction of voxels hidden per item, in (0, 1).
    fill : {"zero", "local_mean"}
    seed : int
        Seeds the hold-out set (the batches use the generator the training loop passes).
    holdout_rate : float
        Fraction of voxels kept out of the training targets for validation (0: none).

    Notes
    -----
    ``batch`` returns ``(inputs [B, C, E, h, w], targets [B, 1, E, h, w], mask [B, 1, E, h, w])``
    with ``C = 3`` (counts, hidden-voxel indicator, spectrum) or 4 (with the HAADF image last).
    """

    def __init__(self, counts, spectrum, haadf=None, *, mask_rate: float = 0.1, fill: str = "zero", seed: int = 0,
                 holdout_rate: float = 0.05, val_crops: int = 4, val_patch: int = 32):

        if not 0 < mask_rate < 1:
            raise EmcoreError(f"The masking rate must lie strictly between 0 and 1; got {mask_rate!r}.")
        if fill not in ("zero", "local_mean"):
            raise EmcoreError(f"Unknown mask fill '{fill}'; use zero or local_mean.")
        self.x = np.ascontiguousarray(counts, dtype=np.float32)
        self.e, self.h, self.w = self.x.shape
        self.spectrum = np.asarray(spectrum, np.float32).reshape(self.e)
        self.haadf = None if haadf is None else np.asarray(haadf, np.float32)
        self.mask_rate = float(mask_rate)
        self.fill = fill
        self.fill_values = _local_mean(self.x) if fill == "local_mean" else None
        g = np.random.default_rng([int(seed), 6])
        self.holdout = g.random(self.x.shape, dtype=np.float32) < holdout_rate if holdout_rate > 0 else None
        self.val_crops, self.val_patch = int(val_crops), int(val_patch)

    @property
    def channels(self) -> int:
        return 3 + (self.haadf is not None)

    def _hide(self, x: np.ndarray, fill: np.ndarray | None, hidden: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[hidden] = 0.0 if fill is None else fill[hidden]
        return out

    def _inputs(self, x: np.ndarray, hidden: np.ndarray, haadf: np.ndarray | None) -> np.ndarray:
        e, h, w = x.shape
        chans = [x, hidden.astype(np.float32), np.broadcast_to(self.spectrum[:, None, None], (e, h, w))]
        if haadf is not None:
            chans.append(np.broadcast_to(haadf[None], (e, h, w)))
        return np.stack(chans)

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):

        ph, pw = min(int(patch_size), self.h), min(int(patch_size), self.w)
        square = ph == pw
        xs, ts, ms = [], [], []
        for _ in range(batch_size):
            r0 = int(rng.integers(0, self.h - ph + 1))
            c0 = int(rng.integers(0, self.w - pw + 1))
            flip_r, flip_c, swap = rng.random(3) < 0.5
            win = (slice(None), slice(r0, r0 + ph), slice(c0, c0 + pw))
            x = self.x[win]
            fill = None if self.fill_values is None else self.fill_values[win]
            hold = None if self.holdout is None else self.holdout[win]
            hd = None if self.haadf is None else self.haadf[r0:r0 + ph, c0:c0 + pw]
            hidden = rng.random(x.shape, dtype=np.float32) < self.mask_rate
            target_mask = hidden if hold is None else hidden & ~hold
            inp = self._inputs(self._hide(x, fill, hidden), hidden, hd)
            tgt, msk = x[None], target_mask[None]
            # Flips and transposes of the map are symmetries of the problem (not of energy).
            if flip_r:
                inp, tgt, msk = inp[:, :, ::-1], tgt[:, :, ::-1], msk[:, :, ::-1]
            if flip_c:
                inp, tgt, msk = inp[..., ::-1], tgt[..., ::-1], msk[..., ::-1]
            if swap and square:
                inp, tgt, msk = (a.swapaxes(-1, -2) for a in (inp, tgt, msk))
            xs.append(np.ascontiguousarray(inp))
            ts.append(np.ascontiguousarray(tgt))
            ms.append(np.ascontiguousarray(msk, dtype=np.float32))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ms))

    def validation(self):
        """Fixed crops in which the hold-out voxels are hidden and scored."""

        if self.holdout is None:
            return []
        ph, pw = min(self.val_patch, self.h), min(self.val_patch, self.w)
        rows = np.unique(np.linspace(0, self.h - ph, num=2).round().astype(int))
        cols = np.unique(np.linspace(0, self.w - pw, num=2).round().astype(int))
        starts = [(r, c) for r in rows for c in cols][: self.val_crops]
        xs, ts, ms = [], [], []
        for r0, c0 in starts:
            win = (slice(None), slice(r0, r0 + ph), slice(c0, c0 + pw))
            x, hold = self.x[win], self.holdout[win]
            fill = None if self.fill_values is None else self.fill_values[win]
            hd = None if self.haadf is None else self.haadf[r0:r0 + ph, c0:c0 + pw]
            xs.append(np.ascontiguousarray(self._inputs(self._hide(x, fill, hold), hold, hd)))
            ts.append(np.ascontiguousarray(x[None]))
            ms.append(hold[None].astype(np.float32))
        return [(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ms)), None)]
