"""What is the network looking at? The adaptive filter a trained denoiser applies at a pixel.

A network denoiser built from convolutions and ReLUs is piecewise linear: around a given
input ``x`` it acts as ``f(x) ≈ J(x) x``, where row ``p`` of the Jacobian ``J(x)`` holds the
weights with which output pixel ``p`` averages the input pixels — an *adaptive filter* that
changes from pixel to pixel [Mohan2020]. For a bias-free network the relation is exact,
``f(x) = J(x) x``. Mohan et al. showed on low-dose TEM images of Pt/CeO₂ that this filter is
wide and flat in vacuum (averaging many pixels of a featureless region) and, on the
crystal, concentrates on the neighbouring atomic columns of the same lattice
[Mohan2022, Sec. VI].

:func:`pixel_filter` computes one such row: it crops a window around the pixel large enough
to hold the network's receptive field, runs the network once on it and takes one backward
pass from the output pixel. The window's result is exact (the same as on the whole image)
because the learned methods' ``apply`` keeps the whole-input normalisation fixed and the
window contains every input pixel the output pixel can depend on (checked after the fact:
if the weights have not died out at the window's edge, the window is enlarged).

Summary numbers, defined for the weights ``w`` of the chosen output pixel:

``weight_sum``
    ``Σ w``. About 1 for a filter that preserves the local brightness (a weighted average);
    below 1 where the network darkens, above where it brightens.
``participation``
    ``(Σ |w|)² / Σ w²``, the *participation ratio*: the number of pixels that effectively
    take part. A box filter over ``n`` pixels gives ``n``; a filter that copies one pixel
    gives 1.
``area90``
    The smallest number of pixels that together hold 90 % of ``Σ |w|`` (the largest
    weights first).
``effective_diameter``
    ``2 √(area90 / π)``: the diameter in pixels of a disc with that area — the "size" of the
    filter quoted in the app.

References
----------
.. [Mohan2020] S. Mohan, Z. Kadkhodaie, E. P. Simoncelli, C. Fernandez-Granda, "Robust and
   Interpretable Blind Image Denoising via Bias-Free Convolutional Neural Networks",
   ICLR 2020 (Sec. 5, "the network as an adaptive filter").
.. [Mohan2022] S. Mohan, R. Manzorro, J. L. Vincent, B. Tang, D. Y. Sheth, E. P. Simoncelli,
   D. S. Matteson, P. A. Crozier, C. Fernandez-Granda, "Deep Denoising for Scientific
   Discovery: A Case Study in Electron Microscopy", IEEE Trans. Comput. Imaging 8, 585-597,
   2022 (Sec. VI, "Interpretability": gradients of the output pixel w.r.t. the input).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emcore.errors import EmcoreError
from emcore.methods.registry import Method, methods

__all__ = [
    "PixelFilter", "filter_window", "pixel_filter", "supported_methods", "supported_text", "supports_filter",
]
# The fraction of Σ|w| that defines ``area90``.
AREA_FRACTION = 0.9
# Window origins are aligned to this many pixels: a U-Net with up to 6 scales pools on a
# grid of 2**5 = 32 px anchored at the top-left pixel of its input, and a crop taken at a
# multiple of the pooling step sees the same grid as the whole image (models/unet.py).
ALIGN = 32
# Extra pixels beyond half the receptive field on each side (pooling makes the field
# slightly asymmetric).
MARGIN = 4
# The weights at the window's edge must be below this fraction of the largest weight;
# otherwise the window is doubled (up to the whole image).
EDGE_TOLERANCE = 1e-4


def supported_methods() -> list[Method]:
    """The registered methods whose results carry a network to follow (``Method.filter_view``)."""
    return [m for m in methods() if m.filter_view is not None]


def supported_text() -> str:
    """Plain list of the methods whose results support the filter view, e.g. for messages."""
    names = [m.filter_view.label or m.label for m in supported_methods()]
    if len(names) < 2:
        return names[0] if names else "no installed method"
    return ", ".join(names[:-1]) + " and " + names[-1]


def _method_note(method: str | None) -> str:
    """The registry's note on what the view follows for ``method`` (empty when none)."""
    spec = next((m.filter_view for m in supported_methods() if m.name == method), None)
    return spec.note if spec is not None else ""


def supports_filter(artifacts: Mapping[str, Any] | None) -> bool:
    """Whether a result's artifacts hold a network function the filter view can use."""
    return bool(artifacts) and callable(artifacts.get("apply"))


@dataclass(frozen=True)
class PixelFilter:
    """The adaptive filter at one output pixel (see the module docstring for the numbers).

    Attributes
    ----------
    weights : ndarray, (h, w) float32
        ∂ output[pixel] / ∂ input over the window; for cubes, with respect to the input
        slice at the chosen energy.
    origin : (int, int)
        Image (row, col) of ``weights[0, 0]``.
    pixel : (int, int)
        The output pixel (row, col) in the image.
    energy : int or None
        Energy channel of the output pixel (cubes).
    window_input : ndarray, (h, w) float32
        The input over the window (the slice at ``energy`` for cubes), for display.
    output : float
        The network's output at the pixel, computed on the window.
    linear_estimate : float
        ``Σ J x`` over the window (all energies for cubes); equal to ``output`` for a
        bias-free network, the difference is the network's local offset.
    weight_sum, participation, area90, effective_diameter : float, float, int, float
        Summaries of ``weights``.
    summed : ndarray (h, w) or None
        Cubes: the gradient summed over all input energies (how much each input pixel
        counts, whatever the channel).
    spectral : ndarray (E,) or None
        Cubes: the gradient summed over the window for each input energy (which channels
        the network takes its estimate from).
    summed_weight_sum : float or None
        Cubes: ``Σ summed``.
    seconds : float
        Time taken.
    note : str
        How the function followed differs from the one that made the result, if it does
        (empty otherwise).
    """

    weights: np.ndarray
    origin: tuple[int, int]
    pixel: tuple[int, int]
    energy: int | None
    window_input: np.ndarray
    output: float
    linear_estimate: float
    weight_sum: float
    participation: float
    area90: int
    effective_diameter: float
    summed: np.ndarray | None = None
    spectral: np.ndarray | None = None
    summed_weight_sum: float | None = None
    seconds: float = 0.0
    note: str = ""

    @property
    def centre(self) -> tuple[int, int]:
        """(row, col) of the pixel inside :attr:`weights`."""
        return self.pixel[0] - self.origin[0], self.pixel[1] - self.origin[1]

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """Image rows and columns covered: (row0, row1, col0, col1), ends exclusive."""
        h, w = self.weights.shape
        return self.origin[0], self.origin[0] + h, self.origin[1], self.origin[1] + w


def filter_summary(weights: np.ndarray) -> dict[str, float]:
    """``weight_sum``, ``participation``, ``area90`` and ``effective_diameter`` of a filter."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    a = np.abs(w)
    total = float(a.sum())
    if total == 0.0:
        return {"weight_sum": 0.0, "participation": 0.0, "area90": 0, "effective_diameter": 0.0}
    participation = total**2 / float(np.sum(w * w))
    cum = np.cumsum(np.sort(a)[::-1])
    area = int(np.searchsorted(cum, AREA_FRACTION * total) + 1)
    return {"weight_sum": float(w.sum()), "participation": float(participation), "area90": area,
            "effective_diameter": float(2.0 * np.sqrt(area / np.pi))}


def filter_window(shape: tuple[int, int], row: int, col: int, receptive_field: int, min_size: int = 1,
                  half: int | None = None) -> tuple[int, int, int, int]:
    """Image rows and columns ``(r0, r1, c0, c1)`` (ends exclusive) of the window for a pixel.

    The window reaches ``half`` pixels (default: half the receptive field plus
    :data:`MARGIN`) on each side of the pixel, starts at a multiple of :data:`ALIGN`, is at
    least ``min_size`` wide where the image allows, and is clipped to the image.
    """
    h, w = int(shape[0]), int(shape[1])
    half = int(receptive_field) // 2 + MARGIN if half is None else int(half)

    def axis(p: int, n: int) -> tuple[int, int]:
        lo = max(0, p - half)
        lo -= lo % ALIGN
        hi = min(n, p + half + 1)
        need = min(n, max(int(min_size), 1))
        if hi - lo < need:  # grow to the right, then to the left
            hi = min(n, lo + need)
            lo = max(0, hi - need)
            lo -= lo % ALIGN
        return lo, hi

    r0, r1 = axis(int(row), h)
    c0, c1 = axis(int(col), w)
    return r0, r1, c0, c1


def _check_inputs(artifacts, data, row, col, energy, method):
    what = f"The {method} result" if method else "This result"
    if not supports_filter(artifacts):
        raise EmcoreError(
            f"{what} has no trained network to inspect; the adaptive-filter view works on results of "
            f"{supported_text()}: run one of them on the Denoise page first.")
    a = np.asarray(data)
    if a.ndim not in (2, 3):
        raise EmcoreError(
            f"The adaptive-filter view works on an image (H, W) or a spectrum image (H, W, E); "
            f"this data has shape {a.shape} — for a stack, pick one frame.")
    h, w = a.shape[:2]
    try:
        row, col = int(row), int(col)
    except (TypeError, ValueError):
        raise EmcoreError(f"The pixel must be given as whole row and column numbers, not ({row!r}, {col!r}).") from None
    if not (0 <= row < h and 0 <= col < w):
        raise EmcoreError(
            f"Pixel (row {row}, col {col}) lies outside the {h}×{w} image; rows run from 0 to {h - 1} "
            f"and columns from 0 to {w - 1}.")
    if a.ndim == 3:
        n = a.shape[2]
        if energy is None:
            raise EmcoreError(
                "This is a spectrum image: choose an energy (a channel, or an element line) to see the "
                "filter the network applies to that energy slice.")
        try:
            energy = int(energy)
        except (TypeError, ValueError):
            raise EmcoreError(f"The energy must be a channel number, not {energy!r}.") from None
        if not 0 <= energy < n:
            raise EmcoreError(f"Channel {energy} is outside this spectrum image, whose channels run from 0 to {n - 1}.")
    else:
        energy = None
    return a, row, col, energy


def pixel_filter(
    artifacts: Mapping[str, Any] | Any,
    data: np.ndarray,
    row: int,
    col: int,
    *,
    energy: int | None = None,
    method: str | None = None,
) -> PixelFilter:
    """The filter the network applies at output pixel ``(row, col)`` [Mohan2022, Sec. VI].

    Parameters
    ----------
    artifacts : mapping or DenoiseResult
        A result's ``artifacts`` (or the result itself): ``"apply"`` (differentiable CPU
        function of the input in data units), ``"receptive_field"`` (px, side length) and
        ``"min_size"`` (smallest crop side ``apply`` accepts); optionally ``"filter_apply"``, a
        cheaper function used instead of ``"apply"`` for the view, with ``"filter_note"``
        saying how it differs (Noise2SR: fewer sub-samplings averaged); optionally
        ``"apply_at"``, ``f(window, r0, c0)``, for networks that also read a fixed whole-image
        input (a prior channel), with ``"filter_note"`` saying so. See
        :class:`emcore.methods.registry.DenoiseResult`.
    data : ndarray
        The input the result was computed from: an image ``(H, W)`` or a spectrum image
        ``(H, W, E)``. Not modified.
    row, col : int
        The output pixel.
    energy : int, optional
        Required for spectrum images: the energy channel of the output pixel.
    method : str, optional
        The method's name, for messages.

    Returns
    -------
    PixelFilter
        Weights over a window around the pixel with their position, and summary numbers.

    Raises
    ------
    EmcoreError
        The result has no network, the pixel lies outside the image, a spectrum image without
        an energy, or the network fails on the window.
    """
    t0 = time.perf_counter()
    if hasattr(artifacts, "artifacts") and not isinstance(artifacts, Mapping):
        method = method or getattr(artifacts, "method", None)
        artifacts = artifacts.artifacts
    a, row, col, energy = _check_inputs(artifacts, data, row, col, energy, method)
    cheaper = artifacts.get("filter_apply")
    # A network that also reads a whole-image input (a prior channel) gives "apply_at": the
    # network on a window at (r0, c0) with that window of the fixed whole-image input.
    at = None if callable(cheaper) else artifacts.get("apply_at")
    apply, note = (cheaper, str(artifacts.get("filter_note") or "")) if callable(cheaper) else (artifacts["apply"], "")
    if callable(at):
        note = str(artifacts.get("filter_note") or "")
    note = " ".join(n for n in (_method_note(method), note) if n)
    h, w = a.shape[:2]
    rf = int(artifacts.get("receptive_field") or max(h, w))
    min_size = int(artifacts.get("min_size") or 1)

    half = rf // 2 + MARGIN
    while True:
        r0, r1, c0, c1 = filter_window((h, w), row, col, rf, min_size, half=half)
        fn = (lambda t, _r=r0, _c=c0: at(t, _r, _c)) if callable(at) else apply
        grad, out = _gradient(fn, a[r0:r1, c0:c1], row - r0, col - c0, energy, method)
        whole = r0 == 0 and c0 == 0 and r1 == h and c1 == w
        if whole or not _alive_at_edge(grad, (r0, r1, c0, c1), (h, w)):
            break
        half *= 2  # the field is wider than declared: enlarge until the weights die out

    crop = np.asarray(a[r0:r1, c0:c1], dtype=np.float32)
    if energy is None:
        weights = grad
        window_input = crop
        summed = spectral = None
        summed_sum = None
        linear = float(np.sum(grad.astype(np.float64) * crop))
    else:
        weights = np.ascontiguousarray(grad[:, :, energy])
        window_input = np.ascontiguousarray(crop[:, :, energy])
        summed = grad.sum(axis=2, dtype=np.float64).astype(np.float32)
        spectral = grad.sum(axis=(0, 1), dtype=np.float64).astype(np.float32)
        summed_sum = float(summed.sum(dtype=np.float64))
        linear = float(np.sum(grad.astype(np.float64) * crop))
    s = filter_summary(weights)
    return PixelFilter(
        weights=weights.astype(np.float32), origin=(r0, c0), pixel=(row, col), energy=energy,
        window_input=window_input, output=out, linear_estimate=linear,
        weight_sum=s["weight_sum"], participation=s["participation"], area90=s["area90"],
        effective_diameter=s["effective_diameter"], summed=summed, spectral=spectral,
        summed_weight_sum=summed_sum, seconds=time.perf_counter() - t0, note=note,
    )


def _gradient(apply, crop: np.ndarray, r: int, c: int, energy: int | None, method: str | None):
    """∂ apply(crop)[r, c(, energy)] / ∂ crop, as float32 numpy, and that output value."""
    import torch

    x = torch.from_numpy(np.array(crop, dtype=np.float32))  # a copy: the input stays untouched
    x.requires_grad_(True)
    try:
        with torch.enable_grad():
            y = apply(x)
            target = y[r, c] if energy is None else y[r, c, energy]
            (g,) = torch.autograd.grad(target, x)
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise EmcoreError(
                f"There is not enough memory to follow the {method or 'network'} on a "
                f"{'×'.join(map(str, crop.shape))} window around this pixel; close other runs and try again.") from None
        raise
    return g.detach().numpy().astype(np.float32, copy=False), float(target.detach())


def _alive_at_edge(grad: np.ndarray, window: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """Whether the weights are still non-negligible on a window edge inside the image."""
    g = np.abs(grad) if grad.ndim == 2 else np.abs(grad).sum(axis=2)
    top = float(g.max())
    if top == 0.0:
        return False
    r0, r1, c0, c1 = window
    h, w = shape
    edges = []
    if r0 > 0:
        edges.append(g[0])
    if r1 < h:
        edges.append(g[-1])
    if c0 > 0:
        edges.append(g[:, 0])
    if c1 < w:
        edges.append(g[:, -1])
    return any(float(e.max()) > EDGE_TOLERANCE * top for e in edges)


def describe_filter(f: PixelFilter, pixel_size: float = 1.0, unit: str = "px", summed: bool = False) -> str:
    """One paragraph for a person: what the filter at this pixel does, in plain words."""
    s = f.summed_weight_sum if summed and f.summed is not None else f.weight_sum
    weights = f.summed if summed and f.summed is not None else f.weights
    info = filter_summary(weights) if summed and f.summed is not None else {
        "area90": f.area90, "effective_diameter": f.effective_diameter, "participation": f.participation}
    d = info["effective_diameter"]
    size = f"{d:.0f} px" + (f" ({d * pixel_size:.3g} {unit})" if unit != "px" else "")
    where = f"pixel (row {f.pixel[0]}, col {f.pixel[1]})" + (f", channel {f.energy}" if f.energy is not None else "")
    offset = f.output - f.linear_estimate
    has_offset = abs(offset) > 0.05 * max(abs(f.output), 1e-12)
    if has_offset and s < 0.9:
        # A biased network: the filter carries part of the level (or none), its constants the rest.
        level = ("passes on only part of the local brightness, and the network adds the rest itself (below)"
                 if s > 0.1 else "passes on almost none of the local brightness: the level comes from the "
                 "network itself (below), and the filter shapes only the detail")
    elif s > 1.1:
        level = "brightens the local average"
    elif s >= 0.9:
        level = "keeps the local brightness (a weighted average)"
    elif s > 0.1:
        level = "darkens the local average"
    else:
        level = "does not pass the local brightness on (a sign of a network that is not trained for this data)"
    what = "every input energy" if summed else ("the input slice at this energy" if f.energy is not None else "the input")
    text = (f"Around this input, the network computes the output at {where} as a weighted sum of {what} "
            f"(f(x) ≈ J x, Mohan et al. 2022): red pixels add to the output, blue ones subtract. "
            f"The weights sum to {s:.2f}, so the filter {level}; 90 % of their total size sits in "
            f"{info['area90']} pixels, a disc about {size} across, and about {info['participation']:.0f} pixels "
            f"take part. A wide, flat filter averages a featureless region (vacuum); a filter whose weights sit on "
            f"the neighbouring atomic columns uses the repetition of the lattice.")
    if has_offset:
        text += (f" The network's output here is {f.output:.4g} while the filter applied to the input gives "
                 f"{f.linear_estimate:.4g}: the difference is the network's own offset (bias-free networks have none).")
    if f.note:
        text += " " + f.note
    return text
