"""The sidebar's "Add a model" and "Add a dataset": uploads handed to core (core.models.zoo.add_uploaded_model,
core.data.datasets.add), which check everything and run no uploaded code; once added, every page lists them."""

from __future__ import annotations

import streamlit as st

from core import IntriguingError
from core.config import cache_dir
from core.data import datasets
from core.models.zoo import add_uploaded_model
from core.units.uploads import save_uploads
from dashboard.common import model_names, show_error


def _add_model() -> None:
    name = st.text_input("Name", key="add_model_name")
    model = st.file_uploader(
        "Model file (ONNX, safetensors, state_dict .pt)",
        type=["onnx", "safetensors", "pt", "pth"],
        key="add_model_file",
    )
    card = st.file_uploader("Model card (TOML)", type=["toml"], key="add_model_card")
    if st.button("Add the model", key="add_model_go", disabled=not (name and model and card)):
        try:
            new = add_uploaded_model(name, model.name, model.getvalue(), card.getvalue())
        except IntriguingError as exc:
            show_error(exc)
            return
        model_names.clear()
        st.success(f"Added {name} ({new.format}, {len(new.card.classes)} classes); every page lists it now.")


def _add_dataset() -> None:
    name = st.text_input("Name", key="add_data_name")
    archive = st.file_uploader("A zip of class folders", type=["zip"], key="add_data_zip")
    if st.button("Add the dataset", key="add_data_go", disabled=not (name and archive)):
        try:
            upload = save_uploads([(archive.name, archive.getvalue())], root=cache_dir() / "datasets")
            new = datasets.add(name, upload.folder, shown=archive.name, upload=True)
        except IntriguingError as exc:
            show_error(exc)
            return
        st.success(f"Added {name}: {new.n} images of {len(new.classes)} classes.")


def add_panel() -> None:
    """Two expanders at the foot of the sidebar."""
    with st.sidebar:
        with st.expander("Add a model", icon=":material/upload:"):
            _add_model()
        with st.expander("Add a dataset", icon=":material/folder_zip:"):
            _add_dataset()
