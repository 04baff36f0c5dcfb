"""`intriguing certify`: each bad request gets one message and exit 2, before any image is attacked."""

from __future__ import annotations

import pytest

from core.cli import main
from core.commands import certify as certify_command


@pytest.mark.parametrize(
    "args,words",
    [
        (["--model", "fc100-100-10", "--method", "exact"], "sigmoid"),
        (["--model", "fc10-1", "--eps", "2"], "eps"),
        (["--model", "fc10-1", "--time-limit", "0"], "time limit"),
        (["--model", "fc100-100-10-relu", "--method", "exact", "--norm", "l2"], "linear models only"),
    ],
)
def test_bad_requests_exit_2_with_one_line(args, words, capsys):
    assert main(["certify", "--n", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


@pytest.mark.slow
def test_exact_at_a_budget_prints_clean_json_and_the_milps_part(tmp_path, monkeypatch, capfd):
    """`--method exact --eps` on a ReLU net: stdout is one JSON document (the solver prints nothing into it),
    the MILP's counts add up over the images it settled, and the bracket holds: verified <= attack."""
    import json

    from core.evaluation import leaderboard

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "lb.sqlite"))
    args = ["certify", "--model", "fc100-100-10-ibp", "--n", "3", "--method", "exact", "--eps", "0.1"]
    assert main([*args, "--time-limit", "3", "--json"]) == 0
    result = json.loads(capfd.readouterr().out)
    assert (
        result["bound_robust_accuracy"]
        <= result["verified_robust_accuracy"]
        <= result["attack_robust_accuracy"]
    )
    assert result["milp_decided"] + result["milp_undecided"] <= result["n"]
    assert result["milp_flips"] <= result["milp_decided"]
    exact = result["exact_robust_accuracy"]
    assert exact is None or exact == result["verified_robust_accuracy"]
    assert "the MILP at 0.1 settled" in certify_command._text(result)
