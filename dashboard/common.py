"""Shared view helpers: cached models and data, and one way to show a user-facing error."""

from __future__ import annotations

import streamlit as st
import torch

from core import IntriguingError
from core import models as zoo
from core.data import load_mnist


@st.cache_resource(show_spinner="Loading model ...")
def cached_model(name: str) -> torch.nn.Module:
    """One shared, frozen, eval-mode instance per model for every session (read-only use only)."""
    return zoo.load(name, torch.device("cpu"))


@st.cache_resource(show_spinner="Loading MNIST ...")
def cached_mnist(split: str = "test"):
    return load_mnist(split)


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return zoo.list_models(include_unavailable=False)


def show_error(exc: Exception) -> None:
    """A user-facing error as one clear message; anything else as a short, honest failure note."""
    if isinstance(exc, IntriguingError):
        st.error(str(exc), icon=":material/error:")
    else:
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}", icon=":material/error:")
