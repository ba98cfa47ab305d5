"""Denoise page: choose a method, set its parameters, run it in the background, watch it."""

import streamlit as st

from emcore import EmcoreError
from emcore.methods.registry import check_params, denoise, methods, methods_for
from pages import figures, ui

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
    **ui.persist("method_choice"),
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
    """Polls this session's jobs about once a second: what shares the machine, progress, time left,
    live losses, stop."""
    manager = ui.jobs()
    mine = manager.jobs_for(ui.owner_id())
    if any(not j.active for j in mine):
        st.rerun()  # a job finished: rerun the page so its result joins the history
    load = manager.load(ui.owner_id())
    if load.shared:
        st.info(f"The machine is shared: other sessions have {_jobs_words(load.others_running)} running and "
                f"{_jobs_words(load.others_queued)} waiting. Everything runs slower while they do; the time left "
                "below is measured from each job's own progress, so it already counts that.", icon="👥")
    for j in mine:
        with st.container(border=True):
            p = j.progress
            head, btn = st.columns([5, 1])
            if j.state == "queued":
                ahead, others = manager.ahead(j.id)
                whose = f", {others} of them from other sessions" if others else ""
                head.markdown(f"**{j.label}** — waiting {ui.slot_words(j.slot)}: {_jobs_words(ahead)} ahead of it"
                              f"{whose}. It starts when they end.")
                if btn.button("Cancel", key=f"cancel_{j.id}"):
                    manager.cancel(j.id)
                    st.rerun()
                continue
            if p is not None and p.eta is not None:
                left = f", about {ui.duration_words(p.eta)} left at the rate measured so far"
            else:
                left = ", measuring its rate…" if j.state == "running" else ""
            head.markdown(f"**{j.label}** — {j.state} {ui.slot_words(j.slot)}{left}")
            if j.state == "running" and btn.button("Stop", key=f"stop_{j.id}"):
                manager.cancel(j.id)
            st.progress(p.fraction if p is not None else 0.0, text=(p.message if p is not None and p.message else "starting…"))
            if any(k.startswith("loss_") for h in j.history for k in h):
                loss_chart(j.history, key=f"loss_{j.id}")


def _jobs_words(n: int) -> str:
    return "no job" if n == 0 else "1 job" if n == 1 else f"{n} jobs"


def loss_chart(history: list[dict], key: str) -> None:
    """The loss curves (log scale when they allow it) and the validation PSNR on its own axis."""
    log = st.toggle("Log scale", value=True, key=f"{key}_log")
    fig, note = figures.loss_figure(history, log=log)
    if fig is None:
        return
    st.plotly_chart(fig, key=key)
    if note:
        st.caption(note)
    psnr = [h["val_psnr"] for h in history if h.get("val_psnr") is not None]
    if psnr:
        noisy = [h["input_psnr"] for h in history if h.get("input_psnr") is not None]
        bar = f" (the noisy input: {noisy[-1]:.2f} dB)" if noisy else ""
        st.caption(f"Validation PSNR {psnr[-1]:.2f} dB{bar}: how close the network's output is to the clean "
                   "validation images; higher is better.")


if ui.jobs().jobs_for(ui.owner_id()):
    running_jobs()

done = ui.results_for_current()
curves = [r for r in done if r.get("artifacts", {}).get("training")]
if curves:
    last = curves[-1]
    card = last["artifacts"].get("card") or {}
    if card.get("warning"):
        st.warning(f"{last['label']}: {card['warning'].removeprefix('Warning: ')}")
    with st.expander(f"Training curves of {last['label']}", expanded=bool(card.get("warning"))):
        noisy = card.get("validation_input_psnr_db")
        loss_chart([{**h, "input_psnr": noisy} for h in last["artifacts"]["training"]], key=f"train_{ui.result_uid(last)}")
trained = [r for r in done if r.get("artifacts", {}).get("weights_path")]
if trained:
    last = trained[-1]
    wbytes = ui.trained_weights_bytes(last["artifacts"]["weights_path"])
    if wbytes is not None:
        st.download_button(f"Download the weights trained for {last['label']}", wbytes,
                           file_name=f"{last['method']}_trained.pt", key="dl_weights",
                           help="Use them later with 'A weights file', or from the CLI: "
                                f"python -m emcore denoise FILE --method {last['method']} --set weights=FILE")
# How the last result chose: Auto's ranking, or a method's self-calibration curve.
# Auto's other results come after its own entry and carry "from_auto": the run is Auto's.
chosen = next((r for r in reversed(done) if (r["artifacts"].get("auto") or r["artifacts"].get("calibration"))
               and not r.get("from_auto")), None)
if chosen is not None and chosen["artifacts"].get("auto"):
    auto = chosen["artifacts"]["auto"]
    st.subheader(f"Auto's ranking ({chosen['label']})")
    st.caption(auto["why"] + " Bars: ±2 standard errors; a yellow bar is a tie with the best (green)."
               + (" The true PSNR, shown because this example has a ground truth, is not used." if ds.ground_truth is not None else ""))
    st.plotly_chart(figures.ranking_figure(auto["ranking"]), key=f"auto_{ui.result_uid(chosen)}")
    thumbs = st.columns(min(4, len(auto["ranking"])))
    for col, row in zip(thumbs, auto["ranking"]):
        col.plotly_chart(figures.image_figure(ui.view_of(ds, auto["results"][row["method"]].data), row["label"], height=220),
                         key=f"auto_thumb_{ui.result_uid(chosen)}_{row['method']}")
    for name, reason in auto["skipped"].items():
        st.caption(f"Not run: {name} — {reason}.")
elif chosen is not None:
    cal = chosen["artifacts"]["calibration"]
    with st.expander(f"How {chosen['label']} chose its settings ({cal['criterion']})"):
        st.caption(cal["why"] + f" Chosen: {', '.join(f'{k} {v}' for k, v in cal['best'].items())}.")
        st.plotly_chart(figures.calibration_figure(cal), key=f"cal_{ui.result_uid(chosen)}")
if done:
    st.page_link("pages/compare.py", label=f"Compare {len(done)} result(s)", icon=":material/compare:")
