"""Count splitting: split recorded counts into two independent Poisson halves, denoise one,
score it against the other (Noise2Self-style validation by data thinning).

References
----------
Batson & Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
arXiv:2301.07276 (2023), JMLR 25 (2024).
Neufeld, Gao, Popp, Battle & Witten, "Inference after latent variable estimation for
single-cell RNA sequencing data" ("count splitting"), Biostatistics 25 (2024).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from scipy.special import gammaln

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.noise.models import Poisson

if TYPE_CHECKING:  # annotations only: frame_pairs imports this module
    from emcore.evaluate.frame_pairs import FramePairResult

# --------------------------------------------------------------------------------------------
# Count splitting (Poisson data thinning)
# --------------------------------------------------------------------------------------------

# Floor on the predicted mean in the Poisson likelihood (counts): a prediction of exactly 0
# where counts were recorded has infinite loss; the floor keeps the number finite but large.
_NLL_FLOOR = 1e-6


def _as_counts(counts) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.dtype.kind not in "biuf":
        raise EmcoreError(f"Count splitting needs numeric counts, not values of type {arr.dtype}.")
    if arr.size == 0:
        raise EmcoreError("Count splitting needs data; the array is empty.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise EmcoreError("Count splitting needs counts, but the data hold NaN or Inf values.")
        if not np.all(arr == np.round(arr)):
            raise EmcoreError(
                "Count splitting needs whole electron counts, but the data hold fractional values; "
                "use raw counts (for data scaled by a dose, multiply by the dose first)."
            )
    if np.any(arr < 0):
        raise EmcoreError(
            "Count splitting needs counts of zero or more, but the data hold negative values "
            "(was an offset or dark reference subtracted?)."
        )
    return arr.astype(np.int64)


def _check_p(p: float) -> float:
    p = float(p)
    if not (0.0 < p < 1.0):
        raise EmcoreError(f"The split fraction p must lie strictly between 0 and 1, not {p:g}.")
    return p


def count_split(counts: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Split counts into two independent Poisson halves (binomial thinning).

    Each recorded count is sent to half A with probability ``p`` and to half B otherwise:
    ``A = Binomial(counts, p)``, ``B = counts - A``. If ``counts ~ Poisson(λ)`` then
    ``A ~ Poisson(p λ)`` and ``B ~ Poisson((1 - p) λ)`` and — the point of the exercise — A and
    B are *independent* (Neufeld et al. 2023, Sec. 2; the Poisson case is their Example 1).

    Parameters
    ----------
    counts : ndarray of non-negative integers
        Raw counts, any shape (image, stack, spectrum image). Float arrays are accepted when
        every value is a whole number.
    rng : numpy.random.Generator
        Source of randomness (fix its seed for reproducible splits).
    p : float, default 0.5
        Fraction of the counts expected in half A.

    Returns
    -------
    half_a, half_b : ndarray of int64
        Same shape as ``counts``; ``half_a + half_b == counts`` exactly. The input is not
        modified.

    Raises
    ------
    EmcoreError
        If the data are not non-negative whole numbers, or ``p`` is not in ``(0, 1)``.

    References
    ----------
    Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
    arXiv:2301.07276 (2023).
    Neufeld, Gao, Popp, Battle & Witten, "Inference after latent variable estimation for
    single-cell RNA sequencing data", Biostatistics 25 (2024) ("count splitting").
    """
    n = _as_counts(counts)
    p = _check_p(p)
    half_a = rng.binomial(n, p).astype(np.int64)
    return half_a, n - half_a


@dataclass(frozen=True)
class CountSplitResult:
    """Outcome of :func:`count_split_error`. All errors are in counts² of half B per pixel.

    Attributes
    ----------
    estimated_mse : float
        ``raw_mse - noise_variance``: estimate of the mean squared error between the
        (rescaled) denoised half A and the true signal of half B. Can come out slightly
        negative for an excellent denoiser (it is an unbiased estimate of a small number).
    raw_mse : float
        Mean squared difference between the rescaled estimate and half B.
    noise_variance : float
        Poisson variance of half B, estimated by its mean count.
    poisson_nll : float
        Mean Poisson negative log-likelihood per pixel of half B given the rescaled estimate
        (with the ``log(B!)`` term, so it is a true NLL); lower is better.
    p : float
        Fraction of counts in half A.
    scale : float
        ``(1 - p) / p``, the factor applied to the estimate to put it on B's scale.
    n_pixels : int
        Number of values compared.
    """

    estimated_mse: float
    raw_mse: float
    noise_variance: float
    poisson_nll: float
    p: float
    scale: float
    n_pixels: int

    def to_dict(self) -> dict:
        return {
            "estimated_mse": self.estimated_mse,
            "raw_mse": self.raw_mse,
            "noise_variance": self.noise_variance,
            "poisson_nll": self.poisson_nll,
            "p": self.p,
            "scale": self.scale,
            "n_pixels": self.n_pixels,
        }


def _call_denoiser(denoise_fn, data: np.ndarray, what: str) -> np.ndarray:
    return _checked_output(denoise_fn(data), data, what)


def _checked_output(result, data: np.ndarray, what: str) -> np.ndarray:
    """A method's output for ``data`` as float64, refused when its shape differs or it is not finite."""
    out = np.asarray(result, dtype=np.float64)
    if out.shape != data.shape:
        raise EmcoreError(
            f"The method returned an array of shape {out.shape} for {what} of shape {data.shape}; "
            "it must keep the shape."
        )
    if not np.all(np.isfinite(out)):
        raise EmcoreError(f"The method returned NaN or Inf values for {what}; it cannot be scored.")
    return out


def count_split_error(
    denoise_fn: Callable[[np.ndarray], np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
) -> CountSplitResult:
    """Estimate a denoiser's error on real count data, without a clean reference.

    The counts are split by :func:`count_split` into independent halves A and B. The method
    denoises A alone, ``estimate = denoise_fn(A)``; the estimate is rescaled to B's expected
    level, ``s = estimate · (1 - p) / p``, and compared with B. Because B is independent of A
    (and hence of ``s``) and ``E[B] = μ_B``,

    ``E[(s - B)²] = E[(s - μ_B)²] + Var(B)``,

    the "Noise2Self" decomposition (Batson & Royer 2019, Sec. 3): the error against a noisy
    independent copy is the error against the truth plus the copy's noise variance. For
    Poisson counts ``Var(B) = E[B]``, so the mean noise variance over the image is estimated
    by the mean of B, and

    ``estimated_mse = mean((s - B)²) - mean(B)``

    is an unbiased estimate of the mean squared error between the estimate and the true
    signal of B (the true signal scaled by ``1 - p``). The method is judged on a thinned copy
    of the data (dose ``p`` times the recorded one), so the absolute number describes that
    lower dose; comparing methods on the same split is what it is for (see :func:`rank_runs`).

    The Poisson negative log-likelihood of B given ``s`` is reported too: it is a proper
    scoring rule for counts (lowest in expectation for the true mean), which, unlike the MSE,
    weights errors by the expected noise at each pixel.

    Parameters
    ----------
    denoise_fn : callable
        ``denoise_fn(half_a) -> estimate`` of the same shape. It receives int64 counts and
        should return the denoised counts (any float dtype), on the scale of its input.
    counts : ndarray of non-negative integers
        Raw counts (any shape).
    rng : numpy.random.Generator
        Randomness for the split; fix the seed and reuse it to compare methods on the same
        split.
    p : float, default 0.5
        Fraction of the counts given to the denoised half A.

    Returns
    -------
    CountSplitResult

    Raises
    ------
    EmcoreError
        Bad counts (see :func:`count_split`), or the method changes the shape or returns
        NaN/Inf.

    References
    ----------
    Batson & Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
    Neufeld, Dharamshi, Gao & Witten, "Data thinning for convolution-closed distributions",
    arXiv:2301.07276 (2023).
    Neufeld, Gao, Popp, Battle & Witten, Biostatistics 25 (2024) ("count splitting").
    """
    return count_split_errors(lambda a: [denoise_fn(a)], counts, rng, p)[0]


def count_split_errors(
    denoise_many: Callable[[np.ndarray], Sequence[np.ndarray]],
    counts: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
) -> list[CountSplitResult]:
    """:func:`count_split_error` of several denoisers on one split.

    ``denoise_many(half_a)`` returns one estimate per denoiser (for example every setting of a
    filter tried by a self-calibration, sharing the work they have in common); each is scored
    against the same half B, exactly as :func:`count_split_error` scores a single denoiser.
    """
    p = _check_p(p)
    half_a, half_b = count_split(counts, rng, p)
    b = half_b.astype(np.float64)
    return [_score_half(_checked_output(e, half_a, "half of the counts"), b, p) for e in denoise_many(half_a)]


def _score_half(est: np.ndarray, b: np.ndarray, p: float) -> CountSplitResult:
    """Score one estimate from half A against half B (float64): see :func:`count_split_error`."""
    scale = (1.0 - p) / p
    s = est * scale
    raw = float(np.mean((s - b) ** 2))
    noise_var = float(np.mean(b))
    mu = np.maximum(s, _NLL_FLOOR)
    nll = float(np.mean(mu - b * np.log(mu) + gammaln(b + 1.0)))
    return CountSplitResult(
        estimated_mse=raw - noise_var,
        raw_mse=raw,
        noise_variance=noise_var,
        poisson_nll=nll,
        p=p,
        scale=scale,
        n_pixels=int(b.size),
    )


def rank_runs(results: Mapping[str, "CountSplitResult | FramePairResult"]) -> list[str]:
    """Names of the runs, best (lowest estimated error) first.

    Parameters
    ----------
    results : dict of str to CountSplitResult or FramePairResult
        One result per run, all from the same split (same data, same seed) so they are
        comparable.

    Returns
    -------
    list of str
        Run names sorted by ``estimated_mse``; ties are broken by the Poisson negative
        log-likelihood when present, then by name.
    """
    def key(name):
        r = results[name]
        return (r.estimated_mse, getattr(r, "poisson_nll", 0.0), name)

    return sorted(results, key=key)


def counts_of(ds: Dataset) -> np.ndarray | None:
    """Integer counts behind the data, when there are any.

    Raw counts are used as they are; data recorded as ``counts / dose`` (Poisson noise at a
    known dose, as in the simulated examples) are multiplied back. ``None`` otherwise:
    count-splitting needs genuine counts.
    """
    if ds.is_counts:
        return np.rint(ds.data).astype(np.int64)
    if isinstance(ds.noise, Poisson):
        return np.rint(ds.data * ds.noise.dose).astype(np.int64)
    return None


def half_dataset(ds: Dataset, half: np.ndarray) -> Dataset:
    """A count-split half of ``ds`` as a dataset of raw counts, for a method to denoise."""
    return replace(ds, data=half.astype(np.float32), ground_truth=None, is_counts=True, noise=Poisson(1.0),
                   name=f"{ds.name} (count-split half)")
