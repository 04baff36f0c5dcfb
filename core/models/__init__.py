"""The zoo: `load(name)` gives an eval-mode module taking [0, 1] pixels and returning logits."""

from core.models.spec import ModelSpec, TrainConfig
from core.models.zoo import (
    MNIST_MODELS,
    class_names,
    describe,
    get_spec,
    layer_modules,
    list_models,
    load,
    model_status,
    read_card,
    revision,
    same_domain_models,
    usable_models,
)

__all__ = [
    "MNIST_MODELS",
    "ModelSpec",
    "TrainConfig",
    "class_names",
    "describe",
    "get_spec",
    "layer_modules",
    "list_models",
    "load",
    "model_status",
    "read_card",
    "revision",
    "same_domain_models",
    "usable_models",
]
