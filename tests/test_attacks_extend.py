"""Adding an attack is one file plus one registry line: a dummy attack (tests/dummy_attack.py) registered
with one line shows up in the CLI's flags and choices, the Attack Lab's choices and the property tests."""

from __future__ import annotations

import pytest
import test_attacks_properties as properties
import torch
from dummy_attack import Jitter

from core import cli
from core.attacks import ATTACKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(ATTACKS, Jitter.name, Jitter)  # the one registry line
    return Jitter


def test_the_cli_offers_it_and_its_flags(registered, capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["attack", "--help"])
    help_text = capsys.readouterr().out
    assert "jitter" in help_text and "--tries" in help_text
    args = parser.parse_args(["attack", "--model", "fc10-1", "--attack", "jitter", "--tries", "3"])
    assert args.attack == "jitter" and args.tries == 3


def test_the_attack_lab_offers_it_with_its_title(registered):
    from dashboard.lab_view import attack_names, attack_title

    assert "jitter" in attack_names()
    assert attack_title("jitter") == "Jitter (test only)"


def test_the_property_tests_check_it(registered):
    cases = [c for c in properties.cases(ATTACKS) if c[0] == "jitter"]
    assert cases == [("jitter", {"eps": 0.05, "tries": 2}, 0.05, None)]
    name, params, linf, _ = cases[0]
    model = properties.random_model(0, 1, 3, conv=False)
    x = torch.rand(2, 1, 6, 6)
    result = ATTACKS[name](model, **params).run(x, model(x).argmax(1))
    assert float(result.linf.max()) <= linf + 1e-6
