"""Denoise page: choose a method, set its parameters, run it in the background, watch it."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from emcore import EmcoreError
from emcore.methods.registry import check_params, denoise, methods, methods_for
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

values = ui.param_widgets(m, ds)
seed = int(st.number_input("Seed", 0, 1_000_000, 0, key="denoise_seed", help="Same seed, same result."))
try:
    secs = m.estimate(ds.data.shape, ds.kind, values)
except EmcoreError:
    secs = None  # the parameters are refused: the Run button says why
go_col, note_col = st.columns([1, 4], vertical_alignment="center")
run = go_col.button("Run", type="primary", key="denoise_run")
when = f"about {ui.duration_words(secs)} on this machine" if secs is not None else None
if secs is not None and secs > 60:
    note_col.warning(f"{m.label} on this data will take {when}. Run starts it in the background: the page stays "
                     "usable, the progress shows below, and Stop ends it early"
                     + (" with the best model so far" if m.uses_torch else "") + ". " + m.cost_hint)
else:
    note_col.caption("Run starts it in the background; the progress shows below, where Stop ends it early"
                     + (f" ({when})." if when else "."))

if run:
    try:
        params = check_params(m, values)  # missing or refused values: one sentence now, not after queueing
    except EmcoreError as err:
        ui.show_error(str(err))
    else:
        token = st.session_state.dataset_token
        data, name = ds, m.name

        def job(progress, should_stop):
            return denoise(data, name, progress=progress, should_stop=should_stop, seed=seed, **values)

        ui.jobs().submit(ui.owner_id(), f"{m.label} on {ds.name}", job, slot=ui.job_slot(m),
                         meta={"requested": dict(values), "dataset_token": token, "method": m.name})
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
                           help="Use them later with 'A weights file', or from the CLI: "
                                f"python -m emcore denoise FILE --method {last['method']} --set weights=FILE")
if done:
    st.page_link("pages/compare.py", label=f"Compare {len(done)} result(s)", icon=":material/compare:")
