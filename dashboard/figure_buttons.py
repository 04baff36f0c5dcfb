"""Download buttons for a slide-ready figure (core/visual/figures.py): PNG at 300 dpi, PDF and SVG. The figure is
built only when a button is clicked (Streamlit calls the data function then), so a page pays nothing for
buttons nobody presses (a callable `data` needs Streamlit >= 1.52)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from matplotlib.figure import Figure

from core.visual import figures

LABELS = {"png": "PNG, 300 dpi", "pdf": "PDF", "svg": "SVG"}


def figure_downloads(build: Callable[[], Figure], stem: str, key: str, label: str = "Figure") -> None:
    """One row of buttons '<label> (PNG, 300 dpi) | (PDF) | (SVG)' downloading `stem.<format>`."""
    row = st.container(horizontal=True)
    for fmt in figures.FORMATS:
        row.download_button(
            f"{label} ({LABELS[fmt]})",
            lambda fmt=fmt: figures.export(build(), fmt),
            f"{stem}.{fmt}",
            figures.FORMATS[fmt],
            key=f"{key}_{fmt}",
            on_click="ignore",
            icon=":material/download:",
        )
