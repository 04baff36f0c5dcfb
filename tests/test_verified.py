"""Verified beside attack robust accuracy (core.evaluation.verified) and the Leaderboard's table of it: the
best bound certificate from below, the strongest attack (or a sweep's worst case) from above, and a reason
wherever no certificate is recorded or none can be."""

import json
from pathlib import Path

from core.evaluation import leaderboard
from core.evaluation.protocol import Protocol
from core.evaluation.verified import brackets
from core.experiments.certify import stored_brackets
from core.experiments.writer import RESULTS_DIR
from tests.test_leaderboard import _record, _seed_sweep

PROTOCOL = Protocol(n=100)
PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "leaderboard.py")


def _seed(path) -> None:
    """fc100-100-10-ibp at linf 0.1: two attack cells (pgd the stronger), IBP and CROWN certificates, and
    a smoothing certificate that must not count (it certifies the smoothed classifier, not the net)."""
    for attack, rate in (("pgd", 0.3), ("fgsm", 0.2)):
        _record(path, model="fc100-100-10-ibp", attack=attack, norm="linf", budget=0.1, success_rate=rate,
                n=100, protocol=PROTOCOL)  # fmt: skip
    for method, certified in (("crown", 60), ("ibp", 65), ("smoothing", 99)):
        leaderboard.record_certificate(model="fc100-100-10-ibp", method=method, norm="linf", budget=0.1,
                                       n=100, certified=certified, protocol=PROTOCOL, path=path)  # fmt: skip
    for model in ("fc100-100-10", "cnn-robust"):
        _record(path, model=model, attack="pgd", norm="linf", budget=0.1, success_rate=0.9, n=100,
                protocol=PROTOCOL)  # fmt: skip


def test_the_best_bound_and_the_strongest_attack_bracket_each_budget(tmp_path):
    db = tmp_path / "lb.sqlite"
    _seed(db)
    rows = {r.model: r for r in brackets(PROTOCOL.fingerprint, PROTOCOL, path=db)}
    ibp = rows["fc100-100-10-ibp"]
    assert (ibp.verified, ibp.verified_by, ibp.note) == (0.65, "ibp (n=100)", "")
    assert ibp.attack == 0.7 and ibp.attack_from.startswith("pgd")
    plain = rows["fc100-100-10"]
    assert plain.verified is None
    assert "intriguing certify --model fc100-100-10 --norm linf --eps 0.1 --n 100" in plain.note
    assert rows["cnn-robust"].verified is None  # the bounds cover its StridedCNN: only the run is missing
    assert "intriguing certify --model cnn-robust --norm linf --eps 0.1 --n 100" in rows["cnn-robust"].note


def test_a_sweep_worst_case_replaces_the_strongest_cell(tmp_path):
    db = tmp_path / "lb.sqlite"
    _seed_sweep(db)  # fc10-1, linf 0.1, 4 images: fgsm's cell leaves 75%, the worst case per image 25%
    protocol = Protocol(n=4)
    leaderboard.record_certificate(model="fc10-1", method="exact", norm="linf", budget=0.1, n=4, certified=1,
                                   protocol=protocol, path=db)  # fmt: skip
    (row,) = brackets(protocol.fingerprint, protocol, path=db)
    assert (row.attack, row.verified) == (0.25, 0.25)
    assert row.attack_from.startswith("worst of")


def test_protocols_certify_cannot_choose_say_so(tmp_path):
    db = tmp_path / "lb.sqlite"
    shuffled = Protocol(n=100, order="random", seed=3)
    _record(db, model="fc10-1", attack="pgd", norm="linf", budget=0.1, success_rate=0.5, protocol=shuffled)
    (row,) = brackets(shuffled.fingerprint, shuffled, path=db)
    assert row.verified is None and "chooses others" in row.note


def test_leaderboard_page_shows_verified_beside_attack(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    db = tmp_path / "lb.sqlite"
    _seed(db)
    monkeypatch.setenv(leaderboard.DB_ENV, str(db))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    (shown,) = [d.value for d in at.dataframe if "why no certificate" in d.value.columns]
    rows = {m: row for m, row in zip(shown["model"], shown.to_dict("records"), strict=True)}
    assert (rows["fc100-100-10-ibp"]["verified"], rows["fc100-100-10-ibp"]["attack"]) == ("65.0%", "70.0%")
    assert rows["fc100-100-10"]["verified"] == "—"
    assert "intriguing certify" in rows["fc100-100-10"]["why no certificate"]


def test_leaderboard_command_prints_verified_beside_attack(tmp_path, monkeypatch, capsys):
    from core.cli import main

    db = tmp_path / "lb.sqlite"
    _seed(db)
    monkeypatch.setenv(leaderboard.DB_ENV, str(db))
    assert main(["leaderboard", "--protocol", PROTOCOL.fingerprint, "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)["verified"]}
    assert (rows["fc100-100-10-ibp"]["verified"], rows["fc100-100-10-ibp"]["attack"]) == (0.65, 0.7)
    assert main(["leaderboard", "--protocol", PROTOCOL.fingerprint]) == 0
    text = capsys.readouterr().out
    assert "verified  65%" in text and "intriguing certify --model fc100-100-10 " in text


def test_the_stored_card_brackets_each_budget_it_measured(tmp_path):
    """The stored certify card's rows: the verified side never above the attack side (a proof cannot claim
    an image an attack broke), in the card's own protocol; none where no card is stored."""
    rows, protocol = stored_brackets()
    card = json.loads((RESULTS_DIR / "certify" / "certify.json").read_text())
    assert [(r.model, r.budget) for r in rows] == [(e["model"], e["eps"]) for e in card["verified"]]
    assert all(0 < r.verified <= r.attack <= 1 for r in rows)
    assert protocol == card["protocol_description"]
    assert stored_brackets(tmp_path) == ([], "")


def test_a_fresh_leaderboard_shows_the_stored_brackets(tmp_path, monkeypatch):
    """An empty database (a fresh install): the page says how to record a bracket and shows the stored ones."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "empty.sqlite"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    (shown,) = [d.value for d in at.dataframe if "verified" in d.value.columns]  # the database has no rows
    stored, protocol = stored_brackets()
    assert list(shown["model"]) == [r.model for r in stored]
    assert list(shown["verified"]) == [f"{r.verified:.1%}" for r in stored]
    assert any("intriguing certify" in c.value for c in at.caption)
    assert any(f"Stored with the docs**: {protocol}" in m.value for m in at.markdown)
