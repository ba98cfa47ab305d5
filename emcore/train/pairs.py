"""Training pairs from the user's own data: Noise2Noise from a movie, and noisy/clean pairs.

Noise2Noise (Lehtinen et al., ICML 2018) trains a denoiser on pairs of *independent noisy*
images of the same scene: with an L2 loss the network learns the conditional mean, which
is the clean image. Consecutive frames of a low-dose movie are such pairs once the stage
drift is removed (:func:`emcore.data.registration.align_stack`). Both sources follow the
:class:`emcore.train.DataSource` protocol and normalise each patch pair by the mean of
its input patch, like :mod:`emcore.train.simulated`. With ``prior_fn`` (networks with a prior
channel, :mod:`emcore.methods.prior`), the prior of each whole input frame is computed once and
the same crop of it becomes the input's second channel.
"""

from __future__ import annotations

import numpy as np
import torch

from emcore.data.registration import align_stack
from emcore.errors import EmcoreError


def _augment(*arrays: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    k = int(rng.integers(4))
    arrays = tuple(np.rot90(a, k) for a in arrays)
    if rng.random() < 0.5:
        arrays = tuple(a[:, ::-1] for a in arrays)
    return arrays


def _norm_pair(a: np.ndarray, *rest: np.ndarray) -> tuple[np.ndarray, ...]:
    m = float(a.mean())
    scale = m if m > 1e-12 else 1.0
    return tuple((x / scale).astype(np.float32) for x in (a, *rest))


def _to_tensors(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (input, target) or, with a prior, (input, prior, target): inputs [B, 1 or 2, P, P]."""
    x = torch.from_numpy(np.stack([np.stack(p[:-1]) for p in pairs]).copy())
    y = torch.from_numpy(np.stack([p[-1] for p in pairs])[:, None].copy())
    return x, y


def _priors(frames: np.ndarray, prior_fn) -> np.ndarray | None:
    """The prior of every whole input frame (computed once), or None without a prior."""
    if prior_fn is None:
        return None
    return np.stack([np.asarray(prior_fn(f), np.float32) for f in frames])


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

    def __init__(self, stack, *, register: bool = True, neighbours: int = 2, n_val: int = 4, val_seed: int = 54321,
                 prior_fn=None):
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
        self.priors = _priors(self.frames, prior_fn)
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
        if self.priors is not None:
            return _norm_pair(*_augment(a, self.priors[i, r:r + patch, c:c + patch], b, rng=rng))
        return _norm_pair(*_augment(a, b, rng=rng))


class ImagePairs(_PatchPairs):
    """Supervised pairs from the user's noisy and clean images (same shape: image or stack)."""

    _val_has_clean = True

    def __init__(self, noisy, clean, *, n_val: int = 4, val_seed: int = 54321, prior_fn=None):
        n, c = np.asarray(noisy, np.float32), np.asarray(clean, np.float32)
        if n.shape != c.shape:
            raise EmcoreError(f"The noisy data {n.shape} and the clean data {c.shape} must have the same shape.")
        if n.ndim == 2:
            n, c = n[None], c[None]
        if n.ndim != 3:
            raise EmcoreError(f"Noisy/clean pairs must be images or stacks of images, not data of shape {n.shape}.")
        self.noisy, self.clean = n, c
        self.n_val, self.val_seed = int(n_val), int(val_seed)
        self.priors = _priors(n, prior_fn)
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
        crops = [self.noisy[i, r:r + patch, c:c + patch], self.clean[i, r:r + patch, c:c + patch]]
        if self.priors is not None:
            crops.insert(1, self.priors[i, r:r + patch, c:c + patch])
        return _norm_pair(*_augment(*crops, rng=rng))
