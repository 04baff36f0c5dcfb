"""Every view is a link, on the pages beyond the Attack Lab and Validate (tests/test_dashboard.py): inputs set
in one session come back in a fresh session opened from the link, and hostile values give one notice and the
defaults. The Direction Lab's tests use the pixel judge (the default judge's features are the slow CLI test's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

VIEWS = Path(__file__).resolve().parents[1] / "dashboard" / "views"
KINDS = ("selectbox", "radio", "multiselect", "number_input", "slider", "text_input")
NOTICE = "replaced by the defaults"


def link_of(at: AppTest) -> dict[str, str | list[str]]:
    """The query a browser writes for the page's URL-bound widgets (its frontend writes the URL, so AppTest
    never sees it change): each bound widget's key and its value as shown."""
    link: dict[str, str | list[str]] = {}
    for kind in KINDS:
        for widget in getattr(at, kind):
            if not widget.proto.query_param_key:
                continue
            if kind in ("selectbox", "radio"):
                link[widget.key] = widget.options[widget.index]
            elif kind == "multiselect":
                link[widget.key] = [widget.options[i] for i in widget.indices]
            else:
                link[widget.key] = str(widget.value)
    return link


def opened(page: str, query: dict[str, Any] | None = None) -> AppTest:
    """The page opened in a fresh session, from a link when `query` is given."""
    at = AppTest.from_file(str(VIEWS / page), default_timeout=240)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def values(at: AppTest, keys) -> dict[str, Any]:
    return {key: at.session_state[key] for key in keys}


def round_trip(page: str, chosen: dict[str, Any], first: dict[str, str] | None = None) -> AppTest:
    """Set `chosen` in one session, open its link in a fresh one: the fresh session shows the same inputs,
    without a notice."""
    at = opened(page, first)
    for key, value in chosen.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception and values(at, chosen) == chosen  # the values were taken
    fresh = opened(page, link_of(at))
    assert not any(NOTICE in w.value for w in fresh.warning)
    assert values(fresh, chosen) == chosen
    return fresh


def refused(
    page: str, hostile: dict[str, Any], defaults: dict[str, Any], good: dict[str, str] | None = None
) -> AppTest:
    """A hostile link (beside `good` values): one notice that echoes no value, the defaults, no error, the
    hostile values out of the URL."""
    at = opened(page, {**hostile, **(good or {})})
    notices = [w.value for w in at.warning if w.icon == ":material/link_off:"]
    assert len(notices) == 1 and NOTICE in notices[0], notices
    shown = [v for value in hostile.values() for v in ([value] if isinstance(value, str) else value)]
    assert not any(len(v) > 2 and v in notices[0] for v in shown), notices[0]
    assert not at.error, [e.value for e in at.error]
    assert values(at, defaults) == defaults
    assert not set(hostile) & set(at.query_params)
    return at


HOSTILE_TEXT = ("<script>alert(1)</script>", "../../../etc/passwd", "1e999", "nan", "-3", "x" * 500)


# ---------------------------------------------------------------- Direction Lab


def test_a_direction_lab_link_restores_its_inputs():
    chosen = {"layer": "hidden1", "unit": 7, "seed": 5, "k": 6, "steps": 64, "direction": "random:4"}
    fresh = round_trip("unit_explorer.py", chosen, {"judge": "pixels"})
    assert fresh.selectbox(key="judge").value == "pixels"
    assert fresh.caption[0].value.startswith("unit 7 ·")
    assert any(c.value.startswith("random direction 0 (seed 5)") for c in fresh.caption)
    assert any(c.value.startswith("held-out top-6 of random:4") for c in fresh.caption)


def test_a_hostile_direction_lab_link_gives_one_notice_and_reads_no_folder():
    hostile = {
        "model": HOSTILE_TEXT[0],
        "layer": HOSTILE_TEXT[5],
        "unit": "99999",  # checked once the layer's width is known: the same notice
        "seed": HOSTILE_TEXT[2],
        "k": "1",
        "steps": HOSTILE_TEXT[3],
        "direction": HOSTILE_TEXT[1],
        "dl_folder": "/etc",  # the held-out folder is never URL state
        "dl_photo_source": "Folder on this machine",
    }
    defaults = {"model": "fc100-100-10", "layer": "hidden2", "unit": 0, "seed": 0, "k": 8, "steps": 256}
    at = refused("unit_explorer.py", hostile, defaults, {"judge": "pixels"})
    assert at.text_input(key="direction").value == "unit:0"
    notice = next(w.value for w in at.warning if NOTICE in w.value)
    assert all(f"`{key}`" in notice for key in ("model", "layer", "unit", "seed", "k", "steps", "direction"))
    assert "2 unknown settings" in notice
    assert "dl_folder" not in at.session_state


# ---------------------------------------------------------------- Transferability, Robustness, Defences


def test_a_transferability_link_restores_each_table_subset():
    chosen = {"tr_table2_n": 45, "tr_table2_seed": 3, "tr_table4_n": 10, "tr_table4_seed": 11}
    round_trip("transferability.py", chosen)


def test_a_hostile_transferability_link_gives_the_defaults():
    hostile = {"tr_table2_n": "501", "tr_table2_seed": HOSTILE_TEXT[2], "tr_table4_n": HOSTILE_TEXT[3]}
    refused("transferability.py", hostile, {"tr_table2_n": 30, "tr_table2_seed": 0, "tr_table4_n": 30})


def test_a_robustness_link_restores_the_network():
    round_trip("robustness.py", {"rb_model": "mobilenet_v2"})


def test_a_hostile_robustness_link_gives_the_default_network():
    refused("robustness.py", {"rb_model": HOSTILE_TEXT[1], "table": "table5"}, {"rb_model": "cnn"})


def test_a_defences_link_restores_presets_budget_and_seed():
    chosen = {
        "def_model": "cnn",
        "def_transforms": ["bits:2", "jpeg:50"],
        "def_attack": "fgsm",
        "def_eps": 0.3,
        "def_n": 50,
        "def_seed": 9,
    }
    round_trip("defences.py", chosen)


@pytest.mark.parametrize("transforms", [["bits:2", "<b>x</b>"], ["jpeg:75", "/etc/shadow"]])
def test_a_hostile_defences_link_gives_the_defaults(transforms):
    hostile = {
        "def_transforms": transforms,
        "def_eps": HOSTILE_TEXT[3],
        "def_n": "1e9",
        "def_steps": "0",
        "def_attack": HOSTILE_TEXT[0],
        "def_seed": str(2**31),
        "def_model": HOSTILE_TEXT[1],
    }
    defaults = {
        "def_transforms": ["bits:1", "bits:2", "median:3", "jpeg:75"],
        "def_eps": 0.2,
        "def_n": 100,
        "def_steps": 20,
        "def_attack": "pgd",
        "def_seed": 0,
        "def_model": "fc100-100-10",
    }
    refused("defences.py", hostile, defaults)


# ---------------------------------------------------------------- Leaderboard


@pytest.fixture
def small_leaderboard(tmp_path, monkeypatch):
    """A leaderboard with runs under two protocols, so the protocol choice means something."""
    from core.evaluation import leaderboard
    from core.evaluation.protocol import Protocol

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "lb.sqlite"))
    for n in (20, 30):
        leaderboard.record_run(
            model="fc10-1", attack="deepfool", params={}, n=n, success_rate=1.0, median_rms=0.05,
            dataset="mnist", source="test", protocol=Protocol(n=n), versions={"torch": "x"},
        )  # fmt: skip
    return Protocol(n=20).fingerprint


def test_a_leaderboard_link_restores_domain_source_and_protocol(small_leaderboard):
    at = round_trip("leaderboard.py", {"lb_source": "cli", "lb_protocol": small_leaderboard})
    assert at.session_state["lb_dataset"] == "mnist"


def test_a_hostile_leaderboard_link_gives_the_defaults(small_leaderboard):
    hostile = {"lb_dataset": HOSTILE_TEXT[0], "lb_source": HOSTILE_TEXT[1], "lb_protocol": HOSTILE_TEXT[4]}
    refused("leaderboard.py", hostile, {"lb_dataset": "mnist", "lb_source": "all"})
