"""Indicators of attack failure: each fires on a case built to trigger it and stays silent on a
well-configured PGD on fc100-100-10."""

from __future__ import annotations

import json
import re

import pytest
import torch

from core.attacks import make_attack
from core.defences.transforms import DefendedModel, parse_transform
from core.evaluation import cells, indicators
from core.evaluation.protocol import Protocol

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(fc100):
    chosen = Protocol(n=30).select(fc100)
    return chosen.images, chosen.labels


def check(model, attack, params, images, **kw):
    x, y = images
    _, checks = indicators.run_checked(model, attack, params, x, y, square_queries=300, **kw)
    return {c.name: c for c in checks}


def test_silent_on_a_well_configured_pgd(fc100, images):
    checks = check(fc100, "pgd", {"eps": 0.1, "steps": 40, "seed": 0}, images)
    assert set(checks) == set(indicators.INDICATORS)  # every indicator was computed
    assert indicators.fired(checks.values()) == []
    assert indicators.verdict(checks.values()) == "reliable"


def test_two_step_pgd_is_still_falling_and_beaten_by_square(fc100, images):
    checks = check(fc100, "pgd", {"eps": 0.1, "steps": 2, "step_size": 0.01, "seed": 0}, images)
    assert checks["loss_still_falling"].rate > 0.5
    assert checks["loss_still_falling"].fix.params == {"steps": 8}
    assert checks["black_box_beats_white_box"].fired
    assert not checks["masked_gradient"].fired


def test_step_function_preprocessing_masks_the_gradient(fc100, images):
    rounded = DefendedModel(fc100, parse_transform("bits:2"), "naive")
    checks = check(rounded, "pgd", {"eps": 0.2, "steps": 10, "seed": 0}, images)
    for name in ("masked_gradient", "non_differentiable_input", "loss_flat", "black_box_beats_white_box"):
        assert checks[name].rate == 1.0, name
    assert checks["non_differentiable_input"].fix.cli == "--gradient bpda"
    assert checks["masked_gradient"].fix.gradient == "bpda"


def test_cw_with_a_tiny_constant_and_one_round_fails_unbounded(fc100, images):
    checks = check(fc100, "cw", {"initial_const": 1e-6, "binary_search_steps": 1, "steps": 50}, images)
    assert checks["unbounded_fails"].rate == 1.0
    assert checks["unbounded_fails"].fix.params["initial_const"] > 1e-6


def test_random_start_alone_changes_with_the_seed(fc100, images):
    # No gradient step at all: what fools an image is the random start, so another seed fools others.
    checks = check(fc100, "pgd", {"eps": 0.3, "steps": 1, "step_size": 0.0, "seed": 0}, images)
    assert checks["restarts_change_outcome"].fired
    assert checks["restarts_change_outcome"].fix.attack == "apgd"


@pytest.mark.parametrize("spec", ["bits:2", "jpeg:75"])
def test_defences_flagged_under_plain_pgd_not_under_bpda(fc100, images, spec):
    params = {"eps": 0.2, "steps": 10, "seed": 0}
    plain = check(DefendedModel(fc100, parse_transform(spec), "naive"), "pgd", params, images, extra=False)
    bpda = check(DefendedModel(fc100, parse_transform(spec), "bpda"), "pgd", params, images, extra=False)
    assert {"masked_gradient", "non_differentiable_input"} <= set(indicators.fired(plain.values()))
    assert indicators.fired(bpda.values()) == []


def test_a_fix_is_flags_of_the_command_and_runs_in_one_call(fc100, images):
    fix = indicators.Fix("bigger", attack="square", params={"eps": 1.0, "queries": 50})
    assert fix.cli == "--attack square --eps 1 --queries 50"
    x, y = images
    tried = indicators.try_fix(fc100, x[:1], int(y[0]), fix)
    assert tried.params["eps"] == 1.0 and tried.params["queries"] == 50 and bool(tried.fooled[0])
    assert indicators.try_fix(fc100, x[:1], int(y[0]), indicators.Fix("bpda", gradient="bpda")) is None


def test_audit_prints_the_issue_json_shape(capsys):
    from core.cli import main

    args = ["audit", "--model", "fc100-100-10", "--defence", "bits:2", "--eps", "0.2", "--steps", "10"]
    assert main([*args, "--n", "10", "--square-queries", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "defence", "verdict", "indicators"}
    assert (out["model"], out["defence"], out["verdict"]) == ("fc100-100-10", "bits:2", "unreliable")
    assert [i["name"] for i in out["indicators"]] == list(indicators.INDICATORS)
    for item in out["indicators"]:
        assert set(item) == {"name", "fired", "rate", "meaning", "fix"} and 0 <= item["rate"] <= 1
    masked = next(i for i in out["indicators"] if i["name"] == "masked_gradient")
    assert masked["fired"] and masked["fix"] == "--gradient bpda"
    # the fix is one flag of the same command: with it, the audit comes out clean
    assert (
        main([*args, "--n", "10", "--square-queries", "100", "--json", masked["fix"].split()[0], "bpda"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["verdict"] == "reliable"


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "nope"],
        ["--model", "mobilenet_v2"],
        ["--model", "fc100-100-10", "--defence", "zip:3"],
        ["--model", "fc100-100-10", "--n", "0"],
        ["--model", "fc100-100-10", "--eps", "nan"],
    ],
)
def test_audit_refuses_bad_input_with_exit_2(capsys, flags):
    from core.cli import main

    assert main(["audit", *flags]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_cli_attack_check_records_the_fired_indicators_and_the_matrix_marks_them(capsys):
    from core.cli import main
    from core.evaluation import leaderboard

    args = ["attack", "--model", "fc100-100-10", "--n", "10", "--quiet", "--json", "--check"]
    assert main([*args, "--attack", "pgd", "--steps", "2", "--step-size", "0.01"]) == 0
    summary = json.loads(capsys.readouterr().out)
    fired = [i["name"] for i in summary["indicators"] if i["fired"]]
    assert "loss_still_falling" in fired
    run = leaderboard.runs(limit=1)[0]
    assert run.id == summary["leaderboard_id"] and run.indicators == sorted(fired)
    matrix = leaderboard.success_matrix("linf", 0.1, protocol_id=run.protocol_id)
    assert matrix.flagged == {"pgd": {"fc100-100-10": sorted(fired)}}
    assert matrix.as_dict()["indicators"] == matrix.flagged


def test_fill_cell_with_check_records_indicators(tmp_path):
    from core.evaluation import leaderboard

    path = tmp_path / "lb.sqlite"
    protocol = Protocol(n=5)
    cells.fill_cell("fgsm", "fc10-1", protocol=protocol, norm="linf", budget=0.05, path=path, check=True)
    cells.fill_cell("apgd", "fc10-1", protocol=protocol, norm="linf", budget=0.05, path=path)
    checked, unchecked = sorted(leaderboard.runs(path=path), key=lambda r: r.attack != "fgsm")
    assert isinstance(checked.indicators, list) and unchecked.indicators is None


def test_silent_indicators_say_they_were_checked():
    """Issue 25 item 6: when none fires, 'N checks passed' (never silence); when one fires, no such line."""
    import torch

    fix = indicators.Fix("nothing")
    silent = [
        indicators.IndicatorResult(name, torch.zeros(3, dtype=torch.bool), fix)
        for name in indicators.INDICATORS
    ]
    assert indicators.passed(silent) == f"{len(indicators.INDICATORS)} checks passed"
    one_fires = [*silent[:-1], indicators.IndicatorResult(silent[-1].name, torch.tensor([False, True]), fix)]
    assert indicators.passed(one_fires) is None
    assert indicators.passed([]) is None  # not checked is not passed


class _Noisy(torch.nn.Module):
    """A randomised model: Gaussian noise on the input at every pass."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn_like(x))


@pytest.mark.parametrize(
    ("wrap", "name"),
    [(lambda m: torch.nn.Sequential(m, torch.nn.Softmax(1)), "softmax_output"), (_Noisy, "randomised_model")],
)
def test_what_autoattack_warns_about_is_an_indicator_in_the_same_words(fc100, images, wrap, name):
    model = wrap(fc100)
    checks = check(model, "pgd", {"eps": 0.1, "steps": 5, "seed": 0}, images, extra=False)
    assert checks[name].rate == 1.0
    assert indicators.verdict(checks.values()) == "unreliable"
    x, y = images
    with pytest.warns(UserWarning, match=re.escape(checks[name].meaning)):
        make_attack("autoattack", model, eps=0.05, steps=2, queries=2).run(x[:4], y[:4])


def test_cli_fill_checks_every_cell_and_an_unfillable_one_does_not_stop_the_others(
    capsys, monkeypatch, tmp_path
):
    """`leaderboard --fill` goes through `cells.fill_cells` with the CLI's seed and --check: each filled cell
    carries its indicators, and a cell of another domain fails with its message after the others ran."""
    from core.cli import main
    from core.evaluation import leaderboard

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "lb.sqlite"))
    args = ["leaderboard", "--fill", "fgsm", "--models", "mobilenet_v2", "fc10-1", "-n", "5", "--check"]
    assert main([*args, "--seed", "3"]) == 2
    assert "mobilenet_v2 is an ImageNet model" in capsys.readouterr().err
    (run,) = leaderboard.runs()
    assert (run.model, run.attack, run.n) == ("fc10-1", "fgsm", 5)
    assert isinstance(run.indicators, list)
