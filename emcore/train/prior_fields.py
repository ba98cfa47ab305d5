"""Training examples for networks with a prior channel (``prior=True``): whole noisy fields.

A network with a prior channel (:class:`models.UNet` / :class:`models.DnCNN` with
``prior=True``) reads a noisy patch *and* the same patch of a prior estimate made from the
whole noisy frame (the workbench's self-calibrated Fourier Wiener filter, whose strength on
lattice images comes from seeing the whole field). So the prior of a training patch must be
computed on a whole field, as at inference, not on the patch: :class:`PriorFields` keeps a
pool of whole simulated fields — a clean multislice image of the cached abTEM set, resampled
to a random pixel size, with fresh noise drawn as for the other sources
(:func:`emcore.train.simulated.draw_noise`) and its prior — and cuts the training patches
out of them with random flips and rotations. One field of the pool is replaced every
``refresh_every`` batches (a new image, pixel size, dose and noise draw), so the pool keeps
changing while the cost of the prior (about 0.6 s for a 512² field on 2 cores) stays a
fraction of a training step. Fields are divided by the mean of their noisy image, as
:func:`emcore.train.simulated.normalise` does at inference for the whole frame.

Validation patches come from exit waves held out of training (as in
:class:`emcore.train.physics_set.CachedPairs`).

The prior is computed by a function passed in (``prior_fn``: noisy frame → prior, both in
the data's units), so this module does not depend on the methods layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from emcore.errors import EmcoreError
from emcore.train.physics_set import CachedPairs, _resample
from emcore.train.simulated import draw_noise

PriorFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class PriorFields:
    """A :class:`emcore.train.DataSource` of ([noisy, prior], clean) patches of whole noisy fields.

    Parameters
    ----------
    prior_fn : callable
        Noisy frame (H, W) → prior estimate (H, W), same units.
    path : str or Path
        The abTEM set (see :func:`emcore.train.physics_set.load_cache`).
    make_clean : callable, optional
        ``make_clean(rng, side)`` → a clean field (side × side) instead of the abTEM set (e.g. the
        workbench's phantoms); validation fields then come from the validation seed.
    dose_range, noise, b_range, pixel_size_range
        As for :class:`~emcore.train.physics_set.CachedPairs`.
    field_size : int
        Largest side of a field (the whole resampled image when smaller).
    pool : int
        Fields kept at once.
    refresh_every : int
        Batches between replacing one field of the pool.
    n_val, val_patch, val_seed, holdout
        Validation: ``n_val`` fields from held-out exit waves, one patch of each.
    """

    prior_fn: PriorFn
    path: str = "runs/abtem_set.npz"
    make_clean: Callable[[np.random.Generator, int], np.ndarray] | None = None
    dose_range: tuple[float, float] = (0.1, 20.0)
    noise: str = "mixed"
    b_range: tuple[float, float] = (0.0, 0.1)
    pixel_size_range: tuple[float, float] | None = (0.0045, 0.02)
    field_size: int = 512
    pool: int = 48
    refresh_every: int = 4
    n_val: int = 8
    val_patch: int = 128
    val_seed: int = 12345
    holdout: float = 0.1
    _fields: list = field(init=False, repr=False, default_factory=list)

    def __post_init__(self):
        if int(self.field_size) < 32 or int(self.pool) < 1 or int(self.refresh_every) < 1:
            raise EmcoreError("Prior fields need a field of at least 32 px, a pool of at least one field "
                              "and a refresh interval of at least one batch.")
        if self.make_clean is not None:
            self.images, self.meta = None, {}
        else:
            self.images = CachedPairs(path=self.path, dose_range=self.dose_range, noise=self.noise,
                                      b_range=self.b_range, pixel_size_range=self.pixel_size_range,
                                      n_val=0, val_seed=self.val_seed, holdout=self.holdout)
            self.meta = self.images.meta
        self._val = None
        self._batches = 0
        self._rng = None

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else 0

    def _pool(self, validation: bool = False) -> np.ndarray | None:
        if self.images is None:
            return None
        return self.images.val_index if validation else self.images.train_index

    # -- one whole field
    def _clean_field(self, pool: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        if self.make_clean is not None:
            return np.asarray(self.make_clean(rng, int(self.field_size)), np.float32)
        src = self.images
        i = int(pool[rng.integers(len(pool))])
        img = src.images[i]
        h, w = img.shape
        side = int(self.field_size)
        if self.pixel_size_range is None or src.pixel_size_nm is None:
            s = min(side, h, w)
            y, x = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
            return img[y:y + s, x:x + s].copy()
        p_lo, p_hi = self.pixel_size_range
        zoom = float(src.pixel_size_nm[i]) / float(math.exp(rng.uniform(math.log(p_lo), math.log(p_hi))))
        s = max(32, min(side, int((min(h, w) - 2) * zoom)))
        zoom = max(zoom, (s + 1) / (min(h, w) - 1))
        span = s / zoom
        y0, x0 = float(rng.uniform(0, h - 1 - span)), float(rng.uniform(0, w - 1 - span))
        return _resample(img, y0, x0, s, zoom)

    def _field(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(3, S, S) float32: noisy, prior and clean, divided by the noisy mean."""
        clean = self._clean_field(pool, rng)
        noisy = draw_noise(clean, self.dose_range, self.noise, self.b_range, rng).sample(clean, rng)
        prior = np.asarray(self.prior_fn(noisy), np.float32)
        m = float(noisy.mean())
        scale = m if m > 1e-12 else 1.0
        return (np.stack([noisy, prior, clean]) / np.float32(scale)).astype(np.float32)

    @staticmethod
    def _patch(f: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        s = f.shape[-1]
        if size > s:
            raise EmcoreError(f"The {size}-px training patch is larger than a {s}-px field; use a smaller patch.")
        y, x = int(rng.integers(s - size + 1)), int(rng.integers(s - size + 1))
        p = np.rot90(f[:, y:y + size, x:x + size], int(rng.integers(4)), axes=(1, 2))
        return p[:, :, ::-1] if rng.random() < 0.5 else p

    @staticmethod
    def _tensors(patches: list[np.ndarray]):
        a = np.stack(patches)
        return torch.from_numpy(np.ascontiguousarray(a[:, :2])), torch.from_numpy(np.ascontiguousarray(a[:, 2:]))

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        """``batch_size`` patches: inputs [B, 2, P, P] (noisy, prior), targets [B, 1, P, P]."""
        pool = self._pool()
        while len(self._fields) < int(self.pool):
            self._fields.append(self._field(pool, rng))
        self._batches += 1
        if self._batches % int(self.refresh_every) == 0:
            self._fields[int(rng.integers(len(self._fields)))] = self._field(pool, rng)
        fits = [f for f in self._fields if f.shape[-1] >= patch_size] or self._fields
        picks = [fits[int(rng.integers(len(fits)))] for _ in range(int(batch_size))]
        return self._tensors([self._patch(f, int(patch_size), rng) for f in picks])

    def validation(self):
        """One fixed batch ``[(inputs, clean, clean)]`` from fields of held-out exit waves."""
        if self._val is None and self.n_val > 0:
            rng = np.random.default_rng(self.val_seed)
            patches = []
            for _ in range(int(self.n_val)):
                f = self._field(self._pool(validation=True), rng)
                patches.append(self._patch(f, min(int(self.val_patch), f.shape[-1]), rng))
            side = min(p.shape[-1] for p in patches)
            x, y = self._tensors([p[:, :side, :side] for p in patches])
            self._val = [(x, y, y)]
        return self._val or []
