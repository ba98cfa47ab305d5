"""Driving a batch on Dask distributed: one task per file, results and a manifest on disk.

:func:`run_batch` expands the inputs, skips the files a previous run finished, connects to a
cluster (a ``LocalCluster`` of processes with one thread each, or an existing scheduler by
address), submits :func:`emcore.batch.task.run_file` for each file with ``retries=2`` and
records every outcome in the manifest as it arrives. At most a few tasks per worker are in
flight, so the driver's memory does not grow with the number of files.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from emcore.batch.manifest import Manifest
from emcore.batch.task import FileTask, failed_row, run_file
from emcore.errors import EmcoreError, Stopped
from emcore.progress import Progress, ProgressFn, StopFn

CONNECT_TIMEOUT_S = 5.0  # a scheduler that does not answer is reported well within 10 s
IN_FLIGHT_PER_WORKER = 2
# Files a reader takes together with another one: they are not inputs of their own.
_COMPANIONS = {".ser": ".emi", ".raw": ".rpl"}
SayFn = Callable[[str], None]


@dataclass
class BatchSummary:
    """What a batch run did. ``rows`` are the manifest rows of this batch's files."""

    out_dir: Path
    rows: list[dict]
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    workers: int = 0
    dashboard: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def anything_ran(self) -> bool:
        return self.done + self.skipped > 0

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.json"


def expand_inputs(items: Iterable[str], exclude: str | os.PathLike | None = None) -> tuple[list[Path], list[str]]:
    """Files named by ``items`` (files, folders, glob patterns), sorted, without duplicates.

    A folder gives its data files (not those of its sub-folders: use a ``**`` pattern), minus
    companions read with another file (``.ser`` beside an ``.emi``, ``.raw`` beside an
    ``.rpl``) and anything inside ``exclude`` (the output folder). A file named explicitly is
    always taken, so an unreadable one gets its sentence in the manifest. Returns the files
    and notes for items that named nothing.
    """
    from emcore.io import SUPPORTED_EXTENSIONS

    skip_under = Path(exclude).resolve() if exclude is not None else None
    files: dict[Path, None] = {}
    notes: list[str] = []

    def from_folder(folder: Path) -> list[Path]:
        kids = [k for k in sorted(folder.iterdir()) if k.is_file() and not k.name.startswith(".")
                and k.suffix.lower() in SUPPORTED_EXTENSIONS]
        stems = {(k.suffix.lower(), k.stem.lower()) for k in kids}
        exts = {k.suffix.lower() for k in kids}
        return [k for k in kids if not (k.suffix.lower() == ".ser" and ".emi" in exts
                                        or k.suffix.lower() == ".raw" and (".rpl", k.stem.lower()) in stems)]

    for item in items:
        p = Path(item).expanduser()
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = from_folder(p)
            if not found:
                notes.append(f"The folder {item} holds no data files.")
        elif glob.has_magic(str(item)):
            found = []
            for m in sorted(glob.glob(os.path.expanduser(str(item)), recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    found += from_folder(mp)
                elif mp.is_file() and mp.suffix.lower() in SUPPORTED_EXTENSIONS and mp.suffix.lower() not in _COMPANIONS:
                    found.append(mp)
            if not found:
                notes.append(f"No data file matches {item}.")
        else:
            notes.append(f"{item}: no such file or folder.")
            continue
        for f in found:
            r = f.resolve()
            if skip_under is not None and (r == skip_under or skip_under in r.parents):
                continue
            files.setdefault(r, None)
    return list(files), notes


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that files can be written in it."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as err:
        raise EmcoreError(f"Cannot write to the output folder {out} ({err.strerror or err}); "
                          "choose a folder you can write to.") from None
    return out.resolve()


def _safe_stem(name: str) -> str:
    import re

    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:60]
    return stem or "file"


def plan_tasks(files: list[Path], out: Path, manifest: Manifest, method: str, params: dict, seed: int, fmt: str,
               device: str, score: bool, names: dict[Path, str] | None = None,
               kind: str | None = None, stream: str = "auto") -> tuple[list[FileTask], list[FileTask]]:
    """``(to do, already done)``. Output names are ``<stem>_<method><fmt>``, numbered when two
    inputs share a stem; a file the manifest knows keeps its earlier output name."""
    used = {Path(o).name for f in files if (o := manifest.output_of(str(f)))}
    todo, done = [], []
    for f in files:
        shown = (names or {}).get(f, f.name)
        output = manifest.output_of(str(f))
        if output is None or Path(output).parent != out or Path(output).suffix != fmt:
            stem, k = _safe_stem(shown), 1
            candidate = f"{stem}_{method}{fmt}"
            while candidate in used:
                k += 1
                candidate = f"{stem}_{k}_{method}{fmt}"
            used.add(candidate)
            output = str(out / candidate)
        task = FileTask(input=str(f), name=shown, output=output,
                        preview=str(out / "previews" / (Path(output).stem + ".png")), method=method,
                        params=dict(params), seed=seed, device=device, score=score, kind=kind, stream=stream)
        (done if manifest.finished(str(f), output, method, params, seed) else todo).append(task)
    return todo, done


def connect(scheduler: str | None, workers: int | None, memory_limit: str | None = None):
    """``(client, cluster)``: a new ``LocalCluster`` (``cluster`` to close after) or the
    scheduler at ``scheduler`` (``cluster`` is None; that cluster is used as it is)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False), None
        except (OSError, TimeoutError, ValueError) as err:
            raise EmcoreError(
                f"No Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S:g} s ({type(err).__name__}); "
                "start one with 'dask scheduler' and workers with 'dask worker ADDRESS', or leave out --scheduler "
                "to use this machine."
            ) from None
    n = int(workers or min(os.cpu_count() or 1, 4))
    if n < 1:
        raise EmcoreError(f"A batch needs at least one worker, not {n}.")
    # A worker that dies on a file is replaced by its nanny and the file re-run on another;
    # after two deaths the file is given up (KilledWorker) and recorded as failed.
    with dask.config.set({"distributed.scheduler.allowed-failures": 2,
                          "distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               memory_limit=memory_limit or "auto", silence_logs=50)
    return Client(cluster, set_as_default=False), cluster


def dashboard_of(client, local: bool = False) -> str | None:
    """The dashboard's address when the scheduler serves one, else None. A scheduler serves
    its status pages only where bokeh is installed (pinned in requirements.txt); ``local``
    says the scheduler runs in this environment, so a missing bokeh settles it at once."""
    import importlib.util

    if local and importlib.util.find_spec("bokeh") is None:
        return None
    try:
        if "dashboard" in client.scheduler_info().get("services", {}):
            return client.dashboard_link
    except (OSError, KeyError, AttributeError):
        pass
    return None


def zero_shot_note(task: FileTask, method, n_files: int, n_workers: int) -> str:
    """What a method that trains on each file will cost, estimated from the first file."""
    from emcore.batch.task import worker_max_bytes
    from emcore.io import load

    head = f"{method.label} trains a network on each file (zero-shot), so every file costs a training run"
    try:
        ds = load(task.input, kind=task.kind, max_bytes=worker_max_bytes())
        per = method.estimate(ds.data.shape, ds.kind, task.params)
    except EmcoreError:
        per = None
    if per is None:
        return head + "; its time could not be estimated here."
    total = per * n_files / max(n_workers, 1)
    return head + f": about {_duration(per)} per file like {task.name}, about {_duration(total)} for {n_files} files on {n_workers} workers."


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _failure(task: FileTask, exc: BaseException | None) -> dict[str, Any]:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        why = (f"The worker denoising {task.name} died each time it was tried (out of memory, or a crash in a "
               "library); the file was set aside. Try it alone with 'python -m emcore denoise' to see why.")
    elif exc is None:
        why = f"{task.name} was cancelled by the Dask cluster (a scheduler or worker went away)."
    else:
        why = (f"An unexpected error stopped {task.name} ({type(exc).__name__}: {exc}); this is a bug in the "
               "workbench — please report it with the file.")
    return failed_row(task, why)


def run_batch(
    inputs: Iterable[str],
    method: str,
    out_dir: str | os.PathLike,
    *,
    params: dict | None = None,
    fmt: str = ".tif",
    seed: int = 0,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: str | None = None,
    score: bool = True,
    kind: str | None = None,
    names: dict | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    say: SayFn | None = None,
    task_fn: Callable[[FileTask], dict] = run_file,
    stream: str = "auto",
    on_start: Callable[[BatchSummary], None] | None = None,
) -> BatchSummary:
    """Denoise many files on Dask, one task per file; write results and a manifest in ``out_dir``.

    Parameters
    ----------
    inputs : iterable of str
        Files, folders or glob patterns (:func:`expand_inputs`).
    method, params, seed, device
        As for :func:`emcore.methods.registry.denoise`; every file gets the same seed, so each
        result equals a one-by-one ``denoise`` of that file, bit for bit.
    out_dir : path
        Results (``<stem>_<method><fmt>``), ``previews/`` (before | after PNGs) and
        ``manifest.csv`` / ``manifest.json``. Files already done there are skipped.
    fmt : {".tif", ".tiff", ".hspy", ".npy"}
    workers : int, optional
        Worker processes of the local cluster (default: the cores, at most 4); ignored with
        ``scheduler``.
    scheduler : str, optional
        Address of a running ``dask scheduler``; its workers must see the same paths.
    memory_limit : str, optional
        Memory per local worker ("4GB"); default: this machine's memory shared out.
    score : bool
        Add a no-reference score per file (:func:`emcore.batch.task.no_reference_score`).
    kind : {"image", "stack", "cube"}, optional
        How to read ambiguous 3-D files.
    names : dict of Path to str, optional
        Names to show (and to name outputs after) instead of the file names (uploads).
    progress, should_stop
        Progress (``step``: files finished; the message counts done / failed / running) and
        a stop request: pending files are cancelled, the manifest kept, :class:`Stopped` raised.
    say : callable, optional
        Receives one-off sentences: the dashboard link, skipped files, zero-shot costs.
    task_fn : callable
        What a worker runs per file (tests replace it).
    stream : {"auto", "always", "never"}
        Denoise a file piece by piece — a stack frame by frame (wiener, unet, dncnn), a
        spectrum image by out-of-core PCA — reading and writing it in pieces, so a worker's
        memory does not grow with the file: "auto" when the file is over the worker's memory
        cap (:func:`emcore.batch.task.worker_max_bytes`), "always", or "never". The result
        equals the whole-file one (:mod:`emcore.batch.frames`, :mod:`emcore.methods.pca_lazy`).
    on_start : callable, optional
        Called once with the summary when the cluster is reached (``workers``, ``dashboard``
        filled in), before any file runs: the app shows the dashboard link from it.

    Returns
    -------
    BatchSummary

    Raises
    ------
    EmcoreError
        Unknown method or parameter, bad format, no input files, an output folder that cannot
        be written, a scheduler that does not answer. Problems of single files are rows.
    """
    from emcore.io import SAVE_EXTENSIONS
    from emcore.methods.registry import get_method

    say = say or (lambda s: None)
    t0 = time.perf_counter()
    m = get_method(method)
    typed = {k: m.param(k).coerce(v, m.name) for k, v in (params or {}).items()}
    fmt = fmt if fmt.startswith(".") else f".{fmt}"
    if fmt.lower() not in SAVE_EXTENSIONS:
        raise EmcoreError(f"Results can be written as {', '.join(SAVE_EXTENSIONS)}, not {fmt}.")
    if stream not in ("auto", "always", "never"):
        raise EmcoreError(f"stream must be auto, always or never, not {stream!r}.")
    out = check_output_folder(out_dir)
    files, notes = expand_inputs(inputs, exclude=out)
    for n in notes:
        say(n)
    if not files:
        raise EmcoreError("No data files to denoise: " + (" ".join(notes) or "the inputs named none."))
    manifest = Manifest(out)
    if manifest.note:
        say(manifest.note)
    todo, finished = plan_tasks(files, out, manifest, m.name, typed, int(seed), fmt.lower(), device, score,
                                names={Path(k).resolve(): v for k, v in (names or {}).items()}, kind=kind,
                                stream=stream)
    summary = BatchSummary(out_dir=out, rows=[], skipped=len(finished), notes=list(notes))
    if finished:
        say(f"{len(finished)} of {len(files)} files were already done in {out}; skipping them.")
    if not todo:
        summary.rows = [manifest.rows[t.input] for t in finished]
        return summary
    client, cluster = connect(scheduler, workers, memory_limit)
    futures: dict[Any, FileTask] = {}
    try:
        n_workers = len(client.scheduler_info().get("workers", {})) or 1
        summary.workers = n_workers
        summary.dashboard = dashboard_of(client, local=cluster is not None)
        if summary.dashboard:
            say(f"Dask dashboard: {summary.dashboard}")
        if on_start is not None:
            on_start(summary)
        if m.kind == "self-supervised":
            say(zero_shot_note(todo[0], m, len(todo), n_workers))
        _drive(client, todo, manifest, summary, task_fn, n_workers, progress, should_stop, futures)
    finally:
        for f in futures:
            f.cancel()
        manifest.write()
        client.close()
        if cluster is not None:
            cluster.close()
    summary.rows = [manifest.rows[t.input] for t in sorted(finished + todo, key=lambda t: t.input)
                    if t.input in manifest.rows]
    summary.seconds = time.perf_counter() - t0
    return summary


def _drive(client, todo: list[FileTask], manifest: Manifest, summary: BatchSummary, task_fn, n_workers: int,
           progress: ProgressFn | None, should_stop: StopFn | None, futures: dict) -> None:
    """Keep a few tasks per worker in flight; record each outcome as it arrives."""
    from distributed import as_completed

    t0 = time.perf_counter()
    queue = list(reversed(todo))
    limit = max(1, n_workers * IN_FLIGHT_PER_WORKER)
    pending = as_completed(loop=client.loop)

    def submit_more():
        while queue and len(futures) < limit:
            task = queue.pop()
            fut = client.submit(task_fn, task, retries=2, pure=False, key=f"emcore-file-{len(queue)}-{os.getpid()}-{time.time_ns()}")
            futures[fut] = task
            pending.add(fut)

    def tell():
        finished = summary.done + summary.failed
        elapsed = time.perf_counter() - t0
        eta = elapsed / finished * (len(todo) - finished) if finished else None
        if progress is not None:
            progress(Progress(step=finished, total=len(todo), elapsed=elapsed, eta=eta,
                              metrics={"done": summary.done, "failed": summary.failed, "running": len(futures)},
                              message=f"{finished} of {len(todo)} files: {summary.done} done, {summary.failed} failed, "
                                      f"{len(futures)} running"))

    submit_more()
    tell()
    while futures:
        if should_stop is not None and should_stop():
            raise Stopped(f"Batch stopped after {summary.done + summary.failed} of {len(todo)} files; the finished "
                          "ones are kept, and running it again finishes the rest.")
        batch = pending.next_batch(block=False) if pending.count() else []
        if not batch:
            time.sleep(0.05)
            batch = pending.next_batch(block=False) if pending.count() else []
            if not batch:
                continue
        for fut in batch:
            task = futures.pop(fut)
            if fut.status == "finished":
                row = fut.result()
            else:
                row = _failure(task, fut.exception() if fut.status == "error" else None)
            if row["status"] == "done":
                summary.done += 1
            else:
                summary.failed += 1
            manifest.record(row)
            fut.release()
        submit_more()
        tell()
