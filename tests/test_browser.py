"""The dashboard in a real headless Chromium (Playwright): the Attack Lab attacks an MNIST digit, Stop keeps
the best-so-far result, and the README's screenshots are saved (assets/screenshots/)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "assets" / "screenshots"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true"]
        + ["--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env=os.environ.copy(),  # INTRIGUING_* and TORCH_HOME from conftest
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_lab(browser, url):
    """The Home page, then the Attack Lab through the sidebar (as a visitor would)."""
    page = browser.new_page(viewport={"width": 1400, "height": 2300})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("heading", name="intriguing-lab").wait_for()
    page.get_by_test_id("stSidebarNav").get_by_text("Attack Lab").click()
    page.get_by_text("what the model sees").wait_for()
    return page


def choose(page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def settle(page) -> None:
    """Wait until Streamlit has finished the rerun a widget change started."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


def test_home_page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_role("heading", name="intriguing-lab").wait_for()
    page.get_by_text("Original | perturbation | adversarial").wait_for()
    page.wait_for_timeout(1000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "home.png"))
    page.close()


def test_attack_lab_attacks_a_digit(browser, app_url):
    page = open_lab(browser, app_url)
    page.get_by_text("by index", exact=True).click()
    settle(page)
    set_number(page, "Index (0-9999)", 0)
    settle(page)
    assert page.get_by_test_id("stMetric").filter(has_text="True label").inner_text().endswith("7")
    choose(page, "Attack", "L-BFGS (box-constrained, the paper's)")  # the default, with the paper's settings
    settle(page)

    page.locator(".st-key-lab_go button").click()
    page.get_by_text("adversarial, iteration").first.wait_for()
    page.get_by_text("finished after").wait_for()
    page.get_by_text("other models are fooled too", exact=False).or_(
        page.get_by_text("No other model of this input domain")
    ).first.wait_for()
    success = page.get_by_test_id("stMetric").filter(has_text="Success")
    assert success.inner_text().splitlines()[-1] == "yes"
    rms = page.get_by_test_id("stMetric").filter(has_text="RMS distortion").inner_text().splitlines()[-1]
    assert 0 < float(rms) < 0.3
    assert page.get_by_text("search round", exact=False).count() > 0
    page.get_by_role("button", name="Adversarial image (PNG)").wait_for()
    page.wait_for_timeout(1500)  # let the last charts draw
    page.screenshot(path=str(SHOTS / "attack_lab.png"))
    page.close()


def test_stop_keeps_the_best_result_so_far(browser, app_url):
    page = open_lab(browser, app_url)
    choose(page, "Attack", "PGD")
    page.get_by_text("Parameters").click()
    set_number(page, "Steps", 2000)
    settle(page)
    page.locator(".st-key-lab_go button").click()
    page.get_by_text("adversarial, iteration").first.wait_for()
    page.locator(".st-key-lab_stop button").click()  # not the header's Stop
    page.get_by_text("stopped after").wait_for()
    page.get_by_text("Stopped early").wait_for()
    steps = int(page.get_by_text("stopped after").inner_text().split("stopped after ")[1].split()[0])
    assert 0 < steps < 2000
    assert page.get_by_test_id("stMetric").filter(has_text="Iterations").inner_text().splitlines()[-1] == str(
        steps
    )
    page.close()


def test_a_drawn_digit_is_what_the_model_sees(browser, app_url):
    """streamlit-drawable-canvas works with the installed Streamlit: a drawn stroke reaches the model."""
    page = open_lab(browser, app_url)
    page.get_by_text("Draw", exact=True).click()
    page.get_by_text("Draw one digit").wait_for()
    canvas = page.locator(".st-key-lab_canvas canvas").last
    canvas.wait_for()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 21):  # a vertical stroke: a "1"
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 40 + step * 10)
    page.mouse.up()
    page.get_by_text("what the model sees").wait_for()
    prediction = page.get_by_test_id("stMetric").filter(has_text="Model's prediction").inner_text()
    lines = [line for line in prediction.splitlines() if line.strip()]  # label, value, confidence
    assert lines[1] == "1"
    page.close()


def test_direction_lab_opens_a_linked_direction_and_optimises_it_live(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{app_url}/unit_explorer?model=cnn&layer=fc1&direction=unit:4")
    page.get_by_role("heading", name="Direction Lab").wait_for()
    page.get_by_text("held-out top-8 of unit:4").wait_for()
    page.locator(".st-key-fv_go button").click()
    page.get_by_text("finished after").wait_for()
    assert "best image found" in page.content()
    page.get_by_text("Feature visualisation: the input").scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "direction_lab.png"))
    page.close()


def test_defences_page_names_the_indicators_behind_a_verdict(browser, app_url):
    """Indicators of attack failure in the browser: bit-depth reduction only seems to hold, and the verdict
    says which indicators fired on the plain attack."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_test_id("stSidebarNav").get_by_text("Defences").click()
    page.get_by_role("button", name="Evaluate").wait_for()
    set_number(page, "MNIST test images", 10)
    settle(page)
    page.get_by_role("button", name="Evaluate").click()
    verdict = page.get_by_test_id("stAlert").filter(has_text="bit depth 2")
    verdict.wait_for()
    assert "Only seems to hold" in verdict.inner_text()
    assert "non-differentiable preprocessing" in verdict.inner_text()
    page.close()
