"""The randomized smoothing panels through Streamlit's AppTest: the Defences curve drawn from a card, the
smoothed prediction beside the plain one on Validate, certified rows on the Leaderboard."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from scipy.stats import norm
from streamlit.testing.v1 import AppTest
from torch import nn

from core.evaluation import leaderboard
from core.evaluation.protocol import Protocol


class Constant(nn.Module):
    """Always class 2 of 3."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 3) + self.w
        out[:, 2] = 1.0
        return out


def values(encoded) -> list[float]:
    """A plotly JSON array: a list, or {'bdata': base64, 'dtype': ...} for a numpy array."""
    if isinstance(encoded, dict):
        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]).tolist()
    return list(encoded)


def curve_app(folder: str) -> None:
    from pathlib import Path

    from dashboard.smoothing_view import certified_panel

    certified_panel(Path(folder))


def test_defences_curve_is_the_share_of_correct_images_certified_at_each_radius(tmp_path):
    images = [
        {"label": 1, "prediction": 1, "radius": 0.3},
        {"label": 2, "prediction": 2, "radius": 0.8},
        {"label": 3, "prediction": 5, "radius": 0.9},  # wrong: never counts
        {"label": 4, "prediction": None, "radius": 0.0},  # abstains
    ]
    card = {"n": 4, "radii": [0.0, 0.5, 1.0], "images": {"0.5": images}, "paper": {"0.5": [0.9, 0.6, 0.2]},
            "params": {"0.5": {"n": 1000}}}  # fmt: skip
    (tmp_path / "smoothing").mkdir()
    (tmp_path / "smoothing" / "smoothing.json").write_text(json.dumps(card))
    at = AppTest.from_function(curve_app, args=(str(tmp_path),), default_timeout=60).run()
    assert not at.exception
    data = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    ours = next(d for d in data if d["name"].startswith("ours"))
    xs, ys = values(ours["x"]), values(ours["y"])
    assert len(xs) > 10 and max(xs) > 0.9
    for r, y in zip(xs, ys, strict=True):
        assert y == pytest.approx(100 * ((0.3 >= r) + (0.8 >= r)) / 4)
    published = next(d for d in data if d["name"].startswith("Cohen"))
    assert values(published["y"]) == pytest.approx([90, 60, 20])


def test_defences_without_a_card_says_how_to_make_it(tmp_path):
    at = AppTest.from_function(curve_app, args=(str(tmp_path),), default_timeout=60).run()
    assert not at.exception and "reproduce smoothing" in at.info[0].value


def validate_app(model) -> None:
    import torch

    from dashboard.smoothing_view import smoothed_prediction

    smoothed_prediction(model, torch.rand(1, 4, 4), ["zero", "one", "two"], 0)


def test_validate_shows_the_smoothed_prediction_and_its_radius_beside_the_plain_one():
    at = AppTest.from_function(validate_app, args=(Constant(),), default_timeout=60).run()
    assert not at.exception and not at.metric  # nothing until asked
    at.selectbox(key="val_smooth_sigma").select(0.5)
    at.button(key="val_smooth_go").click().run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    n = int(at.selectbox(key="val_smooth_n").value)
    assert shown["Plain prediction"] == "zero" and shown["Smoothed prediction"] == "two"
    assert shown["Certified L2 radius"] == f"{0.5 * norm.ppf(0.001 ** (1 / n)):.3f}"  # all n votes for "two"


def leaderboard_app() -> None:
    from dashboard.smoothing_view import certificates_panel

    certificates_panel()


def test_leaderboard_lists_certified_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "lb.sqlite"))
    at = AppTest.from_function(leaderboard_app, default_timeout=60).run()
    assert not at.exception and "No certificates yet" in at.info[0].value
    leaderboard.record_certificate(model="smooth-0.50", method="smoothing", norm="l2", budget=1.0, n=8,
                                   certified=6, protocol=Protocol(n=8, correct_only=False))  # fmt: skip
    at = AppTest.from_function(leaderboard_app, default_timeout=60).run()
    (row,) = at.dataframe[0].value.to_dict("records")
    assert (row["model"], row["method"], row["radius / eps"], row["certified"]) == (
        "smooth-0.50",
        "smoothing",
        1.0,
        "75.0%",
    )
