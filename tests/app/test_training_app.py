"""AppTest of the supervised networks on the Denoise page: shipped weights, uploads, training."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app


def _app() -> AppTest:
    return open_app(120)


def _wait(at, timeout=180, seen=None):
    from emcore.jobs import manager

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = at.session_state["owner_id"]
        active = [j for j in manager().jobs_for(owner) if j.active]
        if not active:
            at.run()
            return
        if seen is not None and active[0].state == "running" and active[0].history:
            at.run()  # the polling fragment's view of a running training job
            seen.append({"progress": bool(at.get("progress")), "charts": len(at.get("plotly_chart")),
                         "stop": any(b.label == "Stop" for b in at.button)})
            seen = None
        time.sleep(0.2)
    raise AssertionError("the job did not finish in time")


def _results(at):
    return list(at.session_state["results"]) if "results" in at.session_state else []


def test_unet_with_shipped_weights_gives_a_result():
    at = _app()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("unet").run()
    assert at.selectbox(key="p_unet_weights_source").value == "shipped"
    next(b for b in at.button if b.label == "Run").click().run()
    _wait(at)
    assert not at.exception and at.success, [e.value for e in at.error]
    (res,) = _results(at)
    assert res["method"] == "unet" and "apply" in res["artifacts"]


def _train_now(**settings):
    """The Denoise page with UNet set to train now with ``settings``, Run pressed."""
    at = _app()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("unet").run()
    at.selectbox(key="p_unet_weights_source").set_value("train").run()
    for name, value in settings.items():
        at.number_input(key=f"p_unet_{name}").set_value(value)
    next(b for b in at.button if b.label == "Run").click().run()
    return at


def test_train_tiny_unet_from_the_page_shows_live_loss_and_result_reaches_compare():
    at = _train_now(steps=40, batch_size=2, patch_size=64)
    assert not at.exception, [e.value for e in at.exception]
    seen: list = []
    _wait(at, seen=seen)
    assert not at.exception, [e.value for e in at.exception]
    assert seen and seen[0]["progress"] and seen[0]["stop"], seen
    assert seen[0]["charts"] >= 1, "the live loss chart is drawn while training"
    assert at.success, [e.value for e in at.error]
    (res,) = _results(at)
    assert res["params"]["steps_done"] >= 1 and res["artifacts"]["training"]
    done = next(m.value for m in at.success if "unet #1" in m.value)
    assert "the whole job took" in done and "(training " in done and "denoising " in done, done
    assert any(b.label.startswith("Download the weights") for b in at.get("download_button"))
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]


def test_too_short_training_warns_that_the_network_is_worse_than_its_input():
    """Two steps from scratch give a network less faithful than the noisy data: the page says so,
    and draws the validation PSNR on its own axis against the noisy input's."""
    import json

    at = _train_now(steps=2, batch_size=1, patch_size=32)
    _wait(at)
    assert not at.exception, [e.value for e in at.exception]
    (res,) = _results(at)
    card = res["artifacts"]["card"]
    assert card["validation_input_psnr_db"] is not None
    assert card["warning"] and any("worse than its noisy input" in line for line in res["log"])
    assert any("worse than its noisy input" in w.value for w in at.warning), [w.value for w in at.warning]
    at.run()  # the note is shown once; the warning beside the training curves stays
    assert any("worse than its noisy input" in w.value for w in at.warning)
    fig = json.loads(at.get("plotly_chart")[-1].proto.spec)
    names = [t.get("name") for t in fig["data"]]
    assert "validation PSNR (dB)" in names
    psnr = next(t for t in fig["data"] if t.get("name") == "validation PSNR (dB)")
    assert psnr["yaxis"] == "y2" and fig["layout"]["yaxis2"]["title"]["text"] == "validation PSNR (dB)"


def test_noise2noise_needs_a_stack_and_bad_weights_get_a_sentence():
    at = _app()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("dncnn").run()
    at.selectbox(key="p_dncnn_weights_source").set_value("train").run()
    assert not any("Noise2Noise" in o for o in at.selectbox(key="p_dncnn_training_data").options)
    at.selectbox(key="p_dncnn_weights_source").set_value("file").run()
    assert not at.exception
    next(b for b in at.button if b.label == "Run").click().run()
    assert any("needs a weights file" in e.value for e in at.error)
    assert not _results(at)

