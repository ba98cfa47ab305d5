"""Compare page: results side by side with the input and the ground truth, profiles,
spectral slices, metrics with and without a ground truth, and export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from emcore import EmcoreError, spectral
from emcore.data.display import energy_window_map, summed_spectrum
from emcore.evaluate import filter_view, validation
from emcore.evaluate.profiles import profiles_for
from emcore.evaluate.reference import EXPLANATIONS
from pages import figures, ui

ui.sidebar_status()
st.title("Compare")
ui.collect_finished_jobs()
ds = ui.require_dataset("to compare results")
cal = ds.calibration
runs = ui.results_for_current()
st.caption(f"**{ds.name}** — {ds.kind}, {'×'.join(map(str, ds.data.shape))}")
others = ui.other_datasets()
if others:
    with st.expander(f"{sum(n for _, _, n in others)} result(s) of {len(others)} other dataset(s) of this session"):
        by_key = {k: f"{name} — {n} result(s)" for k, name, n in others}
        pick = st.selectbox("Dataset", list(by_key), format_func=by_key.get, key="cmp_other_dataset")
        if st.button("Make it the current dataset and show its results", key="btn_other_dataset"):
            ui.switch_to(pick)
            st.rerun()
if not runs:
    st.info("There are no results for this dataset yet: run a method on the Denoise page first.")
    st.page_link("pages/denoise.py", label="Go to the Denoise page", icon=":material/auto_fix_high:")
    st.stop()

# -- X-ray lines for cubes (needed by the metrics table too) --------------------------
lines: list[str] = []
if ds.kind == "cube":
    spectrum = ui.derived("spectrum", lambda: summed_spectrum(ds.data))
    try:
        n = ds.data.shape[2]
        e_all = ds.energy_axis()
        kev = 1e-3 if cal.energy_unit.lower() == "ev" else 1.0
        available = [x.name for x in spectral.xray_lines(max(e_all[0] * kev, 0.1), e_all[-1] * kev)]
        # the lines whose peaks stand highest in this spectrum (among the file's own list, when it has one)
        suggested = ui.derived("suggested", lambda: spectral.suggest_lines(
            spectrum, cal, candidates=[x for x in ds.metadata.get("xray_lines", []) if x in available] or None)
            or spectral.suggest_lines(spectrum, cal))
        lines = st.multiselect("Element lines (integrated over 2 × FWHM of the detector)", available,
                               default=suggested, key=f"lines_{st.session_state.dataset_token}")
    except EmcoreError as err:
        st.caption(str(err))

# -- run history ----------------------------------------------------------------------
st.subheader("Runs")
for r in runs:
    key = ("ref", tuple(lines))
    if key not in r["metrics_cache"]:
        r["metrics_cache"][key] = validation.reference_metrics(ds, r["data"], lines)
    r["metrics"] = dict(r["metrics_cache"][key])
def metric_column(key: str) -> str:
    """A metric's column name with its unit: "PSNR (dB)", "PSNR Fe Ka (dB)", "SSIM (1 = identical)"."""
    if key.startswith("psnr"):
        return f"PSNR {key[5:].replace('_', ' ')} (dB)".replace("PSNR  (dB)", "PSNR (dB)")
    if key.startswith("ssim"):
        return f"SSIM {key[5:].replace('_', ' ')} (1 = identical)".replace("SSIM  (", "SSIM (")
    return key


table = pd.DataFrame([
    {"result": r["label"], "method": r["method"],
     "parameters": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()),
     "time (s)": round(r["seconds"], 3), "device": r["device"],
     **{metric_column(k): round(v, 3) for k, v in r["metrics"].items()}}
    for r in runs
])
st.dataframe(table, hide_index=True, width="stretch")
if ds.ground_truth is not None:
    st.caption("PSNR / SSIM: " + EXPLANATIONS["psnr"] + " " + EXPLANATIONS["ssim"])

labels = [r["label"] for r in runs]
network_runs = [r for r in runs if filter_view.supports_filter(r["artifacts"])]
chosen = st.multiselect("Results to view", labels, default=labels[-2:], **ui.persist("compare_chosen"))
picked = [r for r in runs if r["label"] in chosen]

# -- view controls ----------------------------------------------------------------------
c1, c2, c3 = st.columns(3)
shared = c1.toggle("Shared contrast", value=True, **ui.persist("cmp_shared"),
                   help="One display range for every panel (that of the ground truth, or the input).")
residual = c2.toggle("Show residuals (input − result)", value=False, **ui.persist("cmp_residual"))
clip = c3.slider("Clip % at each end", 0.0, 5.0, 0.5, 0.1, **ui.persist("cmp_clip"))


@st.fragment
def viewer() -> None:
    """Panels, profile and spectra: moving a slider here reruns only this part of the page."""
    frame, channel, width = 0, None, 1
    if ds.kind == "stack":
        frame = st.slider("Frame", 0, ds.data.shape[0] - 1, 0, key="cmp_frame") if ds.data.shape[0] > 1 else 0
    elif ds.kind == "cube":
        n = ds.data.shape[2]
        e_all = ds.energy_axis()
        k1, k2 = st.columns([3, 1])
        target = k1.selectbox("Show the map of", ["energy slider"] + lines, key="cmp_map_of")
        if target == "energy slider":
            e_sel = k1.slider(f"Energy ({cal.energy_unit})", float(e_all[0]), float(e_all[-1]),
                              float(e_all[int(np.argmax(spectrum[n // 20:]) + n // 20)]),
                              step=float(cal.energy_scale), format="%.3f", key=f"cmp_energy_{st.session_state.dataset_token}")
            channel = cal.channel_of(e_sel, n)
            width = int(k2.number_input("Window (channels)", 1, max(1, n // 4), min(9, n), key="cmp_width"))
        else:
            lo, hi = spectral.line_channels(target, cal, n)
            channel, width = (lo + hi - 1) // 2, hi - lo
            k2.caption(f"{target}: channels {lo}–{hi - 1}")

    def view(arr: np.ndarray) -> np.ndarray:
        if ds.kind == "image":
            return arr
        if ds.kind == "stack":
            return arr[frame]
        return energy_window_map(arr, channel, width)

    panels = [("Input", view(ds.data))]
    for r in picked:
        v = view(r["data"])
        panels.append((f"{r['label']}{' residual' if residual else ''}", panels[0][1] - v if residual else v))
    if ds.ground_truth is not None and not residual:
        panels.append(("Ground truth", view(ds.ground_truth)))

    # -- intensity profile line -----------------------------------------------------------
    h, w = panels[0][1].shape
    ss = st.session_state
    prof = ss.setdefault("profile_line", {})
    if prof.get("shape") != (h, w):  # a new dataset: a horizontal line across the middle
        prof.clear()
        prof.update(shape=(h, w), clicks=0, next="start")
        for key, value in zip(("prof_r0", "prof_c0", "prof_r1", "prof_c1"), (h // 2, w // 4, h // 2, 3 * w // 4)):
            ui.set_persisted(key, value)
    if "pending_click" in prof:  # set by a click on the images, before the inputs exist
        which, (row, col) = prof.pop("pending_click")
        end = 0 if which == "start" else 1
        ui.set_persisted(f"prof_r{end}", row)
        ui.set_persisted(f"prof_c{end}", col)
    with st.expander("Intensity profile line", expanded=True):
        p1, p2, p3, p4, p5 = st.columns(5)
        r0 = p1.number_input("Start row", 0, h - 1, **ui.persist("prof_r0"))
        c0 = p2.number_input("Start col", 0, w - 1, **ui.persist("prof_c0"))
        r1 = p3.number_input("End row", 0, h - 1, **ui.persist("prof_r1"))
        c1_ = p4.number_input("End col", 0, w - 1, **ui.persist("prof_c1"))
        pw = p5.number_input("Width (px averaged)", 1, max(1, min(h, w) // 2), 3, **ui.persist("prof_width"))
        prof.update(start=(int(r0), int(c0)), end=(int(r1), int(c1_)))
        st.caption("Tip: click a point on the images to move the start of the line, then another for its end.")

    inspect = False
    if network_runs:
        inspect = st.radio("A click on the images sets", ["the profile line", "the pixel to inspect"], horizontal=True,
                           key="cmp_click_mode", help="'The pixel to inspect' shows, below, the filter the network "
                                                      "applies at the clicked pixel.") == "the pixel to inspect"
    # Built again only when what it shows changes (not when widgets elsewhere on the page move).
    key = ("panels", tuple(ui.result_uid(r) for r in picked), frame, channel, width, residual, clip, shared,
           prof["start"], prof["end"])
    fig = ui.memo(key, lambda: figures.panels_figure(
        panels, clip_percent=clip, shared=shared and not residual, colorscale="viridis" if ds.kind == "cube" else "gray",
        line=(prof["start"], prof["end"]), pixel_grid=(h, w)))
    # A new key after each click gives a chart with no selection left over, so the next
    # click is a new selection rather than a toggle of the old one.
    event = st.plotly_chart(fig, key=f"cmp_panels_{prof['clicks']}", on_select="rerun", selection_mode="points")
    clicked = figures.clicked_pixel(event)
    if clicked is not None:
        row, col = min(max(clicked[0], 0), h - 1), min(max(clicked[1], 0), w - 1)
        prof["clicks"] += 1
        if inspect:
            ss["jac_pending"] = (row, col)
            st.rerun()  # the filter view lies outside this fragment
        prof["pending_click"] = (prof["next"], (row, col))
        prof["next"] = "end" if prof["next"] == "start" else "start"
        st.rerun(scope="fragment")

    try:
        profiles = profiles_for(dict(panels), prof["start"], prof["end"], int(pw))
    except EmcoreError as err:
        ui.show_error(str(err))
        profiles = {}
    if profiles:
        st.plotly_chart(figures.profile_figure(profiles, cal.pixel_size, cal.pixel_unit), key="cmp_profile")

    # -- spectral viewer ------------------------------------------------------------------
    if ds.kind == "cube":
        st.subheader("Spectra")
        s1, s2, s3, s4 = st.columns(4)
        pr = int(s1.number_input("Pixel row", 0, ds.data.shape[0] - 1, ds.data.shape[0] // 2, key="spec_row"))
        pc = int(s2.number_input("Pixel col", 0, ds.data.shape[1] - 1, ds.data.shape[1] // 2, key="spec_col"))
        half = int(s3.number_input("Region half-size (px)", 0, 32, 2, key="spec_half",
                                   help="0 = the single pixel; k = a (2k+1)×(2k+1) square around it."))
        logy = s4.toggle("Log scale", value=False, key="spec_log")
        curves = {"Input": spectral.region_spectrum(ds.data, pr, pc, half)}
        for r in picked:
            curves[r["label"]] = spectral.region_spectrum(r["data"], pr, pc, half)
        if ds.ground_truth is not None:
            curves["Ground truth"] = spectral.region_spectrum(ds.ground_truth, pr, pc, half)
        e_all = ds.energy_axis()
        lo_ch = max(0, channel - width // 2)
        marker = (e_all[lo_ch] - cal.energy_scale / 2, e_all[min(n - 1, lo_ch + width - 1)] + cal.energy_scale / 2)
        st.plotly_chart(figures.spectrum_figure(e_all, curves, unit=cal.energy_unit, log=logy, marker=marker, lines=lines),
                        key="cmp_spec")

    st.session_state["cmp_view"] = {"frame": frame, "channel": channel, "width": width, "profiles": profiles}


viewer()
view_state = st.session_state.get("cmp_view", {})

if ds.kind == "cube":
    if lines:
        st.subheader("Element maps")
        sources = [("Input", "input", ds.data)] + [(r["label"], ui.result_uid(r), r["data"]) for r in picked]
        if ds.ground_truth is not None:
            sources.append(("Ground truth", "truth", ds.ground_truth))
        for line in lines:
            # maps do not change when other widgets move: computed once per source and line
            maps = [(f"{line} — {t}", ui.derived("element_map", lambda a=a: spectral.element_map(a, line, cal), ident, line))
                    for t, ident, a in sources]
            # The gallery does not depend on the energy slider: reuse its figures on reruns.
            key = ("gallery", line, tuple((t, ident) for t, ident, _ in sources), clip, shared)
            fig = ui.memo(key, lambda: figures.panels_figure(maps, clip_percent=clip, shared=shared, colorscale="viridis",
                                                        height=300))
            st.plotly_chart(fig, key=f"gallery_{line}")

# -- what is the network looking at? ----------------------------------------------------
st.subheader("What is the network looking at?")
if not network_runs:
    st.info("This view shows, for a result of a trained network, the filter it applies at a pixel you choose "
            f"(the gradient of that output pixel with respect to the input). It works on results of "
            f"{filter_view.supported_text()}; none of the results for this dataset comes from a network yet.")
else:
    ss = st.session_state
    names = [r["label"] for r in runs]
    j1, j2, j3, j4 = st.columns([2, 1, 1, 1])
    target = j1.selectbox("Result", names, index=names.index(network_runs[-1]["label"]), key="jac_result")
    entry_j = next(r for r in runs if r["label"] == target)
    h_j, w_j = ds.spatial_shape
    if ss.get("jac_shape") != (h_j, w_j):  # a new dataset: start at the centre
        ss.jac_shape = (h_j, w_j)
        ui.set_persisted("jac_row", h_j // 2)
        ui.set_persisted("jac_col", w_j // 2)
    if "jac_pending" in ss:  # a click on the images, in "pixel to inspect" mode
        row_p, col_p = ss.pop("jac_pending")
        ui.set_persisted("jac_row", row_p)
        ui.set_persisted("jac_col", col_p)
        ss.jac_go = True
    row_j = int(j2.number_input("Row", 0, h_j - 1, **ui.persist("jac_row")))
    col_j = int(j3.number_input("Col", 0, w_j - 1, **ui.persist("jac_col")))
    j4.write("")
    go_j = j4.button("Show the filter", key="btn_jac", type="primary") or ss.pop("jac_go", False)
    st.caption("Pick a pixel by row and column, or choose 'the pixel to inspect' above the images and click one. "
               + ("The filter is taken at the energy shown in the viewer. " if ds.kind == "cube" else "")
               + ("It is taken on the frame shown in the viewer. " if ds.kind == "stack" else ""))
    if not filter_view.supports_filter(entry_j["artifacts"]):
        st.info(f"{target} comes from {entry_j['method']}, which has no trained network to inspect; this view works "
                f"on results of {filter_view.supported_text()}.")
    elif go_j:
        energy_j = view_state.get("channel") if ds.kind == "cube" else None
        frame_j = int(view_state.get("frame", 0)) if ds.kind == "stack" else None
        data_j = ds.data[frame_j] if frame_j is not None else ds.data
        try:
            with st.spinner("Following the network back from the pixel…"):
                filt = filter_view.pixel_filter(entry_j["artifacts"], data_j, row_j, col_j, energy=energy_j,
                                             method=entry_j["method"])
            ss["jac_filter"] = {"uid": ui.result_uid(entry_j), "token": ss.dataset_token, "filter": filt,
                                "frame": frame_j, "n": ss.get("jac_count", 0) + 1}
            ss["jac_count"] = ss["jac_filter"]["n"]
        except EmcoreError as err:
            ui.show_error(str(err))
    saved_j = ss.get("jac_filter")
    if (saved_j and saved_j["token"] == ss.dataset_token and saved_j["uid"] == ui.result_uid(entry_j)
            and filter_view.supports_filter(entry_j["artifacts"])):
        filt = saved_j["filter"]
        summed_j = False
        if filt.summed is not None:
            summed_j = st.toggle("Sum the filter over all input energies", value=False, key="jac_summed",
                                 help="Off: the weights on the input slice at this energy. On: the weights summed over "
                                      "every input energy (how much each input pixel counts).")
        m1, m2, m3, m4 = st.columns(4)
        wsum = filt.summed_weight_sum if summed_j else filt.weight_sum
        summary = filter_view.filter_summary(filt.summed) if summed_j else {
            "effective_diameter": filt.effective_diameter, "participation": filt.participation}
        m1.metric("Sum of the weights", f"{wsum:.3f}", help="About 1 for a filter that keeps the local brightness.")
        m2.metric("Effective size", f"{summary['effective_diameter']:.0f} px",
                  help="Diameter of a disc holding as many pixels as carry 90 % of the total weight.")
        m3.metric("Pixels taking part", f"{summary['participation']:.0f}",
                  help="Participation ratio (Σ|w|)² / Σw²: a box filter over n pixels gives n.")
        m4.metric("Computed in", f"{filt.seconds:.2f} s")
        st.plotly_chart(ui.memo(("filter", saved_j["n"], summed_j), lambda: figures.filter_figure(filt, summed=summed_j)),
                        key="jac_figure")
        where_j = f" (frame {saved_j['frame']})" if saved_j.get("frame") is not None else ""
        st.markdown(filter_view.describe_filter(filt, cal.pixel_size, cal.pixel_unit, summed=summed_j) + where_j)
        if filt.spectral is not None:
            st.plotly_chart(figures.spectral_weights_figure(ds.energy_axis(), filt.spectral, cal.energy_unit),
                            key="jac_spectral")
            st.caption("Which input energies the network draws on for this output pixel and energy: the filter summed "
                       "over the window, channel by channel.")

# -- metrics without ground truth -------------------------------------------------------
st.subheader("Metrics without a ground truth")
model = None


def _noise_model():
    try:
        return validation.noise_model_of(ds)
    except EmcoreError as err:
        return str(err)


noise_model = ui.derived("noise_model", _noise_model)  # a blind estimate scans the data: once per dataset
if isinstance(noise_model, str):
    st.caption(noise_model)
else:
    model = noise_model
if model is not None and picked:
    st.markdown(f"**Residual checks** under {ui.noise_text(ds, model)}. {EXPLANATIONS['residual']}")
    rep_rows, maps = [], []
    for r in picked:
        key = ("residual",)
        if key not in r["metrics_cache"]:
            r["metrics_cache"][key] = validation.residual_report(ds, r["data"], model)
        rep = r["metrics_cache"][key]
        rep_rows.append({"result": r["label"], "mean (noise σ; ideal 0)": round(rep.mean, 3),
                         "variance (noise σ²; ideal 1)": round(rep.variance, 3),
                         "lag-1 autocorr. rows (ideal 0)": round(rep.autocorr_row, 3),
                         "lag-1 autocorr. cols (ideal 0)": round(rep.autocorr_col, 3), "verdict": rep.verdict})
        maps.append((f"{r['label']}: structure map", rep.structure_map))
    st.dataframe(pd.DataFrame(rep_rows), hide_index=True, width="stretch")
    key = ("structure", tuple(ui.result_uid(r) for r in picked))
    st.plotly_chart(ui.memo(key, lambda: figures.panels_figure(maps, clip_percent=0.5, shared=True, colorscale="magma",
                                                          height=300)), key="cmp_structure")

val_runs = {r["label"]: (r["method"], r["requested"]) for r in picked}
# Each check re-runs the selected methods on split data: as long as the runs themselves took
# (twice for the FRC, which denoises both halves). It runs as a background job, like a method.
rerun_seconds = sum(r["seconds"] for r in picked)


def submit_validation(kind: str, what: str, factor: float = 1.0) -> None:
    data, runs_now, token = ds, dict(val_runs), st.session_state.dataset_token
    ui.jobs().submit(ui.owner_id(), f"{what} of {len(runs_now)} result(s) on {ds.name}",
                     lambda progress, should_stop: validation.run_validation(
                         kind, data, runs_now, progress=progress, should_stop=should_stop),
                     slot="cpu", meta={"validation": kind, "dataset_token": token})
    st.session_state.setdefault("job_notes", []).append(
        ("success", f"{what} started in the background (about {max(1.0, factor * rerun_seconds):.0f} s: the selected "
                    "results are re-run on split data). Keep using the page; the table appears here when it is done."))
    st.rerun()


has_counts = ui.derived("has_counts", lambda: validation.counts_of(ds) is not None)  # materialises counts: once
busy = {j.meta.get("validation") for j in ui.jobs().jobs_for(ui.owner_id()) if j.active and j.meta.get("validation")}
if has_counts:
    st.markdown(f"**Count-split validation.** {EXPLANATIONS['count_split']}")
    if st.button("Run count-split validation on the selected results", key="btn_countsplit",
                 disabled="count_split" in busy, help="Runs in the background; Stop is offered while it runs."):
        submit_validation("count_split", "Count-split validation")
    if ds.kind == "image" and picked and st.button("Fourier ring correlation of the two halves", key="btn_frc",
                                                   disabled="frc" in busy):
        submit_validation("frc", "Fourier ring correlation", factor=2.0)
elif ds.kind == "stack":
    st.markdown(f"**Frame-pair validation.** {EXPLANATIONS['frame_pair']}")
    if st.button("Run frame-pair validation on the selected results", key="btn_framepair",
                 disabled="frame_pair" in busy):
        submit_validation("frame_pair", "Frame-pair validation")
else:
    st.caption("Count-split validation needs raw counts, and frame-pair validation a stack; "
               "for this dataset the residual checks above are the no-reference test.")

for kind, text in st.session_state.pop("job_notes", []):
    {"success": st.success, "error": ui.show_error, "stopped": st.warning}[kind](text)


@st.fragment(run_every=1.0)
def validation_jobs() -> None:
    """This session's running checks: progress, ETA and Stop, polled about once a second."""
    mine = [j for j in ui.jobs().jobs_for(ui.owner_id()) if j.meta.get("validation")]
    if any(not j.active for j in mine):
        st.rerun()  # one finished: rerun the page so its table shows
    for j in mine:
        p = j.progress
        head, btn = st.columns([5, 1])
        eta = f", about {p.eta:.0f} s left" if p is not None and p.eta is not None else ""
        where = f"waiting, position {ui.jobs().position(j.id)} in the queue" if j.state == "queued" else j.state
        head.markdown(f"**{j.label}** — {where}{eta}")
        if j.state in ("queued", "running") and btn.button("Stop", key=f"stop_val_{j.id}"):
            ui.jobs().cancel(j.id)
        st.progress(p.fraction if p is not None else 0.0, text=(p.message if p is not None and p.message else "starting…"))


if any(j.meta.get("validation") for j in ui.jobs().jobs_for(ui.owner_id())):
    validation_jobs()

checks = ui.validations_for_current()
def mse_words(mse: float, noise_variance: float, unit: str) -> str:
    """What an estimated mean squared error means, in a sentence."""
    if mse <= 0:
        return ("≈ 0, better than the noise can resolve: an unbiased estimate dips below zero when the error "
                "is tiny compared with the noise")
    return (f"typical error ±{np.sqrt(mse):.2g} {unit}, against ±{np.sqrt(max(noise_variance, 0.0)):.2g} "
            f"{unit} of noise in the data it was judged on")


for kind in ("count_split", "frame_pair"):
    if kind in checks:
        out = checks[kind]
        if kind == "count_split":
            unit = "counts/voxel" if ds.kind == "cube" else "counts/px"
            where = "counts per pixel of the held-out half (half the recorded dose)"
        else:
            unit, where = "units", "the data's own units, squared"
        st.dataframe(pd.DataFrame([
            {"rank": out["ranking"].index(k) + 1, "result": k, f"estimated error, MSE (({unit})²)": v.estimated_mse,
             "what it means": mse_words(v.estimated_mse, v.noise_variance, unit),
             f"raw MSE vs. other half (({unit})²)": v.raw_mse, f"noise variance (({unit})²)": v.noise_variance,
             **({"Poisson NLL (nats/value)": v.poisson_nll} if hasattr(v, "poisson_nll") else {})}
            for k, v in out["results"].items()]).sort_values("rank"), hide_index=True, width="stretch")
        st.caption(f"Errors are squared {where}; lower is better. The estimate is the raw MSE against the "
                   "independent other half minus that half's noise variance, so it is unbiased but noisy: a "
                   "value at or below zero means the error is too small to measure against the noise.")
if "frc" in checks:
    st.markdown(EXPLANATIONS["frc"])
    st.plotly_chart(figures.frc_figure(checks["frc"]), key="cmp_frc")

# -- export -----------------------------------------------------------------------------
st.subheader("Export")
e1, e2, e3 = st.columns(3)
to_save = e1.selectbox("Result", labels, index=len(labels) - 1, key="export_which")
fmt = e2.selectbox("Format", [".hspy", ".tif", ".npy"], key="export_fmt")
entry = next(r for r in runs if r["label"] == to_save)
# Deferred: the file is only written when the button is clicked, not on every rerun.
e3.download_button("Download result", lambda: ui.result_bytes(ds, entry, fmt), file_name=ui.export_name(entry, fmt),
                   key="dl_result", help="The file is named after the result's label.")
report_runs = picked or runs
st.download_button("Download HTML report (works offline)",
                   lambda: ui.report_html(ds, report_runs, frame=view_state.get("frame", 0), channel=view_state.get("channel"),
                                          window=view_state.get("width", 1), profiles=view_state.get("profiles")),
                   file_name="denoising_report.html", mime="text/html", key="dl_report")
