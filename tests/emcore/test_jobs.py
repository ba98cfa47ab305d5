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
