"""AppTest: Noise2SR with a tiny training budget from the Denoise page."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.apptest import finished_job, open_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (see conftest)


def _app() -> AppTest:
    return open_app(120)


def test_noise2sr_tiny_budget_from_the_denoise_page():
    at = _app()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("noise2sr").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="p_noise2sr_preset").value == "fast"
    # Preset-controlled parameters show the value the preset will use, and follow the preset.
    assert at.selectbox(key="p_noise2sr_prior").value == "wiener"
    assert at.number_input(key="p_noise2sr_steps").value == 600  # the fast preset with the Wiener prior
    at.selectbox(key="p_noise2sr_prior").set_value("off").run()
    assert at.number_input(key="p_noise2sr_steps").value == 2000  # ... and without it
    at.selectbox(key="p_noise2sr_prior").set_value("wiener").run()
    at.selectbox(key="p_noise2sr_preset").set_value("quality").run()
    assert at.number_input(key="p_noise2sr_steps").value == 6000
    at.selectbox(key="p_noise2sr_preset").set_value("fast").run()
    assert at.number_input(key="p_noise2sr_mmse_samples").value == 50
    for name, value in {"steps": 3, "batch_size": 2, "patch_size": 32, "mmse_samples": 2}.items():
        at.number_input(key=f"p_noise2sr_{name}").set_value(value)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]

    job = finished_job(at)
    assert job.state == "done", job.error
    assert job.progress is not None and "MMSE" in job.progress.message  # the average reports its progress
    assert any("loss_train" in h for h in job.history)  # training losses feed the live chart

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success, [e.value for e in at.error]
    (res,) = list(at.session_state["results"])
    assert res["method"] == "noise2sr" and res["params"]["steps"] == 3
    assert "apply" in res["artifacts"] and res["artifacts"]["training"]
