"""Direction Lab: the held-out images that most activate single units, beside those of random directions
(Szegedy et al., Figures 1 and 2); the input synthesised for any direction, live; units against random and
learned directions, scored; and the unit basis rotated step by step towards a random rotation.
Every input lives in the URL (dashboard.url_state): ?model=cnn&layer=fc1&direction=unit:3 opens a direction
(the Attack Lab links so); unit, seed, k, steps and judge too. The held-out photos of an ImageNet model (an
upload, a folder on this machine) are not: a link never names a file to read."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError, units
from core.attacks.spec import seed_param
from core.config import DEFAULT_MODEL
from core.models import get_spec
from core.units import arms, coherence, featvis
from core.units.coherence import TOP_K
from core.visual import figures
from dashboard import url_state
from dashboard.common import model_names, show_error
from dashboard.direction_view import (
    arms_chart,
    cached_activations,
    cached_arms,
    cached_images,
    cached_study,
    cached_sweep,
    choose_photos,
    held_out_revision,
    show_featvis,
    show_row,
    sweep_chart,
)
from dashboard.figure_buttons import figure_downloads
from dashboard.url_state import bound, param_widget

ROWS = 4  # directions shown per side
SEED = seed_param("random directions and the learned fits")


def new_random_directions() -> None:
    st.session_state.seed = min(st.session_state.get("seed", SEED.default) + 1, SEED.high)


def histogram(study: coherence.UnitStudy, score: str) -> go.Figure:
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
        title=coherence.SCORE_NAMES[score],
        legend=dict(orientation="h"),
    )
    return fig


def default_model(names: list[str]) -> str:
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def link_checks(names: list[str]) -> dict[str, url_state.Check]:
    """What a link may set before any work (unit and direction wait for the layer's activations)."""
    linked = st.query_params.get("model")
    model = linked if linked in names else default_model(names)
    return {
        "model": url_state.choice(names),
        "layer": url_state.choice(get_spec(model).layers),
        "k": url_state.parameter(TOP_K),
        "seed": url_state.parameter(SEED),
        "steps": url_state.parameter(featvis.STEPS),
        "judge": url_state.choice(coherence.judge_choices(model)),
    }


st.title("Direction Lab")
st.markdown(
    "Are single units special? For a direction v in a layer's activation space, the held-out images with "
    "the largest <phi(x), v> are shown in a row. The paper finds that rows of **natural units** e_i look no "
    "more 'semantic' than rows of **random directions** v. A convolutional unit here is one channel, "
    "averaged over space."
)

try:
    names = model_names()
    link = url_state.accept_link(link_checks(names), later=("unit", "direction"))
    top = st.columns([2, 2, 3, 1])
    model = top[0].selectbox("Model", names, index=names.index(default_model(names)), **bound("model"))
    spec = get_spec(model)
    layers = list(spec.layers)
    layer = top[1].selectbox(
        "Layer", layers, index=layers.index(units.default_layer(model)), **bound("layer")
    )
    folder = choose_photos(top[2]) if spec.dataset == "imagenet" else ""  # MNIST, a dataset: its own images
    if spec.dataset == "imagenet" and not folder:
        st.info("Choose the held-out photos: the sample photos, an upload, or a folder on this machine.")
        st.stop()
    with top[3]:
        k = param_widget(TOP_K, TOP_K.default_for(spec.dataset), "k")

    revision = held_out_revision(model)
    images = cached_images(model, revision, folder)
    for name in getattr(images, "skipped", []):
        st.caption(f"Skipped {name} (not a readable image).")
    acts = cached_activations(model, revision, layer, folder)
    n_units = acts.shape[1]

    link.check_later("unit", url_state.integer(0, n_units - 1))
    controls = st.columns([4, 1, 2])
    unit = controls[0].slider("Unit index i", 0, n_units - 1, 0, **bound("unit"))
    with controls[1]:
        seed = param_widget(SEED, SEED.default, "seed")
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
    natural_rows, random_rows = figures.unit_rows(acts, shown, int(seed), int(k))
    figure_title = f"{model} {layer}: top-{k} held-out images"
    figure_downloads(
        lambda: figures.units_figure(images, natural_rows, random_rows, figure_title),
        f"{model}_{layer}_units_seed{seed}",
        "unit_fig",
        "Unit grid",
    )

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

    st.subheader("Feature visualisation: the input that maximises <phi(x), v>")
    st.caption(
        "Pixels with jitter and a smoothness penalty for MNIST; a decorrelated Fourier image with random "
        "jitter, scale and rotation for photos. Directions: unit:I, random:SEED, nmf:I, kmeans:I, "
        "dictionary:I (learned on half of the held-out set) or mix:3:1,7:-0.5."
    )
    fv = st.columns([3, 1])
    link.check_later("direction", lambda text: arms.resolve_direction(text, acts, int(seed)))
    direction_text = fv[0].text_input("Direction", value=f"unit:{unit}", **bound("direction"))
    with fv[1]:
        steps = int(param_widget(featvis.STEPS, featvis.STEPS.default, "steps"))
    try:
        direction = arms.resolve_direction(direction_text, acts, int(seed))
    except IntriguingError as exc:
        show_error(exc)
    else:
        synthetic, natural = st.columns([1, 2])
        with synthetic:
            show_featvis(model, layer, folder, direction_text, direction, steps, int(seed))
        with natural:
            ranking = units.top_k(acts, direction, k)
            show_row(images, ranking, f"held-out top-{k} of {direction_text}")
            st.caption(f"Best held-out image: <phi(x), v> = {ranking.values[0]:.4g}")

    st.subheader("All units versus random directions, scored")
    judge = st.selectbox(
        "Judge of the cosine score (a different model's features)",
        coherence.judge_choices(model),
        **bound("judge"),
        help="MODEL:LAYER whose features compare the top-k images; 'pixels' compares the raw images.",
    )
    st.markdown(
        f"Each direction's top-{k} set is scored by **label purity** (share of the most common label), "
        f"**label entropy** and the **judge cosine**: mean pairwise cosine similarity of the {k} images "
        f"in the features of `{judge}`, centred on the held-out mean. All {n_units - len(dead)} live units "
        f"are compared with {max(100, n_units - len(dead))} random directions (seed {seed}) by a two-sided "
        f"Mann-Whitney U test" + (f"; {len(dead)} dead units are left out." if dead else ".")
    )
    study = cached_study(model, revision, layer, folder, int(k), int(seed), judge)
    summary = study.summary()
    available = [s for s in coherence.SCORES if study.natural[s] is not None]
    for column, score in zip(st.columns(len(available)), available, strict=True):
        column.plotly_chart(histogram(study, score), width="stretch")
    if summary["verdict_withheld"]:
        st.warning(summary["verdict_withheld"])
    else:
        for score in coherence.SCORES:
            st.markdown("- " + coherence.verdict(summary, score))

    if st.toggle("Learned directions as a third arm (NMF, k-means, sparse dictionary)", key="dl_arms"):
        result = cached_arms(model, revision, layer, folder, int(k), int(seed), judge)
        st.caption(
            f"Fitted on {result['n_fit']} held-out images; every arm scored on the other {result['n_score']}, "
            "so no direction is judged on the images it was fitted to."
        )
        scores = [s for s in coherence.SCORES if result["arms"]["units"][f"{s}_mean"] is not None]
        for column, score in zip(st.columns(len(scores)), scores, strict=True):
            column.plotly_chart(arms_chart(result, score), width="stretch")
        for arm, why in result["skipped_arms"].items():
            st.caption(f"{arm}: {why}")
        if result["verdict_withheld"]:
            st.warning(result["verdict_withheld"])
        else:
            for arm, p_values in result["p_value"].items():
                for score in scores:
                    sentence = coherence.comparison(
                        score, result["arms"]["units"], result["arms"][arm], p_values[score], arm
                    )
                    st.markdown("- " + sentence)

    if st.toggle("Rotation sweep: from the units towards a random rotation", key="dl_sweep"):
        result = cached_sweep(model, revision, layer, folder, int(k), int(seed), judge)
        st.caption(
            f"Directions: the rows of R^alpha, R a random rotation (seed {seed}) of the {result['n_directions']} "
            "live units; alpha = 0 is the units themselves, alpha = 1 the full rotation. Means with 95% intervals."
        )
        scores = [s for s in coherence.SCORES if result["points"][0][s] is not None]
        for column, score in zip(st.columns(len(scores)), scores, strict=True):
            column.plotly_chart(sweep_chart(result, score), width="stretch")
except Exception as exc:  # noqa: BLE001 - every failure is shown, the page stays usable
    show_error(exc)
