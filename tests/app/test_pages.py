"""AppTest drives every page the way a person would: pick examples, upload files, switch pages."""

from __future__ import annotations

import io as _io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.apptest import finished_job, open_app

TIMEOUT = 120


def _app() -> AppTest:
    return open_app(TIMEOUT)


def _npy_bytes(a) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _charts(at):
    return at.get("plotly_chart")


def _errors(at):
    return [e.value for e in at.error]


def test_first_page_shows_builtin_example_without_upload():
    at = _app()
    ds = at.session_state["dataset"]
    assert ds is not None and ds.kind == "image" and ds.ground_truth is not None
    assert "HRTEM" in ds.name
    assert len(_charts(at)) >= 2  # data and ground truth heatmaps
    assert any(m.label == "Kind" and m.value == "image" for m in at.metric)


@pytest.mark.parametrize("name,kind", [("eds", "cube"), ("movie", "stack")])
def test_choose_other_examples(name, kind):
    at = _app()
    at.selectbox(key="example_name").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    ds = at.session_state["dataset"]
    assert ds.kind == kind
    if kind == "cube":
        assert ds.haadf is not None
        assert len(_charts(at)) == 4  # spectrum, data map, ground-truth map, HAADF
        slider = next(s for s in at.slider if s.key.startswith("energy_"))
        slider.set_value(6.4).run()  # Fe Kα
        assert not at.exception
        assert "6.400 keV" in str(_charts(at)[1].proto.spec)
        assert not at.exception
        at.toggle(key="spectrum_log").set_value(False).run()
        assert not at.exception
    else:
        at.slider(key="frame").set_value(3).run()
        assert not at.exception
        assert "Frame 3" in str(_charts(at)[0].proto.spec)


def test_dose_slider_changes_example():
    at = _app()
    before = at.session_state["dataset"]
    dose_slider = at.select_slider(key="dose_hrem")
    dose_slider.set_value(dose_slider.options[-1]).run()
    after = at.session_state["dataset"]
    assert after is not before
    assert after.data.std() < before.data.std()  # more dose, less noise


def test_upload_good_then_bad_keeps_earlier_dataset():
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    img = np.random.default_rng(0).poisson(3.0, size=(64, 80)).astype(np.uint16)
    at.file_uploader(key="upload_files").set_value(("scan.npy", _npy_bytes(img), "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    ds = at.session_state["dataset"]
    assert ds.kind == "image" and ds.data.shape == (64, 80) and ds.name == "scan.npy"

    at.file_uploader(key="upload_files").set_value(("broken.npy", b"\x93NUMPY garbage", "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    errs = _errors(at)
    assert errs and "broken.npy" in errs[0]
    assert "Traceback" not in errs[0]
    assert at.session_state["dataset"] is ds  # nothing already loaded is lost


def test_upload_pickled_npy_is_refused():
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    from tests.conftest import pickled_npy_bytes

    at.file_uploader(key="upload_files").set_value(("evil.npy", pickled_npy_bytes([{"a": 1}]), "application/octet-stream")).run()
    assert not at.exception
    assert _errors(at) and "evil.npy" in _errors(at)[0]


def test_upload_cube_with_wrong_haadf_gives_sentence(shared_data):
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    cube = (shared_data / "eds" / "core_shell.hdf5").read_bytes()
    at.file_uploader(key="upload_files").set_value(("core_shell.hdf5", cube, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    ds = at.session_state["dataset"]
    assert ds.kind == "cube" and ds.data.shape == (64, 64, 992)
    haadf = np.ones((32, 32), np.float32)
    at.file_uploader(key="upload_haadf").set_value(("haadf.npy", _npy_bytes(haadf), "application/octet-stream")).run()
    assert not at.exception
    errs = _errors(at)
    assert errs and "HAADF" in errs[0] and "64×64" in errs[0]
    assert at.session_state["dataset"] is ds


def test_upload_multi_signal_file_offers_signal_choice(shared_data):
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    data = (shared_data / "eds" / "bruker_test_TEM.bcf").read_bytes()
    at.file_uploader(key="upload_files").set_value(("bruker.bcf", data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    ds = at.session_state["dataset"]
    assert ds.kind == "cube" and ds.haadf is not None
    chooser = next(s for s in at.selectbox if s.label == "Signal in this file")
    # pick the HAADF image as the data instead of the spectrum image
    options = at.session_state["load_options"]["signals"]
    haadf_idx = next(s["index"] for s in options if s["kind"] == "image")
    chooser.set_value(haadf_idx).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dataset"].kind == "image"


def test_too_large_cube_offers_binning(shared_data, monkeypatch):
    monkeypatch.setenv("EMCORE_MAX_BYTES", str(4 * 1024 * 1024))  # 4 MiB: core_shell needs 16 MiB
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    cube = (shared_data / "eds" / "core_shell.hdf5").read_bytes()
    at.file_uploader(key="upload_files").set_value(("core_shell.hdf5", cube, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("GiB" in w.value or "MiB" in w.value for w in at.warning)
    # the suggested reduction is filled in and loads under the cap
    assert at.number_input(key="bin_spatial").value * at.number_input(key="bin_energy").value > 1
    ds = at.session_state["dataset"]
    assert ds.kind == "cube" and ds.data.nbytes <= 4 * 1024 * 1024


@pytest.mark.parametrize("page", ["pages/denoise.py", "pages/compare.py", "pages/learn.py", "pages/data.py"])
def test_switch_pages_no_exception(page):
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", ["pages/denoise.py", "pages/compare.py"])
def test_pages_without_data_say_load_first(page):
    at = _app()
    at.session_state["dataset"] = None
    at.switch_page(page).run()
    assert not at.exception
    assert any("Load data first" in i.value for i in at.info)


def test_learn_dose_demo_psnr_rises_with_dose():
    at = _app()
    at.switch_page("pages/learn.py").run()
    def title():
        return str(_charts(at)[1].proto.spec)
    low = at.select_slider(key="learn_dose")
    low.set_value(low.options[0]).run()
    t_low = title()
    at.select_slider(key="learn_dose").set_value(at.select_slider(key="learn_dose").options[-1]).run()
    t_high = title()
    import re
    p_low = float(re.search(r"PSNR (-?[\d.]+) dB", t_low).group(1))
    p_high = float(re.search(r"PSNR (-?[\d.]+) dB", t_high).group(1))
    assert p_high > p_low + 20


# -- Denoise and Compare -------------------------------------------------------------
def _run_method(at, name, **params):
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value(name).run()
    for k, v in params.items():
        auto = [c for c in at.checkbox if c.key == f"p_{name}_{k}_auto"]
        if auto:  # "estimate from the data": untick it to give the value
            auto[0].uncheck().run()
        at.number_input(key=f"p_{name}_{k}").set_value(v)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_for_jobs(at)
    assert at.success, [e.value for e in at.error]


def wait_for_jobs(at, timeout=120):
    """Methods run as background jobs: rerun the page until this session has none left."""
    import time

    from emcore.jobs import manager

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = at.session_state["owner_id"]
        if not any(j.active for j in manager().jobs_for(owner)):
            at.run()
            return
        time.sleep(0.1)
    raise AssertionError("the job did not finish in time")


def test_compare_two_results_with_profile_and_metrics():
    at = _app()
    # a smaller example keeps BM3D quick
    at.select_slider(key="dose_hrem").set_value(10.0).run()
    _run_method(at, "wiener")
    _run_method(at, "wiener", window=9)
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["result"]) == ["wiener #1", "wiener #2"]
    assert "PSNR (dB)" in table.columns and table["PSNR (dB)"].notna().all() and "time (s)" in table.columns
    # profile: move the line, the chart follows; a zero-length line gives a sentence
    at.number_input(key="prof_r0").set_value(10).run()
    at.number_input(key="prof_r1").set_value(200).run()
    assert not at.exception
    spec = str(at.get("plotly_chart")[1].proto.spec)
    assert "Distance along the line" in spec and "wiener #2" in spec and "Ground truth" in spec
    at.number_input(key="prof_r1").set_value(10).run()
    at.number_input(key="prof_c1").set_value(at.number_input(key="prof_c0").value).run()
    assert any("zero length" in e.value for e in at.error)
    assert not at.exception
    # residual view and per-panel contrast
    at.toggle(key="cmp_residual").set_value(True).run()
    at.toggle(key="cmp_shared").set_value(False).run()
    assert not at.exception
    # count-split validation runs as a background job: the page answers at once (not frozen),
    # the button waits while it runs, and the ranking (both above the raw half) is kept
    next(b for b in at.button if b.key == "btn_countsplit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("started in the background" in s.value for s in at.success)
    job = finished_job(at)
    assert job.meta["validation"] == "count_split" and job.state == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    saved = at.session_state["validations"]
    ranking = next(v for (t, kind), v in saved.items() if kind == "count_split")["ranking"]
    assert ranking[-1] == "no denoising (raw half)"
    assert any(list(df.value.columns[:2]) == ["rank", "result"] for df in at.dataframe)
    split = next(df.value for df in at.dataframe if "what it means" in df.value.columns)
    assert "estimated error, MSE ((counts/px)²)" in split.columns
    assert all(("≈ 0, better than the noise can resolve" in w) == (m <= 0)
               for w, m in zip(split["what it means"], split["estimated error, MSE ((counts/px)²)"]))


def test_compare_cube_spectral_viewer():
    at = _app()
    at.selectbox(key="example_name").set_value("eds").run()
    _run_method(at, "pca")
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert "PSNR Fe Ka (dB)" in table.columns
    # element map of a chosen line, and the spectrum at a chosen region
    at.selectbox(key="cmp_map_of").set_value("Fe_Ka").run()
    at.number_input(key="spec_half").set_value(4).run()
    at.toggle(key="spec_log").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [str(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("Energy (keV)" in s for s in specs)
    assert sum(("Fe_Ka —" in s or "Fe_Ka \\u2014" in s) for s in specs) == 1  # the gallery row of Fe Kα


def test_compare_without_results_points_to_denoise():
    at = _app()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert any("no results" in i.value for i in at.info)


def test_long_job_shows_progress_and_can_be_stopped():
    import time

    at = _app()
    at.selectbox(key="example_name").set_value("eds").run()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("bm3d").run()
    # Any method whose estimate exceeds a minute warns, next to the Run button that starts it anyway.
    assert any("BM3D on this data will take about" in w.value and "Stop ends it early" in w.value
               for w in at.warning)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    time.sleep(1.0)
    at.run()
    stop = [b for b in at.button if b.label == "Stop"]
    assert stop, "a running job shows a Stop button"
    assert at.get("progress"), "and a progress bar"
    stop[0].click().run()
    wait_for_jobs(at)
    assert not at.exception
    assert any("Stopped on request" in w.value for w in at.warning)
    assert not ui_results(at)  # a stopped classical run leaves no half-made result


def ui_results(at):
    return [r for r in at.session_state["results"]] if "results" in at.session_state else []


def test_history_is_capped_and_says_so():
    from pages import ui

    at = _app()
    for _ in range(ui.MAX_RESULTS + 1):
        _run_method(at, "wiener")
    runs = at.session_state["results"]
    assert len(runs) == ui.MAX_RESULTS and runs[0]["label"] == "wiener #2"
    assert any("was removed to keep memory in check" in w.value for w in at.warning)


def test_second_upload_replaces_the_first():
    at = _app()
    at.radio(key="data_source").set_value("Upload a file").run()
    a = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    b = np.random.default_rng(1).random((48, 24)).astype(np.float32)
    at.file_uploader(key="upload_files").set_value([("a.npy", _npy_bytes(a), "application/octet-stream"),
                                                    ("b.npy", _npy_bytes(b), "application/octet-stream")]).run()
    assert not at.exception and not _errors(at)
    assert at.session_state["dataset"].name == "b.npy" and at.session_state["dataset"].data.shape == (48, 24)
    assert any("Using the newest file, b.npy" in c.value for c in at.caption)


def test_results_come_back_when_the_same_dataset_is_loaded_again():
    """Results belong to the dataset's content: switching to another example hides them, loading
    the identical example (same seed and dose) again shows them, and Compare lists the other
    datasets of the session with a way back."""
    at = _app()
    _run_method(at, "wiener")
    at.switch_page("pages/data.py").run()
    at.selectbox(key="example_name").set_value("movie").run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no results for this dataset yet" in i.value for i in at.info)
    # back to the same example, same seed and dose: the result is there again
    at.switch_page("pages/data.py").run()
    at.selectbox(key="example_name").set_value("hrem").run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.dataframe[0].value["result"]) == ["wiener #1"]
    # from another dataset, Compare offers the way back to the HRTEM example
    at.switch_page("pages/data.py").run()
    at.selectbox(key="example_name").set_value("movie").run()
    at.switch_page("pages/compare.py").run()
    at.button(key="btn_other_dataset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dataset"].kind == "image"
    assert list(at.dataframe[0].value["result"]) == ["wiener #1"]


def test_calibration_and_counts_can_be_entered_for_an_uncalibrated_file(tmp_path):
    """An .npy has no calibration: the Data page takes a pixel size and the counts flag, and the
    dataset's results stay with it."""
    at = _app()
    g = np.random.default_rng(0)
    arr = (g.poisson(3.0, (64, 64)) * 0.5).astype(np.float32)  # counts scaled by the detector gain
    at.radio(key="data_source").set_value("Upload a file").run()
    at.file_uploader(key="upload_files").set_value(("counts.npy", _npy_bytes(arr), "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.session_state["dataset"].is_counts
    at.number_input(key="cal_pixel_size").set_value(0.05)
    at.selectbox(key="cal_pixel_unit").set_value("nm")
    at.checkbox(key="cal_counts").check()
    at.button(key="cal_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ds = at.session_state["dataset"]
    assert ds.is_counts and ds.calibration.pixel_unit == "nm" and ds.calibration.pixel_size == 0.05


def test_compare_keeps_the_users_choices_across_page_switches():
    """Leaving Compare and coming back keeps the profile line, the chosen results and the
    toggles (Streamlit forgets widgets a run does not draw; the app puts them back)."""
    at = _app()
    _run_method(at, "wiener")
    _run_method(at, "wiener", window=9)
    at.switch_page("pages/compare.py").run()
    at.number_input(key="prof_r0").set_value(10).run()
    at.number_input(key="prof_c1").set_value(200).run()
    at.multiselect(key="compare_chosen").set_value(["wiener #1"]).run()
    at.toggle(key="cmp_residual").set_value(True).run()
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/denoise.py").run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    ss = at.session_state
    assert (ss["prof_r0"], ss["prof_c1"]) == (10, 200), (ss["prof_r0"], ss["prof_c1"])
    assert ss["compare_chosen"] == ["wiener #1"] and ss["cmp_residual"] is True
    spec = str(at.get("plotly_chart")[1].proto.spec)
    assert "wiener #1" in spec and "wiener #2" not in spec  # the profile is drawn for the kept choice
    assert not any("zero length" in e.value for e in at.error)
