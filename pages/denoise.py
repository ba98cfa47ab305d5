"""Denoise page: choose a method, set its parameters, run it in the background, watch it."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from emcore.methods.registry import denoise, methods, methods_for
from pages import ui

ui.sidebar_status()
st.title("Denoise")
ui.collect_finished_jobs()
ds = ui.require_dataset("to denoise it")
st.caption(f"**{ds.name}** — {ds.kind}, {'×'.join(map(str, ds.data.shape))}")

usable = methods_for(ds.kind)
if not usable:
    st.warning(f"No installed method works on a {ds.kind}.")
    st.stop()
others = [m for m in methods() if m not in usable]

by_name = {x.name: x for x in usable}
m = by_name[st.selectbox(
    "Method",
    list(by_name),
    format_func=lambda n: f"{by_name[n].label} ({by_name[n].kind})",
    key="method_choice",
)]
st.markdown(f"**{m.label}** — {m.description}")
if m.details:
    with st.expander("How it works"):
        st.markdown(m.details)
if others:
    st.caption("Not for this kind of data: " + ", ".join(f"{o.label} ({'/'.join(o.accepts)})" for o in others))

training_plan = None
if m.kind == "supervised":
    # Where the network's weights come from: shipped, a file, or a training run now.
    source = st.radio("Weights", ["shipped", "upload", "train"], horizontal=True, key=f"weights_src_{m.name}",
                      format_func={"shipped": "Shipped (trained on simulated HRTEM)", "upload": "Upload a weights file",
                                   "train": "Train now"}.get)
    if source == "upload":
        upl = st.file_uploader("Weights file (.pt, written by this workbench)", type=["pt"], key=f"weights_file_{m.name}")
        if upl is not None:
            path, err = ui.check_weights_upload(m.name, upl)
            if err:
                ui.show_error(err)
            else:
                st.session_state[f"weights_path_{m.name}"] = path
                st.caption(f"Using {upl.name}.")
    elif source == "train":
        training_plan = ui.training_form(m, ds)

if training_plan is None:
    with st.form(f"params_{m.name}"):
        values = ui.param_widgets(m)
        seed = int(st.number_input("Seed", 0, 1_000_000, 0, key="denoise_seed", help="Same seed, same result."))
        run = st.form_submit_button("Run", type="primary")
    if m.kind == "supervised" and source == "upload":
        values["weights"] = st.session_state.get(f"weights_path_{m.name}")
        if run and values["weights"] is None:
            ui.show_error("Upload a weights file first, or choose the shipped weights.")
            run = False
else:
    plan, clean, run = training_plan
    values, seed = {}, plan.seed if plan is not None else 0

blocked = False
if m.name == "bm3d" and ds.kind == "cube":
    from emcore.methods.bm3d import estimate_bm3d_seconds

    secs = estimate_bm3d_seconds(ds.data.shape, kind="cube", bin_energy=values.get("bin_energy") or 1)
    if secs > 60:
        st.warning(f"BM3D on this spectrum image will take about {secs / 60:.0f} min on this machine "
                   "(one BM3D per energy slice). Bin the energy axis (parameter above) or use PCA for a quick look.")
        blocked = not st.checkbox("Run it anyway", key="bm3d_confirm")

if run and not blocked:
    token = st.session_state.dataset_token
    data, name, params = ds, m.name, dict(values)
    slot = ui.job_slot(m)
    if training_plan is not None:
        from emcore.methods.supervised import train_and_denoise

        def job(progress, should_stop):
            return train_and_denoise(plan, data, clean=clean, progress=progress, should_stop=should_stop)

        label = f"Training {m.label} ({plan.source} data) for {ds.name}"
        params = {"training_source": plan.source, "training_steps": plan.steps}
    else:
        def job(progress, should_stop):
            return denoise(data, name, progress=progress, should_stop=should_stop, seed=seed, **params)

        label = f"{m.label} on {ds.name}"
    ui.jobs().submit(ui.owner_id(), label, job, slot=slot,
                     meta={"requested": params, "dataset_token": token, "method": m.name})
    st.rerun()

for kind, text in st.session_state.pop("job_notes", []):
    {"success": st.success, "error": ui.show_error, "stopped": st.warning}[kind](text)


@st.fragment(run_every=1.0)
def running_jobs() -> None:
    """Polls this session's jobs about once a second: progress, ETA, live losses, stop."""
    mine = [j for j in ui.jobs().jobs_for(ui.owner_id())]
    if any(not j.active for j in mine):
        st.rerun()  # a job finished: rerun the page so its result joins the history
    for j in mine:
        with st.container(border=True):
            pos = ui.jobs().position(j.id)
            p = j.progress
            head, btn = st.columns([5, 1])
            if j.state == "queued":
                head.markdown(f"**{j.label}** — waiting, position {pos} in the queue")
                if btn.button("Cancel", key=f"cancel_{j.id}"):
                    ui.jobs().cancel(j.id)
                    st.rerun()
                continue
            eta = f", about {p.eta:.0f} s left" if p is not None and p.eta is not None else ""
            head.markdown(f"**{j.label}** — {j.state} ({ui.slot_words(j.slot)}){eta}")
            if j.state == "running" and btn.button("Stop", key=f"stop_{j.id}"):
                ui.jobs().cancel(j.id)
            st.progress(p.fraction if p is not None else 0.0, text=(p.message if p is not None and p.message else "starting…"))
            losses = [h for h in j.history if any(k.startswith("loss_") or k.startswith("val_") for k in h)]
            if losses:
                df = pd.DataFrame(losses)
                fig = go.Figure()
                for col in [c for c in df.columns if c.startswith("loss_") or c == "val_loss"]:
                    fig.add_trace(go.Scatter(x=df["step"], y=df[col], mode="lines", name=col.replace("loss_", "")))
                log = st.toggle("Log scale", value=True, key=f"log_{j.id}")
                fig.update_layout(height=280, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="step",
                                  yaxis_title="loss", yaxis_type="log" if log else "linear")
                st.plotly_chart(fig, key=f"loss_{j.id}")
                if "val_psnr" in df.columns and df["val_psnr"].notna().any():
                    st.caption(f"Validation PSNR {df['val_psnr'].dropna().iloc[-1]:.2f} dB")


if ui.jobs().jobs_for(ui.owner_id()):
    running_jobs()

done = ui.results_for_current()
trained = [r for r in done if r.get("artifacts", {}).get("weights_path")]
if trained:
    last = trained[-1]
    wbytes = ui.trained_weights_bytes(last["artifacts"]["weights_path"])
    if wbytes is not None:
        st.download_button(f"Download the weights trained for {last['label']}", wbytes,
                           file_name=f"{last['method']}_trained.pt", key="dl_weights",
                           help="Use them later with 'Upload a weights file', or from the CLI: "
                                f"python -m emcore denoise FILE --method {last['method']} --set weights=FILE")
if done:
    st.page_link("pages/compare.py", label=f"Compare {len(done)} result(s)", icon=":material/compare:")
