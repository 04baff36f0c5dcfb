"""Attack Lab: pick a model and an image, run an attack and watch the perturbation being optimised.

Streamlit reruns this script on every click. The run lives in session state (`core.lab.LiveRun`), so a
rerun mid-attack (Stop, or any widget) resumes or ends the same run instead of losing it.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from core import IntriguingError, leaderboard
from core.attacks import ATTACKS
from core.data.images import model_input, open_image
from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.lab import LiveRun, conclude, make_lab_attack, predict, source_id
from core.models import class_names, get_spec, same_domain_models, usable_models
from core.pictures import digit_picture, to_uint8
from dashboard.common import cached_mnist, cached_model, model_names, show_error
from dashboard.lab_view import (
    ATTACK_TITLES,
    LivePanel,
    attack_names,
    attack_parameters,
    draw_digit,
    show_outcome,
)

SOURCES = ("MNIST test set", "Upload", "Sample photo", "Draw")
# (min_interval, pace) for LiveRun.frames: every step at most 25 a second (a browser keeps up and Stop
# answers at once), or the attack at full speed with about 10 frames a second.
LIVE_MODES = {"every step": (0.0, 0.04), "real time (attack at full speed, ~10 frames/s)": (0.1, 0.0)}

script_started = time.perf_counter()  # a click reruns the script: the first frame is timed from here
st.title("Attack Lab")
st.caption(
    "Choose a model and an image, then an attack. Watch the perturbation being optimised step by step; "
    "Stop keeps the best adversarial image found so far."
)

# ---------------------------------------------------------------- model and image

left, right = st.columns(2, gap="large")
with left:
    st.subheader("1. Model and image")
    names = usable_models(model_names())
    default_model = names.index("fc100-100-10") if "fc100-100-10" in names else 0
    model_name = st.selectbox("Model", names, index=default_model, key="lab_model")
    spec = get_spec(model_name)
    classes = class_names(model_name)
    try:
        model = cached_model(model_name)
    except IntriguingError as exc:
        show_error(exc)
        st.stop()
    source = st.radio(
        "Image",
        SOURCES,
        index=0 if spec.dataset == "mnist" else 2,
        horizontal=True,
        key=f"lab_source_{spec.dataset}",
    )

    picture = None  # a PIL image to convert for the model, or
    x = None  # a model input already made
    true_label = None
    image_source = ""
    if source == "MNIST test set":
        try:
            mnist = cached_mnist("test")
        except IntriguingError as exc:
            show_error(exc)
            st.stop()
        how = st.radio("Pick", ("by class", "by index", "random"), horizontal=True, key="lab_mnist_how")
        if how == "by class":
            digit = st.selectbox("Class", range(10), key="lab_mnist_class")
            members = np.flatnonzero(mnist.labels.numpy() == digit)
            nth = st.number_input(
                f"Example of this class (0-{len(members) - 1})", 0, len(members) - 1, 0, key="lab_mnist_nth"
            )
            index = int(members[nth])
        elif how == "by index":
            index = st.number_input(
                f"Index (0-{len(mnist.labels) - 1})", 0, len(mnist.labels) - 1, 0, key="lab_idx"
            )
        else:
            if (
                st.button("Another random image", key="lab_mnist_random")
                or "lab_random_index" not in st.session_state
            ):
                st.session_state.lab_random_index = int(np.random.default_rng().integers(len(mnist.labels)))
            index = st.session_state.lab_random_index
        digit_tensor = mnist.images[index : index + 1]
        true_label = int(mnist.labels[index])
        image_source = f"mnist test #{index}"
        if spec.dataset == "mnist":
            x = digit_tensor
        else:
            picture = digit_picture(digit_tensor)
    elif source == "Upload":
        upload = st.file_uploader("A PNG or JPEG image", type=["png", "jpg", "jpeg"], key="lab_upload")
        if upload is not None:
            data = upload.getvalue()
            try:
                picture = open_image(data, upload.name)
            except IntriguingError as exc:
                show_error(exc)
            else:
                image_source = f"upload {upload.name} sha256:{source_id(data)}"
    elif source == "Sample photo":
        photo = st.selectbox("Photo", SAMPLE_PHOTOS, key="lab_photo")
        picture = sample_photo(photo)
        image_source = f"sample photo {photo}"
    else:
        drawing = draw_digit()
        if drawing is not None:
            picture = open_image(drawing, "your drawing")
            image_source = f"drawing sha256:{source_id(drawing)}"

    if picture is not None:
        x = model_input(picture, model_name)
    if x is None:
        st.info("Choose an image to attack.")
        st.stop()
    memo = st.session_state.setdefault("lab_predictions", {})  # a rerun should not re-run a 224-px model
    if (model_name, image_source) not in memo or not image_source:
        memo[(model_name, image_source)] = predict(model, x)
    probs = memo[(model_name, image_source)]
    label = int(probs.argmax())
    shown, says = st.columns(2)
    shown.image(to_uint8(x[0], max(1, 168 // x.shape[-1])), caption="what the model sees")
    if true_label is not None:
        says.metric("True label", classes[true_label])
    says.metric("Model's prediction", classes[label], f"{probs[label]:.1%} confident", delta_color="off")
    if true_label is not None and true_label != label:
        says.warning("The model already misclassifies this image; the attack starts from its prediction.")

# ---------------------------------------------------------------- attack

with right:
    st.subheader("2. Attack")
    attack_name = st.selectbox(
        "Attack", attack_names(), format_func=lambda n: ATTACK_TITLES.get(n, n), key="lab_attack"
    )
    cls = ATTACKS[attack_name]
    modes = [
        m for m, ok in (("untargeted", cls.supports_untargeted), ("targeted", cls.supports_targeted)) if ok
    ]
    mode = st.radio("Goal", modes, horizontal=True, key=f"lab_goal_{attack_name}")
    target = None
    if mode == "targeted":
        choices = [c for c in range(len(classes)) if c != label]
        target = st.selectbox(
            "Target class", choices, format_func=lambda c: f"{classes[c]} ({c})", key="lab_target"
        )
    with st.expander("Parameters"):
        params = attack_parameters(attack_name, spec.dataset)
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="lab_seed")
    live_mode = st.radio("Live view", tuple(LIVE_MODES), horizontal=True, key="lab_live_mode")

# ---------------------------------------------------------------- run, watch, stop

state = st.session_state.get("lab_run")
running = state is not None and not state["live"].finished
buttons = st.columns([1, 1, 6])
if buttons[0].button("Run", type="primary", icon=":material/play_arrow:", disabled=running, key="lab_go"):
    try:
        attack = make_lab_attack(attack_name, model, int(seed), **params)
        live = LiveRun(attack, x, label, target, seed=int(seed), started_at=script_started)
    except IntriguingError as exc:
        show_error(exc)
    else:
        state = {
            "live": live,
            "model": model_name,
            "classes": classes,
            "x": x,
            "true_label": true_label,
            "image_source": image_source,
            "live_mode": LIVE_MODES[live_mode],
        }
        st.session_state.lab_run = state
        running = True
stop_slot = buttons[1].empty()  # emptied once the run is over
if running and stop_slot.button("Stop", icon=":material/stop:", key="lab_stop"):
    state["live"].stop()

if state is not None:
    live: LiveRun = state["live"]
    st.subheader(f"{ATTACK_TITLES.get(live.run.attack.name, live.run.attack.name)} on {state['model']}")
    st.caption(f"image: {state['image_source']}")
    panel = LivePanel(state["x"][0].numpy(), state["classes"], live.label, live.target)
    status = st.empty()
    if not live.finished:
        try:
            for frame in live.frames(*state["live_mode"]):
                panel.show(frame, live.series)
                status.caption(f"running: {len(live.series['iteration'])} steps in {frame.elapsed_s:.1f} s")
        except Exception as exc:  # noqa: BLE001 - say what failed, keep the best result so far
            show_error(exc)
            live.stop()
    stop_slot.empty()
    panel.show(live.final_frame(), live.series, final=True)
    pace = live.pace()
    status.caption(
        f"{'stopped' if live.stopped else 'finished'} after {pace['steps']} steps; {pace['frames']} frames "
        f"drawn in {pace['wall_s']:.1f} s ({pace['frames_per_s'] or 0:.1f} frames/s); "
        f"first frame {pace['first_frame_s'] or 0:.2f} s after Run"
    )

    if "outcome" not in state:
        with st.spinner("Noise baseline and transfer ..."):
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
    show_outcome(state["outcome"], state["classes"])
