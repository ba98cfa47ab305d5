"""Streamlit helpers shared by the pages: session state, cached loaders, figures, errors.

Only presentation lives here; every computation is a call into ``emcore``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from emcore import EmcoreError, simulate
from emcore.dataset import Dataset
from emcore.display import contrast_limits, downsample_for_display

DEFAULT_EXAMPLE = "hrem"


# -- session state ---------------------------------------------------------------------
def init_state() -> None:
    """Create this browser session's state; the first visit gets the default example."""
    ss = st.session_state
    if "dataset" not in ss:
        ss.dataset = None
        ss.dataset_token = 0
        ss.dataset_origin = None
        info = simulate.EXAMPLES[DEFAULT_EXAMPLE]
        try:
            set_dataset(load_example(DEFAULT_EXAMPLE, 0, float(info.dose_default)), ("example", DEFAULT_EXAMPLE, 0, float(info.dose_default)))
        except EmcoreError as err:  # pragma: no cover - the simulator has no user input here
            ss.load_error = str(err)


def set_dataset(ds: Dataset, origin) -> None:
    """Make ``ds`` the session's dataset; ``origin`` identifies what produced it."""
    ss = st.session_state
    ss.dataset = ds
    ss.dataset_origin = origin
    ss.dataset_token = ss.get("dataset_token", 0) + 1


def current_dataset() -> Dataset | None:
    return st.session_state.get("dataset")


def require_dataset(what: str) -> Dataset:
    """Return the loaded dataset, or explain that one is needed and stop the page."""
    ds = current_dataset()
    if ds is None:
        st.info(f"Load data first: pick a built-in example or upload a file on the Data page, then come back {what}.")
        st.page_link("pages/data.py", label="Go to the Data page", icon=":material/folder_open:")
        st.stop()
    return ds


def sidebar_status() -> None:
    ds = current_dataset()
    with st.sidebar:
        if ds is None:
            st.caption("No data loaded.")
        else:
            shape = "×".join(str(s) for s in ds.data.shape)
            st.caption(f"**Loaded:** {ds.name}  \n{ds.kind}, {shape}")


# -- cached loaders --------------------------------------------------------------------
@st.cache_resource(max_entries=6, show_spinner="Simulating the example…")
def load_example(name: str, seed: int, dose: float) -> Dataset:
    """Built-in examples are deterministic in (name, seed, dose): share them across sessions.

    Returned datasets are treated as read-only by every page.
    """
    return simulate.example(name, seed=seed, dose=dose)


# -- figures ---------------------------------------------------------------------------
def image_figure(
    image: np.ndarray,
    title: str = "",
    *,
    zrange: tuple[float, float] | None = None,
    clip_percent: float = 0.5,
    pixel_size: float = 1.0,
    unit: str = "px",
    height: int = 420,
    colorscale: str = "gray",
) -> go.Figure:
    """An interactive heatmap with a percentile contrast stretch and calibrated hover."""
    shown, factor = downsample_for_display(image)
    lo, hi = zrange if zrange is not None else contrast_limits(image, clip_percent)
    scale = pixel_size * factor
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x0=0.0, dx=scale, y0=0.0, dy=scale,
            zmin=lo, zmax=hi,
            colorscale=colorscale,
            colorbar=dict(thickness=12),
            hovertemplate=f"x %{{x:.3g}} {unit}<br>y %{{y:.3g}} {unit}<br>value %{{z:.4g}}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title_text=unit)
    fig.update_xaxes(constrain="domain", title_text=unit)
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def spectrum_figure(
    energy: np.ndarray,
    curves: dict[str, np.ndarray],
    *,
    unit: str = "keV",
    log: bool = False,
    marker: tuple[float, float] | None = None,
    height: int = 300,
) -> go.Figure:
    """Spectra against energy; ``marker`` = (low, high) energy window shaded on the plot."""
    fig = go.Figure()
    for label, y in curves.items():
        fig.add_trace(go.Scatter(x=energy, y=y, mode="lines", name=label))
    if marker is not None:
        fig.add_vrect(x0=marker[0], x1=marker[1], fillcolor="orange", opacity=0.3, line_width=0)
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title=f"Energy ({unit})",
        yaxis_title="Counts",
        yaxis_type="log" if log else "linear",
        legend=dict(orientation="h", y=1.1),
    )
    if log:
        # Expected-count spectra reach 1e-30 in the empty channels below the detector
        # threshold; a log axis down there would flatten every peak.
        top = max(float(np.max(y)) for y in curves.values())
        positive = [float(np.min(y[y > 0])) for y in curves.values() if np.any(y > 0)]
        if top > 0 and positive:
            bottom = max(min(positive), top * 1e-4)
            fig.update_yaxes(range=[np.log10(bottom) - 0.1, np.log10(top) + 0.1])
    return fig


def show_error(message: str) -> None:
    """One plain sentence, never a traceback."""
    st.error(message, icon="⚠️")


# -- method parameters and results -------------------------------------------------------
def param_widgets(method, container=None) -> dict:
    """Widgets built from a method's declared parameters; returns {name: value}."""
    c = container or st
    values = {}
    for p in method.params:
        key = f"p_{method.name}_{p.name}"
        if p.auto:
            auto = c.checkbox(f"{p.title}: estimate from the data", value=True, key=key + "_auto", help=p.help)
            if auto:
                values[p.name] = None
                continue
        if p.type == "bool":
            values[p.name] = c.checkbox(p.title, value=bool(p.default), key=key, help=p.help)
        elif p.type == "choice":
            values[p.name] = c.selectbox(p.title, list(p.choices), index=list(p.choices).index(p.default), key=key, help=p.help)
        elif p.type == "int":
            start = p.default if p.default is not None else int(p.min or 0)
            values[p.name] = int(c.number_input(p.title, min_value=int(p.min) if p.min is not None else None,
                                                max_value=int(p.max) if p.max is not None else None,
                                                value=int(start), step=1, key=key, help=p.help))
        else:
            start = p.default if p.default is not None else (p.min if p.min is not None else 0.0)
            values[p.name] = float(c.number_input(p.title, min_value=float(p.min) if p.min is not None else None,
                                                  max_value=float(p.max) if p.max is not None else None,
                                                  value=float(start), format="%g", key=key, help=p.help))
    return values


def results() -> list[dict]:
    """This session's run history (all datasets); each entry is a dict, newest last."""
    return st.session_state.setdefault("results", [])


def results_for_current() -> list[dict]:
    token = st.session_state.get("dataset_token")
    return [r for r in results() if r["dataset_token"] == token]


def add_result(res, label: str | None = None) -> dict:
    """Store a :class:`emcore.registry.DenoiseResult` for the current dataset."""
    runs = results()
    n = 1 + sum(r["method"] == res.method for r in runs if r["dataset_token"] == st.session_state.dataset_token)
    entry = {
        "id": f"{res.method}-{len(runs) + 1}",
        "label": label or f"{res.method} #{n}",
        "method": res.method,
        "params": dict(res.params),
        "seconds": res.seconds,
        "device": res.device,
        "data": res.data,
        "log": list(res.log),
        "dataset_token": st.session_state.dataset_token,
        "metrics": {},
    }
    runs.append(entry)
    return entry
