"""The Attack Lab's certificate line: CROWN's certified radius of the attacked image in the attack's norm,
beside the distortion the attack found (core.lab.lab_certificate, drawn by dashboard/lab_view.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from core import models as zoo
from core.certify.bracket import attack_certificate, attack_norm
from core.lab import LiveRun, conclude, lab_certificate, make_lab_attack

MODEL = "fc100-100-10-ibp"  # certifiably trained: its radii are large enough to say something
LAB = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "attack_lab.py")
NUMBER = r"([0-9]+\.[0-9]+)"


@pytest.fixture(scope="module")
def model():
    return zoo.load(MODEL, torch.device("cpu"))


@pytest.fixture(scope="module")
def digit(mnist_test):
    return mnist_test.images[:1], int(mnist_test.labels[0])  # a 7 the model classifies correctly


def _run(model, digit, attack, **params):
    x, label = digit
    live = LiveRun(make_lab_attack(attack, model, seed=0, **params), x, label)
    for _ in live.frames(min_interval=3600.0):
        pass
    return conclude(live, model, MODEL, "mnist test #0", label)


def test_each_attack_is_judged_in_its_own_norm():
    assert attack_norm({"c": 1.0, "norm": "squared_l2"}) == "l2"  # L-BFGS records its squared L2
    assert attack_norm({"eps": 0.1}) == "linf"  # FGSM has no norm parameter
    assert attack_norm({"eps": 1.0, "norm": "l2"}) == "l2"
    assert attack_norm({"steps": 50}) == "l2"  # DeepFool, C&W


def test_the_certified_radius_lies_below_the_flip_deepfool_found(model, digit):
    outcome = _run(model, digit, "deepfool")
    cert = outcome.certificate
    assert bool(outcome.result.success[0]) and cert["norm"] == "l2"
    assert 0 < cert["certified"] <= cert["found"] == pytest.approx(float(outcome.result.l2[0]))
    assert f"{cert['certified']:.4f}" in cert["line"] and f"{cert['found']:.4f}" in cert["line"]
    # the chart's floor: no flip below it in RMS, since RMS = L2 / 28 on MNIST, and DeepFool's flip is above
    assert cert["certified_rms"] == pytest.approx(cert["certified"] / 28)
    assert cert["certified_rms"] <= float(outcome.result.rms[0])
    assert outcome.card.certificate == cert  # the run's card (and its exports) keep it


def test_a_budget_inside_the_certified_ball_is_said_to_be_hopeless(model, digit):
    outcome = _run(model, digit, "pgd", eps=0.05, steps=20)  # image 0's Linf radius is ~0.16
    cert = outcome.certificate
    assert not bool(outcome.result.success[0]) and cert["found"] is None
    assert cert["certified"] >= 0.05 and "lies inside" in cert["line"]


def test_a_model_the_bounds_do_not_cover_says_why(model, digit):
    result = _run(model, digit, "fgsm", eps=0.3).result
    uncovered = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Tanh(), nn.Linear(10, 10))
    assert "Tanh" in lab_certificate(uncovered, MODEL, result)["why"]


@pytest.mark.slow  # ~25 s: the page, the run, and its transfer to every other MNIST model
def test_attack_lab_shows_the_certificate_beside_the_attack():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(LAB, default_timeout=180).run()
    at.selectbox(key="lab_model").set_value(MODEL)
    at.selectbox(key="lab_attack").set_value("deepfool")
    at.run()
    at.radio(key="lab_live").set_value("real time")
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    (line,) = [i.value for i in at.info if i.value.startswith("Proved safe below")]
    certified, found = (float(v) for v in re.findall(NUMBER, line))
    assert 0 < certified <= found
    assert found == pytest.approx(float({m.label: m.value for m in at.metric}["L2"]), abs=1e-3)
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    (distortion,) = [s for s in specs if s.get("title", {}).get("text") == ["RMS distortion"]]
    floors = [
        layer["encoding"]["y"]["datum"] for layer in distortion["layer"] if layer["mark"]["type"] == "rule"
    ]
    assert floors == [pytest.approx(certified / 28, abs=1e-5)]  # the proved floor, drawn on the chart


def test_on_cnn_robust_the_line_names_the_bound_that_proved_it(digit, one_torch_thread):
    """cnn-robust's full CROWN search takes 5-20 s per image, over the page's cost budget: the line carries
    IBP's radius or a CROWN search cut to the budget, says which, and that bound proves it."""
    from core.attacks import make_attack
    from core.certify.bounds import Ball, Network, worst_margin

    model = zoo.load("cnn-robust", torch.device("cpu"))
    x, label = digit
    result = make_attack("pgd", model, seed=0, norm="linf", eps=0.3, steps=10).run(x, torch.tensor([label]))
    cert = attack_certificate(model, result)
    assert cert["method"] in ("IBP", "CROWN, a search cut to its cost budget")
    assert f"({cert['method']}:" in cert["line"] and cert["certified"] > 0
    assert cert["found"] is None or cert["certified"] <= cert["found"]
    method = "ibp" if cert["method"] == "IBP" else "crown"
    ball = Ball(
        x, cert["certified"] * (1 - 1e-6), "linf"
    )  # a hair inside: the search ends where the bound is ~0
    assert worst_margin(Network.from_module(model), ball, torch.tensor([label]), method) > 0
