"""The prior channel of the supervised networks: a self-calibrated Fourier Wiener filter.

A lattice image repeats over the whole field, and the Fourier Wiener filter
(:mod:`emcore.methods.wiener`, window and noise floor chosen on the data itself) averages each
reflection over all of it — an effectively global receptive field. A UNet sees 116 px around a
pixel. Measured on the reference Pt/CeO₂ images at 0.45–1 e⁻/px, the self-calibrated Wiener
filter alone was 4–6 dB above both BM3D and a UNet trained on the same multislice set
(``benchmarks/RESULTS.md``), but it smears what does not repeat: the particle's surface, the
vacuum, defects. A network with ``prior=True`` (:class:`models.UNet`, :class:`models.DnCNN`)
reads the noisy image *and* this filter's output of the whole frame, and returns the filter's
output plus a learned local correction.

The same function makes the prior in training (:mod:`emcore.train.prior_fields`, on whole
simulated fields) and at inference (on whole frames, before tiling), so the network always
sees the prior it was trained with.
"""

from __future__ import annotations

import numpy as np

from emcore.data.dataset import Dataset
from emcore.methods.registry import denoise

PRIORS = ("wiener",)


def wiener_prior(frame: np.ndarray) -> tuple[np.ndarray, dict]:
    """The self-calibrated Fourier Wiener filter of one whole frame, in the frame's units.

    Returns the filtered frame (float32) and the parameters the calibration chose (window,
    noise power). Deterministic: the calibration runs with seed 0.
    """
    res = denoise(Dataset(np.asarray(frame, np.float32), "image"), "wiener", device="cpu", seed=0)
    return np.asarray(res.data, np.float32), dict(res.params)


def network_input(frame: np.ndarray, prior: np.ndarray | None, scale: float) -> np.ndarray:
    """The network's input for one frame: ``(H, W)`` or, with a prior, ``(2, H, W)``, divided by ``scale``."""
    x = np.asarray(frame, np.float32) / np.float32(scale)
    if prior is None:
        return x
    return np.stack([x, np.asarray(prior, np.float32) / np.float32(scale)])
