"""Training pairs from the user's own data: Noise2Noise from a movie, and noisy/clean pairs.

Noise2Noise (Lehtinen et al., ICML 2018) trains a denoiser on pairs of *independent noisy*
images of the same scene: with an L2 loss the network learns the conditional mean, which
is the clean image. Consecutive frames of a low-dose movie are such pairs once the stage
drift is removed (:func:`emcore.data.registration.align_stack`). Both sources follow the
:class:`emcore.train.DataSource` protocol and normalise each patch pair by the mean of
its input patch, like :mod:`emcore.train.simulated`.
"""

from __future__ import annotations

import numpy as np
import torch

from emcore.data.registration import align_stack
from emcore.errors import EmcoreError


def _augment(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    a, b = np.rot90(a, k), np.rot90(b, k)
    if rng.random() < 0.5:
        a, b = a[:, ::-1], b[:, ::-1]
    return a, b


def _norm_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = float(a.mean())
    scale = m if m > 1e-12 else 1.0
    return (a / scale).astype(np.float32), (b / scale).astype(np.float32)


def _to_tensors(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].copy())
    y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].copy())
    return x, y


class _PatchPairs:
    """Shared batching and fixed validation of the pair sources (subclasses define ``_pair``)."""

    n_val: int
    val_seed: int
    _val = None
    _val_has_clean = False

    @property
    def max_patch(self) -> int:
        raise NotImplementedError

    def _pair(self, patch: int, rng: np.random.Generator):
        raise NotImplementedError

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        return _to_tensors([self._pair(int(patch_size), rng) for _ in range(int(batch_size))])

    def validation(self):
        if self._val is None and self.n_val > 0:
            patch = min(128, self.max_patch)
            x, y = self.batch(self.n_val, patch, np.random.default_rng(self.val_seed))
            self._val = [(x, y, y if self._val_has_clean else None)]
        return self._val or []


class FramePairs(_PatchPairs):
    """Noise2Noise pairs: a crop of one registered frame as input, the same crop of another as target.

    Parameters
    ----------
    stack : (T, H, W) array
        The movie (at least 2 frames); not modified.
    register : bool
        Remove drift first (default). Without it, any motion between frames blurs the result.
    neighbours : int
        Pair frames at most this far apart in time (beam damage changes the sample slowly).
    n_val : int
        Fixed validation pairs (taken from a seed of their own).
    """

    def __init__(self, stack, *, register: bool = True, neighbours: int = 2, n_val: int = 4, val_seed: int = 54321):
        s = np.asarray(stack, dtype=np.float32)
        if s.ndim != 3 or s.shape[0] < 2:
            raise EmcoreError(f"Noise2Noise needs a stack of at least 2 frames, not data of shape {s.shape}.")
        if register:
            aligned, self.shifts, valid = align_stack(s)
            self.frames = np.ascontiguousarray(aligned[:, valid[0], valid[1]])
        else:
            self.frames, self.shifts = s.copy(), np.zeros((s.shape[0], 2))
        self.neighbours = max(1, int(neighbours))
        self.n_val, self.val_seed = int(n_val), int(val_seed)
        self._val = None

    @property
    def max_patch(self) -> int:
        return int(min(self.frames.shape[1:]))

    def _pair(self, patch: int, rng: np.random.Generator):
        t, h, w = self.frames.shape
        if patch > min(h, w):
            raise EmcoreError(f"The patch ({patch} px) is larger than the registered frames ({h}×{w}); use a smaller patch.")
        i = int(rng.integers(t))
        offsets = [d for d in range(-self.neighbours, self.neighbours + 1) if d != 0 and 0 <= i + d < t]
        j = i + int(rng.choice(offsets))
        r, c = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        a = self.frames[i, r:r + patch, c:c + patch]
        b = self.frames[j, r:r + patch, c:c + patch]
        return _norm_pair(*_augment(a, b, rng))


class ImagePairs(_PatchPairs):
    """Supervised pairs from the user's noisy and clean images (same shape: image or stack)."""

    _val_has_clean = True

    def __init__(self, noisy, clean, *, n_val: int = 4, val_seed: int = 54321):
        n, c = np.asarray(noisy, np.float32), np.asarray(clean, np.float32)
        if n.shape != c.shape:
            raise EmcoreError(f"The noisy data {n.shape} and the clean data {c.shape} must have the same shape.")
        if n.ndim == 2:
            n, c = n[None], c[None]
        if n.ndim != 3:
            raise EmcoreError(f"Noisy/clean pairs must be images or stacks of images, not data of shape {n.shape}.")
        self.noisy, self.clean = n, c
        self.n_val, self.val_seed = int(n_val), int(val_seed)
        self._val = None

    @property
    def max_patch(self) -> int:
        return int(min(self.noisy.shape[1:]))

    def _pair(self, patch: int, rng: np.random.Generator):
        t, h, w = self.noisy.shape
        if patch > min(h, w):
            raise EmcoreError(f"The patch ({patch} px) is larger than the images ({h}×{w}); use a smaller patch.")
        i = int(rng.integers(t))
        r, c = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        return _norm_pair(*_augment(self.noisy[i, r:r + patch, c:c + patch], self.clean[i, r:r + patch, c:c + patch], rng))
