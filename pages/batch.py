"""Batch page: upload many files (or .zip archives), denoise them all on a local Dask cluster
in the background, see before/after thumbnails with each file's score, download everything."""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import streamlit as st

from emcore import EmcoreError
from emcore.batch import read_rows, run_batch, unpack_uploads, zip_results
from emcore.methods.registry import methods
from pages import ui

ui.sidebar_status()
st.title("Batch")
st.caption("Denoise a whole session at once: each file is one task on a local Dask cluster, results and a "
           "manifest (parameters, seed, seconds, a no-reference score, or why a file failed) are kept together. "
           "For thousands of files or several machines use `python -m emcore batch` (see the README).")
ss = st.session_state

uploads = st.file_uploader("Data files, or .zip archives of them", accept_multiple_files=True, key="batch_files")
by_name = {m.name: m for m in methods()}
m = by_name[st.selectbox("Method", list(by_name), key="batch_method",
                         format_func=lambda n: f"{by_name[n].label} ({by_name[n].kind}; {', '.join(by_name[n].accepts)})")]
st.markdown(f"**{m.label}** — {m.description}")
if m.kind == "self-supervised":
    st.info(f"{m.label} trains a network on each file (zero-shot): every file costs a training run.")
if m.kind == "supervised":
    st.caption("Uses the shipped weights, loaded once per worker.")

# The choices some parameters offer depend on the kind of data; ask when the method takes several.
kind = m.accepts[0] if len(m.accepts) == 1 else st.selectbox(
    "The files are mostly", list(m.accepts), key="batch_kind",
    format_func={"image": "images", "stack": "stacks of images", "cube": "spectrum images"}.get,
    help="Only the parameter choices below depend on this; every file is read as what it is.")
values = ui.param_widgets(m, SimpleNamespace(kind=kind))
c1, c2, c3 = st.columns(3)
seed = int(c1.number_input("Seed", 0, 1_000_000, 0, key="batch_seed", help="Same seed, same result as one by one."))
workers = int(c2.number_input("Workers", 1, max(1, os.cpu_count() or 1), min(2, os.cpu_count() or 1),
                              key="batch_workers", help="Worker processes of the local Dask cluster."))
fmt = c3.selectbox("Format of the results", [".tif", ".hspy", ".npy"], key="batch_format")
run = st.button("Run the batch", type="primary", key="batch_run_button")

if run:
    if not uploads:
        ui.show_error("Choose some data files (or a .zip of them) first.")
    else:
        folder = Path(tempfile.mkdtemp(prefix="emcore-batch-"))
        (folder / "inputs").mkdir()
        try:
            inputs, notes = unpack_uploads([(u.name, u.getvalue()) for u in uploads], folder / "inputs")
        except EmcoreError as err:
            ui.show_error(str(err))
        else:
            for note in notes:
                st.info(note)
            paths, names = [str(p) for p, _ in inputs], {p: shown for p, shown in inputs}
            name, params, out = m.name, dict(values), folder / "results"
            # Filled by the job's thread once the cluster is up; the fragment below only reads it.
            live: dict = {}

            def job(progress, should_stop):
                return run_batch(paths, name, out, params=params, fmt=fmt, seed=seed, workers=workers, names=names,
                                 progress=progress, should_stop=should_stop,
                                 on_start=lambda s: live.update(dashboard=s.dashboard, workers=s.workers))

            job_id = ui.jobs().submit(ui.owner_id(), f"Batch: {m.label} on {len(paths)} files", job, slot="cpu",
                                      meta={"batch": str(out)})
            ss.batch_run = {"job": job_id, "out": str(out), "folder": str(folder), "files": len(paths), "live": live}


@st.fragment(run_every=1.0)
def batch_progress() -> None:
    """Polls the batch job about once a second; reruns the page when it ends."""
    job = ui.jobs().get(ss.batch_run["job"])
    if job is None or not job.active:
        if not ss.batch_run.get("ended"):
            ss.batch_run["ended"] = True
            ss.batch_run["error"] = job.error if job is not None else None
            st.rerun()
        return
    p = job.progress
    eta = f", about {p.eta:.0f} s left" if p is not None and p.eta is not None else ""
    head, btn = st.columns([5, 1])
    head.markdown(f"**{job.label}** — {job.state}{eta}")
    if job.state == "running" and btn.button("Stop", key="batch_stop"):
        ui.jobs().cancel(job.id)
    st.progress(p.fraction if p is not None else 0.0,
                text=p.message if p is not None and p.message else "starting the Dask workers…")
    link = ss.batch_run.get("live", {}).get("dashboard")
    if link:
        st.markdown(f"Dask dashboard (tasks, workers, memory): [{link}]({link})")


if "batch_run" in ss:
    batch_progress()
    if ss.batch_run.get("error"):
        ui.show_error(ss.batch_run["error"])
    rows = read_rows(ss.batch_run["out"])
    done = [r for r in rows if r.get("status") == "done"]
    failed = [r for r in rows if r.get("status") != "done"]
    if rows:
        st.subheader(f"{len(done)} done, {len(failed)} failed")
    for r in failed:
        ui.show_error(f"{r['name']}: {r.get('error')}")
    cols = st.columns(3)
    for i, r in enumerate(done):
        with cols[i % 3]:
            if r.get("preview") and Path(r["preview"]).is_file():
                st.image(r["preview"], caption=f"{r['name']} — before | after")
            st.caption(f"{r.get('score') or 'not scored'} · {r.get('seconds')} s on {r.get('device')}")
    if ss.batch_run.get("ended") and done:
        if "zip" not in ss.batch_run:
            ss.batch_run["zip"] = str(zip_results(ss.batch_run["out"], Path(ss.batch_run["folder"]) / "batch_results.zip"))
        st.download_button("Download the results and the manifest (.zip)", Path(ss.batch_run["zip"]).read_bytes(),
                           file_name="batch_results.zip", mime="application/zip", key="batch_download")
