"""Shared view helpers: cached models and data, one way to show a user-facing error, tables sized to\ntheir rows."""

from __future__ import annotations

import traceback

import streamlit as st
import torch

from core import IntriguingError
from core import models as zoo
from core.data import load_mnist

ROW_PX, HEADER_PX = 35, 38  # st.dataframe's row and header heights


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
