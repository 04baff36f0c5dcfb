"""Shared view helpers: cached models and data, one way to show a user-facing error, tables sized to\ntheir rows."""

from __future__ import annotations

import traceback

import streamlit as st
import torch

from core import IntriguingError
from core import models as zoo
from core.data import load_mnist

ROW_PX, HEADER_PX = 35, 38  # st.dataframe's row and header heights


# The zoo's MNIST networks are small (all 18 together hold about 20 MB) and a transfer table uses every one at
# once: all stay loaded. Any other model (an ImageNet network, 14-240 MB; a user's upload, up to the size limit)
# is one of at most this many kept: a server that has shown many of them holds the last few, not all.
LARGE_MODELS_KEPT = 3


@st.cache_resource(show_spinner="Loading model ...")
def _cached_zoo_digit_model(name: str) -> torch.nn.Module:
    return zoo.load(name, torch.device("cpu"))


@st.cache_resource(show_spinner="Loading model ...", max_entries=LARGE_MODELS_KEPT)
def _cached_large_model(name: str) -> torch.nn.Module:
    return zoo.load(name, torch.device("cpu"))


def cached_model(name: str) -> torch.nn.Module:
    """One shared, frozen, eval-mode instance per model for every session (read-only use only)."""
    spec = zoo.get_spec(name)
    digit = spec.dataset == "mnist" and spec.origin == "zoo"
    return (_cached_zoo_digit_model if digit else _cached_large_model)(name)


@st.cache_resource(show_spinner="Loading MNIST ...")
def cached_mnist(split: str = "test"):
    return load_mnist(split)


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return zoo.list_models(include_unavailable=False)


UNEXPECTED = "Something went wrong on this page; the rest of the lab still works."


def show_error(exc: Exception) -> None:
    """A user-facing error as one clear message; anything else as one friendly line and its details in an
    expander (never Streamlit's traceback box)."""
    if isinstance(exc, IntriguingError):
        st.error(str(exc), icon=":material/error:")
        return
    st.error(f"{UNEXPECTED} ({type(exc).__name__})", icon=":material/error:")
    with st.expander("details"):
        st.code("".join(traceback.format_exception(exc)), language=None)


def table(rows: list[dict], max_rows: int = 12, **kwargs) -> None:
    """A dataframe tall enough for every row up to `max_rows` (no scroll box, no half-hidden last row);
    longer tables scroll."""
    height = HEADER_PX + ROW_PX * min(max(len(rows), 1), max_rows) + 3
    st.dataframe(rows, hide_index=True, height=height, **kwargs)
