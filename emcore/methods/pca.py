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
from emcore.methods.lesson import Curve, Lesson, LessonFigure, Panel, spectrum_example
from emcore.methods.registry import Method, Param, RunContext, register
from emcore.progress import ProgressFn
from emcore.progress import report as _report

__all__ = ["PCAInfo", "denoise_pca", "estimate_n_components"]

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
    h, w, e = data.shape
    flat = data.reshape(h * w, e)  # a view for contiguous input; never written to

    if poisson:
        lowest = float(flat.min())
        if lowest < 0:
            raise EmcoreError(
                f"The spectrum image holds negative values (down to {lowest:g}), so it is not raw "
                "counts and Poisson weighting does not apply; set poisson=False to decompose it "
                "without weighting."
            )
        row_sum = flat.sum(axis=1, dtype=np.float64)
        col_sum = flat.sum(axis=0, dtype=np.float64)
        keep_r = row_sum > 0
        keep_c = col_sum > 0
    else:
        nonzero = flat != 0
        keep_r = nonzero.any(axis=1)
        keep_c = nonzero.any(axis=0)
        del nonzero
    n_rows, n_cols = int(keep_r.sum()), int(keep_c.sum())
    if n_cols < 2 or n_rows < 2:
        where = "channels" if n_cols < 2 else "pixels"
        raise EmcoreError(
            f"Only {min(n_rows, n_cols)} of the spectrum image's {where} hold any signal; PCA needs "
            f"at least two non-empty {where} to find components."
        )

    if poisson:
        # Keenan & Kotula (2004): D̃ = G^(-1/2) D H^(-1/2) with G = diag(a), H = diag(b).
        scale_r = np.sqrt(row_sum[keep_r])
        scale_c = np.sqrt(col_sum[keep_c])
    else:
        scale_r = np.ones(n_rows)
        scale_c = np.ones(n_cols)
    rows = np.flatnonzero(keep_r)
    inv_c = (1.0 / scale_c)[None, :]

    all_rows, all_cols = n_rows == h * w, n_cols == e

    def scaled_block(start: int) -> np.ndarray:
        # Plain slices when nothing is empty (the usual case): fancy indexing copies twice.
        blk = flat[start : start + _BLOCK_ROWS] if all_rows else flat[rows[start : start + _BLOCK_ROWS]]
        if not all_cols:
            blk = blk[:, keep_c]
        blk = blk.astype(np.float64)
        blk *= (1.0 / scale_r[start : start + _BLOCK_ROWS])[:, None]
        blk *= inv_c
        return blk

    starts = range(0, n_rows, _BLOCK_ROWS)
    n_blocks = len(starts)
    total_steps = 2 * n_blocks + 1
    step = 0

    # -- Gram matrix of the smaller side ----------------------------------------------------
    by_channel = n_cols <= n_rows
    if by_channel:
        gram = np.zeros((n_cols, n_cols))
        for s in starts:
            blk = scaled_block(s)
            gram += blk.T @ blk
            step += 1
            _report(progress, step, total_steps, t0, "PCA: correlating channels")
    else:
        scaled = np.concatenate([scaled_block(s) for s in starts], axis=0)
        gram = scaled @ scaled.T
        step += n_blocks
        _report(progress, step, total_steps, t0, "PCA: correlating pixels")

    # -- eigen-decomposition: all eigenvalues, leading eigenvectors ------------------------
    # The divide-and-conquer driver is the fastest LAPACK route to all eigenpairs here.
    evals, evecs = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True, check_finite=False)
    evals = np.clip(evals[::-1], 0, None)
    evecs = evecs[:, ::-1]
    total = float(evals.sum())
    if not total > 0:
        raise EmcoreError("The spectrum image holds no signal (all values are zero); there is nothing to denoise.")
    ratio = evals / total
    rank = int(np.count_nonzero(evals > evals[0] * 1e-12))

    auto = n_components is None
    if auto:
        n = estimate_n_components(evals, (n_rows, n_cols), max_components)
        n = min(n, rank)
    else:
        n = int(n_components)
        if n > min(n_rows, n_cols):
            raise EmcoreError(
                f"{n} PCA components were asked for, but this spectrum image has only "
                f"{min(n_rows, n_cols)} (its number of non-empty {'channels' if by_channel else 'pixels'}); "
                "choose fewer."
            )
    step += 1
    _report(progress, step, total_steps, t0, f"PCA: keeping {n} component{'s' if n != 1 else ''}")

    # -- reconstruction: project on the leading n components, undo the scaling -------------
    out = np.zeros((h * w, e), dtype=np.float32)
    cols = np.flatnonzero(keep_c)
    if by_channel:
        v = evecs[:, :n]
        for s in starts:
            blk = scaled_block(s)
            rec = (blk @ v) @ v.T
            rec *= scale_r[s : s + _BLOCK_ROWS, None]
            rec *= scale_c[None, :]
            _put(out, rec, rows[s : s + _BLOCK_ROWS], cols, all_rows, all_cols)
            step += 1
            _report(progress, step, total_steps, t0, "PCA: reconstructing")
    else:
        u = evecs[:, :n]
        rec = u @ (u.T @ scaled)
        rec *= scale_r[:, None]
        rec *= scale_c[None, :]
        _put(out, rec, rows, cols, all_rows, all_cols)
        step += n_blocks
        _report(progress, step, total_steps, t0, "PCA: reconstructing")

    info = PCAInfo(
        n_components=n,
        explained_variance_ratio=tuple(float(r) for r in ratio[:max_components]),
        auto=auto,
    )
    return out.reshape(h, w, e), info



# -- PCA -------------------------------------------------------------------------------
def _run_pca(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    out, info = denoise_pca(ds.data, n_components=params["n_components"], poisson=params["poisson"],
                            progress=ctx.progress)
    ctx.resolved["n_components"] = int(info.n_components)
    how = "chosen from the scree curve" if info.auto else "given"
    ctx.log.append(f"{info.n_components} components kept ({how}).")
    return out


# Seconds per unit of the SVD's work, pixels × channels × min(pixels, channels), on 2 CPU
# cores (64×64×1024 in about 4 s).
_SECONDS_PER_FLOP = 8e-10


def _estimate(shape: tuple, kind: str, params: dict) -> float:
    h, w, e = shape
    return _SECONDS_PER_FLOP * h * w * e * min(h * w, e)


def _lesson_figure() -> LessonFigure:
    from emcore import spectral

    ds = spectrum_example()
    out, info = denoise_pca(ds.data)
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
    parameters="**Components** (chosen automatically from the scree curve: the Gavish–Donoho threshold "
               "capped by the elbow; you can override); **Poisson weighting** (turn off for data that are "
               "not raw counts).",
    reference="M. R. Keenan, P. G. Kotula, “Accounting for Poisson noise in the multivariate analysis of "
              "ToF-SIMS spectrum images”, *Surf. Interface Anal.* 36, 203–212 (2004); M. Gavish, D. L. Donoho, "
              "“The optimal hard threshold for singular values is 4/√3”, *IEEE Trans. Inf. Theory* 60, "
              "5040–5053 (2014).",
    caption="Scree curve of a small simulated EDS map (left): a few components stand above the noise "
            "plateau; PCA keeps those. Right: the iron Kα map from the noisy cube and from the PCA "
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
              help="How many components to keep; chosen from the scree curve when unset."),
        Param("poisson", "bool", True, label="Poisson weighting",
              help="Weight by 1/√(mean counts) per pixel and per channel before the SVD (Keenan & Kotula 2004). "
                   "Turn off for data that are not counts."),
    ),
    run=_run_pca,
    details="The pixels × channels matrix is scaled so that Poisson noise becomes roughly uniform, "
            "decomposed by SVD, truncated to the components above the noise (Gavish–Donoho threshold, "
            "capped by HyperSpy's scree elbow) and reconstructed.",
    estimate_seconds=_estimate,
    lesson=LESSON,
))
