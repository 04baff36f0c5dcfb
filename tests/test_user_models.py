"""The user's own networks and data (issue 21): exports of zoo models registered and compared with the zoo,
a normalised model attacked in pixel space, a class-folder dataset, and every bad input refused cleanly."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.data import datasets
from core.errors import IntriguingError
from core.models import list_models, load, registry
from core.models.card import ModelCard, parse_card
from core.models.zoo import add_model

MNIST_CARD = 'input = [1, 28, 28]\nclasses = ["0","1","2","3","4","5","6","7","8","9"]\ndomain = "mnist"\n'


def _export(model: torch.nn.Module, folder, kind: str):
    x = torch.zeros(1, 1, 28, 28)
    path = folder / f"net.{'onnx' if kind == 'onnx' else 'pt'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "onnx":
            torch.onnx.export(model, x, path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
        else:
            torch.jit.save(torch.jit.trace(model, x), path)
    (folder / "net.toml").write_text(MNIST_CARD)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("zoo", ["fc100-100-10", "cnn"])
@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exports_match_the_zoo_in_logits_gradients_and_pgd(zoo, kind, tmp_path, mnist_test):
    native = load(zoo, "cpu")
    add_model(f"mine-{kind}-{zoo}", _export(native, tmp_path, kind), allow_code=True)
    mine = load(f"mine-{kind}-{zoo}", "cpu")
    x = mnist_test.images[:8].clone().requires_grad_(True)
    x2 = mnist_test.images[:8].clone().requires_grad_(True)
    a, b = native(x), mine(x2)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    loss = torch.nn.functional.cross_entropy
    g1 = torch.autograd.grad(loss(a, mnist_test.labels[:8]), x)[0]
    g2 = torch.autograd.grad(loss(b, mnist_test.labels[:8]), x2)[0]
    torch.testing.assert_close(g2, g1, atol=1e-4, rtol=0)
    from core.attacks import make_attack

    run = {m: make_attack("pgd", net, "cpu", eps=0.1, steps=10, seed=3).run(x.detach(), mnist_test.labels[:8])
           for m, net in (("native", native), ("mine", mine))}  # fmt: skip
    torch.testing.assert_close(run["mine"].x_adv, run["native"].x_adv, atol=1e-5, rtol=0)


def test_onnx_conversion_matches_onnx_reference_evaluator(tmp_path):
    import onnx
    from onnx.reference import ReferenceEvaluator

    path = _export(load("cnn", "cpu"), tmp_path, "onnx")
    converted = registry.network(
        "onnx",
        path.read_bytes(),
        "net.onnx",
        parse_card({"input": [1, 28, 28], "classes": list("0123456789"), "domain": "mnist"}),
    )
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(converted(x).detach().numpy(), expected, atol=1e-5)


class _Scaled(torch.nn.Module):
    """A network trained on normalised inputs: it only makes sense on (x - mean) / std."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return self.net(z * 0.3081 + 0.1307)


def test_a_normalised_model_is_attacked_in_pixel_space(tmp_path, mnist_test):
    from safetensors.torch import save_file

    from core.attacks import make_attack

    native = load("fc100-100-10", "cpu")
    scaled = _Scaled(native)
    torch.jit.save(torch.jit.script(scaled), tmp_path / "norm.pt")
    (tmp_path / "norm.toml").write_text(MNIST_CARD + "mean = [0.1307]\nstd = [0.3081]\n")
    add_model("normalised", tmp_path / "norm.pt", allow_code=True)
    mine = load("normalised", "cpu")
    x, y = mnist_test.images[:16], mnist_test.labels[:16]
    torch.testing.assert_close(mine(x), native(x), atol=1e-5, rtol=0)  # the card's mean/std undo the net's
    result = make_attack("pgd", mine, "cpu", eps=0.1, steps=10, seed=0).run(x, y)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert (result.x_adv - x).abs().amax() <= 0.1 + 1e-6  # the budget is in pixels, not normalised units
    assert result.success.any()
    save_file({"w": torch.zeros(1)}, tmp_path / "unused.safetensors")  # safetensors importable beside torch


def _digit_folder(root, mnist_test, per_class=3, classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)):
    for c in classes:
        (root / str(c)).mkdir(parents=True)
        ids = (mnist_test.labels == c).nonzero().squeeze(1)[:per_class]
        for i in ids.tolist():
            arr = (mnist_test.images[i, 0].numpy() * 255).astype(np.uint8)
            Image.fromarray(arr).resize((32, 32)).save(root / str(c) / f"{i:05d}.png")
    return root


@pytest.mark.slow
def test_a_class_folder_dataset_selects_the_same_images_and_reports_end_to_end(tmp_path, mnist_test, capsys):
    from core.evaluation import sweep
    from core.evaluation.protocol import Protocol

    folder = _digit_folder(tmp_path / "digits", mnist_test)
    assert main(["datasets", "add", "digits", str(folder)]) == 0
    (tmp_path / "m").mkdir()
    path = _export(load("fc100-100-10", "cpu"), tmp_path / "m", "onnx")
    (tmp_path / "m" / "net.toml").write_text(MNIST_CARD.replace('"mnist"', '"digits"'))
    assert main(["models", "add", "mine-digits", str(path)]) == 0
    net = load("mine-digits", "cpu")
    protocol = Protocol(n=5, dataset="digits")
    first, second = protocol.select(net), protocol.select(net)
    assert (
        first.ids.tolist() == second.ids.tolist()
        and protocol.fingerprint == Protocol(n=5, dataset="digits").fingerprint
    )
    assert first.images.shape[1:] == (1, 28, 28)  # 32x32 files resized to the card's input
    tasks = sweep.plan(["mine-digits"], ["fgsm"], protocol=protocol, shard_size=5, eps=[0.2])
    again = sweep.plan(["mine-digits"], ["fgsm"], protocol=protocol, shard_size=5, eps=[0.2])
    assert [t.task_id for t in tasks] == [t.task_id for t in again]  # a rerun finds the same tasks done
    outcome = sweep.run_task(tasks[0], "cpu")
    assert len(outcome["examples"]) == 5
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                "--model",
                "mine-digits",
                "--dataset",
                "digits",
                "--index",
                "4",
                "--reference-n",
                "5",
                "--json",
            ]
        )
        == 0
    )
    assert '"verdict"' in capsys.readouterr().out


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


@pytest.mark.parametrize("as_zip", [True, False])
def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path, as_zip):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if as_zip:
        torch.save({"w": _Evil()}, path)
    else:
        path.write_bytes(pickle.dumps({"w": _Evil()}))
    (tmp_path / "evil.toml").write_text(MNIST_CARD + 'architecture = "torchvision:resnet18"\n')
    with pytest.raises(IntriguingError, match="calls code"):
        add_model("evil", path)
    assert not _Evil.marker.exists() and registry.entry("evil") is None


def _hardmax_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Hardmax", ["f"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 784])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _bad_inputs(tmp_path):
    fc = load("fc100-100-10", "cpu")
    onnx_path = _export(fc, tmp_path, "onnx")
    ts_path = _export(fc, tmp_path, "torchscript")
    cases = {}
    (tmp_path / "junk.onnx").write_bytes(b"this is no model at all" * 10)
    cases["not a model"] = (
        ["junk", str(tmp_path / "junk.onnx"), "--card", str(tmp_path / "net.toml")],
        "not a valid ONNX",
    )
    (tmp_path / "cut.onnx").write_bytes(onnx_path.read_bytes()[:2000])
    cases["truncated"] = (
        ["cut", str(tmp_path / "cut.onnx"), "--card", str(tmp_path / "net.toml")],
        "truncated",
    )
    _hardmax_onnx(tmp_path / "hard.onnx")
    cases["operator"] = (
        ["hard", str(tmp_path / "hard.onnx"), "--card", str(tmp_path / "net.toml")],
        "Hardmax",
    )
    torch.jit.save(torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 1, 28, 28)), tmp_path / "flat.pt")
    cases["output shape"] = (
        ["flat", str(tmp_path / "flat.pt"), "--card", str(tmp_path / "net.toml")],
        "784 logits",
    )
    torch.jit.save(torch.jit.script(_Nan()), tmp_path / "nan.pt")
    cases["nan"] = (["nan", str(tmp_path / "nan.pt"), "--card", str(tmp_path / "net.toml")], "NaN")
    (tmp_path / "five.toml").write_text(MNIST_CARD.replace('"5","6","7","8","9"', '"5"'))
    cases["class count"] = (["five", str(ts_path), "--card", str(tmp_path / "five.toml")], "classes")
    (tmp_path / "shape.toml").write_text(MNIST_CARD.replace("[1, 28, 28]", "[2, 28, 28]"))
    cases["input shape"] = (
        ["shape", str(ts_path), "--card", str(tmp_path / "shape.toml")],
        "1 or 3 channels",
    )
    cases["zoo clash"] = (["cnn", str(onnx_path)], "zoo model")
    (tmp_path / "nomean.toml").write_text("classes = []\n")
    cases["card field"] = (
        ["nomean", str(onnx_path), "--card", str(tmp_path / "nomean.toml")],
        "`input` is missing",
    )
    return cases


class _Nan(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * float("nan")


def test_every_bad_model_gives_one_line_exit_2_and_registers_nothing(tmp_path, capsys):
    for what, (args, message) in _bad_inputs(tmp_path).items():
        capsys.readouterr()
        assert main(["models", "add", *args]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (what, err)
        assert registry.entry(args[0]) is None or what == "zoo clash"
    assert not list(registry.folder().glob("junk*")) and not list(registry.folder().glob("nan*"))


def test_bad_datasets_and_a_hand_edited_registry_give_one_line(tmp_path, capsys, mnist_test):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    one = _digit_folder(tmp_path / "one", mnist_test, classes=(3,))
    for folder, message in ((tmp_path / "empty", "no images"), (one, "one class")):
        capsys.readouterr()
        assert main(["datasets", "add", folder.name, str(folder)]) == 2
        assert message in capsys.readouterr().err and datasets.entry(folder.name) is None
    assert main(["report", "--model", "fc100-100-10", "--dataset", "nowhere", "--index", "0"]) == 2
    registry.folder().mkdir(parents=True, exist_ok=True)
    registry.registry_file().write_text('{"models": {"x": {"format": "exe"}}}')
    capsys.readouterr()
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert "registry" in err and err.count("\n") == 1
    registry.registry_file().unlink()


def test_uploads_refuse_code_and_big_files(tmp_path):
    path = _export(load("fc100-100-10", "cpu"), tmp_path, "torchscript")
    card = parse_card({"input": [1, 28, 28], "classes": list("0123456789"), "domain": "mnist"})
    with pytest.raises(IntriguingError, match="CLI only"):
        registry.add("up", path.name, card, taken=lambda n: False, data=path.read_bytes())
    from core.models import sources

    with pytest.raises(IntriguingError, match="MB limit"):
        sources.check_size("big.onnx", sources.MAX_MODEL_BYTES + 1)
    assert isinstance(card, ModelCard)
    from core.models.zoo import add_uploaded_model

    onnx_path = _export(load("fc100-100-10", "cpu"), tmp_path, "onnx")
    with pytest.raises(IntriguingError, match="inline"):  # an upload's card must not read the server's files
        add_uploaded_model("up", "net.onnx", onnx_path.read_bytes(), b'classes_file = "/etc/passwd"\n')
    new = add_uploaded_model("up", "net.onnx", onnx_path.read_bytes(), MNIST_CARD.encode())
    assert new.format == "onnx" and "up" in list_models()
