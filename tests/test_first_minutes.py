"""A newcomer's first minutes (issue 25), in-process through AppTest: after a Validate report and an Attack
Lab run were recorded, every button on every page can be pressed without a traceback, and the Leaderboard
never pools one-image runs into a matrix."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data import load_mnist
from core.evaluation import leaderboard
from core.experiments import read_card, table4
from core.experiments.adversarial import amplify
from core.lab import LiveRun, make_lab_attack
from core.models import load
from dashboard.common import UNEXPECTED

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PAGES = sorted(p.name for p in (ROOT / "dashboard" / "views").glob("*.py"))
SECOND_MODEL = "fc10-1"  # a model without runs, so the Leaderboard has cells to fill


def failures(at: AppTest) -> list[str]:
    """Streamlit's traceback boxes and the error boundary's unexpected-failure lines on the page."""
    return [str(e.value) for e in at.exception] + [e.value for e in at.error if UNEXPECTED in e.value]


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}")
    return at.run()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A private leaderboard holding what a newcomer's first Validate report and Attack Lab run record."""
    path = tmp_path_factory.mktemp("first") / "leaderboard.sqlite"
    patch = pytest.MonkeyPatch()
    patch.setenv(leaderboard.DB_ENV, str(path))
    at = AppTest.from_file(APP, default_timeout=600).run()
    at.query_params["val_ref_n"] = "5"  # the smallest reference the page allows: the test stays short
    open_page(at, "validate.py")
    at.button(key="val_go").click().run()
    assert not failures(at)
    open_page(at, "attack_lab.py")
    at.button(key="lab_go").click().run()
    assert not failures(at)
    sources = {r.source for r in leaderboard.runs()}
    assert sources == {"dashboard"} and len(leaderboard.runs()) > 2  # report rows and the lab's run
    yield path
    patch.undo()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_button_on_every_page_after_a_report_and_a_lab_run(recorded, page):
    at = AppTest.from_file(APP, default_timeout=600).run()
    open_page(at, page)
    assert not failures(at), failures(at)
    if page == "leaderboard.py":  # a second model: the newcomer's next step, cells to fill
        chosen = at.multiselect(key="lb_models")
        chosen.set_value([*chosen.value, SECOND_MODEL]).run()
    labels = [b.label for b in at.button]
    if page == "leaderboard.py":
        assert any(label.startswith("Fill") for label in labels), labels
    for label in labels:
        present = [b for b in at.button if b.label == label and not b.disabled]
        if not present:  # an earlier button changed the page, or it waits for input (the model picker's Add)
            continue
        present[0].click().run()
        assert not failures(at), (page, label, failures(at))


def test_the_error_boundary_turns_a_crash_into_one_line_and_details(tmp_path):
    """A page that raises something unforeseen shows one friendly line and a details expander."""
    views = tmp_path / "views"
    views.mkdir()
    (views / "home.py").write_text("raise RuntimeError('boom')\n")
    app = tmp_path / "app.py"
    app.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\n"
        "import dashboard.app as lab\n"
        "saved, lab.PAGES = lab.PAGES, Path(__file__).parent / 'views'\n"
        "try:\n    lab.main()\nfinally:\n    lab.PAGES = saved  # the module is shared with later tests\n"
    )
    at = AppTest.from_file(str(app), default_timeout=60).run()
    assert not at.exception
    (line,) = at.error
    assert UNEXPECTED in line.value and "RuntimeError" in line.value
    (details,) = at.main.expander  # the sidebar holds the model picker's own expanders
    assert details.label == "details" and "boom" in details.code[0].value


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.mark.slow
def test_after_a_run_the_link_names_it_and_a_fresh_session_replays_it():
    """Issue 25 item 7: the URL a user copies after Run opens on the same result, without pressing Run."""
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "attack_lab.py"), default_timeout=240).run()
    at.number_input(key="lab_idx").set_value(3)
    at.button(key="lab_go").click().run()
    assert not failures(at)
    shown = metrics(at)
    assert at.query_params.get("lab_replay") == "1", dict(at.query_params)
    # a browser's frontend writes the bound widgets' values into the URL; AppTest never sees that part
    link = {"lab_idx": "3", **dict(at.query_params)}
    fresh = AppTest.from_file(str(ROOT / "dashboard" / "views" / "attack_lab.py"), default_timeout=240)
    fresh.query_params.update(link)
    fresh.run()
    assert not failures(fresh)
    replayed = metrics(fresh)
    assert replayed["Success"] == "yes"
    for label in ("Prediction", "RMS distortion", "L2", "Linf"):
        assert replayed[label] == shown[label], label  # recomputed, deterministic for the seed


@pytest.mark.slow
def test_the_tour_links_open_the_lab_on_its_run():
    at = open_page(AppTest.from_file(APP, default_timeout=240).run(), "tour.py")
    (query,) = {el.proto.query_string for el in at.get("page_link") if "attack_lab" in el.proto.page}
    lab = AppTest.from_file(str(ROOT / "dashboard" / "views" / "attack_lab.py"), default_timeout=240)
    lab.query_params.update(dict(parse_qsl(query)))
    lab.run()
    assert not failures(lab)
    assert metrics(lab)["Success"] == "yes"  # the tour's run, on screen without pressing Run


@pytest.mark.slow
def test_a_validate_link_that_names_a_report_shows_it_without_pressing_validate():
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "validate.py"), default_timeout=600)
    at.query_params.update({"val_ref_n": "5", "val_replay": "1"})
    at.run()
    assert not failures(at)
    assert at.get("download_button"), "the report (and its downloads) should be on the page"
    # item 6: the indicators were checked, and the page says so whether or not one fired
    passed = [x for x in at.expander if "checks passed" in x.label]
    assert passed or any("Fix:" in w.value for w in at.warning)


def test_the_tour_transfer_step_shows_the_rate_and_an_example_that_demonstrates_it():
    """Issue 25 item 4: the rate over many images from the stored Table 4 card, at what distortion, and the
    tour's example amplified to that distortion fooling other networks (checked afresh here)."""
    rates = table4.transfer_rates(read_card(table4.NAME))
    at = open_page(AppTest.from_file(APP, default_timeout=240).run(), "tour.py")
    assert not failures(at)
    (sentence,) = [m.value for m in at.markdown if "Transfer is a rate" in m.value]
    assert f"{rates.n:,} examples" in sentence and f"RMS {rates.amplify_rms:g}" in sentence
    (shown,) = at.dataframe
    column = f"at RMS {rates.amplify_rms:g}"
    fooled = shown.value[shown.value[column]]["model"].tolist()
    assert fooled, "the example should demonstrate the rate: fool at least one other network"
    live_model = load("fc100-100-10", "cpu")
    x = load_mnist("test").images[:1]
    live = LiveRun(make_lab_attack("lbfgs", live_model, 0), x, int(live_model(x).argmax()), seed=0)
    for _ in live.frames(min_interval=3600.0):
        pass
    result = live.result()
    bigger = amplify(result.x, result.x_adv, rates.amplify_rms)
    assert abs(float((bigger - result.x).pow(2).mean().sqrt()) - rates.amplify_rms) < 0.02  # clipping
    with torch.no_grad():
        for name in fooled:
            assert load(name, "cpu")(bigger).argmax(1).item() != 7  # test image 0 is a 7


@pytest.mark.slow
def test_result_metrics_say_which_time_and_draw_no_arrow_on_a_label():
    """Issue 25 item 8: 'was 7' is a label, not an increase (no arrow); the attack's time is named as such."""
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "attack_lab.py"), default_timeout=240)
    at.query_params.update({"lab_replay": "1", "lab_attack": "FGSM"})
    at.run()
    assert not failures(at)
    shown = {m.label: m for m in at.metric}
    assert "Attack time" in shown and "Time" not in shown
    for metric in at.metric:
        if metric.proto.delta:
            assert metric.proto.direction == metric.proto.NONE, (metric.label, metric.proto.delta)
