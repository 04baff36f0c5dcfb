"""A newcomer's first minutes (issue 25), in-process through AppTest: after a Validate report and an Attack
Lab run were recorded, every button on every page can be pressed without a traceback, and the Leaderboard
never pools one-image runs into a matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.evaluation import leaderboard
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
        present = [b for b in at.button if b.label == label]
        if not present:  # an earlier button changed the page
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
        "lab.PAGES = Path(__file__).parent / 'views'\n"
        "lab.main()\n"
    )
    at = AppTest.from_file(str(app), default_timeout=60).run()
    assert not at.exception
    (line,) = at.error
    assert UNEXPECTED in line.value and "RuntimeError" in line.value
    (details,) = at.expander
    assert details.label == "details" and "boom" in details.code[0].value
