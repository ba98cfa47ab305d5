"""AppTest of the Learn page (a section per method) and of the Compare page's adaptive-filter
view, on results injected with a known network function (a fixed convolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app

TIMEOUT = 180


def _app() -> AppTest:
    return open_app(TIMEOUT)


def _box_artifacts(size: int = 5, cube: bool = False) -> dict:
    """A 'network' that averages a size×size box (per energy slice for cubes): its filter sums to 1."""
    k = torch.full((1, 1, size, size), 1.0 / size**2)

    def apply(x):
        if cube:  # (H, W, E) -> (H, W, E)
            return F.conv2d(x.permute(2, 0, 1)[:, None], k, padding=size // 2)[:, 0].permute(1, 2, 0)
        return F.conv2d(x[None, None], k, padding=size // 2)[0, 0]

    return {"apply": apply, "receptive_field": size, "min_size": 1}


def _inject(at: AppTest, method: str, artifacts: dict) -> None:
    """Store a result as pages.ui.add_result would, for the current dataset."""
    ds = at.session_state["dataset"]
    if artifacts:
        with torch.no_grad():
            data = artifacts["apply"](torch.from_numpy(np.asarray(ds.data, np.float32))).numpy()
    else:
        data = np.asarray(ds.data, np.float32).copy()
    entry = {"id": f"{method}-1", "label": f"{method} #1", "method": method, "params": {}, "requested": {},
             "seconds": 0.1, "device": "cpu", "data": data, "log": [], "artifacts": artifacts,
             "dataset_token": at.session_state["dataset_token"], "dataset_key": at.session_state["dataset_key"],
             "metrics": {}, "metrics_cache": {}}
    results = list(at.session_state["results"]) if "results" in at.session_state else []
    at.session_state["results"] = results + [entry]


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_learn_page_has_a_section_per_method_and_the_dose_demo():
    at = _app()
    at.switch_page("pages/learn.py").run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [e.label for e in at.expander]
    names = ("BM3D", "Wiener", "PCA", "DnCNN", "UNet", "Noise2Self", "Noise2SR", "3D-DCAE", "Auto")
    for name in names:
        assert sum(lab.startswith(name) for lab in labels) == 1, (name, labels)
    text = " ".join(m.value for m in at.markdown)
    for heading in ("What it assumes.", "What it needs.", "When to choose it.", "Key parameters.", "Reference."):
        assert text.count(heading) == len(names), heading
    assert "non-commercial" in " ".join(c.value for c in at.caption)  # BM3D licence
    assert "J-invariant" in " ".join(c.value for c in at.caption)  # Auto explains its criterion
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(charts) == 2 + len(names)  # dose demo (clean, noisy) and one live figure per method
    dose = at.select_slider(key="learn_dose")
    assert dose.options[0] == "0.1" and dose.options[-1] == "1000"
    assert "Count-split validation" in text and "Residual checks" in text


def test_filter_view_on_a_network_result():
    at = _app()
    _inject(at, "unet", _box_artifacts(5))
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == "What is the network looking at?" for s in at.subheader)
    assert at.radio(key="cmp_click_mode").options == ["the profile line", "the pixel to inspect"]
    assert not [c for c in at.get("plotly_chart") if "Filter weights" in c.proto.spec]  # computed on request only
    at.number_input(key="jac_row").set_value(300)
    at.number_input(key="jac_col").set_value(100)
    at.button(key="btn_jac").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert float(_metric(at, "Sum of the weights")) == pytest.approx(1.0, abs=1e-3)
    assert _metric(at, "Pixels taking part") == "25"
    spec = next(c.proto.spec for c in at.get("plotly_chart") if "Filter weights" in c.proto.spec)
    assert "Input around the pixel" in spec
    assert any("weights sum to 1.00" in m.value and "row 300, col 100" in m.value for m in at.markdown)
    # the filter stays on reruns until another pixel is asked for
    at.toggle(key="cmp_shared").set_value(False).run()
    assert any("Filter weights" in c.proto.spec for c in at.get("plotly_chart"))


def test_filter_view_without_a_network_names_the_methods():
    at = _app()
    _inject(at, "wiener", {})
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    info = " ".join(i.value for i in at.info)
    assert "none of the results for this dataset comes from a network" in info
    for name in ("DnCNN", "UNet", "Noise2SR", "Noise2Self", "3D-DCAE"):
        assert name in info
    # with a network result too, choosing the classical one says why there is nothing to show
    _inject(at, "unet", _box_artifacts(3))
    at.run()
    at.selectbox(key="jac_result").set_value("wiener #1").run()
    assert not at.exception
    assert any("has no trained network to inspect" in i.value for i in at.info)


def test_filter_view_on_a_cube_uses_the_viewer_energy():
    at = _app()
    at.selectbox(key="example_name").set_value("eds").run()
    _inject(at, "dcae3d", _box_artifacts(3, cube=True))
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="cmp_map_of").set_value("Fe_Ka").run()
    at.button(key="btn_jac").click().run()
    assert not at.exception, [e.value for e in at.exception]
    filt = at.session_state["jac_filter"]["filter"]
    assert filt.energy == at.session_state["cmp_view"]["channel"]
    assert float(_metric(at, "Sum of the weights")) == pytest.approx(1.0, abs=1e-3)
    assert any("Summed weight" in c.proto.spec for c in at.get("plotly_chart"))  # weights per input energy
    at.toggle(key="jac_summed").set_value(True).run()
    assert not at.exception
    assert any("summed over energies" in c.proto.spec for c in at.get("plotly_chart"))


@pytest.mark.parametrize("shipped, offset", [("bias-free", False), ("standard", True)])
def test_filter_view_of_the_shipped_unets(shipped, offset):
    """The Denoise page offers both shipped UNets; the filter view of the bias-free one is the
    whole output (no offset sentence), that of the standard one says the network adds its own."""
    from tests.app.apptest import finished_job

    at = _app()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("unet").run()
    at.selectbox(key="p_unet_shipped").set_value(shipped)
    next(b for b in at.button if b.label == "Run").click().run()
    assert finished_job(at).error is None
    at.run()
    at.switch_page("pages/compare.py").run()
    at.number_input(key="jac_row").set_value(60)
    at.number_input(key="jac_col").set_value(60)
    at.button(key="btn_jac").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown if "weights sum to" in m.value)
    assert "row 60, col 60" in text
    assert ("own offset" in text) is offset
