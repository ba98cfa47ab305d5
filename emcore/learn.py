"""Teaching material of the Learn page: one lesson per method, and the small live examples.

The registry (:func:`emcore.methods.registry.methods`) says *what* each method is (label, one-line
description, details, parameters). A :class:`Lesson` adds what a newcomer needs to choose
one: what it assumes about signal and noise, what it needs (clean data, a GPU, time), when
to choose it, the parameters that matter, and the reference. The functions below make the
arrays of the Learn page's figures from the built-in simulated examples; each shows the idea
of one method honestly and cheaply (the learned methods take minutes to train, so their
figures show the training scheme on the example, not a result).

No Streamlit here; the page caches what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from emcore.noise.models import Poisson

__all__ = ["LESSONS", "METHOD_ORDER", "Lesson", "block_group", "block_matching", "example_image", "noise2self_views",
           "noise2sr_views", "power_spectrum", "spectrum_example", "unet_views"]


@dataclass(frozen=True)
class Lesson:
    """Plain-words teaching text for one method (Markdown allowed in every field)."""

    name: str
    label: str
    family: str
    assumes: str
    needs: str
    choose_when: str
    parameters: str
    reference: str
    figure: str


METHOD_ORDER: tuple[str, ...] = ("bm3d", "wiener", "pca", "dncnn", "unet", "noise2self", "noise2sr", "dcae3d")

LESSONS: dict[str, Lesson] = {
    "bm3d": Lesson(
        name="bm3d", label="BM3D", family="classical",
        assumes="An image contains many small patches that look alike (repeated columns, flat areas, edges "
                "along a facet). The noise is Poisson or Poisson–Gaussian; a variance-stabilising transform "
                "(generalised Anscombe) turns it into noise of constant strength before filtering, and an exact "
                "unbiased inverse brings the result back.",
        needs="Only the noisy data and a noise level (estimated from the image when not given). No clean data, "
              "no GPU. Seconds for a 512×512 image on a laptop; minutes for a large spectrum image, which is "
              "done slice by slice.",
        choose_when="A strong, well-understood baseline for single images and frames, including lattices and "
                    "nanoparticles. It rarely invents structure, so it is a good reference against which to "
                    "judge the networks. It struggles at the very lowest doses (below ~1 e⁻/px), where similar "
                    "patches can no longer be found in the noise.",
        parameters="**Noise gain a and floor b** (variance = a·signal + b²; estimated when unset); **profile** "
                   "('np' normal, 'refilter', 'vn' for very noisy data); **energy binning** for spectrum images.",
        reference="K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian, “Image denoising by sparse 3-D transform-domain "
                  "collaborative filtering”, *IEEE Trans. Image Process.* 16, 2080–2095 (2007); M. Mäkitalo, A. Foi, "
                  "“Optimal inversion of the generalized Anscombe transformation for Poisson–Gaussian noise”, "
                  "*IEEE Trans. Image Process.* 22, 91–103 (2013).",
        figure="Block matching, BM3D's first step, on a simulated HRTEM image at 20 e⁻/px: for the reference "
               "block (green, on an atomic column) the most similar blocks in the 39-px search window (orange) "
               "are stacked into a group; averaging the group (right) already shows the column more clearly "
               "than any single noisy block. BM3D then filters each group in a 3-D transform domain.",
    ),
    "wiener": Lesson(
        name="wiener", label="Wiener filter", family="classical",
        assumes="The signal is stationary — the same kind of structure everywhere — and the noise is white "
                "(independent from pixel to pixel), so in the Fourier transform the noise is a flat floor and a "
                "crystal lattice shows as sharp spots standing above it.",
        needs="Only the noisy data. No clean data, no GPU; well under a second even for 2048×2048 images.",
        choose_when="Periodic images (HREM/HRSTEM of crystals) where a quick, transparent filter is enough, or "
                    "as a first look. It blurs what is not periodic (surfaces, defects, the particle edge), and "
                    "the 'local' mode is the adaptive spatial variant for non-periodic images.",
        parameters="**Mode** ('fft' global Fourier filter, 'local' adaptive spatial filter); **window** "
                   "(smoothing of the power spectrum, or the local neighbourhood); **noise variance** "
                   "(estimated from the high spatial frequencies when unset).",
        reference="N. Wiener, *Extrapolation, Interpolation, and Smoothing of Stationary Time Series*, MIT Press "
                  "(1949); R. Kilaas, “Optimal and near-optimal filters in high-resolution electron microscopy”, "
                  "*J. Microsc.* 190, 45–51 (1998).",
        figure="The power spectrum of the noisy example (log scale): the lattice gives bright spots above a flat "
               "noise floor. The Wiener filter keeps each frequency in proportion to how far its power stands "
               "above that floor — the result is on the right.",
    ),
    "pca": Lesson(
        name="pca", label="PCA (Poisson-weighted)", family="classical",
        assumes="A spectrum image is a mixture of a few distinct spectra (one per phase or element "
                "combination), so its pixels × channels matrix has only a few components that carry signal; "
                "everything else is counting (Poisson) noise, which a weighting by the mean counts makes "
                "uniform.",
        needs="Only the noisy spectrum image. No clean data, no GPU; seconds for 128×128×1024.",
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
        figure="Scree curve of a small simulated EDS map (left): a few components stand above the noise "
               "plateau; PCA keeps those. Right: the iron Kα map from the noisy cube and from the PCA "
               "reconstruction.",
    ),
    "dncnn": Lesson(
        name="dncnn", label="DnCNN", family="supervised",
        assumes="Images like the training images, with noise like the training noise. The network learns the "
                "*noise* (residual learning): it predicts noisy − clean and subtracts it.",
        needs="Training pairs of noisy and clean images. The workbench ships weights trained on simulated "
              "HRTEM images (simulation-based denoising), so using it takes seconds on a CPU; training your own "
              "takes hours on a CPU and minutes on a GPU.",
        choose_when="HRTEM/STEM images close to the training simulations, when you want a fast result. For data "
                    "unlike the simulations, train on your own pairs or use a self-supervised method, and check "
                    "the result with the no-reference tests.",
        parameters="**Weights file** (shipped, or your own); **tile** size and **overlap** for large images.",
        reference="K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, “Beyond a Gaussian denoiser: residual learning "
                  "of deep CNN for image denoising”, *IEEE Trans. Image Process.* 26, 3142–3155 (2017); "
                  "S. Mohan et al., “Deep denoising for scientific discovery: a case study in electron "
                  "microscopy”, *IEEE Trans. Comput. Imaging* 8, 585–597 (2022).",
        figure="One training pair, made live by the simulator: the noisy input, the clean target, and the noise "
               "(input − target) that DnCNN learns to predict.",
    ),
    "unet": Lesson(
        name="unet", label="UNet", family="supervised",
        assumes="As DnCNN: images and noise like those it was trained on. The UNet looks at the image at four "
                "resolutions, so each output pixel sees 116 px around it — several lattice periods — and can "
                "use the repetition of the crystal.",
        needs="Training pairs (shipped weights trained on simulated HRTEM pairs, as in Mohan et al. 2022). "
              "Inference takes seconds on a CPU; training takes hours on a CPU, tens of minutes on a GPU.",
        choose_when="The best choice for HRTEM of nanoparticles at very low dose when the simulations match your "
                    "microscope; the Compare page's 'What is the network looking at?' shows which input pixels "
                    "each output pixel comes from.",
        parameters="**Weights file**; **tile** size (400 px, as Mohan et al.) and **overlap**.",
        reference="O. Ronneberger, P. Fischer, T. Brox, “U-Net: convolutional networks for biomedical image "
                  "segmentation”, *MICCAI* 2015, LNCS 9351, 234–241; S. Mohan, R. Manzorro, J. L. Vincent et al., "
                  "“Deep denoising for scientific discovery: a case study in electron microscopy”, *IEEE Trans. "
                  "Comput. Imaging* 8, 585–597 (2022).",
        figure="The same noisy patch at the four resolutions the UNet works at (here each is a 2×2 average of "
               "the previous one; the network pools learned features instead): the coarse levels see the "
               "lattice through the noise, the fine level places the columns precisely.",
    ),
    "noise2self": Lesson(
        name="noise2self", label="Noise2Self", family="self-supervised",
        assumes="The noise is independent from pixel to pixel (true for counting noise; not for scan streaks or "
                "correlated detector noise), while the signal is not. Then predicting a pixel from its "
                "neighbours only can recover the signal but never the pixel's own noise.",
        needs="Only the noisy data — no clean images and no noise model. It trains on the image itself: "
              "minutes on a GPU, tens of minutes on a CPU.",
        choose_when="Data unlike any simulation, with pixel-independent noise and nothing else to learn from. "
                    "The baseline of self-supervised denoising; Noise2SR usually does better on HREM images.",
        parameters="**Preset** (training budget); **mask grid** (one pixel in grid×grid is hidden per pass); "
                   "**inference** ('single' pass, or 'j-invariant' — one pass per mask phase).",
        reference="J. Batson, L. Royer, “Noise2Self: blind denoising by self-supervision”, *ICML* 2019, "
                  "PMLR 97, 524–533.",
        figure="The masking scheme on the example: one pixel in every 4×4 block is hidden (middle) and replaced by "
               "the average of its neighbours (right); the network is trained to predict the noisy values of "
               "exactly those hidden pixels.",
    ),
    "noise2sr": Lesson(
        name="noise2sr", label="Noise2SR", family="self-supervised",
        assumes="Pixel-independent noise, as Noise2Self. A random sub-sampler keeps one pixel of every 2×2 cell; "
                "a super-resolving network predicts the full image from that, and is scored on the three pixels "
                "per cell it did not see, whose noise is independent of its input.",
        needs="Only the one noisy image (zero-shot). Training on the image itself: a few minutes on a GPU, longer "
              "on a CPU.",
        choose_when="A single HREM image of a structure unlike the simulations, at low dose. Averaging many "
                    "sub-samplings at the end gives a smoother estimate.",
        parameters="**Preset** (training budget); **sub-sampling cell** (2 px as in the paper); **sub-samplings "
                   "averaged** at inference.",
        reference="X. Tian, Z. Dong, X. Lin, Y. Gao, H. Wei, Y. Ma, J. Yu, Y. Zhang, “Zero-shot image denoising "
                  "for high-resolution electron microscopy”, *IEEE Trans. Comput. Imaging* 10, 1462–1475 (2024).",
        figure="The sub-sampling scheme on the example: the half-size input made of one random pixel per 2×2 "
               "cell (middle), and the pixels the loss is taken on (right, white): the three per cell that the "
               "network did not see.",
    ),
    "dcae3d": Lesson(
        name="dcae3d", label="3D-DCAE", family="self-supervised",
        assumes="In a spectrum image, neighbouring pixels and neighbouring energies are correlated (the same "
                "particle, the same peak), while counting noise is independent from voxel to voxel. A 3-D "
                "convolutional autoencoder compresses (row, column, energy) blocks and keeps what they share.",
        needs="Only the noisy spectrum image (trained on it Noise2Self-style; optionally with the HAADF image as "
              "an extra input). A GPU helps: minutes there, much longer on a CPU.",
        choose_when="EDS maps too sparse for PCA to separate minor elements, where both spatial and spectral "
                    "context are needed. Check it against PCA with the count-split score of the Compare page: "
                    "on a nearly uniform sample PCA's one spectral model for the whole map is hard to beat, and "
                    "the network needs a longer training to pass it (on the SiO₂ cube of our benchmark: "
                    "3000 steps rather than the fast preset's 400).",
        parameters="Training budget; the network's width and depth; use of the HAADF image.",
        reference="R. Taylor, Y. Chen, H. Zheng, N. D. Browning, “Deep learning-based blind denoising for "
                  "enhancing energy-dispersive X-ray spectroscopy (EDS) images”, *Microscopy and Microanalysis* "
                  "(conference abstract); with the masking of J. Batson, L. Royer, *ICML* 2019.",
        figure="A small simulated EDS map: the spectrum of one pixel as recorded (a handful of counts) and as it "
               "truly is, and the neighbourhood in space and energy a 3-D convolution reads.",
    ),
}


# -- live examples ----------------------------------------------------------------------
# Dose of the method figures: at 20 e⁻/px the columns are faint but there, so a figure can
# show what each method's idea does with them (the dose demo covers the lower doses).
EXAMPLE_DOSE = 20.0


def example_image(size: int = 128, dose: float = EXAMPLE_DOSE, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A clean HRTEM phantom of a Pt particle (columns ~15 px apart) and a noisy copy at ``dose`` e⁻/px."""
    from emcore.sim.hrem import hrem_phantom

    clean = hrem_phantom((size, size), rng=np.random.default_rng(seed), pixel_size_nm=0.012, contrast="bright")
    noisy = Poisson(dose).sample(clean, np.random.default_rng(seed + 1))
    return clean.astype(np.float32), noisy.astype(np.float32)


def block_matching(image: np.ndarray, ref: tuple[int, int], block: int = 12, search: int = 39,
                   n: int = 8, prefilter: float = 2.0) -> list[tuple[int, int]]:
    """Top-left corners of the ``n`` blocks most similar to the block at ``ref`` (itself first).

    BM3D's grouping step [Dabov 2007, Sec. 2.1]: ``block``×``block`` blocks within a
    ``search``-px window (39 px in the paper), ranked by the squared distance. The paper
    uses 8-px blocks at moderate noise and larger ones for strong noise; 12 px matches the
    column size of the example. Like the paper's coarse prefiltering for strong noise, the
    distance is taken on a smoothed copy (Gaussian, ``prefilter`` px).
    """
    a = ndi.gaussian_filter(np.asarray(image, np.float64), prefilter) if prefilter else np.asarray(image, np.float64)
    h, w = a.shape
    r0, c0 = ref
    refb = a[r0:r0 + block, c0:c0 + block]
    half = search // 2
    cands = []
    for r in range(max(0, r0 - half), min(h - block, r0 + half) + 1):
        for c in range(max(0, c0 - half), min(w - block, c0 + half) + 1):
            d = float(np.sum((a[r:r + block, c:c + block] - refb) ** 2))
            cands.append((d, r, c))
    cands.sort()
    chosen: list[tuple[int, int]] = []
    for _, r, c in cands:  # keep blocks that overlap little, so the figure shows distinct matches
        if all(abs(r - q) >= block // 2 or abs(c - p) >= block // 2 for q, p in chosen):
            chosen.append((r, c))
        if len(chosen) == n:
            break
    return chosen


def block_group(image: np.ndarray, ref: tuple[int, int], block: int = 12, n: int = 8):
    """BM3D's group for the block at ``ref``: the matched corners, the blocks tiled 2 rows × n/2
    (NaN between them) for display, and their average."""
    matches = block_matching(image, ref, block=block, n=n)
    group = [np.asarray(image[r:r + block, c:c + block], np.float32) for r, c in matches]
    per_row = (len(group) + 1) // 2
    tiles = np.full((2 * block + 1, per_row * (block + 1) - 1), np.nan, np.float32)
    for k, b in enumerate(group):
        r, c = divmod(k, per_row)
        tiles[r * (block + 1):r * (block + 1) + block, c * (block + 1):c * (block + 1) + block] = b
    return matches, tiles, np.mean(group, axis=0)


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """log10 of the centred power spectrum (mean removed), for display."""
    a = np.asarray(image, np.float64)
    p = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2
    return np.log10(p + p.mean() * 1e-6).astype(np.float32)


def unet_views(image: np.ndarray, scales: int = 4) -> list[np.ndarray]:
    """The image at ``scales`` resolutions, each a 2×2 average of the previous one."""
    views = [np.asarray(image, np.float32)]
    for _ in range(scales - 1):
        a = views[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        views.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return views


def noise2self_views(noisy: np.ndarray, grid: int = 4, phase: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Self's mask (1 = hidden) and the network input with those pixels interpolated [Batson2019]."""
    import torch

    from emcore.methods.noise2self import grid_mask, interpolate_masked

    mask = grid_mask(noisy.shape, grid, phase)
    x = torch.from_numpy(np.asarray(noisy, np.float32))[None, None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return mask.astype(np.float32), interpolate_masked(x, m)[0, 0].numpy()


def noise2sr_views(noisy: np.ndarray, s: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise2SR's sub-sampled input (H/s, W/s) and its loss mask (H, W; 1 = not fed in) [Tian2024]."""
    import torch

    from emcore.methods.noise2sr import draw_cells, subsample

    h, w = noisy.shape[0] // s * s, noisy.shape[1] // s * s
    x = torch.from_numpy(np.ascontiguousarray(noisy[:h, :w], np.float32))[None, None]
    cells = torch.from_numpy(draw_cells(np.random.default_rng(seed), 1, h // s, w // s, s))
    low, mask = subsample(x, cells, s)
    return low[0, 0].numpy(), mask[0, 0].numpy()


def spectrum_example(size: int = 32, counts: float = 30.0, seed: int = 3):
    """A small simulated EDS spectrum image (Dataset with ground truth), 512 channels of 20 eV."""
    from emcore.sim.eds import eds_example

    return eds_example(seed=seed, counts_per_pixel=counts, size=size, channels=512)
