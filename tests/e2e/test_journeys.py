# ruff: noqa: F811 - pytest fixtures imported from test_browser are parameters of the helpers and tests
"""Real-browser user journeys: headless Debian Chromium, driven by Playwright, against the app.

One browser session walks through them in order (each builds on the last, as a user would):
run two methods and tune the profile on Compare, leave and come back (choices kept); switch
to another dataset and back (results back); start count-split validation and keep using the
page while it runs, then stop it; train a learned method and see a loss chart that is not
blank. A screenshot of each journey lands in ``artifacts/e2e/<journey>.png`` (git-ignored).
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_browser import ARTIFACTS, app_url, page  # noqa: F401 - the fixtures

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "e2e"


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # let Plotly finish drawing
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").stat().st_size > 10_000


def _go(page, title: str, wait_text: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_text(wait_text, exact=False).first.wait_for(timeout=60_000)
    page.wait_for_timeout(800)


def _choose(page, label: str, option: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first
    box.click()
    page.get_by_role("option", name=option, exact=False).first.click()
    page.wait_for_timeout(1200)


def _set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True).first
    field.fill(str(value))
    field.press("Enter")
    page.wait_for_timeout(1200)


def _run(page, done_text: str, timeout_s: float = 120) -> None:
    button = page.get_by_role("button", name="Run", exact=True)
    try:
        button.click(timeout=60_000)
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "failed_run.png"), full_page=True)
        raise
    page.get_by_text(done_text, exact=False).first.wait_for(timeout=timeout_s * 1000)
    page.wait_for_timeout(800)


def test_1_two_methods_profile_tuned_kept_across_pages(app_url, page):
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_text("Simulated HRTEM", exact=False).first.wait_for(timeout=60_000)
    _go(page, "Denoise", "Method")
    _choose(page, "Method", "Wiener filter")
    _run(page, "finished: wiener #1")
    _choose(page, "Method", "UNet")
    _run(page, "finished: unet #1")
    _go(page, "Compare", "Intensity profile line")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000)
    _set_number(page, "Start row", 100)
    _set_number(page, "End col", 400)
    page.wait_for_timeout(3000)  # the reruns these values started, on a busy machine
    tuned = [page.get_by_label(x, exact=True).first.input_value() for x in ("Start row", "End col")]
    page.get_by_text("Shared contrast", exact=True).click()  # a toggle the user changed
    page.wait_for_timeout(1200)
    assert not page.get_by_role("switch", name="Shared contrast").is_checked()
    page.wait_for_timeout(1200)
    _go(page, "Data", "Preview")
    _go(page, "Compare", "Intensity profile line")
    page.wait_for_timeout(2000)
    assert page.get_by_text("unet #1", exact=False).count() > 0 and page.get_by_text("wiener #1").count() > 0
    _shot(page, "two_methods_profile_kept")
    back = [page.get_by_label(x, exact=True).first.input_value() for x in ("Start row", "End col")]
    shared = page.get_by_role("switch", name="Shared contrast").is_checked()
    assert back == tuned and not shared, f"Compare choices not kept: profile {tuned} -> {back}, shared on: {shared}"


def test_2_switch_dataset_and_back_brings_results_back(app_url, page):
    _go(page, "Data", "Preview")
    _choose(page, "Example", "EDS")
    page.get_by_text("Energy axis", exact=False).first.wait_for(timeout=90_000)
    _go(page, "Compare", "other dataset(s) of this session")  # the HRTEM results are offered, not lost
    _go(page, "Data", "Preview")
    _choose(page, "Example", "HRTEM")
    page.get_by_text("Simulated HRTEM", exact=False).first.wait_for(timeout=60_000)
    _go(page, "Compare", "Intensity profile line")
    page.get_by_text("wiener #1", exact=False).first.wait_for(timeout=30_000)
    assert page.get_by_text("unet #1", exact=False).count() > 0
    _shot(page, "switch_dataset_and_back")


def test_3_count_split_runs_while_the_page_answers_then_stops(app_url, page):
    # On Compare with the HRTEM results (counts): the check re-runs both methods on a half.
    start = page.get_by_role("button", name="Run count-split validation on the selected results")
    start.wait_for(timeout=30_000)
    start.click()
    stop = page.get_by_role("button", name="Stop", exact=True)
    stop.first.wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Run count-split validation on the selected results").is_disabled()
    # not frozen: a toggle changed while the check runs redraws the panels as residuals
    page.get_by_text("Show residuals (input − result)", exact=True).click()
    page.get_by_text("residual", exact=False).first.wait_for(timeout=20_000)
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot')].some(g => (g.layout.annotations || [])"
        ".some(a => (a.text || '').includes('residual')))", timeout=20_000)
    _shot(page, "count_split_running")
    if stop.count():  # still running: Stop ends it
        # The progress fragment redraws the button while the check runs, so one click can meet a
        # detached element; click again until the button is gone (or the check ended on its own).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and stop.count():
            try:
                stop.first.click(timeout=3_000)
            except Exception as e:  # playwright's TimeoutError: the button moved; look again
                if "Timeout" not in type(e).__name__:
                    raise
            page.wait_for_timeout(500)
        assert stop.count() == 0, "Stop did not end the check"
    else:  # it finished first (a fast machine): its table is there
        page.get_by_text("what it means", exact=False).first.wait_for(state="attached", timeout=30_000)
    assert page.get_by_role("button", name="Run count-split validation on the selected results").is_enabled()


def test_4_loss_chart_of_a_learned_method_is_not_blank(app_url, page):
    _go(page, "Data", "Preview")
    _choose(page, "Example", "EDS")
    page.get_by_text("Energy axis", exact=False).first.wait_for(timeout=90_000)
    _go(page, "Denoise", "Method")
    _choose(page, "Method", "3D-DCAE")
    _set_number(page, "Training steps", 3)
    _run(page, "finished: dcae3d #1", timeout_s=150)
    page.get_by_text("Training curves of dcae3d #1", exact=False).first.click()
    check = """() => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')]
            .find(g => g.layout && g.layout.yaxis && ((g.layout.yaxis.title || {}).text === 'loss'));
        if (!gd) return null;
        const tr = gd.data.find(t => t.name === 'training loss');
        const ys = Array.from(tr ? tr.y : []);
        const r = gd._fullLayout.yaxis.range;
        return {n: ys.length, finite: r.every(Number.isFinite), type: gd._fullLayout.yaxis.type,
                drawable: gd._fullLayout.yaxis.type !== 'log' || ys.every(y => y > 0)};
    }"""
    page.wait_for_function(f"({check})() !== null", timeout=30_000)
    chart = page.evaluate(check)
    assert chart["n"] >= 1 and chart["finite"] and chart["drawable"], chart
    _shot(page, "loss_chart_learned_method")
