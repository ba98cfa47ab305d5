"""Training pairs from a cached set of physics-based (multislice) HRTEM images.

:class:`CachedPairs` is the counterpart of :class:`emcore.train.simulated.SimulatedPairs` for clean
images computed once and stored on disk — by default the abTEM multislice images of a Pt
nanoparticle on CeO2 made by ``benchmarks/make_abtem_set.py`` (the kind of training set of
Vincent et al., Microsc. Microanal. 27, 2021, and Mohan et al., IEEE TCI 8, 2022). Every
patch is a random crop of a random clean image, optionally resampled to a random pixel
size, with fresh Poisson or Poisson–Gaussian noise at a dose drawn log-uniformly, random
flips and 90° rotations, and the noisy patch divided by its own mean (the clean one by the
same number), exactly as :class:`~emcore.train.simulated.SimulatedPairs` does, so the two sources are
interchangeable in :func:`emcore.train.train`.

The cache is a ``.npz`` file holding ``images`` (N, H, W) of non-negative intensities and,
for pixel-size resampling, ``pixel_size_nm`` (N,) or one number; ``wave_index`` (N,), when
present, groups the images of one exit wave (its defocus series) so that validation is made
from exit waves never used for training. It is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from emcore.errors import EmcoreError
from emcore.train.simulated import NOISE_MODELS, training_pair

DEFAULT_CACHE = "runs/abtem_set.npz"
_REMAKE = "make it with benchmarks/make_abtem_set.py (see benchmarks/README_abtem.md)"


def load_cache(path) -> dict:
    """Read and check a training-set cache; return ``images`` float32 (N, H, W) and the rest.

    Raises
    ------
    EmcoreError
        When the file is missing or unreadable, holds pickled objects, or its images are not a
        3-D stack of finite, non-negative numbers (with one sentence saying which).
    """
    path = Path(path)
    if not path.is_file():
        raise EmcoreError(f"There is no training-set cache at {path}; {_REMAKE}.")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise EmcoreError(f"{path} holds a single array, not a training-set cache (.npz with 'images'); "
                          f"{_REMAKE}.")
    if magic[:4] != b"PK\x03\x04":
        raise EmcoreError(f"{path} is not a readable .npz training-set cache (not a zip archive); {_REMAKE}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except EmcoreError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise EmcoreError(f"{path} holds pickled Python objects, which are not read for safety; "
                              f"a training-set cache holds plain numeric arrays only — {_REMAKE}.") from err
        raise EmcoreError(f"{path} could not be read as a training-set cache ({err}); {_REMAKE}.") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise EmcoreError(f"{path} is not a readable .npz training-set cache ({err}); {_REMAKE}.") from err

    if "images" not in arrays:
        raise EmcoreError(f"{path} has no 'images' array (it has: {', '.join(sorted(arrays)) or 'nothing'}); "
                          f"{_REMAKE}.")
    images = arrays["images"]
    if images.ndim != 3:
        raise EmcoreError(f"The images in {path} must be a stack (N, H, W) of 2-D images, not an array of "
                          f"shape {images.shape}.")
    if images.shape[0] == 0 or min(images.shape[1:]) < 8:
        raise EmcoreError(f"The images in {path} are too few or too small ({images.shape}) to train on.")
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)) \
            or images.dtype == np.bool_:
        raise EmcoreError(f"The images in {path} must be real numbers (intensities), not {images.dtype}.")
    images = images.astype(np.float32, copy=False)
    bad = ~np.isfinite(images).all(axis=(1, 2))
    if bad.any():
        raise EmcoreError(f"{int(bad.sum())} of the {len(images)} images in {path} hold NaN or infinite values "
                          f"(first: image {int(np.flatnonzero(bad)[0])}); regenerate the cache.")
    if float(images.min()) < 0:
        raise EmcoreError(f"The images in {path} hold negative values ({float(images.min()):.3g}); a training "
                          f"cache must hold clean intensities (≥ 0), as shot noise is drawn from them.")
    means = images.mean(axis=(1, 2))
    if not (means > 0).all():
        raise EmcoreError(f"Image {int(np.flatnonzero(means <= 0)[0])} of {path} is blank (mean 0); "
                          f"remove it or regenerate the cache.")
    out = {"images": images}

    if "pixel_size_nm" in arrays:
        px = np.asarray(arrays["pixel_size_nm"])
        if not np.issubdtype(px.dtype, np.number) or px.ndim > 1 or (px.ndim == 1 and len(px) != len(images)):
            raise EmcoreError(f"'pixel_size_nm' in {path} must be one number or one per image "
                              f"({len(images)}), not an array of shape {px.shape} and type {px.dtype}.")
        px = np.broadcast_to(px.astype(np.float64), (len(images),)).copy()
        if not (np.isfinite(px).all() and (px > 0).all()):
            raise EmcoreError(f"'pixel_size_nm' in {path} must hold positive pixel sizes in nm.")
        out["pixel_size_nm"] = px
    if "wave_index" in arrays:
        w = np.asarray(arrays["wave_index"])
        if w.shape != (len(images),) or not np.issubdtype(w.dtype, np.integer):
            raise EmcoreError(f"'wave_index' in {path} must hold one integer per image ({len(images)}), "
                              f"not an array of shape {w.shape} and type {w.dtype}.")
        out["wave_index"] = w.astype(np.int64)
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except (TypeError, ValueError):
            meta = {}
    out["meta"] = meta if isinstance(meta, dict) else {}
    return out


@dataclass
class CachedPairs:
    """A :class:`emcore.train.DataSource` of (noisy, clean) patches of cached clean images.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` cache (see :func:`load_cache`), by default ``runs/abtem_set.npz``.
    dose_range : (float, float)
        Electrons per pixel, drawn log-uniformly for each patch (Poisson part), as in
        :class:`~emcore.train.simulated.SimulatedPairs`; the dose multiplies the clean intensity as stored
        (vacuum = 0.45 in the abTEM set, as in the reference images).
    noise : {"poisson", "poisson_gaussian", "mixed"}
        Poisson shot noise at the dose; Poisson–Gaussian ``clean + N(0, a·clean + b²)`` with
        ``a = 1/dose`` and ``b`` from ``b_range`` (relative to the clean patch mean); or either
        at random.
    b_range : (float, float)
        Read-noise standard deviation, relative to the clean mean, for the Gaussian part.
    pixel_size_range : (float, float) or None
        nm per pixel drawn log-uniformly for each patch, the image being resampled (cubic
        spline, Gaussian anti-aliasing when shrinking) from its stored pixel size; None keeps
        the stored pixels (plain crops). Needs ``pixel_size_nm`` in the cache. Where a patch at
        the drawn size would not fit in the image, the largest size that fits is used.
    augment : bool
        Random flips and 90° rotations.
    n_val : int
        Fixed validation patches (own seed), with their clean images for PSNR.
    val_patch : int
        Side of the validation patches.
    val_seed : int
        Seed of the validation set (never used for training batches).
    holdout : float
        Fraction of the exit waves (``wave_index`` groups, else single images) kept out of
        training and used for validation only; at least one when there are two or more groups,
        none when there is a single one (validation then reuses the training images).
    """

    path: str | Path = DEFAULT_CACHE
    dose_range: tuple[float, float] = (0.3, 5.0)
    noise: str = "mixed"
    b_range: tuple[float, float] = (0.0, 0.05)
    pixel_size_range: tuple[float, float] | None = (0.0045, 0.02)
    augment: bool = True
    n_val: int = 8
    val_patch: int = 128
    val_seed: int = 12345
    holdout: float = 0.1
    meta: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        lo, hi = (float(x) for x in self.dose_range)
        if not (0 < lo <= hi <= 1e4):
            raise EmcoreError(f"The dose range must satisfy 0 < low ≤ high ≤ 10000 e⁻/px, not {self.dose_range}.")
        if self.noise not in NOISE_MODELS:
            raise EmcoreError(f"Unknown training noise {self.noise!r}; use one of {', '.join(NOISE_MODELS)}.")
        if not (0 <= float(self.holdout) < 1):
            raise EmcoreError(f"The validation hold-out must be a fraction in [0, 1), not {self.holdout}.")
        cache = load_cache(self.path)
        self.images = cache["images"]
        self.meta = cache["meta"]
        self.pixel_size_nm = cache.get("pixel_size_nm")
        if self.pixel_size_range is not None:
            p_lo, p_hi = (float(x) for x in self.pixel_size_range)
            if not (0 < p_lo <= p_hi):
                raise EmcoreError(f"The pixel-size range must satisfy 0 < low ≤ high (nm), not {self.pixel_size_range}.")
            if self.pixel_size_nm is None:
                raise EmcoreError(f"{self.path} gives no 'pixel_size_nm', so its images cannot be resampled to "
                                  f"other pixel sizes; train with pixel_size_range=None (stored pixels).")
        groups = cache.get("wave_index", np.arange(len(self.images)))
        names = np.unique(groups)
        n_hold = 0
        if len(names) >= 2 and self.holdout > 0:
            n_hold = min(max(1, int(round(self.holdout * len(names)))), len(names) - 1)
        held = np.random.default_rng(self.val_seed).permutation(names)[:n_hold]
        is_val = np.isin(groups, held)
        self.train_index = np.flatnonzero(~is_val)
        self.val_index = np.flatnonzero(is_val) if n_hold else self.train_index
        self._val = None

    def __len__(self) -> int:
        return len(self.images)

    # -- one clean patch
    def _clean_patch(self, index_pool: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        i = int(index_pool[rng.integers(len(index_pool))])
        img = self.images[i]
        h, w = img.shape
        if self.pixel_size_range is None:
            if min(h, w) < size:
                raise EmcoreError(f"The cached images ({h}×{w} px) are smaller than the {size}-px training patch; "
                                  f"use a smaller patch.")
            y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            return img[y:y + size, x:x + size].copy()
        p_lo, p_hi = self.pixel_size_range
        target = float(math.exp(rng.uniform(math.log(p_lo), math.log(p_hi))))
        native = float(self.pixel_size_nm[i])
        # Output pixels per stored pixel; the window (size / zoom stored px) must fit in the image.
        zoom = native / target
        zoom = max(zoom, (size + 1) / (min(h, w) - 1))
        span = size / zoom
        y0 = float(rng.uniform(0, h - 1 - span))
        x0 = float(rng.uniform(0, w - 1 - span))
        return _resample(img, y0, x0, size, zoom)

    def _pair(self, index_pool: np.ndarray, size: int, rng: np.random.Generator):
        clean = self._clean_patch(index_pool, size, rng)
        return training_pair(clean, self.dose_range, self.noise, self.b_range, self.augment, rng)

    def _batch(self, index_pool, batch_size: int, patch_size: int, rng: np.random.Generator):
        if int(patch_size) < 8:
            raise EmcoreError(f"Training patches must be at least 8 px wide, not {patch_size}.")
        pairs = [self._pair(index_pool, int(patch_size), rng) for _ in range(int(batch_size))]
        noisy = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].copy())
        clean = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].copy())
        return noisy, clean

    def batch(self, batch_size: int, patch_size: int, rng: np.random.Generator):
        """``batch_size`` (noisy, clean) patch pairs, float32 tensors [B, 1, P, P]."""
        return self._batch(self.train_index, batch_size, patch_size, rng)

    def validation(self):
        """One fixed batch ``[(noisy, target, clean)]`` from the held-out exit waves."""
        if self._val is None:
            rng = np.random.default_rng(self.val_seed)
            noisy, clean = self._batch(self.val_index, self.n_val, self.val_patch, rng)
            self._val = [(noisy, clean, clean)]
        return self._val


def data_set_card(meta: dict, n_images: int) -> dict:
    """What a weights card records of the training set: generator, its command, versions, settings."""
    settings = meta.get("settings") or {}
    return {"images": int(n_images), "generator": meta.get("generator"), "command": meta.get("command"),
            "versions": meta.get("versions"),
            "settings": {k: v for k, v in settings.items() if isinstance(v, (int, float, str, list, bool))}}


def _resample(img: np.ndarray, y0: float, x0: float, size: int, zoom: float) -> np.ndarray:
    """``size``² samples of ``img`` at spacing ``1/zoom`` stored pixels from ``(y0, x0)``.

    Pixel centres map as in :func:`skimage.transform.rescale`; shrinking (zoom < 1) first
    blurs with a Gaussian of σ = (1/zoom − 1)/2 stored pixels against aliasing (the choice of
    scikit-image's ``anti_aliasing``); values are cubic-spline interpolated and clipped at 0.
    """
    step = 1.0 / zoom
    coords = y0 + (np.arange(size) + 0.5) * step - 0.5, x0 + (np.arange(size) + 0.5) * step - 0.5
    pad = 4
    r0 = max(int(math.floor(min(coords[0][0], y0))) - pad, 0)
    c0 = max(int(math.floor(min(coords[1][0], x0))) - pad, 0)
    r1 = min(int(math.ceil(coords[0][-1])) + pad + 1, img.shape[0])
    c1 = min(int(math.ceil(coords[1][-1])) + pad + 1, img.shape[1])
    win = np.asarray(img[r0:r1, c0:c1], np.float64)
    if zoom < 1:
        win = ndimage.gaussian_filter(win, sigma=(step - 1) / 2, mode="reflect")
    yy, xx = np.meshgrid(coords[0] - r0, coords[1] - c0, indexing="ij")
    out = ndimage.map_coordinates(win, [yy, xx], order=3, mode="reflect")
    return np.clip(out, 0, None).astype(np.float32)
