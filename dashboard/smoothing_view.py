"""Randomized smoothing panels (core.smoothing): the certified curve of the stored card on the Defences
page, a smoothed prediction beside the plain one on Validate, the certificates on the Leaderboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from core import IntriguingError
from core.evaluation import leaderboard
from core.experiments.writer import RESULTS_DIR, read_card
from core.smoothing import SmoothingParams, certify
from core.smoothing.certify import make_generator
from core.visual.certified import certified_curve
from dashboard.common import show_error, table

SIGMAS = (0.12, 0.25, 0.5, 1.0)  # Cohen et al.'s ImageNet and MNIST noise levels
SAMPLES = (100, 1000, 10_000)  # estimation votes a page can afford (the paper's 100,000 is for the CLI)


def curve_figure(card: dict) -> go.Figure:
    """The card's certified accuracy against radius per sigma, the published points as open markers."""
    fig = go.Figure()
    grid = np.linspace(0.0, max(card["radii"]) + 0.25, 200)
    for k, (sigma, images) in enumerate(card["images"].items()):
        colour = f"hsl({(k * 120 + 210) % 360}, 60%, 45%)"
        fig.add_scatter(x=grid, y=100 * certified_curve(images, grid), name=f"ours, sigma {sigma}",
                        line={"color": colour, "shape": "hv"})  # fmt: skip
        fig.add_scatter(x=card["radii"], y=[100 * v for v in card["paper"][sigma]], mode="markers",
                        name=f"Cohen et al., sigma {sigma}", marker={"color": colour, "symbol": "circle-open"})  # fmt: skip
    fig.update_layout(xaxis_title="L2 radius", yaxis_title="certified accuracy (%)", height=360,
                      margin={"t": 10, "b": 40}, yaxis_range=[0, 102])  # fmt: skip
    return fig


def certified_panel(results: Path = RESULTS_DIR) -> None:
    """Defences: randomized smoothing beside the transformations, with its stored certified curve."""
    with st.expander("Randomized smoothing: a guard with a certificate", expanded=False):
        st.caption(
            "Predict the class the network gives most often under Gaussian noise; the vote counts prove an L2 "
            "radius within which no perturbation, adaptive or not, changes the prediction (Cohen et al. 2019)."
        )
        card = read_card("smoothing", results)
        if card is None:
            st.info("Not run yet: `intriguing reproduce smoothing --update-docs` stores the curve.")
            return
        st.plotly_chart(curve_figure(card), key="smooth_curve")
        st.caption(
            f"First {card['n']} MNIST test images per sigma, n = 100,000 votes; see docs/smoothing.md."
        )


def smoothed_prediction(model: torch.nn.Module, x: torch.Tensor, classes: list[str], plain: int) -> None:
    """Validate: the smoothed prediction of image x (C, H, W) and its certified radius next to the plain one."""
    with st.expander("Smoothed prediction (randomized smoothing)", expanded=False):
        left, right = st.columns(2)
        sigma = left.selectbox("Noise sigma", SIGMAS, index=1, key="val_smooth_sigma")
        samples = right.selectbox("Noise samples", SAMPLES, index=0, key="val_smooth_n")
        if st.button("Smooth this prediction", key="val_smooth_go"):
            bar = st.progress(0.0, text="noise samples")
            try:
                params = SmoothingParams(sigma=float(sigma), n0=min(100, int(samples)), n=int(samples))
                res = certify(model, x, params, make_generator(model, 0),
                              on_batch=lambda f: bar.progress(min(1.0, f), text="noise samples"))  # fmt: skip
            except IntriguingError as exc:
                show_error(exc)
                return
            bar.empty()
            st.session_state.val_smooth = (sigma, samples, res)
        stored = st.session_state.get("val_smooth")
        if stored is None or stored[:2] != (sigma, samples):
            return
        res = stored[2]
        said = "abstains" if res.prediction is None else classes[res.prediction]
        cols = st.columns(3)
        cols[0].metric("Plain prediction", classes[plain])
        cols[1].metric("Smoothed prediction", said, f"{res.count} of {res.samples} votes", delta_arrow="off")
        cols[2].metric("Certified L2 radius", f"{res.radius:.3f}")


def certificates_panel() -> None:
    """Leaderboard: certified accuracy rows (smoothing's CERTIFY and core.certify's bounds)."""
    st.subheader("Certified accuracy")
    try:
        rows = leaderboard.certificates()
    except IntriguingError as exc:
        show_error(exc)
        return
    if not rows:
        st.info("No certificates yet: `intriguing smooth` or `intriguing certify` records them.")
        return
    table([{"model": c.model, "method": c.method, "norm": c.norm, "radius / eps": c.budget, "images": c.n,
            "certified": f"{c.verified_accuracy:.1%}", "when": c.created_at[:16]} for c in rows])  # fmt: skip
