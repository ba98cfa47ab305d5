"""Auto on the Denoise page: a ranking chart with thumbnails, and every result kept in Compare."""

from __future__ import annotations

from tests.app.apptest import finished_job, open_app


def test_auto_ranks_methods_and_keeps_every_result():
    at = open_app(300)
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("auto").run()
    at.number_input(key="p_auto_budget_seconds").set_value(20.0)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = finished_job(at, timeout=300)
    assert job.state == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    ranking = job.result.summary["ranking"]
    assert len(ranking) >= 2 and all("psnr" in r for r in ranking)  # the example has a ground truth
    assert any(sub.value.startswith("Auto's ranking") for sub in at.subheader)
    labels = [r["label"] for r in at.session_state["results"]]
    assert "auto #1" in labels and len(labels) == len(ranking)  # the best as Auto's, the others beside it
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe[0].value) == len(ranking)
