"""Streamlit helpers shared by the pages: session state, cached loaders, figures, errors.

Only presentation lives here; every computation is a call into ``emcore``.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import streamlit as st

from emcore import EmcoreError, sim
from emcore.data.dataset import Dataset

DEFAULT_EXAMPLE = "hrem"
MAX_RESULTS = 12


# -- session state ---------------------------------------------------------------------
def init_state() -> None:
    """Create this browser session's state; the first visit gets the default example."""
    ss = st.session_state
    if "dataset" not in ss:
        ss.dataset = None
        ss.dataset_token = 0
        ss.dataset_origin = None
        info = sim.EXAMPLES[DEFAULT_EXAMPLE]
        try:
            set_dataset(load_example(DEFAULT_EXAMPLE, 0, float(info.dose_default)), ("example", DEFAULT_EXAMPLE, 0, float(info.dose_default)))
        except EmcoreError as err:  # pragma: no cover - the simulator has no user input here
            ss.load_error = str(err)


class _RestoredWidgets(logging.Filter):
    """Streamlit logs a stack trace when a widget's value comes back through the Session State
    API with a default also given: expected for the values :func:`persist` puts back."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "had its value set via the Session State API" not in record.getMessage()


logging.getLogger("streamlit.elements.lib.policies").addFilter(_RestoredWidgets())


def persist(key: str) -> dict:
    """``key`` and ``on_change`` for a widget whose value must survive page switches in the
    browser (Streamlit's documented pattern): every change is copied to a key of our own, and
    that copy is put back before the widget is drawn again."""
    ss = st.session_state
    shadow = "_persist_" + key
    if shadow in ss:
        ss[key] = ss[shadow]

    def save() -> None:
        ss[shadow] = ss[key]

    return {"key": key, "on_change": save}


def set_persisted(key: str, value) -> None:
    """Set a :func:`persist` widget's value from code (before the widget is drawn)."""
    st.session_state[key] = value
    st.session_state["_persist_" + key] = value


def set_dataset(ds: Dataset, origin) -> None:
    """Make ``ds`` the session's dataset; ``origin`` identifies what produced it.

    Results belong to the dataset's content (:meth:`Dataset.fingerprint`), not to the load:
    loading the same data again (the same example at the same seed and dose, the same file)
    brings its results back.
    """
    ss = st.session_state
    ss.dataset = ds
    ss.dataset_origin = origin
    ss.dataset_token = ss.get("dataset_token", 0) + 1
    ss.dataset_key = ds.fingerprint()
    ss.setdefault("token_keys", {})[ss.dataset_token] = ss.dataset_key
    # the datasets that have results, so the user can go back to any of them
    keep = {r["dataset_key"] for r in ss.get("results", [])} | {ss.dataset_key}
    seen = ss.setdefault("datasets_seen", {})
    seen[ss.dataset_key] = (ds, origin)
    for key in [k for k in seen if k not in keep]:
        del seen[key]


def other_datasets() -> list[tuple[str, str, int]]:
    """``(key, name, number of results)`` of this session's other datasets that have results."""
    ss = st.session_state
    counts: dict[str, int] = {}
    for r in results():
        counts[r["dataset_key"]] = counts.get(r["dataset_key"], 0) + 1
    return [(k, ss.datasets_seen[k][0].name, n) for k, n in counts.items()
            if k != ss.get("dataset_key") and k in ss.get("datasets_seen", {})]


def switch_to(key: str) -> None:
    """Make an earlier dataset of this session (one with results) the current one again."""
    ds, origin = st.session_state.datasets_seen[key]
    set_dataset(ds, origin)


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
    return sim.example(name, seed=seed, dose=dose)


def noise_text(ds: Dataset, model=None) -> str:
    """How to name a dataset's noise model: raw counts are Poisson with no dose to speak of."""
    from emcore.noise.models import Poisson

    model = model if model is not None else ds.noise
    if model is None and ds.is_counts:
        return "Poisson (shot) noise of raw counts"
    if model is None:
        return "unknown (estimated when a method needs it)"
    if ds.is_counts and isinstance(model, Poisson) and model.dose == 1.0:
        return "Poisson (shot) noise of raw counts"
    return model.describe()


def view_of(ds: Dataset, data: np.ndarray) -> np.ndarray:
    """A 2-D view of data of ``ds``'s kind for a thumbnail: the image, the middle frame, or the
    sum over energy."""
    if ds.kind == "image":
        return data
    if ds.kind == "stack":
        return data[data.shape[0] // 2]
    return data.sum(axis=2)


def show_error(message: str) -> None:
    """One plain sentence, never a traceback."""
    st.error(message, icon="⚠️")


# -- method parameters and results -------------------------------------------------------
_GROUPS = {"training": ("Training", True), "advanced": ("Advanced", False)}  # title, expanded


def param_widgets(method, ds: Dataset) -> dict:
    """Widgets built from a method's declared parameters; returns {name: value}.

    Main parameters come first, then each group (training, advanced) in an expander. A
    parameter whose ``when`` does not hold, or that is not for this data kind (``kinds``), is
    not shown and keeps its default. A
    ``preset=True`` parameter shows the value the chosen preset will use, and follows the
    preset when it changes; it is returned as None ("the preset's") unless changed. A path
    parameter is an upload, saved under a name of our own.
    """
    values = method.defaults()
    for group in ("", *_GROUPS):
        shown = [p for p in method.params if p.group == group]
        if not any(p.applies(values, ds.kind) for p in shown):
            continue
        box = st.expander(*_GROUPS[group]) if group else st.container()
        with box:
            for p in shown:
                if p.applies(values, ds.kind):
                    values[p.name] = _widget(method, p, ds, method.from_preset(values))
    return values


def _widget(method, p, ds: Dataset, presets: dict):
    key = f"p_{method.name}_{p.name}"
    if p.type == "path":
        return _upload(method, p, key)
    if p.auto and st.checkbox(f"{p.title}: estimate from the data", value=True, key=key + "_auto", help=p.help):
        return None
    if p.type == "bool":
        return st.checkbox(p.title, value=bool(p.default), key=key, help=p.help)
    if p.type == "choice":
        options = list(p.choices_for(ds.kind))
        index = options.index(p.default) if p.default in options else 0
        return st.selectbox(p.title, options, index=index, key=key, help=p.help,
                            format_func=lambda c: p.choice_labels.get(c, str(c)))
    number = int if p.type == "int" else float
    bounds = dict(min_value=number(p.min) if p.min is not None else None,
                  max_value=number(p.max) if p.max is not None else None)
    fmt = dict(step=1) if number is int else dict(format="%g")
    if p.preset:
        target = presets.get(p.name)
        if key not in st.session_state or st.session_state.get(key + "__preset", ()) != target:
            # first shown, or a new preset: show the preset's value
            st.session_state[key] = None if target is None else number(target)
            st.session_state[key + "__preset"] = target
        v = st.number_input(p.title, **bounds, **fmt, key=key, placeholder="none", help=p.help)
        return None if v is None or v == target else number(v)
    if p.default is None and not p.auto:
        v = st.number_input(p.title, **bounds, **fmt, value=None, key=key, placeholder="none", help=p.help)
        return None if v is None else number(v)
    start = p.default if p.default is not None else (p.min if p.min is not None else 0)
    return number(st.number_input(p.title, **bounds, **fmt, value=number(start), key=key, help=p.help))


def duration_words(seconds: float) -> str:
    """"12 s", "4 min", "1.5 h": a cost estimate in words (estimates are good to a factor of ~2)."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _upload(method, p, key: str) -> str | None:
    """A path parameter from an upload: saved once in this session's folder, under a name of our own."""
    up = st.file_uploader(p.title, type=list(p.file_types) or None, key=key, help=p.help)
    if up is None:
        return None
    saved = st.session_state.get(key + "__saved")
    if saved is None or saved[0] != up.file_id:
        try:
            if p.upload is not None:
                path = p.upload(up.getvalue(), up.name, _session_dir())
            else:
                path = os.path.join(_session_dir(), f"upload_{method.name}_{p.name}{os.path.splitext(up.name)[1].lower()}")
                with open(path, "wb") as fh:
                    fh.write(up.getvalue())
        except EmcoreError as err:
            show_error(str(err))
            return None
        saved = st.session_state[key + "__saved"] = (up.file_id, path)
    st.caption(f"Using {up.name}.")
    return saved[1]


def job_slot(method) -> str:
    """The job queue a method runs in: one at a time per GPU, one at a time on the CPU."""
    if method.uses_torch:
        import torch

        if torch.cuda.is_available():
            return "gpu"
    return "cpu"


def slot_words(slot: str) -> str:
    return {"gpu": "on the GPU", "cpu": "on the CPU"}.get(slot, slot)


def _session_dir() -> str:
    """A private temporary folder for this browser session's files (weights)."""
    ss = st.session_state
    if "session_dir" not in ss or not os.path.isdir(ss.session_dir):
        ss.session_dir = tempfile.mkdtemp(prefix="emcore-session-")
    return ss.session_dir


def trained_weights_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def owner_id() -> str:
    """This browser session's identity for the job manager."""
    if "owner_id" not in st.session_state:
        import uuid

        st.session_state.owner_id = uuid.uuid4().hex
    return st.session_state.owner_id


def jobs():
    from emcore.jobs import manager

    return manager()


def collect_finished_jobs() -> list[str]:
    """Move results of this session's finished jobs into the run history; return messages to show."""
    from emcore.methods.registry import DenoiseResult

    notes = []
    for job in jobs().jobs_for(owner_id()):
        if job.active:
            continue
        res = job.result
        if job.meta.get("validation") and job.state == "done":
            # a no-reference check: kept for its dataset, shown on the Compare page
            st.session_state.setdefault("validations", {})[(key_of(job.meta["dataset_token"]), job.meta["validation"])] = res
            notes.append(("success", f"{job.label}: done; the table is on the Compare page."))
        elif isinstance(res, DenoiseResult):
            entry = add_result(res, requested=job.meta.get("requested"), token=job.meta.get("dataset_token"))
            auto = res.artifacts.get("auto")
            if auto:  # Auto ran several methods: every result goes to Compare, not only the best
                for name, other in auto["results"].items():
                    if name != res.params.get("chosen"):
                        side = add_result(other, token=job.meta.get("dataset_token"), label=f"{name} (from {entry['label']})")
                        side["from_auto"] = entry["id"]  # the Denoise page explains the Auto run, not this part
            verb = "was stopped; partial result kept as" if job.state == "stopped" else "finished:"
            notes.append(("success", f"{job.label} {verb} {entry['label']}: {job_time_words(job, res)}. "
                                     "See it on the Compare page."))
            warning = (entry["artifacts"].get("card") or {}).get("warning")
            if warning:
                notes.append(("stopped", f"{entry['label']}: {warning.removeprefix('Warning: ')}"))
        elif job.error:
            notes.append(("stopped" if job.state == "stopped" else "error", f"{job.label}: {job.error}"))
        jobs().forget(job.id)
    st.session_state.setdefault("job_notes", []).extend(notes)
    return notes


def seconds_words(seconds: float) -> str:
    """"0.42 s", "12 s", "4 min": a measured time (not an estimate)."""
    return f"{seconds:.2g} s" if seconds < 10 else duration_words(seconds)


def job_time_words(job, res) -> str:
    """How long a finished job took, all of it: training and denoising, and the wait in the queue."""
    total = (job.finished - job.started) if job.started and job.finished else res.seconds
    card = (getattr(res, "artifacts", None) or {}).get("card") or {}
    history = (getattr(res, "artifacts", None) or {}).get("training") or []
    trained = card.get("seconds") if card.get("seconds") is not None else max(
        (h.get("seconds") or 0.0 for h in history), default=None)
    parts = [f"the whole job took {seconds_words(total)} on {res.device}"]
    if trained:
        parts.append(f" (training {seconds_words(trained)}, denoising {seconds_words(max(res.seconds - trained, 0.0))})")
    waited = (job.started - job.created) if job.started else 0.0
    if waited >= 2:
        parts.append(f", after {seconds_words(waited)} waiting for its turn")
    return "".join(parts)


def results() -> list[dict]:
    """This session's run history (all datasets); each entry is a dict, newest last."""
    return st.session_state.setdefault("results", [])


def key_of(token: int | None) -> str | None:
    """The content identity of the dataset loaded as ``token`` (jobs remember the token)."""
    return st.session_state.get("token_keys", {}).get(token)


def validations_for_current() -> dict:
    """The no-reference checks (count split, frame pairs, FRC) run on the current dataset, by kind."""
    key = dataset_key()
    return {kind: out for (k, kind), out in st.session_state.get("validations", {}).items() if k == key}


def results_for_current() -> list[dict]:
    key = dataset_key()
    return [r for r in results() if r["dataset_key"] == key]


def add_result(res, requested: dict | None = None, label: str | None = None, token: int | None = None) -> dict:
    """Store a :class:`emcore.methods.registry.DenoiseResult` for the dataset ``token`` (default: the current one)."""
    runs = results()
    token = st.session_state.dataset_token if token is None else token
    key = key_of(token) or dataset_key()
    n = 1 + sum(r["method"] == res.method for r in runs if r["dataset_key"] == key)
    entry = {
        "id": f"{res.method}-{len(runs) + 1}",
        "label": label or f"{res.method} #{n}",
        "method": res.method,
        "params": dict(res.params),
        # what the user asked for ("estimate" left as None): re-runs on split data re-estimate
        "requested": dict(requested if requested is not None else res.params),
        "seconds": res.seconds,
        "device": res.device,
        "data": res.data,
        "log": list(res.log),
        "artifacts": dict(getattr(res, "artifacts", {}) or {}),
        "dataset_token": token,
        "dataset_key": key,
        "metrics": {},
        "metrics_cache": {},
    }
    runs.append(entry)
    # Results are whole arrays (a cube result is as big as the cube): keep a session's memory
    # bounded by dropping the oldest runs, and say so.
    while len(runs) > MAX_RESULTS:
        dropped = runs.pop(0)
        st.session_state.setdefault("job_notes", []).append(
            ("stopped", f"The oldest result, {dropped['label']}, was removed to keep memory in check "
                        f"(at most {MAX_RESULTS} results are kept; export the ones you need)."))
    return entry


def dataset_key() -> str | None:
    """The current dataset's content identity (:meth:`Dataset.fingerprint`), computed once per load."""
    return st.session_state.get("dataset_key")


@st.cache_data(max_entries=64, show_spinner=False)
def _derived(name: str, key: str | None, parts: tuple, _build):
    return _build()


def derived(name: str, build, *parts):
    """``build()`` once per dataset content for ``name`` and ``parts`` (summed spectrum, summary,
    suggested lines, element maps...), kept by Streamlit's data cache and shared by sessions
    that load the same data; ``parts`` name every other input of ``build``."""
    ds = current_dataset()
    # calibration and the counts flag are not part of the content key (results survive their
    # correction) but derived data (energy ranges, suggested lines) depend on them
    variant = None if ds is None else (ds.calibration, ds.is_counts)
    return _derived(name, dataset_key(), (variant, *parts), build)


def result_bytes(ds: Dataset, entry: dict, ext: str) -> bytes:
    """A result written by :func:`emcore.io.save` in the chosen format, as bytes for download."""
    from dataclasses import replace

    from emcore import io

    out = replace(ds, data=entry["data"], ground_truth=None, name=f"{ds.name} — {entry['label']}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result" + ext)
        io.save(out, path)
        with open(path, "rb") as f:
            return f.read()


def export_name(entry: dict, ext: str) -> str:
    """A download name that matches the result's label ("unet #1" → "unet-1.npy")."""
    import re

    return (re.sub(r"[^A-Za-z0-9]+", "-", entry["label"]).strip("-") or "result") + ext


def report_html(ds: Dataset, runs: list[dict], **kwargs) -> str:
    from emcore.evaluate.report import build_report

    return build_report(ds, runs, **kwargs)


# -- per-dataset memo and the adaptive-filter view (issue 7) ------------------------------
def result_uid(entry: dict) -> str:
    """A key unique to one stored result for the whole session (ids can recur once old runs are dropped)."""
    if "uid" not in entry:
        import uuid

        entry["uid"] = uuid.uuid4().hex
    return entry["uid"]


@st.cache_resource(max_entries=48, show_spinner=False)
def _figure(owner: str, dataset: str | None, key: tuple, _build):
    return _build()


def memo(key: tuple, build):
    """A figure built once for ``key`` (a tuple naming every input) and reused on reruns.

    Plotly figures take tens of milliseconds to assemble; figures whose inputs did not change
    (element-map gallery, structure maps) are reused instead of rebuilt. Kept by Streamlit's
    resource cache per session and dataset (figures hold this session's results).
    """
    return _figure(owner_id(), dataset_key(), key, build)


