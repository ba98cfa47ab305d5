"""Denoise page: choose a method for the loaded dataset, set its parameters, run it."""

import streamlit as st

from emcore import EmcoreError
from emcore.registry import denoise, methods, methods_for
from pages import ui

ui.sidebar_status()

st.title("Denoise")
ds = ui.require_dataset("to denoise it")
st.caption(f"**{ds.name}** — {ds.kind}, {' × '.join(map(str, ds.data.shape))}")

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

with st.form(f"params_{m.name}"):
    values = ui.param_widgets(m)
    seed = int(st.number_input("Seed", 0, 1_000_000, 0, key="denoise_seed", help="Same seed, same result."))
    run = st.form_submit_button("Run", type="primary")

warn = m.name == "bm3d" and ds.kind == "cube"
if warn:
    from emcore.methods.bm3d_method import estimate_bm3d_seconds

    secs = estimate_bm3d_seconds(ds.data.shape, bin_energy=values.get("bin_energy") or 1)
    if secs > 60:
        st.warning(f"BM3D on this spectrum image will take about {secs / 60:.0f} min on this machine "
                   "(one BM3D per energy slice). Bin the energy axis (parameter above) or use PCA for a quick look.")
        warn = not st.checkbox("Run it anyway", key="bm3d_confirm")
    else:
        warn = False

if run and not warn:
    bar = st.progress(0.0, text="Starting…")

    def on_progress(p):
        bar.progress(p.fraction, text=p.message or f"{p.step} / {p.total}")

    try:
        res = denoise(ds, m.name, progress=on_progress, seed=seed, **values)
    except EmcoreError as err:
        bar.empty()
        ui.show_error(str(err))
    else:
        bar.empty()
        entry = ui.add_result(res, requested=values)
        st.success(f"{entry['label']} finished in {res.seconds:.2f} s on {res.device}. See it on the Compare page.")
        used = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.params.items()}
        st.caption("Parameters used: " + ", ".join(f"{k} = {v}" for k, v in used.items()))
        for line in res.log:
            st.caption(line)

done = ui.results_for_current()
if done:
    st.page_link("pages/compare.py", label=f"Compare {len(done)} result(s)", icon=":material/compare:")
