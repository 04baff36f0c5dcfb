"""Your own network in a real headless Chromium (issue 21): an ONNX export added through the sidebar's
"Add a model" form, attacked in the Attack Lab, and the copied link opened in a fresh browser context
replays the same run on the same registered model."""

from __future__ import annotations

import warnings

import pytest
import torch
from browser_support import streamlit_server
from playwright.sync_api import expect
from test_browser import TIMEOUT_MS, VIEWPORT, browser, choose, chosen, run_button, set_number, settle

from core.models import load

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["browser"]  # the shared Chromium fixture

CARD = 'input = [1, 28, 28]\nclasses = ["0","1","2","3","4","5","6","7","8","9"]\ndomain = "mnist"\n'
NUMBERS = ("Success", "RMS distortion", "L2", "Linf", "Iterations")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A dashboard with a cache folder of its own: what the page registers stays in this test."""
    with streamlit_server({"INTRIGUING_CACHE_DIR": str(tmp_path_factory.mktemp("browser_cache"))}) as url:
        yield url


def _onnx_upload(folder):
    path, card = folder / "mine.onnx", folder / "mine.toml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(load("fc100-100-10", "cpu"), torch.zeros(1, 1, 28, 28), path, dynamo=False)
    card.write_text(CARD)
    return path, card


def _result(page) -> dict[str, str]:
    metric = page.get_by_test_id("stMetric")
    return {name: metric.filter(has_text=name).first.inner_text().splitlines()[-1] for name in NUMBERS}


def test_a_model_added_in_the_page_is_attacked_and_its_link_replays_in_a_fresh_browser(
    browser, server, tmp_path
):
    model, card = _onnx_upload(tmp_path)
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server}/attack_lab")
    page.get_by_text("what the model sees").wait_for()
    settle(page)
    page.get_by_text("Add a model").click()
    page.locator(".st-key-add_model_name input").fill("mine-onnx")
    page.locator(".st-key-add_model_name input").press("Enter")
    settle(page)
    for key, path in (("add_model_file", model), ("add_model_card", card)):  # one upload at a time, each
        page.locator(f".st-key-{key} input[type=file]").set_input_files(str(path))  # shown before the next
        page.locator(f".st-key-{key}").get_by_test_id("stFileChipName").filter(has_text=path.name).wait_for()
        settle(page)
    go = page.locator(".st-key-add_model_go button")
    expect(go).to_be_enabled()
    go.click()
    page.get_by_text("Added mine-onnx (onnx, 10 classes)").wait_for()
    settle(page)
    choose(page, "Model", "mine-onnx")
    settle(page)
    choose(page, "Attack", "PGD")
    settle(page)
    page.get_by_text("Parameters").click()
    set_number(page, "Steps", 20)
    settle(page)
    run_button(page).click()
    page.get_by_text("finished after").wait_for()
    page.get_by_text("PGD on mine-onnx, mnist test #0").wait_for()
    first = _result(page)
    link = page.url
    page.close()
    assert "lab_model=mine-onnx" in link and "lab_replay=1" in link

    context = browser.new_context(viewport=VIEWPORT)  # no cookies, no session: only the link
    fresh = context.new_page()
    fresh.set_default_timeout(TIMEOUT_MS)
    fresh.goto(link)
    fresh.get_by_text("finished after").wait_for()  # the link names the run: it replays without Run
    assert chosen(fresh, "Model") == "mine-onnx"
    assert fresh.get_by_text("PGD on mine-onnx, mnist test #0").count() == 1
    assert _result(fresh) == first
    context.close()
