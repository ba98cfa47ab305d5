import threading
import time

import pytest

from emcore.errors import EmcoreError
from emcore.jobs import JobManager
from emcore.progress import Progress


def _counting(n, delay=0.01, out=None):
    def fn(progress, should_stop):
        for i in range(n):
            if should_stop():
                return {"stopped_at": i}
            time.sleep(delay)
            progress(Progress(step=i + 1, total=n, losses={"train": 1.0 / (i + 1)}))
            if out is not None:
                out.append(i)
        return {"done": n}
    return fn


def test_jobs_run_in_order_one_at_a_time_per_slot():
    m = JobManager()
    order, running, peak = [], [0], [0]
    lock = threading.Lock()

    def make(tag):
        def fn(progress, should_stop):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            order.append(tag)
            with lock:
                running[0] -= 1
            return tag
        return fn

    a = m.submit("s1", "a", make("a"), slot="gpu0")
    b = m.submit("s2", "b", make("b"), slot="gpu0")
    assert m.position(b) in (1, 2)
    assert m.wait(b, timeout=10).result == "b"
    assert order == ["a", "b"] and peak[0] == 1
    assert m.get(a).state == "done"


def test_progress_history_and_ownership():
    m = JobManager()
    j = m.submit("alice", "train", _counting(5), slot="cpu")
    m.wait(j, timeout=10)
    job = m.get(j)
    assert job.progress.step == 5 and len(job.history) == 5 and "loss_train" in job.history[0]
    assert [x.id for x in m.jobs_for("alice")] == [j] and m.jobs_for("bob") == []


def test_cancel_queued_leaves_no_trace_and_running_stops():
    m = JobManager()
    first = m.submit("s", "long", _counting(500, 0.01), slot="cpu")
    queued = m.submit("s", "queued", _counting(3), slot="cpu")
    time.sleep(0.1)
    m.cancel(queued)
    assert m.get(queued) is None and [j.id for j in m.jobs_for("s")] == [first]
    m.cancel(first)
    job = m.wait(first, timeout=10)
    assert job.state == "stopped" and job.result["stopped_at"] < 500


def test_errors_are_sentences_and_worker_survives():
    m = JobManager()

    def bad(progress, should_stop):
        raise EmcoreError("The dataset is too small for a 128-px patch.")

    def bug(progress, should_stop):
        raise ZeroDivisionError("oops")

    j1 = m.submit("s", "bad", bad)
    j2 = m.submit("s", "bug", bug)
    j3 = m.submit("s", "ok", _counting(2))
    assert m.wait(j1, 10).error == "The dataset is too small for a 128-px patch."
    assert m.wait(j2, 10).state == "failed" and "Internal error" in m.get(j2).error
    assert m.wait(j3, 10).state == "done"


@pytest.mark.parametrize("n", [3])
def test_forget_only_finished(n):
    m = JobManager()
    j = m.submit("s", "x", _counting(n))
    m.wait(j, 10)
    m.forget(j)
    assert m.get(j) is None


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()])
def test_base_exception_job_fails_with_a_sentence_and_the_queue_goes_on(exc):
    m = JobManager()

    def abrupt(progress, should_stop):
        raise exc

    j1 = m.submit("s", "abrupt", abrupt)
    j2 = m.submit("s", "next", _counting(2))
    job = m.wait(j1, 10)
    assert job.state == "failed" and job.finished is not None
    assert job.error.startswith("The job was cut short (") and job.error.endswith("; run it again.")
    assert type(exc).__name__ in job.error and "\n" not in job.error
    assert m.wait(j2, 10).state == "done"  # the worker thread survived


def test_cancel_at_the_moment_of_completion_leaves_a_final_state(monkeypatch):
    """Force the interleaving that used to leave a job 'stopping' for ever.

    cancel() (holding the manager's lock) has read 'running' and is about to write
    'stopping'; right then the job's function returns and the worker writes its final state.
    Unlocked, that final write landed first and 'stopping' overwrote it. Now the worker's
    write waits for the lock, sees the stop request and ends the job 'stopped'.
    """
    from emcore import jobs

    release, final_written = threading.Event(), threading.Event()

    class RacingJob(jobs.Job):
        def __setattr__(self, name, value):
            if name == "state" and value == "stopping":
                release.set()  # let the job return now, in the middle of cancel()
                final_written.wait(0.3)  # give an unlocked worker the time to write first
            super().__setattr__(name, value)
            if name == "state" and value in ("done", "stopped", "failed"):
                final_written.set()

    monkeypatch.setattr(jobs, "Job", RacingJob)
    m = JobManager()

    def finishes_when_released(progress, should_stop):
        release.wait(10)
        return "result"

    j = m.submit("s", "racy", finishes_when_released)
    while m.get(j).state != "running":
        time.sleep(0.001)
    m.cancel(j)
    job = m.wait(j, timeout=5)
    assert job.state == "stopped" and job.result == "result" and job.finished is not None
    m.cancel(j)  # a cancel after the end changes nothing
    assert m.get(j).state == "stopped"


def test_cancel_racing_completion_always_ends_in_one_final_state():
    m = JobManager()
    ids = [m.submit("s", f"quick {i}", lambda progress, should_stop: "ok", slot="race") for i in range(200)]
    for j in ids:
        m.cancel(j)  # lands anywhere: queued, running, finishing or finished
    for j in ids:
        job = m.wait(j, timeout=10)
        assert job is None or job.state in ("done", "stopped"), job.state


def test_load_and_ahead_count_other_sessions_jobs():
    m = JobManager()
    gate = threading.Event()

    def blocked(progress, should_stop):
        gate.wait(5)
        return "ok"

    a = m.submit("alice", "a", blocked, slot="cpu")
    deadline = time.monotonic() + 5
    while m.get(a).state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    b = m.submit("bob", "b", blocked, slot="cpu")
    c = m.submit("alice", "c", blocked, slot="cpu")
    d = m.submit("bob", "d", blocked, slot="gpu")
    try:
        load = m.load("bob")
        assert (load.running, load.queued) == (2, 2) or (load.running, load.queued) == (1, 3)  # d may not have started
        assert load.others_running == 1 and load.others_queued == 1 and load.shared
        assert m.ahead(b) == (1, 1)  # alice's running job
        assert m.ahead(c) == (2, 1)  # alice's running job and bob's queued one
        assert m.ahead(a) == (0, 0) and m.ahead("nope") == (0, 0)
        alone = JobManager()
        assert alone.load("x") == type(load)(0, 0, 0, 0) and not alone.load("x").shared
    finally:
        gate.set()
        for j in (a, b, c, d):
            m.wait(j, timeout=10)
    assert m.load("bob").running == 0 and m.load("bob").queued == 0
