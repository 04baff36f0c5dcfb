"""A registered dataset's images as a page's image source, for a model whose domain is that dataset (the
Attack Lab, Validate): which sources a page offers, the links' checks, and the index picker. Core loads and
resizes the images (core.data.datasets, core.evaluation.validate.dataset_image)."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
import torch

from core.data import datasets
from core.errors import DatasetMissingError
from core.evaluation.validate import dataset_image
from core.models import get_spec
from core.models.registry import BUILTIN_DOMAINS
from dashboard import url_state
from dashboard.url_state import bound

DATASET = "Dataset"
OWN_SOURCES = (DATASET, "Upload")  # a registered dataset's model: its own images, or an upload


def sources(domain: str, builtin: Sequence[str]) -> tuple[str, ...]:
    """The page's own sources for an MNIST or ImageNet model; the dataset's images and an upload otherwise."""
    return tuple(builtin) if domain in BUILTIN_DOMAINS else OWN_SOURCES


def link_checks(prefix: str) -> dict[str, url_state.Check]:
    """What a link may set for every registered dataset: its source choice and its image index."""
    checks: dict[str, url_state.Check] = {}
    for name, found in datasets.entries().items():
        checks[f"{prefix}_source_{name}"] = url_state.choice(OWN_SOURCES)
        checks[f"{prefix}_idx_{name}"] = url_state.integer(0, found.n - 1)
    return checks


def pick_image(prefix: str, model_name: str) -> tuple[torch.Tensor, int, str]:
    """An index input over the model's dataset; the chosen image (resized to the model's input), its true
    label and the source line a run records (as `report --dataset NAME --index I` names it)."""
    spec = get_spec(model_name)
    found = datasets.entry(spec.dataset)
    if found is None:
        raise DatasetMissingError(
            f"{model_name}'s dataset {spec.dataset} is no longer registered; add it again."
        )
    index = st.number_input(
        f"{spec.dataset} image (0-{found.n - 1})", 0, found.n - 1, 0, **bound(f"{prefix}_idx_{spec.dataset}")
    )
    x, label = dataset_image(spec.dataset, int(index), spec.input_shape)
    return x, label, f"{spec.dataset} test #{index}"
