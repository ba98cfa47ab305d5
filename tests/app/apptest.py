"""Helpers shared by the AppTest modules: open the app, wait for a session's job."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def open_app(timeout: float = 120) -> AppTest:
    """The app after its first run, which must not raise."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def finished_job(at: AppTest, timeout: float = 180):
    """Wait for this session's latest job; return it before the page collects (and forgets) it."""
    from emcore.jobs import manager

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = manager().jobs_for(at.session_state["owner_id"])
        if mine and not any(j.active for j in mine):
            return mine[-1]
        time.sleep(0.1)
    raise AssertionError("the job did not finish in time")
