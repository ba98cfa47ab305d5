"""A process-wide job manager: training and slow inference in background worker threads.

Each *slot* (a device such as ``"cuda:0"`` or ``"cpu"``, or ``"inference"``) has one worker
thread and a FIFO queue, so one training job at a time runs per GPU and later ones wait
their turn. Jobs belong to an *owner* (a browser session), survive page switches and reruns
(the manager outlives them), report progress through :class:`~emcore.progress.Progress`, and
can be cancelled: a queued job is dropped without trace, a running one is asked to stop and
ends at its next step. The library knows nothing of Streamlit: the app polls
:meth:`JobManager.jobs_for` from a fragment.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from emcore.errors import EmcoreError
from emcore.progress import Progress

log = logging.getLogger(__name__)

JobFn = Callable[[Callable[[Progress], None], Callable[[], bool]], Any]
STATES = ("queued", "running", "stopping", "done", "stopped", "failed")
_HISTORY_LIMIT = 20_000  # progress points kept per job for the live chart


@dataclass
class Job:
    """One unit of background work and everything the UI shows about it."""

    id: str
    owner: str
    label: str
    slot: str
    fn: JobFn = field(repr=False)
    state: str = "queued"
    progress: Progress | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    result: Any = field(default=None, repr=False)
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    meta: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished_ok(self) -> bool:
        return self.state in ("done", "stopped") and self.result is not None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running", "stopping")


@dataclass(frozen=True)
class Load:
    """What :meth:`JobManager.load` returns: jobs running and waiting, all slots together."""

    running: int
    queued: int
    others_running: int
    others_queued: int

    @property
    def shared(self) -> bool:
        """Other owners' jobs run or wait: timings here are slower than on an idle machine."""
        return self.others_running + self.others_queued > 0


class JobManager:
    """Queues and runs jobs; thread-safe; one worker thread per slot, started on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[str]] = {}
        self._wake: dict[str, threading.Condition] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._ids = itertools.count(1)

    # -- submitting and cancelling -------------------------------------------------
    def submit(self, owner: str, label: str, fn: JobFn, *, slot: str = "cpu", meta: dict | None = None) -> str:
        """Queue ``fn(progress, should_stop)`` on ``slot``; return the job id."""
        with self._lock:
            job = Job(id=f"job-{next(self._ids)}", owner=owner, label=label, slot=slot, fn=fn, meta=dict(meta or {}))
            self._jobs[job.id] = job
            self._queues.setdefault(slot, deque()).append(job.id)
            cond = self._wake.setdefault(slot, threading.Condition(self._lock))
            if slot not in self._workers or not self._workers[slot].is_alive():
                t = threading.Thread(target=self._work, args=(slot,), name=f"emcore-jobs-{slot}", daemon=True)
                self._workers[slot] = t
                t.start()
            cond.notify()
        return job.id

    def cancel(self, job_id: str) -> None:
        """Drop a queued job without trace, or ask a running one to stop at its next step."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job.state == "queued":
                self._queues[job.slot].remove(job_id)
                del self._jobs[job_id]
            elif job.state == "running":
                job.state = "stopping"
                job._stop.set()

    def forget(self, job_id: str) -> None:
        """Remove a finished job (its result has been collected)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and not job.active:
                del self._jobs[job_id]

    # -- looking -------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs_for(self, owner: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.owner == owner]

    def position(self, job_id: str) -> int | None:
        """0 while running, k ≥ 1 when k-th in its slot's queue, ``None`` when not waiting."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state in ("running", "stopping"):
                return 0
            if job.state == "queued":
                return list(self._queues[job.slot]).index(job_id) + 1
            return None

    def load(self, owner: str | None = None) -> Load:
        """How busy the machine is: jobs running and waiting in every slot, and how many of them
        belong to owners other than ``owner`` (other browser sessions)."""
        with self._lock:
            active = [j for j in self._jobs.values() if j.active]
        running = [j for j in active if j.state != "queued"]
        queued = [j for j in active if j.state == "queued"]
        return Load(running=len(running), queued=len(queued),
                    others_running=sum(j.owner != owner for j in running),
                    others_queued=sum(j.owner != owner for j in queued))

    def ahead(self, job_id: str) -> tuple[int, int]:
        """``(jobs ahead, of which other owners')`` of a job in its slot: the one running there and
        those queued before it; ``(0, 0)`` once it runs or when it is unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != "queued":
                return 0, 0
            before = list(self._queues[job.slot])
            before = [self._jobs[i] for i in before[: before.index(job_id)]]
            before += [j for j in self._jobs.values() if j.slot == job.slot and j.state in ("running", "stopping")]
            return len(before), sum(j.owner != job.owner for j in before)

    def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """Block until the job has finished (for scripts and tests)."""
        t0 = time.monotonic()
        while True:
            job = self.get(job_id)
            if job is None or not job.active:
                return job
            if timeout is not None and time.monotonic() - t0 > timeout:
                return job
            time.sleep(0.02)

    # -- the worker ----------------------------------------------------------------
    # Every change of a job's state happens under ``self._lock``: cancel() reads and writes
    # it there, so a cancel landing at the moment a job completes is either seen by the
    # worker (the job ends "stopped") or finds the job already final (and does nothing).
    def _work(self, slot: str) -> None:
        while True:
            with self._lock:
                cond = self._wake[slot]
                while not self._queues[slot]:
                    cond.wait()
                job = self._jobs[self._queues[slot].popleft()]
                job.state = "running"
                job.started = time.time()
            try:
                self._run(job)
            except BaseException as err:  # noqa: BLE001 - a bug in _run itself: the queue must go on
                log.error("job %s: worker error:\n%s", job.id, traceback.format_exc())
                self._finish(job, "failed", f"Internal error ({_describe(err)}); please report it.")

    def _run(self, job: Job) -> None:
        def progress(p: Progress) -> None:
            point = {"step": p.step, "elapsed": p.elapsed, **{f"loss_{k}": v for k, v in p.losses.items()},
                     **dict(p.metrics)}
            with self._lock:
                job.progress = p
                if len(job.history) < _HISTORY_LIMIT:
                    job.history.append(point)

        result, error, stopped_by_error = None, None, False
        try:
            result = job.fn(progress, job._stop.is_set)
        except EmcoreError as err:
            error, stopped_by_error = str(err), "stop" in str(err).lower()
        except MemoryError:
            error = "Not enough memory for this job; bin the data or use a smaller patch or batch."
        except Exception as err:  # a bug: keep the worker alive and say so
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            error = f"Internal error ({_describe(err)}); please report it."
        except BaseException as err:  # noqa: BLE001 - SystemExit, KeyboardInterrupt...: the worker must live
            log.error("job %s ended abruptly:\n%s", job.id, traceback.format_exc())
            error = f"The job was cut short ({_describe(err)}) before it finished; run it again."
        with self._lock:
            # Read the stop request under the lock: cancel() cannot slip in between.
            if error is None:
                state = "stopped" if job._stop.is_set() else "done"
            else:
                state = "stopped" if stopped_by_error and job._stop.is_set() else "failed"
            self._finish_locked(job, state, error, result)

    def _finish(self, job: Job, state: str, error: str | None = None, result: Any = None) -> None:
        with self._lock:
            if job.active:
                self._finish_locked(job, state, error, result)

    @staticmethod
    def _finish_locked(job: Job, state: str, error: str | None, result: Any) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        if error is None:
            job.result = result


def _describe(err: BaseException) -> str:
    """``Type: message`` of an exception, on one line, even when ``str(err)`` itself fails."""
    try:
        text = " ".join(str(err).split())
    except Exception:  # noqa: BLE001 - a broken __str__ must not kill the worker
        text = ""
    text = text if len(text) <= 200 else text[:199] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def manager() -> JobManager:
    """The process-wide manager (one per server process, shared by every browser session)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = JobManager()
        return _MANAGER
