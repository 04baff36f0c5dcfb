import dataclasses
import hashlib
import json

import pytest
import torch

from core.data import load_mnist
from core.errors import CheckpointError
from core.models import MNIST_MODELS, read_card
from core.models.spec import ModelSpec
from core.models.train import error_rate, train
from core.models.zoo import checkpoint_path, load_checkpoint


def test_train_writes_a_loadable_checkpoint_and_an_honest_card(tmp_path):
    card = train("fc10-1e-4", epochs=1, seed=3, out=tmp_path, progress=False)
    saved = json.loads((tmp_path / "fc10-1e-4.json").read_text())
    assert saved == card
    for key in (
        "architecture",
        "subset",
        "hyperparameters",
        "seed",
        "train_error",
        "test_error",
        "versions",
        "date",
    ):
        assert key in card
    assert card["hyperparameters"]["epochs"] == 1 and card["seed"] == 3
    model = load_checkpoint(MNIST_MODELS["fc10-1e-4"].build(), tmp_path / "fc10-1e-4.pt").eval()
    test = load_mnist("test")
    assert error_rate(model, test.images, test.labels) == card["test_error"]
    assert card["test_error"] < 0.15  # one epoch of softmax regression already learns MNIST


def test_training_is_reproducible_with_a_seed(tmp_path):
    a = train("fc10-1e-2", epochs=1, seed=7, out=tmp_path / "a", progress=False)
    b = train("fc10-1e-2", epochs=1, seed=7, out=tmp_path / "b", progress=False)
    sa = torch.load(tmp_path / "a" / "fc10-1e-2.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "fc10-1e-2.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["test_error"] == b["test_error"]


def _fine_tune_of(base: str) -> ModelSpec:
    spec = MNIST_MODELS[base]
    return dataclasses.replace(
        spec, name=f"{base}-ft", train=dataclasses.replace(spec.train, init=base, epochs=0)
    )


def test_a_fine_tuning_starts_from_its_base_checkpoint_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(MNIST_MODELS, "fc10-1e-4-ft", _fine_tune_of("fc10-1e-4"))
    card = train("fc10-1e-4-ft", out=tmp_path, progress=False)  # no epochs: the base's weights, unchanged
    base = checkpoint_path("fc10-1e-4")
    assert card["init"] == {
        "model": "fc10-1e-4",
        "checkpoint_sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
    }
    tuned = torch.load(tmp_path / "fc10-1e-4-ft.pt", weights_only=True)
    assert all(torch.equal(v, torch.load(base, weights_only=True)[k]) for k, v in tuned.items())
    assert card["test_error"] == read_card("fc10-1e-4")["test_error"]


def test_a_fine_tuning_without_its_base_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setitem(MNIST_MODELS, "fc10-1e-4-ft", _fine_tune_of("fc10-1e-4"))
    monkeypatch.setenv("INTRIGUING_MODEL_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="intriguing train fc10-1e-4`"):
        train("fc10-1e-4-ft", out=tmp_path, progress=False)
