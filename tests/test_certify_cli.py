"""`intriguing certify`: each bad request gets one message and exit 2, before any image is attacked."""

from __future__ import annotations

import pytest

from core.cli import main


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
