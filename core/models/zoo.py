"""The model zoo: the paper's MNIST networks (trained by `intriguing train`, committed under
assets/models) and torchvision ImageNet classifiers (weights from TORCH_HOME). Every function here also
resolves the user's registered models (core/models/registry.py), so a registered name works wherever a zoo
name does."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from core import config
from core.errors import CheckpointError, InvalidParameterError
from core.models import imagenet, nets, registry, sources
from core.models.card import load_toml, parse_card
from core.models.card import read_card as read_model_card
from core.models.spec import TRAIN_COMMAND, ModelSpec, TrainConfig

MNIST_CLASSES = tuple(str(d) for d in range(10))
SMOOTHING_SIGMAS = (0.25, 0.5, 1.0)  # the noise levels of Cohen et al.'s MNIST models (core/smoothing)


def _mlp_layers(n_hidden: int) -> dict[str, str]:
    layers = {f"hidden{i + 1}": f"hidden.{i}" for i in range(n_hidden)}
    layers["logits"] = "out"
    return layers


def _mnist_specs() -> list[ModelSpec]:
    def robust_cnn(name: str, train: TrainConfig, description: str) -> ModelSpec:
        """The strided CNN adversarially trained at Linf 0.3; its two zoo entries differ only in training."""
        return ModelSpec(
            name=name,
            dataset="mnist",
            architecture="conv32/4s2-conv64/4s2-fc256-10 (ReLU)",
            build=nets.StridedCNN,
            layers={"conv1": "conv1", "conv2": "conv2", "fc1": "fc1", "logits": "out"},
            train=train,
            description=description,
        )

    def fc10(lam: float, label: str, train_err: float, test_err: float, dist: float) -> ModelSpec:
        return ModelSpec(
            name=f"fc10-{label}",
            dataset="mnist",
            architecture="softmax regression 784-10",
            build=nets.SoftmaxRegression,
            layers={"logits": "out"},
            train=TrainConfig(epochs=15, lr=2e-3, weight_decay=lam, batch_size=256),
            paper={"train_error": train_err, "test_error": test_err, "min_distortion": dist},
            description=f"FC10({label}): softmax regression with weight decay {lam:g}.",
        )

    def mlp(name, hidden, subset, paper, desc, epochs=30, trained_by=TRAIN_COMMAND) -> ModelSpec:
        return ModelSpec(
            name=name,
            dataset="mnist",
            architecture="sigmoid MLP 784-" + "-".join(map(str, hidden)) + "-10",
            build=lambda: nets.SigmoidMLP(hidden),
            layers=_mlp_layers(len(hidden)),
            train=TrainConfig(subset=subset, epochs=epochs, lr=2e-3, weight_decay=1e-4),
            paper=paper,
            description=desc,
            trained_by=trained_by,
        )

    def smooth(sigma: float) -> ModelSpec:
        return ModelSpec(
            name=f"smooth-{sigma:.2f}",
            dataset="mnist",
            architecture="ReLU MLP 784-256-256-10",
            build=lambda: nn.Sequential(
                nn.Flatten(),
                nn.Linear(784, 256),
                nn.ReLU(),
                nn.Linear(256, 256),
                nn.ReLU(),
                nn.Linear(256, 10),
            ),
            layers={"hidden1": "2", "hidden2": "4", "logits": "5"},
            train=TrainConfig(epochs=30, lr=1e-3, noise_sigma=sigma),
            description=f"Base classifier for randomized smoothing, trained under Gaussian noise sigma={sigma:g}.",
        )

    return [
        fc10(1e-4, "1e-4", 0.067, 0.074, 0.062),
        fc10(1e-2, "1e-2", 0.10, 0.094, 0.1),
        fc10(1.0, "1", 0.212, 0.20, 0.14),
        mlp(
            "fc100-100-10",
            (100, 100),
            "train",
            {"train_error": 0.0, "test_error": 0.0164, "min_distortion": 0.058},
            "FC100-100-10: two sigmoid hidden layers of 100 units, weight decay.",
        ),
        mlp(
            "fc200-200-10",
            (200, 200),
            "train",
            {"train_error": 0.0, "test_error": 0.0154, "min_distortion": 0.065},
            "FC200-200-10: two sigmoid hidden layers of 200 units, weight decay.",
        ),
        ModelSpec(
            name="ae400-10",
            dataset="mnist",
            architecture="autoencoder 784-400 (sigmoid) + softmax 400-10",
            build=nets.AutoencoderClassifier,
            layers={"code": "encoder", "logits": "out"},
            train=TrainConfig(epochs=25, lr=2e-3, weight_decay=3e-5, pretrain_epochs=5),
            paper={"train_error": 0.0057, "test_error": 0.019, "min_distortion": 0.086},
            description="AE400-10: a 400-unit sigmoid autoencoder, then softmax on its code, fine-tuned.",
        ),
        mlp(
            "fc100-100-10-p1",
            (100, 100),
            "p1",
            {"p1_error": 0.0, "p2_error": 0.024, "test_error": 0.02, "min_distortion": 0.062},
            "FC100-100-10 trained on P1, the first half of the training set.",
            epochs=40,
        ),
        mlp(
            "fc123-456-10-p1",
            (123, 456),
            "p1",
            {"p1_error": 0.0, "p2_error": 0.025, "test_error": 0.021, "min_distortion": 0.059},
            "FC123-456-10 trained on P1.",
            epochs=40,
        ),
        mlp(
            "fc100-100-10-p2",
            (100, 100),
            "p2",
            {"p1_error": 0.023, "p2_error": 0.0, "test_error": 0.021, "min_distortion": 0.058},
            "FC100-100-10' trained on P2, the second half of the training set.",
            epochs=40,
        ),
        mlp(  # trained by `intriguing reproduce advtrain --install` (core/experiments/advtrain.py)
            "fc100-100-10-advpool",
            (100, 100),
            "train",
            {},
            "FC100-100-10 adversarially trained with the paper's pool of L-BFGS examples and weight decay.",
            epochs=20,
            trained_by="intriguing reproduce advtrain --install",
        ),
        mlp(  # trained by `intriguing reproduce advtrain --install` (core/experiments/advtrain.py)
            "fc100-100-10-pgdtrain",
            (100, 100),
            "train",
            {},
            "FC100-100-10 adversarially trained with PGD (Linf 0.1, half of every batch) and weight decay.",
            epochs=20,
            trained_by="intriguing reproduce advtrain --install",
        ),
        *(smooth(sigma) for sigma in SMOOTHING_SIGMAS),
        ModelSpec(
            name="fc100-100-10-relu",
            dataset="mnist",
            architecture="ReLU MLP 784-100-100-10",
            build=lambda: nets.SigmoidMLP((100, 100), nn.ReLU),
            layers=_mlp_layers(2),
            train=TrainConfig(epochs=30, lr=2e-3, weight_decay=1e-4),
            description="FC100-100-10 with ReLU units, trained like fc100-100-10: exact verification (MILP) can solve it.",
        ),
        ModelSpec(
            name="fc100-100-10-ibp",
            dataset="mnist",
            architecture="ReLU MLP 784-100-100-10",
            build=lambda: nets.SigmoidMLP((100, 100), nn.ReLU),
            layers=_mlp_layers(2),
            train=TrainConfig(epochs=30, lr=1e-3, certified_eps=0.1),
            description="FC100-100-10 with ReLU units, IBP-trained for certified robustness at Linf 0.1 "
            "(Gowal et al. 2019: eps and the clean/robust mix ramped).",
        ),
        ModelSpec(
            name="cnn",
            dataset="mnist",
            architecture="conv32-conv64-fc128-10 (ReLU, max-pool)",
            build=nets.SmallCNN,
            layers={"conv1": "conv1", "conv2": "conv2", "fc1": "fc1", "logits": "out"},
            train=TrainConfig(epochs=8, lr=2e-3, weight_decay=1e-6),
            paper={},
            description="A small convolutional net for MNIST, for the unit analysis.",
        ),
        robust_cnn(
            "cnn-fgsm-rs",
            TrainConfig(
                epochs=25, lr=2e-3, adversary="fgsm-rs", eps=0.3, adv_step=0.375, eps_warmup_epochs=3
            ),
            "A CNN trained against Linf 0.3 (Madry et al.'s MNIST setting) with fast adversarial training (FGSM "
            "with random start, step 1.25 eps): cnn-robust's starting point. Its PGD-10 monitor says 97%, "
            "AutoAttack much less: one-step training leaves gradients that mislead.",
        ),
        robust_cnn(
            "cnn-robust",
            TrainConfig(
                init="cnn-fgsm-rs", epochs=10, lr=1e-3, adversary="pgd", eps=0.3, adv_step=0.1, adv_steps=7
            ),
            "The CNN for AutoAttack at Linf 0.3 (Madry et al.'s MNIST setting): cnn-fgsm-rs fine-tuned with PGD "
            "adversarial training (Madry et al. 2018; 7 steps of 0.1 from a random start).",
        ),
    ]


MNIST_MODELS: dict[str, ModelSpec] = {s.name: s for s in _mnist_specs()}


def checkpoint_path(name: str) -> Path:
    """The zoo checkpoint, or a registered model's stored copy (its checksum is the sweep's identity)."""
    found = registry.entry(name) if name not in MNIST_MODELS else None
    return found.path if found is not None else config.model_dir() / f"{name}.pt"


def card_path(name: str) -> Path:
    return config.model_dir() / f"{name}.json"


def read_card(name: str) -> dict | None:
    """The JSON card written next to a trained checkpoint, or None."""
    path = card_path(name)
    return json.loads(path.read_text()) if path.is_file() else None


def load_checkpoint(model: nn.Module, path: Path, make_command: str | None = None) -> nn.Module:
    """Load a state_dict safely (weights_only) and turn every failure into one clear CheckpointError."""
    if not path.is_file():
        how = make_command or f"{TRAIN_COMMAND} {path.stem}"
        raise CheckpointError(f"Checkpoint {path} is missing. Make it with `{how}`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "unreadable"
        raise CheckpointError(
            f"Checkpoint {path} is corrupt or not a PyTorch file ({type(exc).__name__})."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Checkpoint {path} does not hold a state_dict of tensors.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"Checkpoint {path} does not match the architecture: {first}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"Checkpoint {path} holds NaN or infinite values in {', '.join(bad[:3])}.")
    return model


def get_spec(name: str) -> ModelSpec:
    """The spec of a zoo model (MNIST or an ImageNet classifier whose weights are available)."""
    if name in MNIST_MODELS:
        return MNIST_MODELS[name]
    spec = imagenet.spec(name) or registry.spec(name)
    if spec is None:
        known = ", ".join([*MNIST_MODELS, *imagenet.available_names(), *registry.entries()])
        raise InvalidParameterError(f"Unknown model {name!r}. Known models: {known}.")
    return spec


def load(name: str, device: torch.device | str | None = None) -> nn.Module:
    """An eval-mode module taking [0, 1] pixels and returning logits; its parameters are frozen
    (attacks only need input gradients, which is cheaper)."""
    spec = get_spec(name)
    if spec.dataset == "mnist" and spec.origin == "zoo":
        model = load_checkpoint(spec.build(), checkpoint_path(name), spec.make_command)
    else:
        model = spec.build()
    model.eval().requires_grad_(False)
    return model.to(torch.device(device) if device is not None else config.default_device())


def class_names(name: str) -> tuple[str, ...]:
    spec = get_spec(name)
    if spec.classes:
        return spec.classes
    if spec.dataset == "mnist":
        return MNIST_CLASSES
    return imagenet.categories(name)


def layer_modules(model: nn.Module, name: str) -> dict[str, nn.Module]:
    """Readable layer name -> the module whose output is that layer's activation."""
    return {layer: model.get_submodule(path) for layer, path in get_spec(name).layers.items()}


def model_status(name: str) -> str:
    """'committed' (checkpoint in assets), 'trained' (elsewhere), 'registered', 'weights present',
    'downloadable' or 'missing'."""
    spec = get_spec(name)
    if spec.origin == "registered":
        return "registered" if checkpoint_path(name).is_file() else "missing"
    if spec.dataset == "mnist":
        path = checkpoint_path(name)
        if not path.is_file():
            return "missing"
        return "committed" if path.resolve().is_relative_to(config.ASSETS_DIR.resolve()) else "trained"
    return imagenet.weights_status(name)


def list_models(include_unavailable: bool = True) -> list[str]:
    """Names of the zoo: the MNIST models, ImageNet classifiers whose weights are usable, registered models."""
    names = [*MNIST_MODELS, *imagenet.available_names(include_unavailable_default=include_unavailable)]
    return [*names, *registry.entries()]


def describe(name: str) -> dict:
    """A JSON-able summary of a model: architecture, dataset, status, paper and recorded errors."""
    spec = get_spec(name)
    card = read_card(name) if spec.dataset == "mnist" and spec.origin == "zoo" else None
    found = registry.entry(name)
    recorded = {k: v for k, v in (card or {}).items() if k.endswith("_error")}
    return {
        "name": name,
        "dataset": spec.dataset,
        "architecture": spec.architecture,
        "description": spec.description,
        "status": model_status(name),
        "layers": list(spec.layers),
        "paper": spec.paper,
        "recorded": {k: (None if v is None or math.isnan(v) else v) for k, v in recorded.items()},
        "source": found.origin if found else "zoo",
        "format": found.format if found else None,
        "sha256": found.sha256 if found else None,
    }


def revision(name: str) -> str:
    """What tells one version of `name` from another: a registered model's entry fingerprint, "" for a zoo
    model (its checkpoint is committed or made by a command, never swapped under a running server)."""
    found = registry.entry(name)
    return found.fingerprint if found else ""


def taken(name: str) -> bool:
    """Whether a zoo model (MNIST, or any torchvision classifier) already has this name."""
    return name in MNIST_MODELS or imagenet.spec(name) is not None


def add_model(
    name: str, source: str | Path, card: str | Path | None = None, *, allow_code: bool = False
) -> registry.Entry:
    """Register the user's model under `name`: its card is CARD, else SOURCE with a .toml suffix."""
    card_file = Path(card) if card else Path(str(source)).with_suffix(".toml")
    if card is None and not card_file.is_file():
        raise InvalidParameterError(f"no model card: give --card CARD.toml (looked for {card_file.name}).")
    return registry.add(name, source, read_model_card(card_file), taken=taken, allow_code=allow_code)


def usable_models(names: Sequence[str]) -> list[str]:
    """The named models that can be loaded now (MNIST checkpoints present, ImageNet weights on disk)."""
    return [name for name in names if model_status(name) != "missing"]


def same_domain_models(model_name: str, available: Sequence[str]) -> list[str]:
    """The other available models that take the same kind of input (MNIST digits or ImageNet photos)."""
    domain = get_spec(model_name).dataset
    return [m for m in available if m != model_name and get_spec(m).dataset == domain]


def add_uploaded_model(name: str, file_name: str, data: bytes, card_toml: bytes) -> registry.Entry:
    """Register an upload: ONNX, safetensors or a weights_only state_dict only (nothing that runs code), its
    card inline (a `classes_file` would read a file of the server's)."""
    sources.check_size(file_name, len(data))
    table = load_toml(card_toml, "the uploaded card")
    if "classes_file" in table:
        raise InvalidParameterError(
            "an uploaded model card lists its `classes` inline, not in a classes_file."
        )
    return registry.add(name, file_name, parse_card(table), taken=taken, allow_code=False, data=data)
