"""Plotly figures shared by the pages: images with calibrated hover, side-by-side panels with
linked zoom, spectra with labelled X-ray lines, profiles, FRC curves and the filter view.

Presentation only: every number drawn comes from ``emcore``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from emcore import EmcoreError
from emcore.data.display import contrast_limits, downsample_for_display


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
    lines: tuple[str, ...] | list[str] = (),
) -> go.Figure:
    """Spectra against energy; ``marker`` = (low, high) energy window shaded on the plot;
    ``lines`` (X-ray line names such as ``"Fe_Ka"``) are marked and labelled at their energies,
    as HyperSpy's ``add_lines`` does."""
    from emcore import spectral

    fig = go.Figure()
    for label, y in curves.items():
        fig.add_trace(go.Scatter(x=energy, y=y, mode="lines", name=label))
    if marker is not None:
        fig.add_vrect(x0=marker[0], x1=marker[1], fillcolor="orange", opacity=0.3, line_width=0)
    per_kev = 1000.0 if unit.strip().lower() == "ev" else 1.0
    for name in lines:
        try:
            e = spectral.get_line(name).energy_kev * per_kev
        except EmcoreError:
            continue
        if energy[0] <= e <= energy[-1]:
            fig.add_vline(x=e, line_dash="dot", line_color="grey", line_width=1,
                          annotation_text=name.replace("_", " "), annotation_textangle=-90,
                          annotation_position="top", annotation_font_size=10)
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


def panels_figure(
    panels: list[tuple[str, np.ndarray]],
    *,
    clip_percent: float = 0.5,
    shared: bool = True,
    colorscale: str = "gray",
    line=None,
    pixel_grid: tuple[int, int] | None = None,
    height: int = 420,
) -> go.Figure:
    """Side-by-side heatmaps with linked zoom/pan (shared axes), in pixel coordinates.

    ``shared`` uses one display range for all (the last panel's when it is a ground truth,
    else the first's); otherwise each panel is stretched on its own. ``line`` = ((r0, c0),
    (r1, c1)) is drawn on every panel. ``pixel_grid`` adds an invisible, clickable grid of
    points so a click on an image reports a pixel (Plotly heatmaps are not selectable).
    """
    n = len(panels)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels],
                        shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.02, vertical_spacing=0.08)
    ref = panels[-1][1] if shared and panels[-1][0] == "Ground truth" else panels[0][1]
    limits = contrast_limits(ref, clip_percent) if shared else None
    for i, (title, img) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        shown, f = downsample_for_display(img, 768)
        lo, hi = limits if limits is not None else contrast_limits(img, clip_percent)
        # With a click grid the heatmap must not take the hover: Plotly gives a click to the
        # trace under the hover, and heatmaps cannot be selected.
        hover = dict(hoverinfo="skip") if pixel_grid is not None else dict(
            hovertemplate="row %{y:.0f}, col %{x:.0f}<br>%{z:.4g}<extra>" + title + "</extra>")
        fig.add_trace(go.Heatmap(z=shown, x0=(f - 1) / 2, dx=f, y0=(f - 1) / 2, dy=f, zmin=lo, zmax=hi,
                                 colorscale=colorscale, showscale=False, **hover),
                      row=r, col=c)
        if line is not None:
            (r0, c0), (r1, c1) = line
            fig.add_trace(go.Scatter(x=[c0, c1], y=[r0, r1], mode="lines+markers", line=dict(color="orange", width=2),
                                     marker=dict(size=6), hoverinfo="skip", showlegend=False), row=r, col=c)
        if pixel_grid is not None:
            h, w = pixel_grid
            step = max(1, int(np.ceil(max(h, w) / 96)))
            yy, xx = np.mgrid[0:h:step, 0:w:step]
            fig.add_trace(go.Scatter(x=xx.ravel(), y=yy.ravel(), customdata=img[yy, xx].ravel(), mode="markers",
                                     marker=dict(size=max(4, 400 // (max(h, w) // step)), opacity=0),
                                     hovertemplate="row %{y}, col %{x}<br>%{customdata:.4g}<extra>" + title + "</extra>",
                                     showlegend=False, name="click"), row=r, col=c)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False)
    fig.update_xaxes(constrain="domain", showticklabels=False)
    # Square panels in a wide page: the row height follows the panel width, not a constant.
    fig.update_layout(height=min(height, 980 // cols + 60) * rows, margin=dict(l=5, r=5, t=40, b=5), dragmode="zoom",
                      clickmode="event+select")
    fig.update_annotations(font_size=12)
    return fig


def clicked_pixel(event) -> tuple[int, int] | None:
    """(row, col) of a point clicked on a :func:`panels_figure`, if any."""
    try:
        points = event.selection.points if event is not None else []
    except AttributeError:
        points = (event or {}).get("selection", {}).get("points", [])
    for p in points or []:
        x, y = p.get("x"), p.get("y")
        if x is not None and y is not None:
            return int(round(float(y))), int(round(float(x)))
    return None


def profile_figure(profiles: dict, pixel_size: float, unit: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    for label, prof in profiles.items():
        fig.add_trace(go.Scatter(x=np.asarray(prof.distance) * pixel_size, y=prof.values, mode="lines", name=label))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=f"Distance along the line ({unit})",
                      yaxis_title="Intensity", legend=dict(orientation="h", y=1.12))
    return fig


def frc_figure(curves: dict) -> go.Figure:
    fig = go.Figure()
    for label, c in curves.items():
        res = c["resolution_px"]
        f0 = float(np.asarray(c["frequencies"])[0]) if len(c["frequencies"]) else 0.0
        if res is None:
            name = f"{label} (agrees up to the pixel size: 2 px or better)"
        elif f0 > 0 and res >= 0.999 / f0:  # below the threshold at the very first ring
            name = f"{label} (no reproducible detail at any scale)"
        else:
            name = f"{label} (finest reproducible detail {res:.1f} px)"
        fig.add_trace(go.Scatter(x=c["frequencies"], y=c["frc"], mode="lines", name=name))
    fig.add_hline(y=1 / 7, line_dash="dot", annotation_text="1/7")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="Spatial frequency (1/px)",
                      yaxis_title="FRC", yaxis_range=[-0.1, 1.05])
    return fig


def filter_figure(f, *, summed: bool = False, height: int = 380) -> go.Figure:
    """Input window (grey) and the network's filter there (symmetric red/blue), pixel marked.

    ``f`` is an :class:`emcore.evaluate.filter_view.PixelFilter`; ``summed`` shows, for spectrum images,
    the filter summed over all input energies.
    """
    weights = f.summed if summed and f.summed is not None else f.weights
    m = float(np.max(np.abs(weights))) or 1.0
    r0, c0 = f.origin
    fig = make_subplots(rows=1, cols=2, shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.06,
                        subplot_titles=["Input around the pixel",
                                        "Filter weights" + (" (summed over energies)" if summed and f.summed is not None else "")])
    lo, hi = contrast_limits(f.window_input, 0.5)
    fig.add_trace(go.Heatmap(z=f.window_input, x0=c0, dx=1, y0=r0, dy=1, zmin=lo, zmax=hi, colorscale="gray",
                             showscale=False, hovertemplate="row %{y}, col %{x}<br>input %{z:.4g}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Heatmap(z=weights, x0=c0, dx=1, y0=r0, dy=1, zmin=-m, zmax=m, zmid=0, colorscale="RdBu_r",
                             colorbar=dict(thickness=12, title=dict(text="weight")),
                             hovertemplate="row %{y}, col %{x}<br>weight %{z:.3g}<extra></extra>"),
                  row=1, col=2)
    for col in (1, 2):
        fig.add_trace(go.Scatter(x=[f.pixel[1]], y=[f.pixel[0]], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(symbol="circle-open", size=12, color="limegreen",
                                             line=dict(width=2, color="limegreen"))),
                      row=1, col=col)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_xaxes(constrain="domain")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def spectral_weights_figure(energy: np.ndarray, weights: np.ndarray, unit: str = "keV", height: int = 240) -> go.Figure:
    """Summed filter weight per input energy channel (which channels the network draws on)."""
    fig = go.Figure(go.Scatter(x=energy, y=weights, mode="lines", name="weight"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=f"Input energy ({unit})",
                      yaxis_title="Summed weight")
    return fig


_LOSS_NAMES = {"loss_train": "training loss", "loss_train_smooth": "training loss (smoothed)",
               "train_loss": "training loss", "val_loss": "validation loss"}


def loss_figure(history: list[dict], log: bool = True, height: int = 300) -> tuple[go.Figure | None, str | None]:
    """The training curves of a job's live progress points or of a finished run's history.

    Losses share the left axis; the validation PSNR (dB) has its own axis on the right, drawn
    only at the steps where it was measured, with the noisy input's PSNR as a dashed line (the
    bar the network has to clear). Returns ``(figure or None, note)``: a log scale is used only
    when asked for and every loss is above zero — a loss that goes to zero or below (a Poisson
    negative log-likelihood is often negative) is drawn on a linear scale, and the note says
    why, rather than leaving a blank chart.
    """
    rows = [h for h in history if isinstance(h, dict) and "step" in h]
    names = [k for k in _LOSS_NAMES if any(_finite(h.get(k)) for h in rows)]
    psnr = _measured(rows, "val_psnr")
    if not names and not psnr:
        return None, None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    values = []
    for k in names:
        pts = _measured(rows, k) if k == "val_loss" else [(h["step"], float(h[k])) for h in rows if _finite(h.get(k))]
        values += [v for _, v in pts]
        fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[v for _, v in pts], name=_LOSS_NAMES[k],
                                 mode="lines+markers" if k == "val_loss" else "lines"), secondary_y=False)
    note = None
    if log and values and min(values) <= 0:
        log = False
        note = ("Linear scale: the loss goes to zero or below (a negative log-likelihood, such as the Poisson "
                "loss, is often negative; only its fall matters), which a log scale cannot draw.")
    if psnr:
        fig.add_trace(go.Scatter(x=[s for s, _ in psnr], y=[v for _, v in psnr], name="validation PSNR (dB)",
                                 mode="lines+markers", line=dict(dash="dot")), secondary_y=True)
        noisy = [float(h["input_psnr"]) for h in rows if _finite(h.get("input_psnr"))]
        if noisy:
            fig.add_hline(y=noisy[-1], line_dash="dash", line_color="grey", secondary_y=True,
                          annotation_text=f"noisy input {noisy[-1]:.1f} dB", annotation_position="bottom right")
        fig.update_yaxes(title_text="validation PSNR (dB)", secondary_y=True, showgrid=False)
    fig.update_yaxes(title_text="loss", type="log" if log else "linear", secondary_y=False)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="training step",
                      legend=dict(orientation="h", y=-0.25))
    return fig, note


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and bool(np.isfinite(v))


def _measured(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` where ``key`` was measured: live progress repeats the last validation
    value at every step, which would draw a staircase; keep the first step of each value."""
    out, last = [], None
    for h in rows:
        v = h.get(key)
        if _finite(v) and v != last:
            out.append((h["step"], float(v)))
        last = v if _finite(v) else last
    return out


def ranking_figure(ranking: list[dict], height: int = 300) -> go.Figure:
    """Auto's ranking: each method's no-reference score with ±2 standard errors (lower is
    better), and the true PSNR beside it when the data have a ground truth."""
    names = [r["label"] for r in ranking]
    fig = go.Figure(go.Bar(
        x=[r["score"] for r in ranking], y=names, orientation="h",
        error_x=dict(type="data", array=[2 * r["se"] for r in ranking]),
        marker_color=["seagreen" if i == 0 else ("khaki" if r.get("tie") else "lightgrey") for i, r in enumerate(ranking)],
        text=[f"true PSNR {r['psnr']:.1f} dB" if "psnr" in r else "" for r in ranking], textposition="outside",
        hovertemplate="%{y}: score %{x:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="no-reference score (estimated squared error + a constant; lower is better)")
    return fig


def calibration_figure(cal: dict, height: int = 260) -> go.Figure:
    """Self-calibration: the criterion for every setting tried, one line per first parameter."""
    curve = cal["curve"]
    keys = list(curve[0]["params"]) if curve else []
    fig = go.Figure()
    if len(keys) >= 1:
        x_key = keys[-1]
        groups = {}
        for c in curve:
            label = ", ".join(f"{k} {c['params'][k]}" for k in keys[:-1]) or cal["criterion"]
            groups.setdefault(label, []).append((c["params"][x_key], c["loss"]))
        for label, pts in groups.items():
            pts = [(x, y) for x, y in pts if x is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers", name=label))
        fig.update_layout(xaxis_title=x_key)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), yaxis_title=f"{cal['criterion']} loss",
                      legend=dict(orientation="h", y=1.15))
    return fig
