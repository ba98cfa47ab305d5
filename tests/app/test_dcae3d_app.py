"""AppTest: 3D-DCAE with a tiny training budget from the Denoise page, on the EDS example."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.app.apptest import finished_job, open_app


def _app() -> AppTest:
    return open_app(120)


def test_dcae3d_tiny_budget_on_the_eds_example():
    at = _app()
    at.selectbox(key="example_name").set_value("eds").run()  # the Data page: EDS cube + HAADF
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dataset"].kind == "cube"
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("dcae3d").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="p_dcae3d_preset").value == "fast"
    assert at.checkbox(key="p_dcae3d_use_haadf").value is True
    for name, value in {"steps": 3, "width": 4}.items():
        at.number_input(key=f"p_dcae3d_{name}").set_value(value)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]

    job = finished_job(at)
    assert job.state == "done", job.error
    assert any("loss_train" in h for h in job.history)  # training losses feed the live chart

    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success, [e.value for e in at.error]
    (res,) = list(at.session_state["results"])
    assert res["method"] == "dcae3d" and res["params"]["steps"] == 3 and res["params"]["use_haadf"] is True
    assert res["data"].shape == at.session_state["dataset"].data.shape
    assert "apply" in res["artifacts"] and res["artifacts"]["training"]
    # the training curves stay on the page: drawn, never blank — linear when the Poisson loss is ≤ 0
    import json

    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "training loss" in c.proto.spec)
    ys = [y for t in chart["data"] for y in t["y"]]
    assert ys and all(abs(y) < 1e30 for y in ys)
    if min(ys) <= 0:
        assert chart["layout"]["yaxis"]["type"] == "linear"
        assert any("Linear scale" in c.value for c in at.caption)


def test_dcae3d_on_a_real_cube_with_its_haadf_shows_element_maps(shared_data):
    """The real SiO2 spectrum image with its separate HAADF image: upload both, train a tiny
    3D-DCAE with the HAADF fused, and see its element maps beside the input's on Compare."""
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    eds = (shared_data / "eds" / "sio2_eds.hspy").read_bytes()
    at.file_uploader(key="upload_files").set_value(("sio2_eds.hspy", eds, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    haadf = (shared_data / "eds" / "sio2_haadf.hspy").read_bytes()
    at.file_uploader(key="upload_haadf").set_value(("sio2_haadf.hspy", haadf, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    ds = at.session_state["dataset"]
    assert ds.kind == "cube" and ds.haadf is not None and ds.haadf.shape == ds.data.shape[:2]

    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("dcae3d").run()
    assert at.checkbox(key="p_dcae3d_use_haadf").value is True  # on by default when there is a HAADF
    for name, value in {"steps": 3, "width": 4}.items():
        at.number_input(key=f"p_dcae3d_{name}").set_value(value)
    next(b for b in at.button if b.label == "Run").click().run()
    job = finished_job(at)
    assert job.state == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (res,) = list(at.session_state["results"])
    assert res["params"]["use_haadf"] is True and res["data"].shape == ds.data.shape

    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.label.startswith("Element lines") and s.value for s in at.multiselect)  # lines suggested
    specs = [str(c.proto.spec) for c in at.get("plotly_chart")]
    maps = [s for s in specs if "— Input" in s or "\\u2014 Input" in s]  # a gallery row per element line
    assert maps and all(res["label"] in s or res["label"].replace("—", "\\u2014") in s for s in maps)
