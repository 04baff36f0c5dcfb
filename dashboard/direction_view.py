"""Direction Lab pieces shared by its page and the Attack Lab: the held-out set chooser, cached studies,
the live feature visualisation, and the "what changed inside" section of an attack result."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from core import IntriguingError, units
from core.data import datasets
from core.models import get_spec
from core.models import revision as model_revision
from core.units import arms, coherence, featvis, inside, rotation, uploads
from core.visual.grid import image_row
from dashboard.common import cached_model, show_error

PAGE = "unit_explorer"  # the Direction Lab's URL path
ROW_WIDTH = 560
FRAME_INTERVAL_S = 0.1  # the live picture is redrawn at most this often
FV_WIDTH = 224
COLOURS = {
    "units": "#d62728",
    "random": "#1f77b4",
    "nmf": "#2ca02c",
    "kmeans": "#9467bd",
    "dictionary": "#ff7f0e",
}


def direction_link(model: str, layer: str, direction: str) -> str:
    """A markdown link that opens the Direction Lab with this direction selected."""
    query = urlencode({"model": model, "layer": layer, "direction": direction})
    return f"[{direction}]({PAGE}?{query})"


# ---------------------------------------------------------------- held-out set and cached work
# Every cache below is keyed on held_out_revision(model) as well as the name: a model or dataset registered
# again under the same name while the server runs is read afresh, not served from the old one's cache.


def held_out_revision(model: str) -> str:
    """The registered model's entry fingerprint and, for a user dataset's model, that dataset's ("" for the
    zoo's models on MNIST or ImageNet photos, which never change under a running server)."""
    dataset = get_spec(model).dataset
    own = datasets.fingerprint(dataset) if dataset not in ("mnist", "imagenet") else ""
    return f"{model_revision(model)}:{own}"


@st.cache_resource(show_spinner="Reading the held-out images ...")
def cached_images(model: str, revision: str, folder: str) -> units.ImageSet:
    return units.held_out_images(model, folder or None)


@st.cache_resource(show_spinner=False)
def cached_activations(model: str, revision: str, layer: str, folder: str) -> np.ndarray:
    # The bar is created inside the cached function: Streamlit replays it (already emptied) on a cache hit.
    bar = st.progress(0.0, text=f"{model} {layer}: activations over the held-out set (computed once) ...")
    images = cached_images(model, revision, folder)
    acts = units.layer_activations(model, layer, images, model=cached_model(model), progress=bar.progress)
    bar.empty()
    return acts


@st.cache_resource(show_spinner="Generating the sample photos ...")
def sample_folder() -> str:
    return str(uploads.default_photo_folder())


def choose_photos(column) -> str:
    """The held-out photo folder of an ImageNet model: generated samples, an upload, or a server path."""
    source = column.radio(
        "Held-out photos",
        ("Sample photos", "Upload", "Folder on this machine"),
        horizontal=True,
        key="dl_photo_source",
        help="Sample photos are crops of scikit-image's sample photos, generated on first use.",
    )
    if source == "Folder on this machine":
        return column.text_input(
            "Folder (photos, optionally one sub-folder per class)", key="dl_folder"
        ).strip()
    if source == "Upload":
        files = column.file_uploader(
            "Photos, or one zip of them (one folder per class gives labels)",
            type=[s.lstrip(".") for s in uploads.IMAGE_SUFFIXES] + ["zip"],
            accept_multiple_files=True,
            key="dl_upload",
        )
        if not files:
            return ""
        upload = uploads.save_uploads([(f.name, f.getvalue()) for f in files])
        if upload.skipped:
            column.caption(f"Skipped {len(upload.skipped)}: " + "; ".join(upload.skipped[:10]))
        return str(upload.folder)
    return sample_folder()


@st.cache_data(show_spinner="Scoring every unit and the random directions ...")
def cached_study(
    model: str, revision: str, layer: str, folder: str, k: int, seed: int, judge: str
) -> coherence.UnitStudy:
    return coherence.study(
        model, layer, k=k, seed=seed, images=cached_images(model, revision, folder), judge=judge
    )


@st.cache_data(show_spinner="Fitting and scoring the learned directions (a few seconds the first time) ...")
def cached_arms(model: str, revision: str, layer: str, folder: str, k: int, seed: int, judge: str) -> dict:
    images = cached_images(model, revision, folder)
    return arms.study_arms(
        model, layer, arms.DEFAULT_ARMS, k=k, seed=seed, images=images, judge=judge
    ).summary()


@st.cache_data(show_spinner="Rotating the unit basis step by step ...")
def cached_sweep(model: str, revision: str, layer: str, folder: str, k: int, seed: int, judge: str) -> dict:
    return rotation.sweep(
        model, layer, k=k, seed=seed, images=cached_images(model, revision, folder), judge=judge
    )


# ---------------------------------------------------------------- pictures and charts


def show_row(images: units.ImageSet, ranking: units.Ranking, title: str) -> None:
    labels = " ".join(images.describe(int(i)) for i in ranking.indices)
    st.caption(
        f"{title} · {labels}", help=f"<phi(x), v> from {ranking.values[0]:.3g} to {ranking.values[-1]:.3g}"
    )
    st.image(image_row(images, ranking.indices), width=ROW_WIDTH)


def arms_chart(summary: dict, score: str) -> go.Figure:
    """Each arm's mean score with its 95% interval."""
    names = list(summary["arms"])
    sides = [summary["arms"][a] for a in names]
    means = [s[f"{score}_mean"] for s in sides]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=means,
            marker_color=[COLOURS.get(a, "#7f7f7f") for a in names],
            error_y=dict(
                type="data",
                symmetric=False,
                array=[s[f"{score}_ci"][1] - m for s, m in zip(sides, means, strict=True)],
                arrayminus=[m - s[f"{score}_ci"][0] for s, m in zip(sides, means, strict=True)],
            ),
        )
    )
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title=coherence.SCORE_NAMES[score])
    return fig


def sweep_chart(result: dict, score: str) -> go.Figure:
    """A score's mean and 95% interval against alpha (0: the units, 1: a random rotation of them)."""
    points = [p for p in result["points"] if p[score] is not None]
    alphas = [p["alpha"] for p in points]
    fig = go.Figure(
        go.Scatter(
            x=alphas,
            y=[p[score]["mean"] for p in points],
            mode="lines+markers",
            error_y=dict(
                type="data",
                symmetric=False,
                array=[p[score]["ci_high"] - p[score]["mean"] for p in points],
                arrayminus=[p[score]["mean"] - p[score]["ci_low"] for p in points],
            ),
        )
    )
    fig.update_layout(
        height=260,
        margin=dict(l=10, r=10, t=30, b=10),
        title=coherence.SCORE_NAMES[score],
        xaxis_title="alpha (rows of R^alpha)",
    )
    return fig


# ---------------------------------------------------------------- live feature visualisation


def show_featvis(
    model: str, layer: str, folder: str, direction_text: str, direction: np.ndarray, steps: int, seed: int
) -> None:
    """Optimise the input for `direction` live, with Stop; the best image so far stays after Stop."""
    key = (model, layer, folder, direction_text, steps, seed)
    state = st.session_state.get("fv_run")
    if state is not None and state["key"] != key:
        state = None  # the direction changed: the old picture no longer belongs here
    running = state is not None and not state["run"].finished
    buttons = st.columns(2)
    if buttons[0].button(
        "Optimise", type="primary", icon=":material/play_arrow:", disabled=running, key="fv_go"
    ):
        settings = featvis.default_settings(get_spec(model).dataset, steps=steps, seed=seed)
        rev = held_out_revision(model)
        held_out = (cached_images(model, rev, folder), cached_activations(model, rev, layer, folder))
        run = featvis.start(model, layer, direction, settings, model=cached_model(model), held_out=held_out)
        state = {"key": key, "run": run}
        st.session_state.fv_run = state
        running = True
    stop_slot = buttons[1].empty()
    if running and stop_slot.button("Stop", icon=":material/stop:", key="fv_stop"):
        state["run"].stop()
    if state is None:
        st.caption("Press Optimise to synthesise the input that maximises <phi(x), v> for this direction.")
        return
    run: featvis.FeatureVisRun = state["run"]
    picture, status = st.empty(), st.empty()
    last = 0.0
    for event in run:
        now = time.perf_counter()
        if now - last >= FRAME_INTERVAL_S:
            last = now
            picture.image(_picture(event.x), width=FV_WIDTH, caption=f"step {event.iteration + 1}")
            status.caption(
                f"running: <phi(x), v> = {event.activation:.4g}, best {event.best_activation:.4g} "
                f"({run.iterations}/{run.settings.steps} steps)"
            )
    stop_slot.empty()
    result = run.result()
    picture.image(_picture(result.x), width=FV_WIDTH, caption="best image found")
    status.caption(
        f"{'stopped' if run.stopped else 'finished'} after {result.iterations} steps in {result.time_s:.1f} s: "
        f"<phi(x), v> = {result.activation:.4g}"
    )


def _picture(x) -> np.ndarray:
    arr = x[0].detach().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    return np.clip(arr, 0.0, 1.0)


# ---------------------------------------------------------------- the Attack Lab's "what changed inside"


@st.cache_data(show_spinner="Comparing phi(x) with phi(x_adv) in this layer ...")
def _what_changed(
    model: str, revision: str, x: np.ndarray, x_adv: np.ndarray, label: int, pred: int, layer: str
) -> dict:
    folder = sample_folder() if get_spec(model).dataset == "imagenet" else ""  # else its own test images
    record = inside.AttackRecord(
        model, torch.from_numpy(x), torch.from_numpy(x_adv), np.array([label]), np.array([pred])
    )
    return inside.what_changed(
        record, cached_images(model, revision, folder), [layer], model=cached_model(model)
    )


def show_inside(model: str, x: torch.Tensor, x_adv: torch.Tensor, label: int, pred: int) -> None:
    """Where the attack moved phi in one layer: energy over units, random and learned directions, the
    directions pushed most (each a link into the Direction Lab), and the nearest held-out neighbours."""
    st.subheader("What changed inside")
    layers = list(get_spec(model).layers)
    layer = st.selectbox("Layer", layers, index=layers.index(units.default_layer(model)), key="inside_layer")
    try:
        result = _what_changed(model, held_out_revision(model), x.numpy(), x_adv.numpy(), label, pred, layer)[
            "layers"
        ][0]
    except IntriguingError as exc:
        show_error(exc)
        return
    st.caption(
        f"delta = phi(x_adv) - phi(x) in {layer} ({result['units']} units): |delta|^2 = {result['delta_norm2']:.4g}. "
        "Top-5 share: the part of |delta|^2 inside the five directions pushed most (units and the random "
        "basis are orthonormal bases; the learned directions are fitted on the held-out set)."
    )
    rows = []
    for arm, info in result["arms"].items():
        if "skipped" in info:
            rows.append({"directions": arm, "top-5 share": None, "pushed most": info["skipped"]})
            continue
        links = ", ".join(
            f"{direction_link(model, layer, p['direction'])} ({p['push']:+.3g})"
            for p in info["pushed"]
            if not p["direction"].startswith("rotation")
        )
        rows.append(
            {"directions": arm, "top-5 share": f"{info['top5_share']:.0%}", "pushed most": links or "-"}
        )
    st.markdown(
        "| directions | top-5 share | pushed most (open in the Direction Lab) |\n|---|---|---|\n"
        + "\n".join(f"| {r['directions']} | {r['top-5 share'] or '-'} | {r['pushed most']} |" for r in rows)
    )
    if "neighbours" in result:
        n = result["neighbours"]
        st.caption(
            f"Of the {n['k']} held-out images nearest to phi(x_adv) in {layer}, {n['adv_share_of_adv_class']:.0%} "
            f"carry the adversarial class and {n['adv_share_of_clean_class']:.0%} the original one "
            f"(around phi(x): {n['clean_share_of_clean_class']:.0%} the original)."
        )
