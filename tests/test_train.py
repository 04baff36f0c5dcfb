import json

import torch

from core.data import load_mnist
from core.models import MNIST_MODELS
from core.models.train import error_rate, train
from core.models.zoo import load_checkpoint


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
