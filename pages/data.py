"""Data page: pick a built-in example or upload a file, then inspect it."""

from __future__ import annotations

import numpy as np
import streamlit as st

from emcore import EmcoreError, TooLargeError, io, sim, spectral
from emcore.data.display import energy_window_map, summed_spectrum
from pages import figures, ui

ACQ_LABELS = {"voltage_kv": "Beam voltage (kV)", "dwell_time_s": "Dwell time (s)", "live_time_s": "Live time (s)",
              "detector": "Detector", "microscope": "Microscope", "signal_type": "Signal type", "title": "Title"}

def survey_name(ds) -> str:
    """The name of a spectrum image's survey image: "HAADF" only when it is one (the examples, a
    signal or file titled so); otherwise its own title (an SE or BF image is no HAADF image)."""
    title = str(ds.metadata.get("haadf_title") or "").strip()
    if not title or "HAADF" in title.upper():
        return "HAADF"
    return f"Survey image ({title})"


st.title("Data")
st.caption(
    "Start from a built-in simulated example (with ground truth) or upload your own image, "
    "image stack or EDS/EELS spectrum image."
)

source = st.radio("Source", ["Built-in example", "Upload a file"], horizontal=True, key="data_source")

# -- choose / load -----------------------------------------------------------------
if source == "Built-in example":
    names = list(sim.EXAMPLES)
    origin = st.session_state.get("dataset_origin")
    current = origin[1] if origin and origin[0] == "example" else ui.DEFAULT_EXAMPLE
    c1, c2, c3 = st.columns([2, 3, 1])
    name = c1.selectbox(
        "Example",
        names,
        index=names.index(current),
        format_func=lambda n: sim.EXAMPLES[n].label,
        key="example_name",
    )
    info = sim.EXAMPLES[name]
    # Log-spaced dose steps: low-dose work spans three decades.
    doses = sorted({float(f"{d:.3g}") for d in np.geomspace(info.dose_min, info.dose_max, 25)} | {float(info.dose_default)})
    dose = c2.select_slider(info.dose_label, options=doses, value=float(info.dose_default), key=f"dose_{name}")
    seed = int(c3.number_input("Seed", min_value=0, max_value=1_000_000, value=0, step=1, key="example_seed"))
    st.caption(info.description)
    wanted = ("example", name, seed, float(dose))
    if st.session_state.get("dataset_origin") != wanted:
        try:
            ui.set_dataset(ui.load_example(name, seed, float(dose)), wanted)
        except EmcoreError as err:
            ui.show_error(str(err))
else:
    exts = sorted({e.lstrip(".") for e in io.SUPPORTED_EXTENSIONS})
    files = st.file_uploader(
        "EM file — for FEI TIA data upload the .emi together with its .ser file(s)",
        type=exts,
        accept_multiple_files=True,
        key="upload_files",
    )
    haadf_file = st.file_uploader(
        "Optional: a HAADF image recorded with a spectrum image (same pixel grid)",
        type=exts,
        key="upload_haadf",
    )
    opts = st.session_state.setdefault("load_options", {})
    if files:
        exts = {f.name.rsplit(".", 1)[-1].lower() for f in files}
        if len(files) > 1 and not (exts <= {"emi", "ser"} or exts <= {"rpl", "raw"}):
            # The uploader keeps earlier files: the newest one is the dataset the user means.
            st.caption(f"Using the newest file, {files[-1].name}; the other {len(files) - 1} in the uploader "
                       "are ignored (remove them with ✕).")
            files = files[-1:]
        upload_id = tuple(f.file_id for f in files)
        if opts.get("upload_id") != upload_id:  # a new upload resets choices made for the last one
            opts.clear()
            opts["upload_id"] = upload_id
            for k, v in (("bin_spatial", 1), ("bin_energy", 1), ("e_lo", 0.0), ("e_hi", 0.0)):
                st.session_state[k] = v
        signals = opts.get("signals")
        if signals and sum(s.get("kind") is not None for s in signals) > 1:
            usable = [s for s in signals if s.get("kind")]
            labels = {s["index"]: f"{s['title'] or 'untitled'} — {s['kind']} {'×'.join(map(str, s['shape']))}" for s in usable}
            idx = [s["index"] for s in usable]
            chosen = opts.get("signal", opts.get("chosen_signal", idx[0]))
            sel = st.selectbox(
                "Signal in this file",
                idx,
                index=idx.index(chosen) if chosen in idx else 0,
                format_func=labels.get,
                help="The file holds several signals; the spectrum image (or the largest image) is picked by default.",
            )
            if sel != opts.get("chosen_signal"):
                opts["signal"] = sel
        ss = st.session_state
        for k, v in (("bin_spatial", 1), ("bin_energy", 1), ("e_lo", 0.0), ("e_hi", 0.0)):
            ss.setdefault(k, v)
        if "suggestion" in opts:  # pre-fill a reduction that fits, before the widgets exist
            ss.bin_spatial = int(opts["suggestion"].get("bin_spatial", 1))
            ss.bin_energy = int(opts["suggestion"].get("bin_energy", 1))
            del opts["suggestion"]
        # the energy fields only for a spectrum image (or while the file's kind is not known yet)
        chosen_kind = next((x.get("kind") for x in signals or ()
                            if x.get("index") == opts.get("signal", opts.get("chosen_signal"))), None)
        has_energy = chosen_kind in (None, "cube")
        with st.expander("Reduce a large spectrum image before loading" if has_energy else "Reduce a large image before loading",
                         expanded=bool(opts.get("too_large") or opts.get("reduced_note"))):
            if opts.get("too_large"):
                st.warning(opts["too_large"] + " A reduction that fits is filled in below; adjust it if you like.")
            elif opts.get("reduced_note"):
                st.warning(opts["reduced_note"])
            c1, c2, c3, c4 = st.columns(4)
            bin_s = int(c1.number_input("Spatial binning (k×k)", 1, 64, key="bin_spatial"))
            bin_e, e_lo, e_hi = 1, 0.0, 0.0
            if has_energy:
                bin_e = int(c2.number_input("Energy binning (channels)", 1, 256, key="bin_energy"))
                e_lo = c3.number_input("Energy from", key="e_lo", help="In the file's energy unit; leave both at 0 for the full range.")
                e_hi = c4.number_input("Energy to", key="e_hi")
        erange = (float(e_lo), float(e_hi)) if e_hi > e_lo else None
        key = ("upload", upload_id, haadf_file.file_id if haadf_file else None, opts.get("signal"), bin_s, bin_e, erange)
        if st.session_state.get("dataset_origin") != key and opts.get("failed") != key:
            try:
                with st.spinner("Reading the file…"):
                    ds = io.load_bytes(
                        [(f.name, f.getvalue()) for f in files],
                        signal=opts.get("signal"),
                        bin_spatial=bin_s,
                        bin_energy=bin_e,
                        energy_range=erange,
                    )
                    if haadf_file is not None:
                        ds = ds.with_haadf(io.load_haadf([(haadf_file.name, haadf_file.getvalue())]))
                        ds.metadata["haadf_title"] = haadf_file.name.rsplit(".", 1)[0]
            except TooLargeError as err:
                opts.update(too_large=str(err), suggestion=err.suggestion, failed=key)
                st.rerun()
            except EmcoreError as err:
                opts["failed"] = key
                opts["error"] = str(err)
            else:
                too_large = opts.pop("too_large", None)
                if too_large or bin_s > 1 or bin_e > 1 or erange:
                    opts["reduced_note"] = (too_large + " " if too_large else "") + (
                        f"Loaded with {bin_s}×{bin_s} spatial binning"
                        + (f", {bin_e}-channel energy binning" if ds.kind == "cube" else "")
                        + (f" and the energy range {erange[0]:g}–{erange[1]:g}" if erange else "") + ".")
                else:
                    opts.pop("reduced_note", None)
                opts.pop("error", None)
                new_signals = ds.metadata.get("signals") != opts.get("signals")
                opts["signals"] = ds.metadata.get("signals")
                opts["chosen_signal"] = ds.metadata.get("signal_index")
                ui.set_dataset(ds, key)
                if new_signals:  # draw the signal chooser, which sits above this point
                    st.rerun()
        if opts.get("error") and opts.get("failed") == key:
            ui.show_error(opts["error"])
            if ui.current_dataset() is not None:
                st.caption(f"Still loaded: {ui.current_dataset().name}.")

ds = ui.current_dataset()
ui.sidebar_status()
if ds is None:
    st.info("Nothing is loaded yet: choose an example or upload a file.")
    st.stop()

# -- summary -----------------------------------------------------------------------
st.subheader(ds.name)
summary = ui.derived("summary", ds.summary)  # sums over a whole cube: once per dataset, not on every slider move
cal = ds.calibration
m = st.columns(4)
m[0].metric("Kind", ds.kind)
m[1].metric("Shape", "×".join(map(str, ds.data.shape)))
m[2].metric("Pixel size", f"{cal.pixel_size:.4g} {cal.pixel_unit}" if cal.is_spatially_calibrated else "uncalibrated")
m[3].metric(
    "Counts / pixel" if ds.is_counts else "Mean value / pixel",
    f"{summary['counts_per_pixel']:.4g}",
    help="Mean total counts per spatial pixel (summed over energy for spectrum images)." if ds.is_counts else
    "Mean pixel value; the values are not raw counts.",
)
rows = {
    "Value range": f"{summary['value_range'][0]:.4g} … {summary['value_range'][1]:.4g}",
    "Raw counts (Poisson)": "yes" if ds.is_counts else "no",
    "Noise model": ui.noise_text(ds),
    "Ground truth": "yes (simulated)" if ds.ground_truth is not None else "no",
}
if ds.kind == "cube":
    e0, e1 = summary["energy_range"]
    rows["Energy axis"] = f"{e0:.4g} … {e1:.4g} {cal.energy_unit}, {cal.energy_scale:.4g} {cal.energy_unit}/channel"
    rows["Survey image"] = (f"{survey_name(ds)}, {'×'.join(map(str, ds.haadf.shape))}" if ds.haadf is not None
                            else "none")
for k, v in summary.get("acquisition", {}).items():
    rows[ACQ_LABELS.get(k, k.replace("_", " "))] = f"{v:g}" if isinstance(v, float) else str(v)
st.table({"": list(rows.keys()), "value": list(rows.values())})

whole = ui.derived("whole_counts", lambda: bool(np.all(ds.data >= 0) and np.all(np.mod(ds.data, 1) == 0)))
if whole and not ds.is_counts:
    st.caption("Every value is a whole number ≥ 0. If these are detector counts, say so below: the Poisson "
               "noise model and count-split validation then apply.")
with st.expander("Calibration and counts", expanded=not cal.is_spatially_calibrated and ds.ground_truth is None):
    st.caption("Correct what the file did not say. Results already computed stay with this dataset.")
    k1, k2, k3 = st.columns(3)
    size = k1.number_input("Pixel size", min_value=1e-9, value=float(cal.pixel_size), format="%g", key="cal_pixel_size")
    units = ["px", "pm", "Å", "nm", "µm"]
    unit = k2.selectbox("Pixel unit", units, index=units.index(cal.pixel_unit) if cal.pixel_unit in units else 0,
                        key="cal_pixel_unit", help="'px' means uncalibrated.")
    counts = k3.checkbox("Raw counts (Poisson)", value=ds.is_counts, key="cal_counts",
                         help="The values are numbers of detected electrons or X-rays per pixel.")
    new_cal = dict(pixel_size=float(size), pixel_unit=unit)
    if ds.kind == "cube":
        e1, e2, e3 = st.columns(3)
        new_cal["energy_offset"] = float(e1.number_input("Energy of channel 0", value=float(cal.energy_offset),
                                                         format="%g", key="cal_e0"))
        new_cal["energy_scale"] = float(e2.number_input("Energy per channel", min_value=1e-9,
                                                        value=float(cal.energy_scale), format="%g", key="cal_de"))
        eunits = ["keV", "eV"]
        new_cal["energy_unit"] = e3.selectbox("Energy unit", eunits, index=eunits.index(cal.energy_unit)
                                              if cal.energy_unit in eunits else 0, key="cal_eunit")
    if st.button("Apply", key="cal_apply"):
        from dataclasses import replace

        try:
            ui.set_dataset(replace(ds, calibration=replace(cal, **new_cal), is_counts=bool(counts)),
                           st.session_state.get("dataset_origin"))
            st.rerun()
        except EmcoreError as err:
            ui.show_error(str(err))

# -- preview -----------------------------------------------------------------------
st.subheader("Preview")
clip = st.slider("Contrast: clip % of pixels at each end", 0.0, 5.0, 0.5, 0.1, key="clip_percent")
show = dict(clip_percent=clip, pixel_size=cal.pixel_size, unit=cal.pixel_unit)

if ds.kind == "image":
    cols = st.columns(2 if ds.ground_truth is not None else 1)
    cols[0].plotly_chart(figures.image_figure(ds.data, "Data", **show), key="prev_data")
    if ds.ground_truth is not None:
        cols[1].plotly_chart(figures.image_figure(ds.ground_truth, "Ground truth", **show), key="prev_gt")
elif ds.kind == "stack":
    t = st.slider("Frame", 0, ds.data.shape[0] - 1, 0, key="frame") if ds.data.shape[0] > 1 else 0
    cols = st.columns(2 if ds.ground_truth is not None else 1)
    cols[0].plotly_chart(figures.image_figure(ds.data[t], f"Frame {t}", **show), key="prev_frame")
    if ds.ground_truth is not None:
        cols[1].plotly_chart(figures.image_figure(ds.ground_truth[t], f"Ground truth, frame {t}", **show), key="prev_gt_frame")
else:
    n = ds.data.shape[2]
    energy = ds.energy_axis()
    spectrum = ui.derived("spectrum", lambda: summed_spectrum(ds.data))  # reused on every slider move
    spectrum_gt = None if ds.ground_truth is None else ui.derived("spectrum_gt", lambda: summed_spectrum(ds.ground_truth))
    c1, c2, c3 = st.columns([3, 1, 1])
    default_ch = int(np.argmax(spectrum[n // 20:]) + n // 20)  # skip the noise peak near 0
    e_sel = c1.slider(
        f"Energy ({cal.energy_unit})", float(energy[0]), float(energy[-1]), float(energy[default_ch]),
        step=float(cal.energy_scale), format="%.3f", key=f"energy_{st.session_state.dataset_token}",
        help="Centre of the energy window shown in the maps (shaded on the spectrum).",
    )
    ch = cal.channel_of(e_sel, n)
    width = int(c2.number_input("Window (channels)", 1, max(1, n // 4), min(9, n), key="energy_width"))
    log = c3.toggle("Log scale", value=True, key="spectrum_log")
    lo_e = energy[max(0, ch - width // 2)] - cal.energy_scale / 2
    hi_e = energy[min(n - 1, ch - width // 2 + width - 1)] + cal.energy_scale / 2
    curves = {"Data (sum over pixels)": spectrum}
    if spectrum_gt is not None:
        curves["Ground truth"] = spectrum_gt
    try:  # the lines whose peaks stand out, labelled on the spectrum (the Compare page maps them)
        found = ui.derived("found_lines", lambda: spectral.suggest_lines(spectrum, cal))
    except EmcoreError:
        found = []
    st.plotly_chart(figures.spectrum_figure(energy, curves, unit=cal.energy_unit, log=log, marker=(lo_e, hi_e), lines=found),
                    key="prev_spec")
    if found:
        st.caption("Lines whose peaks stand out of the background: " + ", ".join(x.replace("_", " ") for x in found)
                   + ". Their element maps are on the Compare page.")
    panels = [("Data", energy_window_map(ds.data, ch, width), "viridis")]
    if ds.ground_truth is not None:
        panels.append(("Ground truth", energy_window_map(ds.ground_truth, ch, width), "viridis"))
    if ds.haadf is not None:
        panels.append((survey_name(ds), ds.haadf, "gray"))
    cols = st.columns(len(panels))
    title_e = f"{energy[ch]:.3f} {cal.energy_unit} ± {width * cal.energy_scale / 2:.3g}"
    for col, (label, img, cmap) in zip(cols, panels):
        t = f"{label}: {title_e}" if img is not ds.haadf else label
        col.plotly_chart(figures.image_figure(img, t, colorscale=cmap, height=360, **show), key=f"prev_{label}")
