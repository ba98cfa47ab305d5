"""A method's lesson for the Learn page, and the small live figure that goes with it.

A :class:`Lesson` adds to a registry entry what a newcomer needs to choose the method: what it
assumes about signal and noise, what it needs (clean data, a GPU, time), when to choose it,
the parameters that matter and the reference. Its ``figure`` callable shows the idea of the
method honestly and cheaply on the built-in simulated examples (:func:`example_image`,
:func:`spectrum_example`); the learned methods take minutes to train, so their figures show
the training scheme on the example, not a result. A figure is described, not drawn
(:class:`LessonFigure`: a row of :class:`Panel`\\ s holding images or curves), so the library
needs no plotting package and the page draws every method's figure the same way.

No Streamlit here; the page caches what the figures return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from emcore.noise.models import Poisson

__all__ = ["EXAMPLE_DOSE", "ZOOM", "Box", "Curve", "Lesson", "LessonFigure", "Panel", "example_image", "image_row",
           "psnr_db", "spectrum_example"]


@dataclass(frozen=True)
class Curve:
    """A line on a :class:`Panel`; ``marker_colors`` (one per point) draws markers too."""

    x: np.ndarray
    y: np.ndarray
    name: str = ""
    color: str | None = None
    marker_colors: tuple[str, ...] | None = None
    hover: str = ""


@dataclass(frozen=True)
class Box:
    """A rectangle around the pixels ``row .. row + height - 1``, ``col .. col + width - 1``."""

    row: float
    col: float
    height: float
    width: float
    color: str = "orange"


@dataclass(frozen=True)
class Panel:
    """One panel of a figure: an image (``clip``: percent clipped at each end for the contrast
    stretch, None for the full range), or curves against ``x_title`` with an optional shaded
    ``band`` (low, high) along x."""

    title: str
    image: np.ndarray | None = None
    colorscale: str = "gray"
    clip: float | None = 0.5
    boxes: tuple[Box, ...] = ()
    curves: tuple[Curve, ...] = ()
    band: tuple[float, float] | None = None
    x_title: str = ""
    y_title: str = ""
    log_y: bool = False


@dataclass(frozen=True)
class LessonFigure:
    """A row of panels; ``widths`` are relative column widths, ``spacing`` the gap between them."""

    panels: tuple[Panel, ...]
    height: int = 300
    widths: tuple[float, ...] | None = None
    spacing: float = 0.03
    legend_below: bool = False


@dataclass(frozen=True)
class Lesson:
    """Plain-words teaching text for one method (Markdown allowed in every text field).

    ``caption`` explains the figure that ``figure()`` describes; ``notice`` is shown under
    the reference (a licence, for instance).
    """

    assumes: str
    needs: str
    choose_when: str
    parameters: str
    reference: str
    caption: str = ""
    figure: Callable[[], LessonFigure] | None = None
    notice: str = ""


# Dose of the method figures: at 20 e⁻/px the columns are faint but there, so a figure can
# show what each method's idea does with them (the Learn page's dose demo covers lower doses).
EXAMPLE_DOSE = 20.0
# 32×32 px of the example around an atomic column, for figures where single pixels must show.
ZOOM = np.s_[36:68, 36:68]


def example_image(size: int = 128, dose: float = EXAMPLE_DOSE, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A clean HRTEM phantom of a Pt particle (columns ~15 px apart) and a noisy copy at ``dose`` e⁻/px."""
    from emcore.sim.hrem import hrem_phantom

    clean = hrem_phantom((size, size), rng=np.random.default_rng(seed), pixel_size_nm=0.012, contrast="bright")
    noisy = Poisson(dose).sample(clean, np.random.default_rng(seed + 1))
    return clean.astype(np.float32), noisy.astype(np.float32)


def spectrum_example(size: int = 32, counts: float = 30.0, seed: int = 3):
    """A small simulated EDS spectrum image (Dataset with ground truth), 512 channels of 20 eV."""
    from emcore.sim.eds import eds_example

    return eds_example(seed=seed, counts_per_pixel=counts, size=size, channels=512)


def psnr_db(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR of a figure's result against the clean example, in dB (data range = clean max − min):
    what :func:`emcore.evaluate.reference.psnr` computes, for titles (that module sits above the
    methods)."""
    x, y = np.asarray(estimate, np.float64), np.asarray(clean, np.float64)
    return float(10 * np.log10((y.max() - y.min()) ** 2 / np.mean((x - y) ** 2)))


def image_row(panels: list[tuple[str, np.ndarray]], height: int = 300, colorscales: dict | None = None) -> LessonFigure:
    """A row of images with titles; ``colorscales`` maps a panel index to its colour scale."""
    return LessonFigure(tuple(Panel(t, image=a, colorscale=(colorscales or {}).get(i, "gray"))
                              for i, (t, a) in enumerate(panels)), height=height)
