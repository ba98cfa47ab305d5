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
from emcore.methods.pca import estimate_n_components
from emcore.progress import ProgressFn, StopFn, report


@dataclass(frozen=True)
class OutOfCorePCA:
    """What :func:`pca_out_of_core` found.

    Attributes
    ----------
    n_components : int
    auto : bool
        The count came from the scree curve (:func:`~emcore.methods.pca.estimate_n_components`).
    explained_variance_ratio : tuple of float
        Of the first ``max_components`` components.
    totals : ndarray
        ``(H, W)`` counts per pixel (the sum over energy): a survey of the input, for previews.
    seconds : float
        Time of the first pass and the decomposition.
    """

    n_components: int
    auto: bool
    explained_variance_ratio: tuple
    totals: np.ndarray
    seconds: float


def pca_out_of_core(
    lazy,
    *,
    n_components: int | None = None,
    poisson: bool = True,
    max_components: int = 50,
    rows: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Callable[[int, int], np.ndarray], OutOfCorePCA]:
    """Fit PCA to a spectrum image block by block; return the reconstruction of any block.

    Parameters
    ----------
    lazy : LazyDataset
        A spectrum image ``(H, W, E)`` (:func:`emcore.io.lazy.open_lazy`); anything with
        ``shape``, ``name`` and ``blocks(rows)`` / ``block(start, stop)`` giving float32 rows.
    n_components, poisson, max_components
        As for :func:`emcore.methods.pca.denoise_pca`.
    rows : int, optional
        Rows of the map per block (default: about 64 MiB of input per block).
    progress, should_stop
        Blocks done in the first pass; a stop request between blocks.

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
        more channels than pixels (then the cube is small: use ``denoise_pca``), an
        ``n_components`` over the number of channels, no signal at all.
    """
    t0 = time.perf_counter()
    h, w, e = (int(n) for n in lazy.shape)
    if h * w < e:
        raise EmcoreError(f"{lazy.name} has more channels ({e}) than pixels ({h * w}); such a cube is small, so "
                          "load it whole and use the 'pca' method.")
    gram = np.zeros((e, e))
    col = np.zeros(e)
    nonzero_c = np.zeros(e, bool)
    totals = np.zeros((h, w))
    n_rows = 0
    blocks = list(range(0, h, rows or max(1, (64 * 1024**2) // max(1, w * e * 4))))
    step = blocks[1] - blocks[0] if len(blocks) > 1 else h
    for done, start in enumerate(blocks, 1):
        if should_stop is not None and should_stop():
            raise Stopped(f"PCA of {lazy.name} stopped after {done - 1} of {len(blocks)} blocks.")
        x = lazy.block(start, min(h, start + step)).reshape(-1, e).astype(np.float64)
        a = x.sum(axis=1)
        totals[start:start + x.shape[0] // w] = a.reshape(-1, w)
        if poisson:
            lowest = float(x.min()) if x.size else 0.0
            if lowest < 0:
                raise EmcoreError(
                    f"{lazy.name} holds negative values (down to {lowest:g}), so it is not raw counts and "
                    "Poisson weighting does not apply; set poisson=False to decompose it without weighting.")
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
        report(progress, done, len(blocks) + 1, t0, f"PCA: correlating channels, block {done} of {len(blocks)}")
    keep_c = col > 0 if poisson else nonzero_c
    n_cols = int(keep_c.sum())
    if n_cols < 2 or n_rows < 2:
        where = "channels" if n_cols < 2 else "pixels"
        raise EmcoreError(f"Only {min(n_rows, n_cols)} of {lazy.name}'s {where} hold any signal; PCA needs at least "
                          f"two non-empty {where} to find components.")
    scale_c = np.sqrt(col[keep_c]) if poisson else np.ones(n_cols)
    g = gram[np.ix_(keep_c, keep_c)] / np.outer(scale_c, scale_c)
    evals, evecs = scipy.linalg.eigh(g, driver="evd", overwrite_a=True, check_finite=False)
    evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
    total = float(evals.sum())
    if not total > 0:
        raise EmcoreError(f"{lazy.name} holds no signal (all values are zero); there is nothing to denoise.")
    rank = int(np.count_nonzero(evals > evals[0] * 1e-12))
    auto = n_components is None
    if auto:
        n = min(estimate_n_components(evals, (n_rows, n_cols), max_components), rank)
    else:
        n = int(n_components)
        if not 1 <= n <= min(n_rows, n_cols):
            raise EmcoreError(f"{n} PCA components were asked for, but {lazy.name} has only {min(n_rows, n_cols)} "
                              "non-empty channels; choose fewer.")
    v = evecs[:, :n].copy()
    inv_c = 1.0 / scale_c
    report(progress, len(blocks) + 1, len(blocks) + 1, t0, f"PCA: keeping {n} component{'s' if n != 1 else ''}")

    def reconstruct(start: int, stop: int) -> np.ndarray:
        x = lazy.block(start, stop).reshape(-1, e)
        out = np.zeros(x.shape, np.float32)
        blk = x[:, keep_c].astype(np.float64)
        if poisson:
            a = x.sum(axis=1, dtype=np.float64)
            keep = a > 0
            scale_r = np.sqrt(a[keep])
            blk = blk[keep]
            blk *= (1.0 / scale_r)[:, None]
            blk *= inv_c[None, :]
            rec = (blk @ v) @ v.T
            rec *= scale_r[:, None]
            rec *= scale_c[None, :]
            out[np.ix_(keep, keep_c)] = rec
        else:
            out[:, keep_c] = (blk @ v) @ v.T
        return out.reshape(stop - start, w, e)

    info = OutOfCorePCA(n_components=n, auto=auto, explained_variance_ratio=tuple(float(r) for r in
                        (evals / total)[:max_components]), totals=totals.astype(np.float32),
                        seconds=time.perf_counter() - t0)
    return reconstruct, info
