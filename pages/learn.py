"""Learn page: why low-dose EM needs denoising, what each method assumes and needs, and how
to judge a result — shown live on the built-in simulated examples."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from emcore import learn, sim
from emcore.data.display import contrast_limits
from emcore.evaluate.reference import EXPLANATIONS, psnr
from emcore.noise.models import Poisson
from pages import figures, ui

ui.sidebar_status()

st.title("Learn")
st.markdown(
    """
Beam-sensitive samples (catalysts, zeolites, MOFs, biological material) are damaged by the
electron beam, so images must be recorded with very few electrons per pixel. Each pixel then
counts a random number of electrons — **shot noise** — whose relative size grows as the dose
falls: at *d* electrons per pixel the signal-to-noise ratio of a pixel is about √*d*.
Denoising recovers the structure that is hidden in the noise; this workbench lets you try
several ways of doing so and judge the results honestly.
"""
)

st.subheader("Noise and dose")
st.caption(
    "The same clean, simulated Pt-on-CeO₂ HRTEM phantom recorded at different doses. "
    "PSNR compares the noisy image with the clean one (data range = max − min of the clean image)."
)


@st.cache_resource(show_spinner=False)
def _phantom() -> np.ndarray:
    # bright atomic columns, as in the HRTEM example on the Data page and the reference simulations
    return sim.hrem_phantom((256, 256), rng=np.random.default_rng(7), contrast="bright")


def psnr_words(db: float) -> str:
    """What a PSNR in dB means for the image beside it."""
    if db < 0:
        return (f"PSNR {db:.1f} dB — below 0 dB because the noise is larger than the clean image's whole range "
                "of values (max − min): the typical error of a pixel exceeds the contrast of the structure. "
                "Each +10 dB divides the mean squared error by 10.")
    return (f"PSNR {db:.1f} dB: the clean image's range of values (max − min) is {10 ** (db / 20):.2g} times the "
            "typical (root-mean-square) error of a pixel. Each +10 dB divides the mean squared error by 10.")


clean = _phantom()
# Whole numbers as int, so the slider reads "1000" rather than "1000.0".
doses = [int(v) if v >= 1 and v.is_integer() else v for v in (float(f"{d:.2g}") for d in np.geomspace(0.1, 1000, 21))]
dose = st.select_slider("Dose (e⁻/pixel)", options=doses, value=1.0, key="learn_dose")
noisy = Poisson(dose).sample(clean, np.random.default_rng(0))
noisy_db = psnr(noisy, clean)
c1, c2 = st.columns(2)
c1.plotly_chart(figures.image_figure(clean, "Clean phantom", height=360), key="learn_clean")
c2.plotly_chart(figures.image_figure(noisy, f"{dose:g} e⁻/px — PSNR {noisy_db:.1f} dB", height=360), key="learn_noisy")
st.caption(psnr_words(noisy_db))
st.markdown(
    "At 1000 e⁻/px the lattice is obvious; around 1 e⁻/px — typical of low-dose work — single "
    "pixels are mostly 0 or 1 electron and the atomic columns are hard to see by eye."
)


# -- one small live figure per method (built once per server, shared read-only) -----------
def _draw(spec: learn.LessonFigure) -> go.Figure:
    """A method's lesson figure: a row of images (contrast-stretched) and curve panels."""
    n = len(spec.panels)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[p.title for p in spec.panels],
                        column_widths=list(spec.widths) if spec.widths else None, horizontal_spacing=spec.spacing)
    for i, p in enumerate(spec.panels, start=1):
        if p.image is not None:
            zrange = dict(zip(("zmin", "zmax"), contrast_limits(p.image, p.clip))) if p.clip is not None else {}
            fig.add_trace(go.Heatmap(z=p.image, colorscale=p.colorscale, showscale=False,
                                     hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>", **zrange),
                          row=1, col=i)
            fig.update_yaxes(autorange="reversed", scaleanchor="x" if i == 1 else f"x{i}", constrain="domain",
                             showticklabels=False, row=1, col=i)
            fig.update_xaxes(constrain="domain", showticklabels=False, row=1, col=i)
        for c in p.curves:
            marker = dict(color=list(c.marker_colors)) if c.marker_colors is not None else None
            fig.add_trace(go.Scatter(x=c.x, y=c.y, mode="lines+markers" if marker else "lines", name=c.name,
                                     showlegend=bool(c.name), marker=marker, line=dict(color=c.color),
                                     hovertemplate=c.hover or None), row=1, col=i)
        for b in p.boxes:
            fig.add_shape(type="rect", x0=b.col - 0.5, x1=b.col + b.width - 0.5, y0=b.row - 0.5,
                          y1=b.row + b.height - 0.5, line=dict(color=b.color, width=2), row=1, col=i)
        if p.band is not None:
            fig.add_vrect(x0=p.band[0], x1=p.band[1], fillcolor="orange", opacity=0.3, line_width=0, row=1, col=i)
        if p.curves:
            fig.update_xaxes(title_text=p.x_title or None, row=1, col=i)
            fig.update_yaxes(title_text=p.y_title or None, type="log" if p.log_y else None, row=1, col=i)
    fig.update_layout(height=spec.height, margin=dict(l=5, r=5, t=40, b=5))
    if spec.legend_below:
        fig.update_layout(legend=dict(orientation="h", y=-0.25))
    fig.update_annotations(font_size=12)
    return fig


@st.cache_resource(show_spinner="Preparing the examples…")
def _figure(name: str) -> go.Figure | None:
    spec = learn.figure(name)
    return _draw(spec) if spec is not None else None


# -- the methods ---------------------------------------------------------------------------
st.subheader("The methods")
st.markdown(
    "Three families: **classical** filters built on an assumption about the image (similar patches, a "
    "periodic lattice, few spectral components); **supervised** networks trained on noisy/clean pairs "
    "(here simulated); and **self-supervised** networks that learn from the noisy data alone. Each section "
    "says what a method assumes, what it needs and when to choose it; the figures are computed live from "
    "the built-in examples."
)
for m in learn.sections():
    lesson = m.lesson
    with st.expander(f"{m.label} — {m.kind}; works on {', '.join(m.accepts)}", expanded=False):
        st.markdown(f"*{m.description}*")
        if lesson is not None:
            st.markdown(f"**What it assumes.** {lesson.assumes}\n\n**What it needs.** {lesson.needs}\n\n"
                        f"**When to choose it.** {lesson.choose_when}\n\n**Key parameters.** {lesson.parameters}")
        if m.details:
            st.markdown(f"**In this workbench.** {m.details}")
        if lesson is not None:
            st.markdown(f"**Reference.** {lesson.reference}")
            if lesson.notice:
                st.caption(lesson.notice)
            fig = _figure(m.name)
            if fig is not None:
                st.plotly_chart(fig, key=f"learn_fig_{m.name}")
                st.caption(lesson.caption)

st.subheader("What is the network looking at?")
st.markdown(
    "A trained network is not a black box at a given image: around that image it acts as a **locally linear "
    "filter**, f(x) ≈ J(x) x, whose weights at a pixel are the gradient of that output pixel with respect to "
    "the input (Mohan et al., *IEEE Trans. Comput. Imaging* 2022). On the Compare page, pick a network result "
    "and click a pixel to see those weights: in vacuum the filter is wide and flat (it averages many pixels of "
    "a featureless region), on a crystal it concentrates on the neighbouring atomic columns of the same lattice "
    "— the network has learned to use the repetition of the structure."
)
st.markdown(
    "What the networks shipped here show (measured with the workbench's own benchmark of this view). "
    "The standard UNet and DnCNN also read a second input, the Wiener filter of the whole image (their *prior*, "
    "which they correct); the view holds that prior fixed and shows what the correction takes from the noisy "
    "pixels around the one you click. They also have biases: part of their output does not come from the filter "
    "at all, and the view says how much. The UNet's **bias-free** twin (Denoise page, UNet, *Shipped weights: bias-free*) has no such part — its "
    "output is exactly J(x) x, as in Mohan et al.'s study. On the built-in example from 2 to 20 e⁻/px, its "
    "filter in vacuum is about 1.2–1.3 times wider than on the crystal, and on the crystal its far weights sit "
    "on atomic columns 1.5–1.8 times more often than chance. At 1 e⁻/px and below, both filters spread about "
    "75 px across (the network sees 116 px) and are about as wide; only more pixels take part in vacuum. Both "
    "networks were trained for an hour or two on two CPU cores, far less than Mohan et al.'s."
)

st.subheader("Judging a result without a ground truth")
st.markdown(
    "Real data has no clean reference, so PSNR and SSIM cannot be computed. The Compare page offers "
    "checks that need none:"
)
for key, title in (("count_split", "Count-split validation"), ("frame_pair", "Frame-pair validation"),
                   ("residual", "Residual checks"), ("frc", "Fourier ring correlation")):
    st.markdown(f"- **{title}.** {EXPLANATIONS[key]}")
st.markdown(
    "No single number is the truth: a method can pass the residual checks and still blur fine "
    "detail. Read the numbers together, and always look at the residual image."
)
