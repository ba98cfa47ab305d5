"""Learn page: why low-dose EM needs denoising, what each method assumes and needs, and how
to judge a result — shown live on the built-in simulated examples."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from emcore import learn, sim
from emcore.data.display import energy_window_map
from emcore.evaluate.reference import EXPLANATIONS, psnr
from emcore.methods.registry import methods
from emcore.noise.models import Poisson
from pages import ui

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
    return sim.hrem_phantom((256, 256), rng=np.random.default_rng(7))


clean = _phantom()
# Whole numbers as int, so the slider reads "1000" rather than "1000.0".
doses = [int(v) if v >= 1 and v.is_integer() else v for v in (float(f"{d:.2g}") for d in np.geomspace(0.1, 1000, 21))]
dose = st.select_slider("Dose (e⁻/pixel)", options=doses, value=1.0, key="learn_dose")
noisy = Poisson(dose).sample(clean, np.random.default_rng(0))
c1, c2 = st.columns(2)
c1.plotly_chart(ui.image_figure(clean, "Clean phantom", height=360), key="learn_clean")
c2.plotly_chart(ui.image_figure(noisy, f"{dose:g} e⁻/px — PSNR {psnr(noisy, clean):.1f} dB", height=360), key="learn_noisy")
st.markdown(
    "At 1000 e⁻/px the lattice is obvious; around 1 e⁻/px — typical of low-dose work — single "
    "pixels are mostly 0 or 1 electron and the atomic columns are hard to see by eye."
)


# -- one small live figure per method (built once per server, shared read-only) -----------
def _row(panels, height=300, colorscales=None) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels], horizontal_spacing=0.03)
    for i, (_, img) in enumerate(panels):
        cs = (colorscales or {}).get(i, "gray")
        lo, hi = ui.contrast_limits(img, 0.5)
        fig.add_trace(go.Heatmap(z=img, zmin=lo, zmax=hi, colorscale=cs, showscale=False,
                                 hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>"), row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False)
    fig.update_xaxes(constrain="domain", showticklabels=False)
    for i in range(2, len(panels) + 1):
        fig.update_yaxes(scaleanchor=f"x{i}", row=1, col=i)
    fig.update_layout(height=height, margin=dict(l=5, r=5, t=40, b=5))
    fig.update_annotations(font_size=12)
    return fig


@st.cache_resource(show_spinner="Preparing the examples…")
def _figure(name: str) -> go.Figure:
    clean_x, noisy_x = learn.example_image()
    if name == "bm3d":
        block = 12
        matches, tiles, mean = learn.block_group(noisy_x, (47, 46), block=block, n=8)
        r0, c0 = matches[0]
        fig = _row([("Noisy example, 20 e⁻/px", noisy_x), ("The group of 8 matched blocks", tiles),
                    ("Their average", mean), ("The clean block (unknown in practice)",
                                              clean_x[r0:r0 + block, c0:c0 + block])])
        for k, (r, c) in enumerate(matches):
            fig.add_shape(type="rect", x0=c - 0.5, x1=c + block - 0.5, y0=r - 0.5, y1=r + block - 0.5,
                          line=dict(color="limegreen" if k == 0 else "orange", width=2), row=1, col=1)
        return fig
    if name == "wiener":
        from emcore.data.dataset import Dataset
        from emcore.methods.registry import denoise

        ds = Dataset(data=noisy_x, kind="image", noise=Poisson(learn.EXAMPLE_DOSE), name="Learn example")
        out = denoise(ds, "wiener").data
        return _row([("Noisy, 20 e⁻/px", noisy_x), ("Power spectrum (log)", learn.power_spectrum(noisy_x)),
                     (f"Wiener result — PSNR {psnr(out, clean_x):.1f} dB", out)], colorscales={1: "magma"})
    if name in ("pca", "dcae3d"):
        from emcore import spectral

        ds = learn.spectrum_example()
        e = ds.energy_axis()
        if name == "pca":
            from emcore.methods.pca import denoise_pca

            out, info = denoise_pca(ds.data)
            ratio = np.asarray(info.explained_variance_ratio[:20])
            fig = make_subplots(rows=1, cols=3, subplot_titles=["Scree curve", "Fe Kα map, noisy",
                                                                f"Fe Kα map, PCA ({info.n_components} components)"],
                                horizontal_spacing=0.06)
            k = np.arange(1, len(ratio) + 1)
            fig.add_trace(go.Scatter(x=k, y=ratio, mode="lines+markers", showlegend=False,
                                     marker=dict(color=["crimson" if i <= info.n_components else "grey" for i in k]),
                                     hovertemplate="component %{x}<br>explained variance %{y:.2e}<extra></extra>"),
                          row=1, col=1)
            fig.update_yaxes(type="log", title_text="explained variance ratio", row=1, col=1)
            fig.update_xaxes(title_text="component", row=1, col=1)
            for i, cube in enumerate((ds.data, out)):
                m = spectral.element_map(cube, "Fe_Ka", ds.calibration)
                fig.add_trace(go.Heatmap(z=m, colorscale="viridis", showscale=False), row=1, col=i + 2)
                fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 2}", showticklabels=False, row=1, col=i + 2)
                fig.update_xaxes(showticklabels=False, row=1, col=i + 2)
            fig.update_layout(height=300, margin=dict(l=5, r=5, t=40, b=5))
            return fig
        r, c = 16, 16
        fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.08,
                            subplot_titles=[f"Spectrum of pixel ({r}, {c})", "Fe Kα slice, noisy: a 3×3 neighbourhood"])
        fig.add_trace(go.Scatter(x=e, y=ds.data[r, c], mode="lines", name="recorded (counts)",
                                 line=dict(color="grey")), row=1, col=1)
        fig.add_trace(go.Scatter(x=e, y=ds.ground_truth[r, c], mode="lines", name="true (expected counts)",
                                 line=dict(color="crimson")), row=1, col=1)
        fig.update_xaxes(title_text="Energy (keV)", row=1, col=1)
        lo, hi = spectral.line_channels("Fe_Ka", ds.calibration, ds.data.shape[2])
        fig.add_vrect(x0=e[lo], x1=e[hi - 1], fillcolor="orange", opacity=0.3, line_width=0, row=1, col=1)
        fig.add_trace(go.Heatmap(z=energy_window_map(ds.data, (lo + hi - 1) // 2, hi - lo), colorscale="viridis",
                                 showscale=False), row=1, col=2)
        fig.add_shape(type="rect", x0=c - 1.5, x1=c + 1.5, y0=r - 1.5, y1=r + 1.5, line=dict(color="white", width=2),
                      row=1, col=2)
        fig.update_yaxes(autorange="reversed", scaleanchor="x2", showticklabels=False, row=1, col=2)
        fig.update_xaxes(showticklabels=False, row=1, col=2)
        fig.update_layout(height=300, margin=dict(l=5, r=5, t=40, b=5), legend=dict(orientation="h", y=-0.25))
        return fig
    if name == "dncnn":
        return _row([("Noisy input (20 e⁻/px)", noisy_x), ("Clean target", clean_x),
                     ("Noise = input − target", noisy_x - clean_x)], colorscales={2: "RdBu_r"})
    if name == "unet":
        views = learn.unet_views(noisy_x, 4)
        return _row([(f"1/{2 ** i} resolution" if i else "Full resolution", v) for i, v in enumerate(views)], height=260)
    zoom = np.s_[36:68, 36:68]  # 32×32 px around an atomic column, so single pixels show
    if name == "noise2self":
        mask, masked = learn.noise2self_views(noisy_x)
        return _row([("Noisy image (32×32 px)", noisy_x[zoom]), ("Hidden pixels (1 in 4×4)", mask[zoom]),
                     ("Network input", masked[zoom])])
    if name == "noise2sr":
        low, mask = learn.noise2sr_views(noisy_x[zoom])
        return _row([("Noisy image (32×32 px)", noisy_x[zoom]), ("Input: 1 random pixel per 2×2 cell", low),
                     ("Loss on the pixels not fed in", mask)])
    raise KeyError(name)


# -- the methods ---------------------------------------------------------------------------
st.subheader("The methods")
st.markdown(
    "Three families: **classical** filters built on an assumption about the image (similar patches, a "
    "periodic lattice, few spectral components); **supervised** networks trained on noisy/clean pairs "
    "(here simulated); and **self-supervised** networks that learn from the noisy data alone. Each section "
    "says what a method assumes, what it needs and when to choose it; the figures are computed live from "
    "the built-in examples."
)
registered = {m.name: m for m in methods()}
for name in learn.METHOD_ORDER:
    lesson = learn.LESSONS[name]
    m = registered.get(name)
    label = m.label if m is not None else lesson.label
    family = m.kind if m is not None else lesson.family
    with st.expander(f"{label} — {family}" + (f"; works on {', '.join(m.accepts)}" if m is not None else ""),
                     expanded=False):
        if m is not None:
            st.markdown(f"*{m.description}*")
        else:
            st.caption(f"{label} is not available in this installation yet; this is what it will do.")
        st.markdown(f"**What it assumes.** {lesson.assumes}\n\n**What it needs.** {lesson.needs}\n\n"
                    f"**When to choose it.** {lesson.choose_when}\n\n**Key parameters.** {lesson.parameters}")
        if m is not None and m.details:
            st.markdown(f"**In this workbench.** {m.details}")
        st.markdown(f"**Reference.** {lesson.reference}")
        if name == "bm3d":
            st.caption(
                "Licence: BM3D comes from the `bm3d` package of Tampere University, which is free for "
                "non-commercial use only; commercial users need a licence from its authors."
            )
        st.plotly_chart(_figure(name), key=f"learn_fig_{name}")
        st.caption(lesson.figure)

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
    "What the networks shipped here show (`benchmarks/bench_jacobian.py`, figures in `benchmarks/RESULTS.md`). "
    "The standard UNet has biases: part of its output does not come from the filter at all, and the view says "
    "how much. Its **bias-free** twin (Denoise page, UNet, *Shipped weights: bias-free*) has no such part — its "
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
