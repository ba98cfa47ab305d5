"""AppTest: what the pages say is true — PSNR below 0 dB explained, the Learn phantom in the Data
page's contrast, a survey image called HAADF only when it is one, no energy fields for an image."""

from __future__ import annotations

import json
import re

import numpy as np

from tests.app.apptest import open_app


def _bright_columns(z) -> bool:
    """Bright atomic columns: the peaks stand further above the typical (vacuum) level than the dips below it."""
    if isinstance(z, dict):  # Plotly's typed array: {"dtype", "bdata" (base64), "shape"}
        import base64

        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"])
    z = np.asarray(z, dtype=float)
    med = np.median(z)
    return np.percentile(z, 99.9) - med > med - np.percentile(z, 0.1)


def test_learn_explains_a_negative_psnr_and_shows_bright_columns_like_the_data_page():
    at = open_app()
    data_gt = json.loads(at.get("plotly_chart")[1].proto.spec)["data"][0]["z"]  # Data page: ground truth
    assert _bright_columns(data_gt)
    at.switch_page("pages/learn.py").run()
    slider = at.select_slider(key="learn_dose")
    slider.set_value(slider.options[0]).run()
    assert not at.exception, [e.value for e in at.exception]
    title = str(at.get("plotly_chart")[1].proto.spec)
    db = float(re.search(r"PSNR (-?[\d.]+) dB", title).group(1))
    assert db < 0
    assert any("below 0 dB because the noise is larger than the clean image's whole range" in c.value
               for c in at.caption)
    assert _bright_columns(json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["z"])
    slider = at.select_slider(key="learn_dose")
    slider.set_value(slider.options[-1]).run()
    assert any("times the typical (root-mean-square) error" in c.value for c in at.caption)
    shown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "benchmarks/" not in shown and "emcore/" not in shown


def test_survey_image_named_by_what_it_is_and_no_energy_fields_for_an_image(shared_data):
    at = open_app()
    at.radio(key="data_source").set_value("Upload a file").run()
    eds = (shared_data / "eds" / "sio2_eds.hspy").read_bytes()
    at.file_uploader(key="upload_files").set_value(("sio2_eds.hspy", eds, "application/octet-stream")).run()
    assert at.number_input(key="bin_energy") is not None  # a spectrum image: energy binning offered
    se = (shared_data / "eds" / "sio2_haadf.hspy").read_bytes()
    at.file_uploader(key="upload_haadf").set_value(("secondary_electrons.hspy", se, "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "Survey image (secondary_electrons)" in specs and '"HAADF"' not in specs
    table = at.table[0].value
    assert "Survey image (secondary_electrons), 128×128" in table.to_string()

    at = open_app()
    at.radio(key="data_source").set_value("Upload a file").run()
    sem = (shared_data / "formats" / "FEI-Helios-Ebeam-16bits.tif").read_bytes()
    at.file_uploader(key="upload_files").set_value(("sem.tif", sem, "image/tiff")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dataset"].kind == "image"
    keys = {n.key for n in at.number_input}
    assert "bin_spatial" in keys and not keys & {"bin_energy", "e_lo", "e_hi"}
    assert any(e.label == "Reduce a large image before loading" for e in at.expander)
    shown = str([c.proto.spec for c in at.get("plotly_chart")]) + " ".join(m.value for m in at.markdown)
    assert "HAADF" not in shown


def test_denoise_form_hides_parameters_that_are_not_for_the_data_kind():
    at = open_app()  # the HRTEM image
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("bm3d").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "p_bm3d_bin_energy" not in {n.key for n in at.number_input}
    at.switch_page("pages/data.py").run()
    at.selectbox(key="example_name").set_value("eds").run()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("bm3d").run()
    assert "p_bm3d_bin_energy" in {n.key for n in at.number_input}
