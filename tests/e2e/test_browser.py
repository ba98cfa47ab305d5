"""Real-browser test: headless Debian Chromium, driven by Playwright, against the running app.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (installed by ``.ci/run``).
The screenshot lands in ``artifacts/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: .ci/run should have installed Debian's 'chromium'.")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium).")
    port = _free_port()
    # The server's output goes to a file: an unread pipe fills up and then blocks the server.
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"server-{port}.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail("The app exited while starting: " + log.read().decode(errors="replace")[-2000:])
        else:
            pytest.fail("The app did not answer on /_stcore/health within 90 s.")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 2600})
        yield pg
        browser.close()


def test_pick_example_and_preview(app_url, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url, wait_until="domcontentloaded")
    # The first page shows the default HRTEM example without any upload.
    page.get_by_text("Simulated HRTEM", exact=False).first.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)

    # Pick the EDS + HAADF example from the selectbox.
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="EDS", exact=False).first.click()
    page.get_by_text("Energy axis", exact=False).first.wait_for(timeout=90_000)
    page.get_by_text("HAADF", exact=True).first.wait_for(timeout=60_000)
    # spectrum + data map + ground truth map + HAADF
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
    page.wait_for_timeout(1000)  # let Plotly finish drawing before the picture
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(ARTIFACTS / "data_page_eds.png"), full_page=True)
    assert (ARTIFACTS / "data_page_eds.png").stat().st_size > 10_000


def test_compare_two_results_side_by_side(app_url, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url, wait_until="domcontentloaded")
    page.get_by_text("Simulated HRTEM", exact=False).first.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.get_by_role("link", name="Denoise").first.click()
    run = page.get_by_role("button", name="Run")
    run.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    run.click()  # BM3D, the first method in the list
    page.get_by_text("finished: bm3d #1", exact=False).first.wait_for(timeout=180_000)
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="Wiener filter", exact=False).first.click()
    page.get_by_text("Mode", exact=True).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # let the rerun that built the Wiener form settle before clicking
    page.get_by_role("button", name="Run").click()
    page.get_by_text("finished: wiener #1", exact=False).first.wait_for(timeout=120_000)
    page.get_by_role("link", name="Compare").first.click()
    page.get_by_text("Intensity profile line", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000)
    page.wait_for_timeout(1500)
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_text("wiener #1", exact=False).count() > 0
    page.screenshot(path=str(ARTIFACTS / "compare_two_results.png"), full_page=True)
    # Clicking two points on an image moves the start, then the end, of the profile line.
    before = page.get_by_label("Start row").input_value(), page.get_by_label("End col").input_value()
    panel = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first
    box = panel.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    _wait_value_change(page, "Start row", before[0])
    page.wait_for_timeout(2000)  # the chart is redrawn (new key) after each click
    box = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.7)
    _wait_value_change(page, "End col", before[1])
    start_row = int(page.get_by_label("Start row").input_value())
    end_col = int(page.get_by_label("End col").input_value())
    assert start_row < 256 < end_col  # upper-left click, then lower-right click, on a 512² image


def _wait_value_change(page, label: str, old: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.get_by_label(label).input_value() != old:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"{label} stayed at {old} after the click")
