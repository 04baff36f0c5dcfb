"""The dashboard's model cache is bounded (issue 25): the zoo's small MNIST networks stay loaded, any other
model is one of the last few kept, so a server that showed many large models does not hold them all."""

from __future__ import annotations

import warnings

import torch

from core.models.zoo import add_model
from dashboard.common import LARGE_MODELS_KEPT, cached_model

CARD = 'input = [1, 28, 28]\nclasses = ["0","1","2","3","4","5","6","7","8","9"]\ndomain = "mnist"\n'


def _register(name: str, folder) -> None:
    path = folder / f"{name}.pt"
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), path)
    (folder / f"{name}.toml").write_text(CARD)
    add_model(name, path, allow_code=True)


def test_zoo_digit_models_stay_and_other_models_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))  # a registry of this test's own
    names = [f"cache-probe-{i}" for i in range(LARGE_MODELS_KEPT + 1)]
    for name in names:
        _register(name, tmp_path)
    zoo_model = cached_model("fc100-100-10")
    first = cached_model(names[0])
    assert cached_model(names[0]) is first  # cached while there is room
    for name in names[1:]:
        cached_model(name)
    assert cached_model(names[-1]) is cached_model(names[-1])
    assert cached_model(names[0]) is not first  # pushed out by LARGE_MODELS_KEPT newer ones, loaded again
    assert cached_model("fc100-100-10") is zoo_model  # the zoo's digit networks are never pushed out
