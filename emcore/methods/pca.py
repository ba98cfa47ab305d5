"""PCA denoising of spectrum images with Poisson (Keenan-Kotula) weighting.

The spectrum image ``(H, W, E)`` is unfolded into a data matrix ``X`` (pixels × channels),
scaled so that Poisson noise becomes approximately uniform, reduced to its first ``n``
principal components by a truncated SVD and scaled back. This is what HyperSpy's
``s.decomposition(normalize_poissonian_noise=True, algorithm="SVD")`` followed by
``s.get_decomposition_model(n)`` does; the reconstruction agrees with HyperSpy's to
rounding error.

References
----------
.. [1] M. R. Keenan and P. G. Kotula, "Accounting for Poisson noise in the multivariate
   analysis of ToF-SIMS spectrum images", Surf. Interface Anal. 36 (2004) 203-212.
.. [2] M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is
   4/√3", IEEE Trans. Inf. Theory 60 (2014) 5040-5053.
.. [3] V. Satopää, J. Albrecht, D. Irwin and B. Raghavan, "Finding a 'Kneedle' in a
   haystack: detecting knee points in system behavior", 31st ICDCS Workshops (2011) 166-171.
.. [4] F. de la Peña et al., HyperSpy (``hyperspy.learn``), doi:10.5281/zenodo.592838.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.evaluate.count_split import count_split, counts_of
from emcore.methods.calibration import CROP, GRID, PHASES, CalibrationResult, neighbour_mean
from emcore.methods.lesson import Curve, Lesson, LessonFigure, Panel, spectrum_example
from emcore.methods.registry import Method, Param, RunContext, register
from emcore.progress import ProgressFn
from emcore.progress import report as _report

__all__ = ["PCAInfo", "calibrate_pca", "denoise_pca", "estimate_n_components"]

#: Rows of the data matrix processed at once (bounds the float64 working copy to
#: ``_BLOCK_ROWS × E × 8`` bytes, 64 MiB at E = 2048).
_BLOCK_ROWS = 4096

#: HyperSpy's ``estimate_elbow_position`` draws its chord over the first 20 points of the
#: scree curve; the same number is used here so the cap equals HyperSpy's own estimate.
_ELBOW_MAX_POINTS = 20


@dataclass(frozen=True)
class PCAInfo:
    """What :func:`denoise_pca` decided.

    Attributes
    ----------
    n_components : int
        Components kept in the reconstruction.
    explained_variance_ratio : tuple of float
        ``σ_k² / Σ σ²`` of the first ``max_components`` components of the (scaled) data
        matrix, over *all* components — HyperSpy's ratio for ``output_dimension=None``.
    auto : bool
        ``n_components`` was chosen from the scree curve rather than given.
    """

    n_components: int
    explained_variance_ratio: tuple[float, ...]
    auto: bool



def _gavish_donoho_omega(beta: float) -> float:
    # Gavish & Donoho (2014): the optimal hard threshold for an m×n matrix
    # (beta = m/n <= 1) with unknown noise level is omega(beta) times the median singular
    # value; this cubic approximates omega(beta) to within 0.02.
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def _elbow_count(ratio: np.ndarray) -> int:
    """HyperSpy's ``number_significant_components``: Kneedle elbow on the log scree + 1."""
    m = min(_ELBOW_MAX_POINTS, len(ratio) - 1)
    if m < 1:
        return 1
    y = np.log(np.clip(ratio, 1e-30, None))
    xs = np.arange(m)
    numer = np.abs(m * (y[0] - y[:m]) - (0 - xs) * (y[m] - y[0]))
    denom = np.hypot(m, y[m] - y[0])
    return int(np.argmax(np.nan_to_num(numer / denom))) + 1


def estimate_n_components(eigenvalues, shape: tuple[int, int], max_components: int = 50) -> int:
    """Number of significant components from the eigenvalues (squared singular values).

    Rule: keep the components whose singular value exceeds the Gavish-Donoho optimal hard
    threshold ``omega(beta) · median(σ)`` [2]_, but never more than HyperSpy's scree-elbow
    estimate (Kneedle on the log explained-variance ratio, first 20 points [3]_ [4]_), nor
    more than ``max_components``; at least one.

    Why: after Keenan-Kotula scaling the noise in the data matrix is close to white with
    one variance, which is the setting where the Gavish-Donoho threshold is the cut that
    minimises the reconstruction error — a component weaker than that costs more noise than
    it brings signal, even when it is real. It needs no noise level: the median singular
    value gives it. In very sparse cubes (well under one count per voxel, most channels
    nearly empty) the scaled noise is heavy-tailed and the noise singular values spread
    beyond the Marchenko-Pastur bulk, so the threshold alone would keep hundreds of noise
    components; the scree elbow does not depend on that law and caps it.

    Parameters
    ----------
    eigenvalues : array_like
        All eigenvalues of the Gram matrix of the (scaled) data matrix, i.e. the squared
        singular values, ``min(shape)`` of them, in any order.
    shape : (int, int)
        Shape of the data matrix (pixels, channels) after empty rows/columns were dropped.
    max_components : int
        Upper bound.

    Returns
    -------
    int

    References
    ----------
    .. [2] M. Gavish and D. L. Donoho, IEEE Trans. Inf. Theory 60 (2014) 5040-5053.
    .. [3] V. Satopää et al., ICDCS Workshops (2011) 166-171.
    .. [4] HyperSpy, ``MVA.estimate_elbow_position``.
    """
    w = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None))[::-1]
    total = w.sum()
    if not total > 0:
        return 1
    beta = min(shape) / max(shape)
    sv = np.sqrt(w)
    n_gd = int(np.count_nonzero(sv > _gavish_donoho_omega(beta) * np.median(sv)))
    n_elbow = _elbow_count(w / total)
    return int(max(1, min(n_gd, n_elbow, max_components)))


def _put(out: np.ndarray, rec: np.ndarray, rows: np.ndarray, cols: np.ndarray, all_rows: bool, all_cols: bool) -> None:
    """Write a reconstructed block back at its (non-empty) rows and columns."""
    if all_rows and all_cols:
        out[rows[0] : rows[-1] + 1] = rec
    elif all_cols:
        out[rows] = rec
    else:
        out[np.ix_(rows, cols)] = rec


def _as_cube(cube) -> np.ndarray:
    arr = np.asarray(cube)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(
            f"The spectrum image holds values of type {arr.dtype}, not real numbers; PCA needs "
            "counts or intensities."
        )
    if arr.ndim != 3:
        raise EmcoreError(
            f"PCA needs a spectrum image (H, W, E) with an energy axis, but the data has shape "
            f"{arr.shape}; for an image or a stack use the Wiener filter or BM3D instead."
        )
    if min(arr.shape) < 1:
        raise EmcoreError(f"The spectrum image is empty (shape {arr.shape}).")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise EmcoreError(
            "The spectrum image holds NaN or infinite values; replace them (for example with "
            "zero counts) before PCA."
        )
    return arr


class _Scaled:
    """A cube's data matrix ``X`` (pixels × channels), weighted for Poisson noise as Keenan &
    Kotula [1]_ or taken as it is, with its empty pixels and channels left out. Rows are read
    (and scaled, in float64) in blocks of :data:`_BLOCK_ROWS`; the cube is never copied whole.
    :meth:`decompose` adds the eigen-decomposition of the smaller Gram matrix, after which
    :meth:`reconstruct` gives the rank-``n`` reconstruction for any ``n``.
    """

    def __init__(self, data: np.ndarray, poisson: bool):
        h, w, e = self.shape = data.shape
        self.flat = flat = data.reshape(h * w, e)  # a view for contiguous input; never written to
        if poisson:
            lowest = float(flat.min())
            if lowest < 0:
                raise EmcoreError(f"The spectrum image holds negative values (down to {lowest:g}), so it is not raw "
                                  "counts and Poisson weighting does not apply; set poisson=False to decompose it "
                                  "without weighting.")
            row_sum, col_sum = flat.sum(axis=1, dtype=np.float64), flat.sum(axis=0, dtype=np.float64)
            keep_r, keep_c = row_sum > 0, col_sum > 0
        else:
            nonzero = flat != 0
            keep_r, keep_c = nonzero.any(axis=1), nonzero.any(axis=0)
            del nonzero
        self.n_rows, self.n_cols = n_rows, n_cols = int(keep_r.sum()), int(keep_c.sum())
        if n_cols < 2 or n_rows < 2:
            where = "channels" if n_cols < 2 else "pixels"
            raise EmcoreError(f"Only {min(n_rows, n_cols)} of the spectrum image's {where} hold any signal; PCA needs "
                              f"at least two non-empty {where} to find components.")
        if poisson:
            # Keenan & Kotula (2004): D̃ = G^(-1/2) D H^(-1/2) with G = diag(a), H = diag(b).
            self.scale_r, self.scale_c = np.sqrt(row_sum[keep_r]), np.sqrt(col_sum[keep_c])
        else:
            self.scale_r, self.scale_c = np.ones(n_rows), np.ones(n_cols)
        self.keep_c = keep_c
        self.rows, self.cols = np.flatnonzero(keep_r), np.flatnonzero(keep_c)
        self.inv_c = (1.0 / self.scale_c)[None, :]
        self.all_rows, self.all_cols = n_rows == h * w, n_cols == e
        self.starts = range(0, n_rows, _BLOCK_ROWS)
        self.by_channel = n_cols <= n_rows

    def block(self, start: int) -> np.ndarray:
        """Scaled rows ``start ..`` of the non-empty part, float64."""
        # Plain slices when nothing is empty (the usual case): fancy indexing copies twice.
        blk = self.flat[start : start + _BLOCK_ROWS] if self.all_rows else self.flat[self.rows[start : start + _BLOCK_ROWS]]
        if not self.all_cols:
            blk = blk[:, self.keep_c]
        blk = blk.astype(np.float64)
        blk *= (1.0 / self.scale_r[start : start + _BLOCK_ROWS])[:, None]
        blk *= self.inv_c
        return blk

    def decompose(self, progress: ProgressFn | None = None, t0: float = 0.0, total_steps: int = 1,
                  top: int | None = None) -> int:
        """Gram matrix of the smaller side and its eigenpairs, largest first (``evals``, ``evecs``):
        all of them, or the ``top`` ones only; returns the progress steps taken."""
        if self.by_channel:
            gram = np.zeros((self.n_cols, self.n_cols))
            for i, s in enumerate(self.starts):
                blk = self.block(s)
                gram += blk.T @ blk
                _report(progress, i + 1, total_steps, t0, "PCA: correlating channels")
        else:
            self.scaled = np.concatenate([self.block(s) for s in self.starts], axis=0)
            gram = self.scaled @ self.scaled.T
            _report(progress, len(self.starts), total_steps, t0, "PCA: correlating pixels")
        m = len(gram)
        if top is not None and top < m:  # a few leading eigenpairs: the MRRR driver computes only those
            evals, evecs = scipy.linalg.eigh(gram, subset_by_index=[m - top, m - 1], driver="evr", overwrite_a=True,
                                             check_finite=False)
        else:  # the divide-and-conquer driver is the fastest LAPACK route to all eigenpairs here
            evals, evecs = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True, check_finite=False)
        self.evals = np.clip(evals[::-1], 0, None)
        self.evecs = evecs[:, ::-1]
        return len(self.starts)

    def reconstruct(self, n: int, progress: ProgressFn | None = None, t0: float = 0.0, step: int = 0,
                    total_steps: int = 1) -> np.ndarray:
        """Projection on the leading ``n`` components with the scaling undone, ``(H, W, E)``
        float32; empty pixels and channels are zero."""
        h, w, e = self.shape
        out = np.zeros((h * w, e), dtype=np.float32)
        if self.by_channel:
            v = self.evecs[:, :n]
            for s in self.starts:
                rec = (self.block(s) @ v) @ v.T
                rec *= self.scale_r[s : s + _BLOCK_ROWS, None]
                rec *= self.scale_c[None, :]
                _put(out, rec, self.rows[s : s + _BLOCK_ROWS], self.cols, self.all_rows, self.all_cols)
                step += 1
                _report(progress, step, total_steps, t0, "PCA: reconstructing")
        else:
            u = self.evecs[:, :n]
            rec = u @ (u.T @ self.scaled)
            rec *= self.scale_r[:, None]
            rec *= self.scale_c[None, :]
            _put(out, rec, self.rows, self.cols, self.all_rows, self.all_cols)
            _report(progress, step + len(self.starts), total_steps, t0, "PCA: reconstructing")
        return out.reshape(h, w, e)


def denoise_pca(
    cube,
    *,
    n_components: int | None = None,
    poisson: bool = True,
    max_components: int = 50,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, PCAInfo]:
    """Denoise a spectrum image by keeping its first principal components.

    Parameters
    ----------
    cube : (H, W, E) array_like
        Spectrum image, energy last (EDS/EELS counts). Left unchanged.
    n_components : int, optional
        Components to keep. Chosen from the scree curve when not given (see
        :func:`estimate_n_components`).
    poisson : bool
        Weight for Poisson (counting) noise as Keenan & Kotula [1]_ (HyperSpy's
        ``normalize_poissonian_noise=True``). Needs non-negative data; set ``False`` for
        background-subtracted or otherwise processed data, which is then decomposed as is.
    max_components : int
        Components whose explained-variance ratio is reported, and the most the automatic
        choice may keep.
    progress : callable, optional
        Receives :class:`~emcore.progress.Progress` reports (Gram matrix blocks,
        decomposition, reconstruction blocks).

    Returns
    -------
    denoised : (H, W, E) ndarray of float32
        Reconstruction from ``n_components`` components; all-zero channels and pixels stay
        zero.
    info : PCAInfo
        Components kept, explained-variance ratios, whether the count was automatic.

    Raises
    ------
    EmcoreError
        The data is not a 3-D spectrum image; fewer than two channels hold any signal;
        ``poisson=True`` with negative values; ``n_components`` outside ``1 ..`` the rank.

    Notes
    -----
    With ``X`` the ``(H·W) × E`` data matrix, ``a`` its row sums (counts per pixel) and
    ``b`` its column sums (the summed spectrum), the scaled matrix is
    ``X̃ = diag(1/√a) X diag(1/√b)`` [1]_ — HyperSpy's ``_keenan_kotula_scale``, without
    further normalisation (a global factor would not change the reconstruction). All-zero
    channels and pixels are left out of the decomposition and stay zero in the result (the
    role HyperSpy's masks play; its unmasked path sets their sums to 1, with the same
    result). No centring (HyperSpy's ``centre=None``). The truncated SVD comes from the
    eigen-decomposition of the smaller Gram matrix, ``X̃ᵀX̃`` (channels²) or ``X̃X̃ᵀ``
    (pixels²), accumulated in float64: the projection onto its leading eigenvectors is the
    rank-``n`` SVD reconstruction, and all eigenvalues come for the same cost, which the
    explained-variance ratio and the threshold in :func:`estimate_n_components` need. The
    reconstruction is ``diag(√a) X̃_n diag(√b)``.

    References
    ----------
    .. [1] M. R. Keenan and P. G. Kotula, "Accounting for Poisson noise in the multivariate
       analysis of ToF-SIMS spectrum images", Surf. Interface Anal. 36 (2004) 203-212.
    .. [2] M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is
       4/√3", IEEE Trans. Inf. Theory 60 (2014) 5040-5053.
    """
    t0 = time.perf_counter()
    if isinstance(max_components, bool) or int(max_components) != max_components or max_components < 1:
        raise EmcoreError(f"The largest number of PCA components must be a whole number of at least 1, not {max_components!r}.")
    max_components = int(max_components)
    if n_components is not None and (
        isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1
    ):
        raise EmcoreError(f"The number of PCA components must be a whole number of at least 1, not {n_components!r}.")

    data = _as_cube(cube)
    mat = _Scaled(data, poisson)
    total_steps = 2 * len(mat.starts) + 1
    step = mat.decompose(progress, t0, total_steps)
    evals = mat.evals
    total = float(evals.sum())
    if not total > 0:
        raise EmcoreError("The spectrum image holds no signal (all values are zero); there is nothing to denoise.")
    ratio = evals / total
    rank = int(np.count_nonzero(evals > evals[0] * 1e-12))

    auto = n_components is None
    if auto:
        n = estimate_n_components(evals, (mat.n_rows, mat.n_cols), max_components)
        n = min(n, rank)
    else:
        n = int(n_components)
        if n > min(mat.n_rows, mat.n_cols):
            raise EmcoreError(
                f"{n} PCA components were asked for, but this spectrum image has only "
                f"{min(mat.n_rows, mat.n_cols)} (its number of non-empty "
                f"{'channels' if mat.by_channel else 'pixels'}); choose fewer."
            )
    step += 1
    _report(progress, step, total_steps, t0, f"PCA: keeping {n} component{'s' if n != 1 else ''}")
    out = mat.reconstruct(n, progress, t0, step, total_steps)

    info = PCAInfo(
        n_components=n,
        explained_variance_ratio=tuple(float(r) for r in ratio[:max_components]),
        auto=auto,
    )
    return out, info


# -- self-calibration of the component count -------------------------------------------
#: Fraction of the counts PCA sees when its component count is chosen by count splitting
#: (the rest is held out to score it). The split scores PCA at this fraction of the dose, and
#: the best count moves with the dose; on 12 simulated EDS cubes (3–200 counts/px) × 5 splits,
#: against the best count chosen with the truth, an even split lost 0.79 dB on average (worst
#: 2.5 dB), 0.9 lost 0.11 dB (worst 0.71 dB), 0.95 0.13 dB (worst 1.6 dB; benchmarks/bench_pca_count.py).
_SPLIT_P = 0.9


def _count_errors(mat: _Scaled, target: np.ndarray, scored: np.ndarray, n_max: int, scale: float = 1.0) -> np.ndarray:
    """Sum of squared differences between ``scale`` × the rank-``n`` reconstruction of ``mat``
    and ``target`` over the ``scored`` pixels (every channel), for every n = 1 .. ``n_max``.

    With the reconstruction ``R_n = A_r[:, :n] A_c[:, :n]ᵀ`` (``A_r`` the unscaled scores,
    ``A_c`` the unscaled loadings),
    ``‖s R_n − T‖² = ‖T‖² − 2s Σ_{k≤n} a_rkᵀ T a_ck + s² Σ_{k,l≤n} (A_rᵀA_r)_kl (A_cᵀA_c)_kl``,
    so one pass over the data scores every n: no reconstruction per candidate.
    """
    h, w, e = mat.shape
    tflat, scored = target.reshape(h * w, e), scored.reshape(h * w)
    lead = mat.evecs[:, :n_max]  # fewer when the data matrix has fewer non-empty rows or columns
    k = lead.shape[1]
    tt = sum(float(np.square(tflat[s : s + _BLOCK_ROWS][scored[s : s + _BLOCK_ROWS]], dtype=np.float64).sum())
             for s in range(0, h * w, _BLOCK_ROWS))
    gr, cross = np.zeros((k, k)), np.zeros(k)
    if mat.by_channel:
        ac = mat.scale_c[:, None] * lead
        for s in mat.starts:
            rows = mat.rows[s : s + _BLOCK_ROWS]
            sel = scored[rows]
            if sel.any():
                ar = (mat.block(s)[sel] @ lead) * mat.scale_r[s : s + _BLOCK_ROWS][sel, None]
                gr += ar.T @ ar
                cross += np.einsum("ik,ik->k", ar, tflat[rows[sel]][:, mat.keep_c] @ ac)
    else:
        ac = mat.scale_c[:, None] * (mat.scaled.T @ lead)
        sel = scored[mat.rows]
        ar = mat.scale_r[sel, None] * lead[sel]
        gr = ar.T @ ar
        cross = np.einsum("ik,ik->k", ar, tflat[mat.rows[sel]][:, mat.keep_c] @ ac)
    norms = np.diagonal(np.cumsum(np.cumsum(gr * (ac.T @ ac), axis=0), axis=1))
    sse = tt - 2 * scale * np.cumsum(cross) + scale**2 * norms
    return np.pad(sse, (0, n_max - k), mode="edge")  # components beyond the rank add nothing


def calibrate_pca(cube, *, counts=None, poisson: bool = True, max_components: int = 50, seed: int = 0,
                  progress: ProgressFn | None = None) -> CalibrationResult:
    """Choose the number of PCA components from the spectrum image itself.

    Every count from 1 to ``max_components`` is scored by a no-reference criterion
    (:mod:`emcore.methods.calibration`), from one eigen-decomposition per split or mask:

    * **count splitting** when the raw ``counts`` behind the cube are given: every count goes
      to part A with probability p = :data:`_SPLIT_P`, to B otherwise (Neufeld et al. 2024);
      PCA decomposes A, and each rank-n reconstruction, rescaled by (1 − p)/p, is scored
      against B by ``mean((s − B)²) − mean(B)`` (as
      :func:`~emcore.evaluate.count_split.count_split_error`): an unbiased estimate of the
      true squared error of PCA at p times the dose;
    * otherwise the **J-invariant loss** (Batson & Royer 2019): for each grid phase of
      :data:`~emcore.methods.calibration.PHASES` the hidden pixels' spectra are replaced by
      their neighbours' mean, PCA decomposes that cube, and each rank-n reconstruction is
      scored at the hidden pixels against their noisy spectra (a central crop of at most
      :data:`~emcore.methods.calibration.CROP` px a side).

    Parameters
    ----------
    cube : (H, W, E) array_like
        The spectrum image (counts, or counts / dose). Left unchanged.
    counts : ndarray, optional
        The raw counts behind ``cube`` (same shape): count splitting instead of the
        J-invariant loss. PCA is scale-free, so counts / dose and counts give one choice.
    poisson, max_components
        As in :func:`denoise_pca` (``max_components`` bounds the candidates).
    seed : int
        Seed of the count split.

    Returns
    -------
    CalibrationResult
        ``best = {"n_components": n}``, and the loss of every count tried.
    """
    t0 = time.perf_counter()
    data = _as_cube(cube)
    full = _Scaled(data, poisson)  # the checks denoise_pca makes, and the most components it can keep
    n_max = min(int(max_components), full.n_rows, full.n_cols)
    what = "PCA: choosing the number of components"
    if counts is not None:
        a, b = count_split(counts, np.random.default_rng(seed), _SPLIT_P)
        fit = _Scaled(a.reshape(data.shape), poisson)
        fit.decompose(top=n_max)
        sse = _count_errors(fit, b.reshape(data.shape), np.ones(data.shape[:2], bool), n_max, (1 - _SPLIT_P) / _SPLIT_P)
        _report(progress, 1, 1, t0, what)
        loss = sse / b.size - float(b.mean())
        criterion = "count-split"
        why = ("Count splitting: the data are raw counts, so PCA of 90 % of the counts, scored against the other "
               "10 %, gives an unbiased estimate of each component count's true error.")
    else:
        r0, c0 = max(0, (data.shape[0] - CROP) // 2), max(0, (data.shape[1] - CROP) // 2)
        data = data[r0 : r0 + CROP, c0 : c0 + CROP]
        interp = neighbour_mean(data).astype(data.dtype if data.dtype.kind == "f" else np.float64)
        sse, hidden = 0.0, 0
        for i, (pr, pc) in enumerate(PHASES):
            x = data.copy() if data.dtype.kind == "f" else data.astype(np.float64)
            x[pr::GRID, pc::GRID] = interp[pr::GRID, pc::GRID]
            mask = np.zeros(data.shape[:2], bool)
            mask[pr::GRID, pc::GRID] = True  # the pixels hidden in this pass
            fit = _Scaled(x, poisson)
            fit.decompose(top=n_max)
            sse = sse + _count_errors(fit, data, mask, n_max)
            hidden += int(mask.sum()) * data.shape[2]
            _report(progress, i + 1, len(PHASES), t0, what)
        loss = sse / hidden
        criterion = "J-invariant"
        why = ("J-invariant loss (Noise2Self): the data are not raw counts, so each component count is scored on "
               "spectra PCA did not see (replaced by their neighbours' mean); this needs noise independent from "
               "pixel to pixel.")
    curve = [({"n_components": k + 1}, float(v)) for k, v in enumerate(loss) if np.isfinite(v)]
    if not curve:
        raise EmcoreError("No number of PCA components gave a finite score on these data; set the number by hand.")
    best = min(curve, key=lambda pv: pv[1])[0]
    return CalibrationResult(best=best, criterion=criterion, curve=curve, seconds=time.perf_counter() - t0, why=why)


# -- PCA -------------------------------------------------------------------------------
def _run_pca(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    n, how = params["n_components"], "given"
    if n is None:  # self-calibration: every count up to 50 scored on the data itself
        cal = calibrate_pca(ds.data, counts=counts_of(ds), poisson=params["poisson"], seed=ctx.seed,
                            progress=ctx.progress)
        n, how = cal.best["n_components"], f"chosen by {cal.criterion}"
        ctx.log.append(f"Self-calibrated by {cal.criterion} ({len(cal.curve)} settings, {cal.seconds:.1f} s): "
                       f"n_components {n}.")
        ctx.artifacts["calibration"] = cal.to_dict()
    out, info = denoise_pca(ds.data, n_components=n, poisson=params["poisson"], progress=ctx.progress)
    ctx.resolved["n_components"] = int(info.n_components)
    ctx.log.append(f"{info.n_components} components kept ({how}).")
    return out


# Seconds per unit of the SVD's work, pixels × channels × min(pixels, channels), on 2 CPU
# cores (64×64×1024 in about 4 s). Choosing the count costs about one more decomposition
# (count splitting; measured 1.7 s in all against 0.7 s for a given count, one thread).
_SECONDS_PER_FLOP = 8e-10


def _estimate(shape: tuple, kind: str, params: dict) -> float:
    h, w, e = shape
    return _SECONDS_PER_FLOP * h * w * e * min(h * w, e) * (2.0 if params.get("n_components") is None else 1.0)


def _lesson_figure() -> LessonFigure:
    from emcore import spectral

    ds = spectrum_example()
    n = calibrate_pca(ds.data, counts=counts_of(ds)).best["n_components"]  # what Run keeps
    out, info = denoise_pca(ds.data, n_components=n)
    ratio = np.asarray(info.explained_variance_ratio[:20])
    k = np.arange(1, len(ratio) + 1)
    scree = Curve(k, ratio, marker_colors=tuple("crimson" if i <= info.n_components else "grey" for i in k),
                  hover="component %{x}<br>explained variance %{y:.2e}<extra></extra>")
    maps = [spectral.element_map(cube, "Fe_Ka", ds.calibration) for cube in (ds.data, out)]
    return LessonFigure((Panel("Scree curve", curves=(scree,), x_title="component", y_title="explained variance ratio",
                               log_y=True),
                         Panel("Fe Kα map, noisy", maps[0], colorscale="viridis", clip=None),
                         Panel(f"Fe Kα map, PCA ({info.n_components} components)", maps[1], colorscale="viridis",
                               clip=None)), spacing=0.06)


LESSON = Lesson(
    assumes="A spectrum image is a mixture of a few distinct spectra (one per phase or element "
            "combination), so its pixels × channels matrix has only a few components that carry signal; "
            "everything else is counting (Poisson) noise, which a weighting by the mean counts makes "
            "uniform.",
    needs="Only the noisy spectrum image. No clean data, no GPU; one of the quickest methods here for "
          "spectrum images (the estimate beside Run is for this machine).",
    choose_when="EDS or EELS spectrum images — the standard first step before quantification, as in "
                "HyperSpy. It cannot help a single image, and with too many components it keeps noise; with "
                "too few it erases a minor phase. Check the residual of rare elements.",
    parameters="**Components** (chosen from the data: every count up to 50 is scored by count splitting — PCA "
               "of 90 % of the counts against the other 10 % — or, for data that are not counts, the J-invariant "
               "loss; you can override); **Poisson weighting** (turn off for data that are not raw counts).",
    reference="M. R. Keenan, P. G. Kotula, “Accounting for Poisson noise in the multivariate analysis of "
              "ToF-SIMS spectrum images”, *Surf. Interface Anal.* 36, 203–212 (2004); M. Gavish, D. L. Donoho, "
              "“The optimal hard threshold for singular values is 4/√3”, *IEEE Trans. Inf. Theory* 60, "
              "5040–5053 (2014).",
    caption="Scree curve of a small simulated EDS map (left): a few components stand above the noise "
            "plateau; the count chosen by count splitting (red) keeps those. Right: the iron Kα map from the noisy cube and from the PCA "
            "reconstruction.",
    figure=_lesson_figure,
)


register(Method(
    name="pca",
    label="PCA (Poisson-weighted)",
    description="Keeps the few spectral components that carry signal in a spectrum image, "
                "after weighting for Poisson noise (as HyperSpy's decomposition).",
    kind="classical",
    accepts=("cube",),
    params=(
        Param("n_components", "int", None, auto=True, min=1, max=200, label="Components",
              help="How many components to keep. Unset: chosen from the data, every count up to 50 scored (count "
                   "splitting for counts, the J-invariant loss otherwise)."),
        Param("poisson", "bool", True, label="Poisson weighting",
              help="Weight by 1/√(mean counts) per pixel and per channel before the SVD (Keenan & Kotula 2004). "
                   "Turn off for data that are not counts."),
    ),
    run=_run_pca,
    details="The pixels × channels matrix is scaled so that Poisson noise becomes roughly uniform, "
            "decomposed by SVD, truncated and reconstructed. The number of components kept is the one whose "
            "reconstruction scores best on the data itself: count splitting for counts (PCA of a 90 % thinning, "
            "scored against the other 10 %), the J-invariant loss otherwise; every count up to 50 comes from one "
            "decomposition.",
    estimate_seconds=_estimate,
    lesson=LESSON,
))
