"""Registry entries of the classical methods: BM3D, Wiener, PCA.

Each entry adapts a :class:`~emcore.dataset.Dataset` to the plain array functions of this
package (image / stack / cube dispatch, the noise model to use) and declares its
parameters for the Denoise page and the CLI.
"""

from __future__ import annotations

import numpy as np

from ..dataset import Dataset
from ..noise import Gaussian, Poisson, PoissonGaussian
from ..registry import Method, Param, RunContext, register

NOISE_PARAMS = (
    Param("noise_a", "float", None, auto=True, min=0.0, max=1e6, label="Noise gain a",
          help="Signal-dependent part of the noise variance, variance = a·signal + b² "
               "(a = 1/dose for images scaled by the dose; 1 for raw counts). Estimated from the data when unset."),
    Param("noise_b", "float", None, auto=True, min=0.0, max=1e6, label="Noise floor b",
          help="Standard deviation of the signal-independent (read-out) noise. Estimated from the data when unset."),
)


def noise_for(ds: Dataset, params: dict, ctx: RunContext):
    """The noise model a method should use, and why; records the values in ``ctx``.

    Order: values the user gave, the dataset's known model (simulations), Poisson for raw
    counts, otherwise a blind Poisson–Gaussian estimate (Foi et al. 2008).
    """
    a, b = params.get("noise_a"), params.get("noise_b")
    if a is not None or b is not None:
        a, b = float(a or 0.0), float(b or 0.0)
        model = Gaussian(b) if a == 0 else PoissonGaussian(a, b)
        why = "given"
    elif ds.noise is not None:
        model, why = ds.noise, "known for this dataset"
    elif ds.is_counts:
        model, why = Poisson(1.0), "raw counts, so Poisson"
    else:
        from ..noise_estimation import estimate_noise

        model = estimate_noise(ds.data, ds.kind).model()
        why = "estimated from the data (Foi et al. 2008)"
    if isinstance(model, Poisson):
        a_used, b_used = 1.0 / model.dose, 0.0
    elif isinstance(model, PoissonGaussian):
        a_used, b_used = model.a, model.b
    else:
        a_used, b_used = 0.0, model.sigma
    ctx.resolved.update(noise_a=float(a_used), noise_b=float(b_used))
    ctx.log.append(f"Noise model: {model.describe()} ({why}).")
    return model


# -- BM3D ------------------------------------------------------------------------------
def _run_bm3d(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from .bm3d_method import denoise_bm3d, denoise_bm3d_cube, denoise_bm3d_stack

    noise = noise_for(ds, params, ctx)
    common = dict(noise=noise, profile=params["profile"], progress=ctx.progress, should_stop=ctx.should_stop)
    if ds.kind == "image":
        return denoise_bm3d(ds.data, **common)
    if ds.kind == "stack":
        return denoise_bm3d_stack(ds.data, **common)
    return denoise_bm3d_cube(ds.data, bin_energy=params["bin_energy"], **common)


register(Method(
    name="bm3d",
    label="BM3D",
    description="Block-matching and 3-D collaborative filtering, with a variance-stabilising "
                "transform for Poisson and Poisson–Gaussian noise.",
    kind="classical",
    accepts=("image", "stack", "cube"),
    params=NOISE_PARAMS + (
        Param("profile", "choice", "np", choices=("np", "refilter", "vn", "high", "deb"), label="BM3D profile",
              help="Parameter set of the bm3d package: 'np' (normal), 'refilter', 'vn' (very noisy), 'high' (high quality)."),
        Param("bin_energy", "int", 1, min=1, max=64, label="Energy binning (cubes)",
              help="Spectrum images only: denoise sums of this many channels (faster, brighter slices), "
                   "then spread each back over its channels."),
    ),
    run=_run_bm3d,
    details="Groups similar patches into 3-D stacks, shrinks them in a 3-D transform domain and "
            "averages the overlapping estimates (Dabov et al., IEEE TIP 2007; Mäkitalo & Foi 2013 for "
            "the exact unbiased inverse of the generalised Anscombe transform). Stacks are done frame by "
            "frame and spectrum images slice by slice. The bm3d package is free for non-commercial use only.",
))


# -- Wiener ----------------------------------------------------------------------------
def _run_wiener(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from .wiener import denoise_wiener, denoise_wiener_cube, denoise_wiener_stack

    fn = {"image": denoise_wiener, "stack": denoise_wiener_stack, "cube": denoise_wiener_cube}[ds.kind]
    return fn(ds.data, noise_power=params["noise_power"], mode=params["mode"], window=params["window"],
              progress=ctx.progress)


register(Method(
    name="wiener",
    label="Wiener filter",
    description="Fourier-domain Wiener filter with signal and noise spectra estimated from the image: "
                "lattice reflections pass, the white-noise floor is removed.",
    kind="classical",
    accepts=("image", "stack", "cube"),
    params=(
        Param("mode", "choice", "fft", choices=("fft", "local"), label="Mode",
              help="'fft': global Wiener filter in Fourier space (for periodic HREM/STEM images); "
                   "'local': adaptive spatial Wiener filter (Lee 1980)."),
        Param("window", "int", 5, min=3, max=31, label="Window (px)",
              help="Averaging box of the power spectrum (fft) or the local neighbourhood (local)."),
        Param("noise_power", "float", None, auto=True, min=0.0, max=1e12, label="Noise variance",
              help="Noise variance per pixel; estimated from the high-frequency power when unset."),
    ),
    run=_run_wiener,
    details="H(k) = S(k) / (S(k) + N): N is the flat noise floor measured beyond 3/4 of Nyquist, S the "
            "smoothed power above it (after Kilaas, J. Microsc. 1998). Sharp lattice reflections stand far "
            "above the floor and pass almost untouched; noise between them is removed.",
))


# -- PCA -------------------------------------------------------------------------------
def _run_pca(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:
    from .pca import denoise_pca

    out, info = denoise_pca(ds.data, n_components=params["n_components"], poisson=params["poisson"],
                            progress=ctx.progress)
    ctx.resolved["n_components"] = int(info.n_components)
    how = "chosen from the scree curve" if info.auto else "given"
    ctx.log.append(f"{info.n_components} components kept ({how}).")
    return out


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
))
