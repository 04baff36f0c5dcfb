"""Attack Lab: pick a model and an image, run an attack and watch the perturbation being optimised.

Inputs sit in the sidebar and live in the URL (dashboard.url_state), so the live panel is on screen from
Run to result and every choice is a link. Streamlit reruns this script on every click. The run lives in
session state (`core.lab.LiveRun`), so a rerun mid-attack (any widget) resumes the same run; Run is
always enabled (pressed during a run, it stops that run and starts the new one); Stop keeps the best so far.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from core import IntriguingError
from core.attacks import ATTACKS
from core.checks import SEED_MAX
from core.config import DEFAULT_MODEL
from core.data.images import open_image
from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.evaluation import leaderboard
from core.lab import LiveRun, conclude, make_lab_attack, predict, source_id
from core.models import class_names, get_spec, same_domain_models, usable_models
from core.models.inputs import model_input
from core.visual import figures
from core.visual.pictures import digit_picture, to_uint8
from dashboard import dataset_source, url_state
from dashboard.common import cached_mnist, cached_model, model_names, show_error
from dashboard.lab_view import (
    LivePanel,
    attack_names,
    attack_parameters,
    attack_title,
    draw_digit,
    show_outcome,
)
from dashboard.url_state import bound

SOURCES = ("MNIST test set", "Sample photo", "Upload", "Draw")
GOALS = ("untargeted", "targeted")
# LiveRun.frames' min_interval and the view's pace (least seconds between frames): every step drawn no
# faster than a browser follows, or the attack at full speed with a frame at most every 0.1 s.
LIVE_MODES = {"every step": (0.0, 0.04), "real time": (0.1, 0.0)}


def target_name(classes, c: int) -> str:
    return f"{classes[c]} ({c})"


def link_checks(names: list[str]) -> dict[str, url_state.Check]:
    """What a link may set on this page, each checked before a widget reads it."""
    linked_model = st.query_params.get("lab_model")
    model = linked_model if linked_model in names else default_model(names)
    classes = class_names(model)
    return {
        "lab_model": url_state.choice(names),
        "lab_source_mnist": url_state.choice(SOURCES),
        "lab_source_imagenet": url_state.choice(SOURCES),
        "lab_idx": url_state.integer(0, len(cached_mnist("test").labels) - 1),
        "lab_photo": url_state.choice(SAMPLE_PHOTOS),
        "lab_attack": url_state.choice(attack_names(), attack_title),
        "lab_goal": url_state.choice(GOALS),
        "lab_target": url_state.choice([target_name(classes, c) for c in range(len(classes))]),
        "lab_seed": url_state.integer(0, SEED_MAX),
        "lab_live": url_state.choice(LIVE_MODES),
        **url_state.replay_check("lab"),
        **url_state.attack_parameter_checks("lab", ("mnist", "imagenet")),
        **dataset_source.link_checks("lab"),
    }


def default_model(names: list[str]) -> str:
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def request_run() -> None:
    """Run's callback (before the rerun's script): end the current run, if any, and ask for a new one."""
    state = st.session_state.pop("lab_run", None)
    if state is not None:
        state["live"].stop()
    st.session_state.lab_requested = time.perf_counter()
    url_state.name_the_run("lab")


def stop_run() -> None:
    state = st.session_state.get("lab_run")
    if state is not None:
        state["live"].stop()


def random_index(n: int) -> None:
    st.session_state.lab_idx = int(np.random.default_rng().integers(n))


st.title("Attack Lab")
names = usable_models(model_names())
try:
    url_state.accept_link(link_checks(names))
except IntriguingError as exc:  # MNIST missing: the checks cannot know its size
    show_error(exc)

# ---------------------------------------------------------------- inputs (sidebar)

drawing_area = st.container()  # the canvas, in the main area: at the sidebar's foot it starts below the fold
sidebar = st.sidebar
with sidebar:
    st.markdown("**Model and image**")
    model_name = st.selectbox("Model", names, index=names.index(default_model(names)), **bound("lab_model"))
    spec = get_spec(model_name)
    classes = class_names(model_name)
    source = st.radio(
        "Image",
        dataset_source.sources(spec.dataset, SOURCES),
        index=1 if spec.dataset == "imagenet" else 0,
        horizontal=True,
        **bound(f"lab_source_{spec.dataset}"),
    )
    picture = None  # a PIL image to convert for the model, or
    x = None  # a model input already made
    true_label = None
    image_source = ""
    try:
        model = cached_model(model_name)
        if source == dataset_source.DATASET:  # a registered dataset's model: its own test images
            x, true_label, image_source = dataset_source.pick_image("lab", model_name)
        elif source == "MNIST test set":
            mnist = cached_mnist("test")
            n = len(mnist.labels)
            index = st.number_input(f"Test image (0-{n - 1})", 0, n - 1, 0, **bound("lab_idx"))
            st.button("Random test image", on_click=random_index, args=(n,), key="lab_random")
            digit_tensor = mnist.images[index : index + 1]
            true_label = int(mnist.labels[index])
            image_source = f"mnist test #{index}"
            if spec.dataset == "mnist":
                x = digit_tensor
            else:
                picture = digit_picture(digit_tensor)
        elif source == "Sample photo":
            photo = st.selectbox("Photo", SAMPLE_PHOTOS, **bound("lab_photo"))
            picture = sample_photo(photo)
            image_source = f"sample photo {photo}"
        elif source == "Upload":
            upload = st.file_uploader("A PNG or JPEG image", type=["png", "jpg", "jpeg"], key="lab_upload")
            if upload is not None:
                data = upload.getvalue()
                picture = open_image(data, upload.name)
                image_source = f"upload {upload.name} sha256:{source_id(data)}"
        else:
            with drawing_area:
                drawing = draw_digit()
            if drawing is not None:
                picture = open_image(drawing, "your drawing")
                image_source = f"drawing sha256:{source_id(drawing)}"
        if picture is not None:
            x = model_input(picture, model_name)
    except IntriguingError as exc:
        show_error(exc)
        x = None
    if x is not None:
        memo = st.session_state.setdefault("lab_predictions", {})  # a rerun should not re-run a 224-px model
        if (model_name, image_source) not in memo or not image_source:
            memo[(model_name, image_source)] = predict(model, x)
        probs = memo[(model_name, image_source)]
        label = int(probs.argmax())
        shown, says = st.columns([1, 1.4])
        shown.image(to_uint8(x[0], max(1, 84 // x.shape[-1])), caption="what the model sees", width=84)
        if true_label is not None:
            says.metric("True label", classes[true_label])
        if len(classes[label]) > 8:  # a long ImageNet class name: as text, which wraps, not a cut metric
            says.markdown(f"Model's prediction  \n**{classes[label]}**  \n{probs[label]:.1%} confident")
        else:
            says.metric(
                "Model's prediction", classes[label], f"{probs[label]:.1%} confident", delta_color="off",
                delta_arrow="off",
            )  # fmt: skip
        if true_label is not None and true_label != label:
            st.warning("The model already misclassifies this image; the attack starts from its prediction.")

    st.markdown("**Attack**")
    names_offered = attack_names()
    attack_name = st.selectbox("Attack", names_offered, format_func=attack_title, **bound("lab_attack"))
    cls = ATTACKS[attack_name]
    modes = [m for m, ok in zip(GOALS, (cls.supports_untargeted, cls.supports_targeted), strict=True) if ok]
    mode = st.radio("Goal", modes, horizontal=True, **bound("lab_goal"))
    target = None
    if mode == "targeted" and x is not None:
        choices = [target_name(classes, c) for c in range(len(classes)) if c != label]
        target = int(st.selectbox("Target class", choices, **bound("lab_target")).rsplit("(", 1)[1][:-1])
    with st.expander("Parameters", expanded=False):
        params = attack_parameters(attack_name, spec.preset_domain, model=model_name)
    seed = st.number_input("Seed", 0, SEED_MAX, 0, **bound("lab_seed"))
    live_mode = st.radio(
        "Live view", tuple(LIVE_MODES), horizontal=True, **bound("lab_live"),
        help="every step: each step drawn, no faster than a browser follows (C&W's 1000 steps take about "
        "30 s); real time: the attack at full speed, a frame at most every 0.1 s.",
    )  # fmt: skip

# ---------------------------------------------------------------- run, watch, stop

if url_state.replay_requested("lab") and "lab_run" not in st.session_state:  # a link that names a run
    st.session_state.lab_requested = time.perf_counter()
requested = st.session_state.pop("lab_requested", None)
if requested is not None and x is not None:
    try:
        attack = make_lab_attack(attack_name, model, int(seed), **params)
        live = LiveRun(attack, x, label, target, seed=int(seed), started_at=requested)
    except IntriguingError as exc:
        show_error(exc)
    else:
        st.session_state.lab_run = {
            "live": live,
            "model": model_name,
            "classes": classes,
            "x": x,
            "probs": probs,
            "true_label": true_label,
            "image_source": image_source,
            "live_mode": LIVE_MODES[live_mode],
            "inputs": url_state.inputs("lab"),
        }

state = st.session_state.get("lab_run")
running = state is not None and not state["live"].finished
buttons = st.columns([1, 1, 5], vertical_alignment="center")
buttons[0].button(
    "Run",
    type="primary",
    icon=":material/play_arrow:",
    on_click=request_run,
    disabled=x is None,
    key="lab_go",
)
stop_slot = buttons[1].empty()  # emptied once the run is over
if running:
    stop_slot.button("Stop", icon=":material/stop:", on_click=stop_run, key="lab_stop")
status = buttons[2].empty()
if x is None:
    st.info(
        "Draw a digit above to attack it." if source == "Draw" else "Choose an image to attack (sidebar)."
    )
    st.stop()
if state is None:
    status.caption(
        "Choose a model, an image and an attack in the sidebar, then Run: watch the perturbation being "
        "optimised step by step; Stop keeps the best adversarial image found so far."
    )
    st.caption(f"**{attack_title(attack_name)}** on **{model_name}**, {image_source}: press Run")
    LivePanel(x[0].numpy(), classes, label, None, probs, attack_title(attack_name))
    st.stop()

live: LiveRun = state["live"]
unchanged = state["inputs"] == url_state.inputs("lab")
(url_state.name_the_run if unchanged else url_state.forget_the_run)("lab")  # the URL names what is shown
st.caption(
    f"**{attack_title(live.run.attack.name)}** on **{state['model']}**, {state['image_source']}"
    + ("" if unchanged else " (the sidebar has changed since this run)")
)
panel = LivePanel(
    state["x"][0].numpy(),
    state["classes"],
    live.label,
    live.target,
    state["probs"],
    attack_title(live.run.attack.name),
)
outcome_slot = st.empty()  # replaces a previous run's result at once, not when this run's script ends
if not live.finished:
    min_interval, pace = state["live_mode"]
    st.html("<style>[data-testid='stStatusWidget'] button {display: none}</style>")  # only the page's Stop
    try:
        last = 0.0
        for frame in live.frames(min_interval):
            wait = pace - (time.perf_counter() - last)
            if wait > 0:
                time.sleep(wait)  # every step drawn, no faster than a browser follows
            last = time.perf_counter()
            panel.show(frame, live.series, live.rounds)
            status.caption(
                f"running: {len(live.series['iteration'])} steps in {frame.elapsed_s:.1f} s"
                + (" · every step drawn; 'real time' (sidebar) runs the attack at full speed" if pace else "")
            )
    except IntriguingError as exc:  # say what failed, keep the best result so far
        show_error(exc)
        live.stop()
stop_slot.empty()
panel.show(live.final_frame(), live.series, live.rounds, final=True)
pace_info = live.pace()
status.caption(
    f"{'stopped' if live.stopped else 'finished'} after {pace_info['steps']} steps; {pace_info['frames']} "
    f"frames drawn in {pace_info['wall_s']:.1f} s of wall clock ({pace_info['frames_per_s'] or 0:.1f} frames/s); "
    f"first frame {pace_info['first_frame_s'] or 0:.2f} s after Run"
)

if "outcome" not in state:
    with outcome_slot, st.spinner("Noise baseline and transfer ..."):
        try:
            state["outcome"] = conclude(
                live,
                cached_model(state["model"]),
                state["model"],
                state["image_source"],
                state["true_label"],
                same_domain_models(state["model"], usable_models(model_names())),
                cached_model,
            )
            if not state["outcome"].card.summary["stopped_early"]:  # a stopped run measures nothing
                leaderboard.record_result(state["outcome"].result, state["model"], source="dashboard")
        except IntriguingError as exc:
            show_error(exc)
            st.stop()
if "certified_rms" in state["outcome"].certificate:  # proved from below, on the chart of what was found
    panel.show_floor(state["outcome"].certificate["certified_rms"], live.series, live.rounds)
with outcome_slot.container():
    show_outcome(
        state["outcome"],
        state["classes"],
        live.rounds,
        figure=lambda: figures.adversarial_figure(
            figures.examples(cached_model(state["model"]), state["outcome"].result, state["classes"]),
            note=f"{attack_title(live.run.attack.name)} on {state['model']}, {state['image_source']}",
        ),
    )
