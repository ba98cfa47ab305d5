"""Learn page: why low-dose EM needs denoising, shown live on a simulated phantom."""

import numpy as np
import streamlit as st

from emcore import simulate
from emcore.metrics import psnr
from emcore.noise import Poisson
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
    return simulate.hrem_phantom((256, 256), rng=np.random.default_rng(7))


clean = _phantom()
doses = [float(f"{d:.2g}") for d in np.geomspace(0.1, 1000, 21)]
dose = st.select_slider("Dose (e⁻/pixel)", options=doses, value=1.0, key="learn_dose")
noisy = Poisson(dose).sample(clean, np.random.default_rng(0))
c1, c2 = st.columns(2)
c1.plotly_chart(ui.image_figure(clean, "Clean phantom", height=360), key="learn_clean")
c2.plotly_chart(ui.image_figure(noisy, f"{dose:g} e⁻/px — PSNR {psnr(noisy, clean):.1f} dB", height=360), key="learn_noisy")
st.markdown(
    "At 1000 e⁻/px the lattice is obvious; around 1 e⁻/px — typical of low-dose work — single "
    "pixels are mostly 0 or 1 electron and the atomic columns are hard to see by eye."
)

st.subheader("The methods")
from emcore.registry import methods  # noqa: E402

for m in methods():
    with st.expander(f"{m.label} — {m.kind}; works on {', '.join(m.accepts)}"):
        st.markdown(m.description)
        if m.details:
            st.markdown(m.details)
        if m.name == "bm3d":
            st.caption(
                "Licence: BM3D comes from the `bm3d` package of Tampere University, which is free for "
                "non-commercial use only; commercial users need a licence from its authors."
            )

st.subheader("Judging a result without a ground truth")
from emcore.metrics import EXPLANATIONS  # noqa: E402

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
