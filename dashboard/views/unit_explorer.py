"""Unit Explorer: the held-out images that most activate single units, beside those of random directions
(Szegedy et al., Figures 1 and 2), and the coherence scores that turn the comparison into a number."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import units
from core.models import get_spec
from dashboard.common import cached_model, model_names, show_error

ROWS = 4  # directions shown per side
ROW_WIDTH = 560  # pixels of one top-k row on screen


@st.cache_resource(show_spinner="Reading the held-out images ...")
def cached_images(model: str, folder: str) -> units.ImageSet:
    return units.held_out_images(model, folder or None)


@st.cache_resource(show_spinner=False)
def cached_activations(model: str, layer: str, folder: str) -> np.ndarray:
    # The bar is created inside the cached function: Streamlit replays it (already emptied) on a cache hit.
    bar = st.progress(0.0, text=f"{model} {layer}: activations over the held-out set (computed once) ...")
    images = cached_images(model, folder)
    acts = units.layer_activations(model, layer, images, model=cached_model(model), progress=bar.progress)
    bar.empty()
    return acts


@st.cache_data(show_spinner="Scoring every unit and the random directions ...")
def cached_study(
    model: str, layer: str, folder: str, k: int, seed: int, n_random: int, judge: str
) -> units.UnitStudy:
    images = cached_images(model, folder)
    return units.study(model, layer, k=k, n_random=n_random, seed=seed, images=images, judge=judge)


def show_row(images: units.ImageSet, ranking: units.Ranking, title: str) -> None:
    labels = " ".join(images.describe(int(i)) for i in ranking.indices)
    st.caption(
        f"{title} · {labels}", help=f"<phi(x), v> from {ranking.values[0]:.3g} to {ranking.values[-1]:.3g}"
    )
    st.image(units.image_row(images, ranking.indices), width=ROW_WIDTH)


def new_random_directions() -> None:
    st.session_state.unit_seed += 1


def histogram(study: units.UnitStudy, score: str) -> go.Figure:
    fig = go.Figure()
    for name, values, colour in (
        ("units", study.natural[score], "#d62728"),
        ("random directions", study.random[score], "#1f77b4"),
    ):
        fig.add_trace(
            go.Histogram(
                x=values, name=name, opacity=0.55, histnorm="probability", nbinsx=20, marker_color=colour
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=280,
        margin=dict(l=10, r=10, t=30, b=10),
        title=units.coherence.SCORE_NAMES[score],
        legend=dict(orientation="h"),
    )
    return fig


st.title("Unit Explorer")
st.markdown(
    "Are single units special? For a direction v in a layer's activation space, the held-out images with "
    "the largest <phi(x), v> are shown in a row. The paper finds that rows of **natural units** e_i look no "
    "more 'semantic' than rows of **random directions** v. A convolutional unit here is one channel, "
    "averaged over space."
)
st.session_state.setdefault("unit_seed", 0)

try:
    names = model_names()
    top = st.columns([2, 2, 3, 1])
    model = top[0].selectbox(
        "Model", names, index=names.index("fc100-100-10") if "fc100-100-10" in names else 0
    )
    spec = get_spec(model)
    layers = list(spec.layers)
    layer = top[1].selectbox("Layer", layers, index=layers.index(units.default_layer(model)))
    folder = ""
    if spec.dataset != "mnist":
        folder = top[2].text_input("Image folder (photos, optionally one sub-folder per class)").strip()
        if not folder:
            st.info(
                "No ImageNet held-out set ships with the lab: enter a folder of photos to explore this model."
            )
            st.stop()
    k = top[3].number_input("k", min_value=2, max_value=16, value=8)

    images = cached_images(model, folder)
    for name in getattr(images, "skipped", []):
        st.caption(f"Skipped {name} (not a readable image).")
    acts = cached_activations(model, layer, folder)
    n_units = acts.shape[1]

    controls = st.columns([4, 1, 2])
    unit = controls[0].slider("Unit index i", 0, n_units - 1, 0, key="unit_index")
    seed = controls[1].number_input("Random seed", min_value=0, step=1, key="unit_seed")
    controls[2].button("Fresh random directions", on_click=new_random_directions, width="stretch")

    shown = [(unit + j) % n_units for j in range(min(ROWS, n_units))]
    randoms = units.random_directions(n_units, len(shown), int(seed))
    left, right = st.columns(2)
    dead = set(units.dead_units(acts).tolist())
    with left:
        st.subheader("Natural units e_i")
        for u in shown:
            title = f"unit {u} (dead: constant on every image, ranked by index)" if u in dead else f"unit {u}"
            show_row(images, units.top_k(acts, units.unit_vector(n_units, u), k), title)
    with right:
        st.subheader("Random directions v")
        for j, v in enumerate(randoms):
            show_row(images, units.top_k(acts, v, k), f"random direction {j} (seed {seed})")

    st.subheader("From a unit to a random direction")
    angle = st.slider("Angle a in cos(a) e_i + sin(a) v (degrees)", 0, 90, 0, step=5, key="unit_angle")
    e_i, v = units.unit_vector(n_units, unit), randoms[0]
    mixed = units.top_k(acts, units.interpolate(e_i, v, math.radians(angle)), k)
    unit_set = set(units.top_k(acts, e_i, k).indices.tolist())
    random_set = set(units.top_k(acts, v, k).indices.tolist())
    show_row(images, mixed, f"a = {angle}° between unit {unit} and random direction 0")
    ids = set(mixed.indices.tolist())
    st.caption(
        f"Shares {len(ids & unit_set)}/{k} images with unit {unit}'s top-{k}, {len(ids & random_set)}/{k} with v's."
    )

    with st.expander("Your own combination of units"):
        text = st.text_input("unit:weight pairs", value=f"{unit}:1, {(unit + 1) % n_units}:1")
        if text.strip():
            direction = units.combination(n_units, units.parse_combination(text))
            show_row(images, units.top_k(acts, direction, k), "combination")
            show_row(images, units.top_k(acts, direction, k, largest=False), "its bottom-k")

    st.subheader("All units versus random directions, scored")
    judge = st.selectbox(
        "Judge of the cosine score (a different model's features)",
        units.judge_choices(model),
        key="unit_judge",
        help="MODEL:LAYER whose features compare the top-k images; 'pixels' compares the raw images.",
    )
    st.markdown(
        f"Each direction's top-{k} set is scored by **label purity** (share of the most common label), "
        f"**label entropy** and the **judge cosine**: mean pairwise cosine similarity of the {k} images "
        f"in the features of `{judge}`, centred on the held-out mean. All {n_units - len(dead)} live units "
        f"are compared with {max(100, n_units - len(dead))} random directions (seed {seed}) by a two-sided "
        f"Mann-Whitney U test" + (f"; {len(dead)} dead units are left out." if dead else ".")
    )
    study = cached_study(model, layer, folder, int(k), int(seed), 100, judge)
    summary = study.summary()
    available = [s for s in units.SCORES if study.natural[s] is not None]
    for column, score in zip(st.columns(len(available)), available, strict=True):
        column.plotly_chart(histogram(study, score), width="stretch")
    for score in units.SCORES:
        st.markdown("- " + units.verdict(summary, score))
except Exception as exc:  # noqa: BLE001 - every failure is shown, the page stays usable
    show_error(exc)
