"""PCA of a spectrum image larger than memory, in two passes over blocks of rows.

The same decomposition as :func:`emcore.methods.pca.denoise_pca` (Keenan & Kotula 2004
Poisson weighting, truncated SVD from the eigen-decomposition of the channels' Gram matrix,
the number of components from :func:`emcore.methods.pca.estimate_n_components`), computed
from a :class:`~emcore.io.lazy.LazyDataset` without ever holding the cube:

1. one pass accumulates, block by block, ``M = Xᵀ diag(1/a) X`` (channels × channels, float64)
   and the summed spectrum ``b``, with ``a`` each pixel's total counts. The weighted Gram matrix
   is then ``G = diag(b)^(-1/2) M diag(b)^(-1/2)`` — the ``X̃ᵀX̃`` of ``denoise_pca``, since
   ``X̃ = diag(a)^(-1/2) X diag(b)^(-1/2)`` and a block holds whole spectra, so its ``a`` is known;
2. ``G``'s leading eigenvectors ``V`` give the reconstruction of each block,
   ``diag(√a) X̃ V Vᵀ diag(√b)``, which :func:`pca_out_of_core` hands back as a function of the
   block, for the caller to write block by block.

With the number of components unset it is chosen on the data as the ``pca`` method chooses it
(:func:`emcore.methods.pca.calibrate_pca`): for counts, count splitting over the whole cube —
two more passes, one decomposing the 90 % thinning A, one scoring every rank against the other
10 % B with the closed form of ``_count_errors`` (the thinning of a block is seeded by the
block, so both passes see the same split; a whole-cube run draws its split in another order,
so the two choices agree in law, not bit for bit); otherwise the J-invariant loss on the
central crop, read and handed to ``calibrate_pca`` as it is (the same choice as in memory).

Memory: the Gram matrix (E² float64: 8 MiB at E = 1024), the per-pixel totals (H·W float64) and
a few float64 copies of one block.

References
----------
.. [1] M. R. Keenan and P. G. Kotula, Surf. Interface Anal. 36 (2004) 203-212.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

from emcore.errors import EmcoreError, Stopped
from emcore.evaluate.count_split import count_split
from emcore.methods.calibration import CROP, CalibrationResult
from emcore.methods.pca import _SPLIT_P, calibrate_pca
from emcore.noise.models import Poisson
from emcore.progress import ProgressFn, StopFn, report


@dataclass(frozen=True)
class OutOfCorePCA:
    """What :func:`pca_out_of_core` found.

    Attributes
    ----------
    n_components : int
    auto : bool
        The count was chosen on the data (``calibration`` says how).
    explained_variance_ratio : tuple of float
        Of the first ``max_components`` components.
    totals : ndarray
        ``(H, W)`` counts per pixel (the sum over energy): a survey of the input, for previews.
    seconds : float
        Time of the passes before the reconstruction.
    calibration : CalibrationResult or None
    """

    n_components: int
    auto: bool
    explained_variance_ratio: tuple
    totals: np.ndarray
    seconds: float
    calibration: CalibrationResult | None = None


@dataclass
class _Fit:
    """The decomposition of one pass: leading eigenpairs of the weighted channel Gram matrix."""

    evals: np.ndarray
    evecs: np.ndarray
    keep_c: np.ndarray
    scale_c: np.ndarray
    n_rows: int
    n_cols: int
    poisson: bool

    def scaled(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows kept, their scale √a, scaled block X̃)`` of a block ``x`` (pixels × channels)."""
        if self.poisson:
            a = x.sum(axis=1)
            keep = a > 0
            scale_r = np.sqrt(a[keep])
            blk = x[keep][:, self.keep_c]
            blk *= (1.0 / scale_r)[:, None]
            blk *= (1.0 / self.scale_c)[None, :]
            return keep, scale_r, blk
        keep = (x != 0).any(axis=1)
        return keep, np.ones(int(keep.sum())), x[keep][:, self.keep_c]


def _blocks(h: int, rows: int) -> list[tuple[int, int]]:
    return [(s, min(h, s + rows)) for s in range(0, h, rows)]


def _fit(read, h: int, w: int, e: int, rows: int, poisson: bool, name: str, top: int | None,
         progress, should_stop, t0: float, what: str, totals: np.ndarray | None = None) -> _Fit:
    """One pass: accumulate ``M = Xᵀ diag(1/a) X`` and ``b``; decompose ``G``."""
    gram, col, nonzero_c, n_rows = np.zeros((e, e)), np.zeros(e), np.zeros(e, bool), 0
    spans = _blocks(h, rows)
    for done, (start, stop) in enumerate(spans, 1):
        if should_stop is not None and should_stop():
            raise Stopped(f"PCA of {name} stopped after {done - 1} of {len(spans)} blocks ({what}).")
        x = read(start, stop)
        a = x.sum(axis=1)
        if totals is not None:
            totals[start:stop] = a.reshape(stop - start, w)
        if poisson:
            lowest = float(x.min()) if x.size else 0.0
            if lowest < 0:
                raise EmcoreError(
                    f"{name} holds negative values (down to {lowest:g}), so it is not raw counts and Poisson "
                    "weighting does not apply; set poisson=False to decompose it without weighting.")
            keep = a > 0
            y = x[keep] / np.sqrt(a[keep])[:, None]
            n_rows += int(keep.sum())
        else:
            nz = x != 0
            nonzero_c |= nz.any(axis=0)
            n_rows += int(nz.any(axis=1).sum())
            y = x
        gram += y.T @ y
        col += x.sum(axis=0)
        report(progress, done, len(spans), t0, f"PCA: {what}, block {done} of {len(spans)}")
    keep_c = col > 0 if poisson else nonzero_c
    n_cols = int(keep_c.sum())
    if n_cols < 2 or n_rows < 2:
        where = "channels" if n_cols < 2 else "pixels"
        raise EmcoreError(f"Only {min(n_rows, n_cols)} of {name}'s {where} hold any signal; PCA needs at least "
                          f"two non-empty {where} to find components.")
    scale_c = np.sqrt(col[keep_c]) if poisson else np.ones(n_cols)
    g = gram[np.ix_(keep_c, keep_c)] / np.outer(scale_c, scale_c)
    m = len(g)
    if top is not None and top < m:
        evals, evecs = scipy.linalg.eigh(g, subset_by_index=[m - top, m - 1], driver="evr", overwrite_a=True,
                                         check_finite=False)
    else:
        evals, evecs = scipy.linalg.eigh(g, driver="evd", overwrite_a=True, check_finite=False)
    return _Fit(np.clip(evals[::-1], 0, None), evecs[:, ::-1].copy(), keep_c, scale_c, n_rows, n_cols, poisson)


def _split(x: np.ndarray, seed: int, start: int, dose: float) -> tuple[np.ndarray, np.ndarray]:
    """The count split of a block (``x`` × ``dose`` are the counts), seeded by the block."""
    counts = np.rint(x * dose).astype(np.int64)
    a, b = count_split(counts, np.random.default_rng([seed, start]), _SPLIT_P)
    return a.astype(np.float64), b.astype(np.float64)


def _count_split_choice(lazy, e: int, rows: int, poisson: bool, n_max: int, dose: float, seed: int,
                        progress, should_stop, t0: float) -> CalibrationResult:
    """:func:`emcore.methods.pca.calibrate_pca`'s count splitting, in two passes over blocks."""
    h, w = lazy.shape[:2]

    def part(start, stop, which):
        x = lazy.block(start, stop).reshape(-1, e)
        return _split(x, seed, start, dose)[which]

    fit = _fit(lambda s, t: part(s, t, 0), h, w, e, rows, poisson, lazy.name, n_max, progress, should_stop, t0,
               "choosing the count: decomposing 90 % of the counts")
    lead = fit.evecs[:, :n_max]
    k = lead.shape[1]
    ac = fit.scale_c[:, None] * lead
    gr, cross, tt, nb, bsum = np.zeros((k, k)), np.zeros(k), 0.0, 0, 0.0
    spans = _blocks(h, rows)
    for done, (start, stop) in enumerate(spans, 1):
        if should_stop is not None and should_stop():
            raise Stopped(f"PCA of {lazy.name} stopped while choosing its number of components.")
        a, b = _split(lazy.block(start, stop).reshape(-1, e), seed, start, dose)
        tt += float(np.square(b).sum())
        nb, bsum = nb + b.size, bsum + float(b.sum())
        keep, scale_r, blk = fit.scaled(a)
        ar = (blk @ lead) * scale_r[:, None]
        gr += ar.T @ ar
        cross += np.einsum("ik,ik->k", ar, b[keep][:, fit.keep_c] @ ac)
        report(progress, done, len(spans), t0, f"PCA: choosing the count: scoring on 10 %, block {done} of {len(spans)}")
    scale = (1 - _SPLIT_P) / _SPLIT_P
    norms = np.diagonal(np.cumsum(np.cumsum(gr * (ac.T @ ac), axis=0), axis=1))
    sse = np.pad(tt - 2 * scale * np.cumsum(cross) + scale**2 * norms, (0, n_max - k), mode="edge")
    loss = sse / nb - bsum / nb
    curve = [({"n_components": i + 1}, float(v)) for i, v in enumerate(loss) if np.isfinite(v)]
    if not curve:
        raise EmcoreError("No number of PCA components gave a finite score on these data; set the number by hand.")
    return CalibrationResult(best=min(curve, key=lambda pv: pv[1])[0], criterion="count-split", curve=curve,
                             seconds=time.perf_counter() - t0,
                             why="Count splitting: the data are raw counts, so PCA of 90 % of the counts, scored against "
                                 "the other 10 %, gives an unbiased estimate of each component count's true error.")


def pca_out_of_core(
    lazy,
    *,
    n_components: int | None = None,
    poisson: bool = True,
    max_components: int = 50,
    rows: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Callable[[int, int], np.ndarray], OutOfCorePCA]:
    """Fit PCA to a spectrum image block by block; return the reconstruction of any block.

    Parameters
    ----------
    lazy : LazyDataset
        A spectrum image ``(H, W, E)`` (:func:`emcore.io.lazy.open_lazy`); anything with
        ``shape``, ``name``, ``is_counts``, ``noise`` and ``block(start, stop)`` giving float32
        rows.
    n_components, poisson, max_components
        As for the ``pca`` method; unset, the count is chosen on the data (module docstring).
    rows : int, optional
        Rows of the map per block (default: about 64 MiB of input per block).
    seed : int
        Seed of the count split.
    progress, should_stop
        Blocks done in each pass; a stop request between blocks.

    Returns
    -------
    reconstruct : callable
        ``reconstruct(start, stop)`` reads rows ``start:stop`` again and returns their
        ``(stop - start, W, E)`` float32 reconstruction (all-zero pixels and channels stay 0).
    info : OutOfCorePCA

    Raises
    ------
    EmcoreError
        Negative values with ``poisson=True``, fewer than two non-empty channels or pixels,
        more channels than pixels (then the cube is small: use the ``pca`` method), an
        ``n_components`` over the number of non-empty channels, no signal at all.
    """
    t0 = time.perf_counter()
    h, w, e = (int(n) for n in lazy.shape)
    if h * w < e:
        raise EmcoreError(f"{lazy.name} has more channels ({e}) than pixels ({h * w}); such a cube is small, so "
                          "load it whole and use the 'pca' method.")
    rows = rows or max(1, (64 * 1024**2) // max(1, w * e * 4))
    totals = np.zeros((h, w))
    full = _fit(lambda s, t: lazy.block(s, t).reshape(-1, e).astype(np.float64), h, w, e, rows, poisson, lazy.name,
                None, progress, should_stop, t0, "correlating channels", totals)
    total = float(full.evals.sum())
    if not total > 0:
        raise EmcoreError(f"{lazy.name} holds no signal (all values are zero); there is nothing to denoise.")
    rank = int(np.count_nonzero(full.evals > full.evals[0] * 1e-12))
    cal = None
    if n_components is None:
        n_max = min(int(max_components), full.n_rows, full.n_cols)
        dose = 1.0 if lazy.is_counts else (lazy.noise.dose if isinstance(lazy.noise, Poisson) else None)
        if dose is not None:
            cal = _count_split_choice(lazy, e, rows, poisson, n_max, dose, seed, progress, should_stop, t0)
        else:
            r0, c0 = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
            crop = lazy.block(r0, min(h, r0 + CROP))[:, c0:c0 + CROP]
            cal = calibrate_pca(crop, poisson=poisson, max_components=max_components, seed=seed)
        n = min(int(cal.best["n_components"]), rank)
    else:
        n = int(n_components)
        if not 1 <= n <= min(full.n_rows, full.n_cols):
            raise EmcoreError(f"{n} PCA components were asked for, but {lazy.name} has only "
                              f"{min(full.n_rows, full.n_cols)} non-empty channels; choose fewer.")
    v = full.evecs[:, :n].copy()

    def reconstruct(start: int, stop: int) -> np.ndarray:
        x = lazy.block(start, stop).reshape(-1, e)
        out = np.zeros(x.shape, np.float32)
        keep, scale_r, blk = full.scaled(x.astype(np.float64))
        rec = (blk @ v) @ v.T
        rec *= scale_r[:, None]
        rec *= full.scale_c[None, :]
        out[np.ix_(keep, full.keep_c)] = rec
        return out.reshape(stop - start, w, e)

    info = OutOfCorePCA(n_components=n, auto=n_components is None,
                        explained_variance_ratio=tuple(float(r) for r in (full.evals / total)[:max_components]),
                        totals=totals.astype(np.float32), seconds=time.perf_counter() - t0, calibration=cal)
    return reconstruct, info
