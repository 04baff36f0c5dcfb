"""The dashboard's model cache is bounded (issue 25): the zoo's small MNIST networks stay loaded, any other
model is one of the last few kept, so a server that showed many large models does not hold them all."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from core.models import get_spec
from core.models.registry import remove
from core.models.zoo import add_model, load
from dashboard.common import LARGE_MODELS_KEPT, cached_model, model_names
from dashboard.direction_view import cached_activations, cached_images, held_out_revision

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


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.full((1, 1, 28, 28), 0.5))


def test_a_model_removed_and_added_again_under_its_name_is_loaded_afresh(tmp_path, monkeypatch):
    """As `intriguing models remove` then `add` do while the dashboard runs: the page gets the new network,
    whose logits are those of the new file, not the one it had loaded before."""
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    _register("cache-readd", tmp_path)
    before = _outputs(cached_model("cache-readd"))
    remove("cache-readd")
    torch.manual_seed(1)  # other weights, same name
    (tmp_path / "again").mkdir()
    _register("cache-readd", tmp_path / "again")
    fresh = _outputs(load("cache-readd"))  # the registry's own load, no cache
    assert not torch.allclose(before, fresh)
    assert torch.equal(_outputs(cached_model("cache-readd")), fresh)


def test_a_model_registered_while_the_dashboard_runs_is_listed_at_once(tmp_path, monkeypatch):
    """`intriguing models add` / `remove` beside a running dashboard: the pickers' list follows."""
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    assert "cache-listed" not in model_names()
    _register("cache-listed", tmp_path)
    assert "cache-listed" in model_names()
    remove("cache-listed")
    assert "cache-listed" not in model_names()


def test_the_direction_labs_activations_follow_a_model_added_again_under_its_name(tmp_path, monkeypatch):
    """The Direction Lab's caches (held-out set, activations, studies) are keyed on the registered entry too:
    after `models remove` and `add` under the same name they hold the new network's activations."""
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    name = "cache-units"

    def activations():
        assert list(get_spec(name).layers) == ["logits"]  # a registered model's one readable layer
        return cached_activations(name, held_out_revision(name), "logits", "")

    torch.manual_seed(0)
    _register(name, tmp_path)
    before = activations()
    remove(name)
    torch.manual_seed(1)
    (tmp_path / "again").mkdir()
    _register(name, tmp_path / "again")
    after = activations()
    assert after.shape == before.shape and not np.allclose(before, after)
    first = next(cached_images(name, held_out_revision(name), "").batches(4))
    with torch.no_grad():  # the new file's own logits on the first held-out images: what the cache must hold
        assert np.allclose(after[: len(first)], load(name)(first).numpy(), atol=1e-5)
