import json
import subprocess
import sys

import pytest
import torch

from core import config
from core.data.photos import sample_photo
from core.errors import CheckpointError
from core.models import MNIST_MODELS, class_names, describe, layer_modules, list_models, load, read_card
from core.models.imagenet import preprocess
from core.models.train import error_rate
from core.models.zoo import load_checkpoint


# The CNN over all 10,000 test images is most of this test's time on CPU: slow; the MLPs stay quick.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "cnn" else n for n in MNIST_MODELS]
)
def test_committed_checkpoint_reproduces_its_recorded_test_error(name, mnist_test):
    card = read_card(name)
    assert card is not None, f"{name} has no committed card"
    model = load(name, "cpu")
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    err = error_rate(model, mnist_test.images, mnist_test.labels)
    assert abs(err - card["test_error"]) <= 0.001


# Documented gaps (README, "The model zoo"): FC10(1) with our weight-decay convention, and a 100-100 sigmoid
# net on 30,000 images that stays near 2.6% whatever we tried (the paper reports 2.0%).
WIDER_TOLERANCE = {"fc10-1": 0.02, "fc100-100-10-p1": 0.007}


@pytest.mark.parametrize("name", list(MNIST_MODELS))
def test_committed_models_are_close_to_the_paper(name):
    card, paper = read_card(name), MNIST_MODELS[name].paper
    if name == "cnn":
        assert card["test_error"] < 0.01
    elif "test_error" in paper:
        tolerance = WIDER_TOLERANCE.get(name, 0.005)
        assert abs(card["test_error"] - paper["test_error"]) <= tolerance + 1e-9


def test_models_take_pixels_in_unit_range_and_return_ten_logits(mnist_test):
    for name in MNIST_MODELS:
        model = load(name, "cpu")
        assert model(mnist_test.images[:3]).shape == (3, 10)
        for layer, module in layer_modules(model, name).items():
            assert isinstance(module, torch.nn.Module), layer


def _top5(model, photo: str) -> list[str]:
    names = class_names("mobilenet_v2")
    with torch.no_grad():
        logits = model(preprocess(sample_photo(photo)))
    return [names[i] for i in logits.topk(5).indices[0].tolist()]


def test_imagenet_model_classifies_the_sample_photos():
    model = load("mobilenet_v2", "cpu")
    assert any("cat" in c.lower() for c in _top5(model, "chelsea"))
    assert _top5(model, "coffee")[0] in {"espresso", "cup", "coffee mug"}


def test_imagenet_model_takes_unit_range_pixels():
    x = preprocess(sample_photo("coffee"))
    assert x.shape == (1, 3, 224, 224) and 0 <= x.min() and x.max() <= 1


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    bad = tmp_path / "fc10-1.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(MNIST_MODELS["fc10-1"].build(), bad)


def test_mismatched_checkpoint_gives_a_clear_error(tmp_path):
    wrong = tmp_path / "x.pt"
    torch.save(MNIST_MODELS["fc100-100-10"].build().state_dict(), wrong)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(MNIST_MODELS["fc200-200-10"].build(), wrong)


def test_checkpoint_with_nan_is_rejected(tmp_path):
    state = MNIST_MODELS["fc10-1"].build().state_dict()
    state["out.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(MNIST_MODELS["fc10-1"].build(), path)


def test_missing_checkpoint_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv(config.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="`intriguing train fc10-1`"):
        load("fc10-1")
    assert describe("fc10-1")["status"] == "missing"


def test_zoo_lists_every_paper_model_and_the_imagenet_default():
    names = list_models()
    assert names[: len(MNIST_MODELS)] == list(MNIST_MODELS)
    assert "mobilenet_v2" in names
    assert describe("fc100-100-10")["status"] == "committed"
    assert describe("mobilenet_v2")["status"] == "weights present"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, cwd=config.PROJECT_ROOT
    )


@pytest.mark.slow
def test_cli_evaluate_computes_the_error_now(mnist_test):
    proc = _cli("evaluate", "fc10-1e-2", "--split", "test", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "fc10-1e-2" and out["split"] == "test" and out["n"] == 10_000
    model = load("fc10-1e-2", "cpu")
    assert out["error"] == pytest.approx(error_rate(model, mnist_test.images, mnist_test.labels))


@pytest.mark.slow
def test_cli_models_json_lists_status_and_errors():
    proc = _cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["fc100-100-10"]["status"] == "committed"
    assert rows["fc100-100-10"]["recorded"]["test_error"] == read_card("fc100-100-10")["test_error"]


@pytest.mark.slow
def test_cli_rejects_unknown_model_with_exit_code_2():
    proc = _cli("evaluate", "no-such-model")
    assert proc.returncode == 2 and "Unknown model" in proc.stderr and "Traceback" not in proc.stderr


def test_adversarially_trained_models_name_their_own_training_command(tmp_path, monkeypatch):
    from core.errors import InvalidParameterError
    from core.models.train import train

    with pytest.raises(InvalidParameterError, match="reproduce advtrain"):
        train("fc100-100-10-advpool", epochs=1, out=tmp_path, progress=False)
    monkeypatch.setenv(config.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="`intriguing reproduce advtrain --install`"):
        load("fc100-100-10-pgdtrain")


def test_importing_core_makes_openmp_wait_passively_unless_the_user_chose():
    import os

    code = "import core, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=config.PROJECT_ROOT
    )
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=config.PROJECT_ROOT
    )
    assert out.stdout.strip() == "ACTIVE"
