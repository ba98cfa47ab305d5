"""PCA's self-calibrated component count on the Denoise page: the criterion's curve is shown."""

from __future__ import annotations

import json

from tests.app.apptest import finished_job, open_app


def test_pca_shows_how_it_chose_its_component_count():
    at = open_app(300)
    at.selectbox(key="example_name").set_value("eds").run()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("pca").run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = finished_job(at, timeout=300)
    assert job.state == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    cal = job.result.artifacts["calibration"]
    assert cal["criterion"] == "count-split" and cal["best"]["n_components"] == job.result.params["n_components"]
    assert "How pca #1 chose its settings (count-split)" in [e.label for e in at.expander]
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "count-split loss" in c.proto.spec)
    assert fig["layout"]["xaxis"]["title"]["text"] == "n_components"
    assert fig["data"][0]["x"] == [c["params"]["n_components"] for c in cal["curve"]]
