"""Entry point: `intriguing dashboard` or `streamlit run dashboard/app.py`. One file a page in views/."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from a plain checkout
    sys.path.insert(0, str(ROOT))

# pandas is imported in full before any page runs: plotly peeks at sys.modules["pandas"] without importing it,
# and while another session's thread was still importing pandas it saw a half-initialised module
# (AttributeError in one of 8 concurrent sessions; tests/test_load.py).
import pandas  # noqa: E402, F401
import streamlit as st  # noqa: E402

# core before any page: it makes OpenMP wait passively, which must happen before torch is first imported.
import core  # noqa: E402, F401
from core.config import ASSETS_DIR  # noqa: E402
from dashboard.common import show_error  # noqa: E402
from dashboard.model_picker import add_panel  # noqa: E402

# Not "pages/": Streamlit treats a pages/ folder beside the main script as a legacy multipage app, and a
# page URL opened before "/" then ran that file alone, without this navigation.
PAGES = Path(__file__).parent / "views"

# (file, title, icon); a page appears once its file exists.
NAVIGATION = {
    "Overview": [("home.py", "Home", ":material/home:"), ("tour.py", "Guided tour", ":material/tour:")],
    "Adversarial examples": [
        ("attack_lab.py", "Attack Lab", ":material/bolt:"),
        ("validate.py", "Validate a prediction", ":material/verified:"),
        ("transferability.py", "Transferability", ":material/swap_horiz:"),
        ("robustness.py", "Robustness", ":material/shield:"),
        ("defences.py", "Defences", ":material/security:"),
        ("leaderboard.py", "Leaderboard", ":material/leaderboard:"),
    ],
    "Units vs random directions": [("unit_explorer.py", "Direction Lab", ":material/grid_view:")],
}


def main() -> None:
    # A local icon: nothing is fetched from the internet (an emoji or icon name would be).
    st.set_page_config(page_title="intriguing-lab", page_icon=str(ASSETS_DIR / "icon.png"), layout="wide")
    pages = {
        section: [
            st.Page(str(PAGES / file), title=title, icon=icon, default=(file == "home.py"))
            for file, title, icon in entries
            if (PAGES / file).is_file()
        ]
        for section, entries in NAVIGATION.items()
    }
    page = st.navigation({k: v for k, v in pages.items() if v})
    add_panel()  # "Add a model" / "Add a dataset" (dashboard/model_picker.py), atop every page's sidebar
    try:  # the one error boundary of every page's actions (st.stop and st.rerun are BaseExceptions)
        page.run()
    except Exception as exc:  # noqa: BLE001 - anything a page did not foresee: one line and its details
        show_error(exc)


if __name__ == "__main__":  # Streamlit runs this file as __main__; pages import NAVIGATION
    main()
