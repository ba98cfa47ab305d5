"""AppTest of the Denoise page's running-jobs panel on a machine other sessions also use."""

from __future__ import annotations

import threading
import time

from emcore.jobs import manager
from tests.app.apptest import finished_job, open_app


def test_other_sessions_jobs_are_shown_and_counted_ahead():
    gate, started = threading.Event(), threading.Event()

    def someone_elses(progress, should_stop):
        started.set()
        while not gate.is_set() and not should_stop():
            time.sleep(0.02)
        return None

    other = manager().submit("another-browser", "UNet on their data", someone_elses, slot="cpu")
    try:
        assert started.wait(10)
        at = open_app()
        at.switch_page("pages/denoise.py").run()
        at.selectbox(key="method_choice").set_value("wiener").run()
        next(b for b in at.button if b.label == "Run").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("other sessions have 1 job running" in i.value for i in at.info), [i.value for i in at.info]
        text = " ".join(m.value for m in at.markdown)
        assert "waiting on the CPU: 1 job ahead of it, 1 of them from other sessions" in text, text
    finally:
        gate.set()
        manager().wait(other, timeout=10)
        manager().forget(other)
    job = finished_job(at)
    assert job.state == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    done = next(s.value for s in at.success if "wiener #1" in s.value)
    assert "the whole job took" in done, done
    assert not any("other sessions" in i.value for i in at.info)
