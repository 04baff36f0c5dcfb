"""A user's picture as the tensor a model takes: the models package owns this step (it knows each model's
domain and transforms); core.data only decodes images safely."""

from __future__ import annotations

import torch
from PIL import Image

from core.data.datasets import image_tensor
from core.data.images import mnist_input
from core.models.imagenet import preprocess
from core.models.zoo import get_spec


def model_input(img: Image.Image, model_name: str) -> torch.Tensor:
    """The tensor a model takes for this image: MNIST-style 28x28, the weights' own ImageNet transforms,
    or, for a model of a registered dataset, resized to its card's input as that dataset's files are."""
    spec = get_spec(model_name)
    if spec.dataset == "mnist":
        return mnist_input(img)
    if spec.dataset == "imagenet":
        return preprocess(img, model_name)
    return image_tensor(img, spec.input_shape)
