"""Guided tour: the paper's two findings in five steps. Each step is computed live when the page opens
(deterministic: one model, one test image, seed 0; small MNIST models, a second or two on a CPU) and links
to the full page with the same inputs (dashboard.url_state keys)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import IntriguingError, units
from core.experiments import read_card, table4
from core.experiments.adversarial import amplify
from core.lab import LiveRun, Outcome, TransferRow, conclude, make_lab_attack, predict, transfer
from core.models import class_names, same_domain_models, usable_models
from core.visual.grid import image_row
from core.visual.pictures import to_uint8, triple_picture
from dashboard import url_state
from dashboard.common import cached_mnist, cached_model, model_names, show_error

MODEL = "fc100-100-10"  # the paper's smallest MNIST network: every step is fast on a CPU
INDEX = 0  # MNIST test image
SEED = 0
UNIT = 0  # the unit and the random direction of step 5
# The Attack Lab's inputs and its replay flag: the link opens on the run the tour shows, not an empty page.
LAB_LINK = {"lab_model": MODEL, "lab_idx": str(INDEX), "lab_seed": str(SEED), **url_state.replay_link("lab")}


@st.cache_resource(show_spinner="Box-constrained L-BFGS is looking for the smallest change ...")
def paper_attack(
    model_name: str, index: int, seed: int, amplify_rms: float | None
) -> tuple[Outcome, np.ndarray, int, list[TransferRow]]:
    """The Attack Lab's default run (the paper's L-BFGS) on one test image, as the lab does it: the class
    attacked is the model's prediction. Concluded (noise baseline, transfer); also the clean probabilities
    and the transfer of the same perturbation amplified to `amplify_rms`, as Table 4 does."""
    model = cached_model(model_name)
    mnist = cached_mnist("test")
    x, true_label = mnist.images[index : index + 1], int(mnist.labels[index])
    probs = predict(model, x)
    live = LiveRun(make_lab_attack("lbfgs", model, seed), x, int(probs.argmax()), seed=seed)
    for _ in live.frames(min_interval=3600.0):  # only the result is shown
        pass
    others = same_domain_models(model_name, usable_models(model_names()))
    outcome = conclude(live, model, model_name, f"mnist test #{index}", true_label, others, cached_model)
    result = outcome.result
    amplified = (
        transfer(result.x, amplify(result.x, result.x_adv, amplify_rms), true_label, others, cached_model)
        if amplify_rms is not None and bool(result.success[0])
        else []
    )
    return outcome, probs, true_label, amplified


def span(shares) -> str:
    """A range of shares as a paper writes it: 5%–22%, or one value when all are equal."""
    return "–".join(f"{v:.0%}" for v in sorted({min(shares), max(shares)}))


def step(number: int, title: str, sentence: str, page: str, query: dict[str, str] | None = None):
    """A bordered step: its title, its one sentence and the link; returns the column for its picture."""
    box = st.container(border=True)
    picture, text = box.columns([1, 1.1], vertical_alignment="center")
    text.markdown(f"**{number}. {title}**")
    text.markdown(sentence)
    text.page_link(
        page, label="Open this in the full page", icon=":material/open_in_new:", query_params=query
    )
    return picture


st.title("Guided tour")
st.caption(
    "Szegedy et al. (2014) in five steps, each computed live just now on the MNIST network "
    f"{MODEL} (test image {INDEX}, seed {SEED})."
)
card = read_card(table4.NAME)
rates = table4.transfer_rates(card) if card is not None else None
try:
    outcome, clean_probs, true_label, amplified = paper_attack(
        MODEL, INDEX, SEED, None if rates is None else rates.amplify_rms
    )
except IntriguingError as exc:
    show_error(exc)
    st.stop()
classes = class_names(MODEL)
result = outcome.result
x, x_adv = result.x[0], result.x_adv[0]
before, after = int(result.pred_before[0]), int(result.pred_after[0])

step(
    1,
    "A network that gets it right",
    f"{MODEL} reads this test digit as **{classes[before]}** ({clean_probs[before]:.0%} confident); "
    f"the true label is {classes[true_label]}.",
    "views/attack_lab.py",
    LAB_LINK,
).image(to_uint8(x, 5), width=140)

picture, amplification = triple_picture(x, x_adv, scale=5)
step(
    2,
    "A change you can hardly see flips it",
    f"The paper's box-constrained L-BFGS finds a perturbation of RMS **{float(result.rms[0]):.4f}** "
    f"(pixels in [0, 1]) that makes the network say **{classes[after]}** "
    f"({float(result.probs_after[0, after]):.0%}).",
    "views/attack_lab.py",
    LAB_LINK,
).image(picture, caption=f"original | perturbation × {amplification:.0f} | adversarial", width=420)

baseline = outcome.baseline
noise_pred = int(baseline.pred_after[0])
changed = "changes" if bool(baseline.success[0]) else "does not change"
step(
    3,
    "Random noise of the same size does nothing",
    f"Gaussian noise with the same RMS {changed} the answer (**{classes[noise_pred]}**): the direction "
    "of the change matters, not its size.",
    "views/attack_lab.py",
    LAB_LINK,
).image(to_uint8(baseline.x_adv[0], 5), width=140)

fooled = sum(row.fooled for row in outcome.transfer)
others = len(outcome.transfer)
rms = float(result.rms[0])
if rates is not None:  # the finding is a rate over many images (Table 4), and at what distortion
    amplified_fooled = sum(row.fooled for row in amplified)
    transfer_sentence = (
        f"Transfer is a rate over many images. Of {rates.n:,} examples made for {rates.source} (mean RMS "
        f"{rates.distortion:.3f}), **{span(rates.minimal.values())}** fool the table's other networks (another architecture, "
        f"or the other half of the training set); "
        f"amplified to RMS {rates.amplify_rms:g}, **{span(rates.amplified.values())}** do (Table 4, stored "
        f"result). This example at its own RMS {rms:.3f} fools {fooled} of the other {others} networks; "
        f"amplified to RMS {rates.amplify_rms:g} like the table's, it fools **{amplified_fooled}** of them."
    )
else:
    transfer_sentence = (
        f"Shown to the other {others} MNIST networks of the lab, this adversarial image (RMS {rms:.3f}) "
        f"fools **{fooled}** of them; the paper's transfer rates come from many images and larger "
        "distortions (Transferability page)."
    )
amplified_by_model = {row.model: row.fooled for row in amplified}
step(
    4,
    "Does the same image fool other networks?",
    transfer_sentence,
    "views/transferability.py",
).dataframe(
    [
        {
            "model": row.model,
            f"fooled at RMS {rms:.3f}": row.fooled,
            **({} if rates is None else {f"at RMS {rates.amplify_rms:g}": amplified_by_model.get(row.model)}),
        }
        for row in outcome.transfer
    ],
    hide_index=True,
    height=180,
)

layer = units.default_layer(MODEL)
images = units.held_out_images(MODEL)
acts = units.layer_activations(MODEL, layer, images, model=cached_model(MODEL))
natural = units.top_k(acts, units.unit_vector(acts.shape[1], UNIT), 8)
random = units.top_k(acts, units.random_directions(acts.shape[1], 1, SEED)[0], 8)
rows = step(
    5,
    "Single units are not special",
    f"The test images that most activate unit {UNIT} of layer {layer} (top) look no more alike than "
    f"those that most activate a random direction of the same layer (bottom): meaning lives in the "
    "space, not in individual units.",
    "views/unit_explorer.py",
    {"model": MODEL, "layer": layer, "direction": f"unit:{UNIT}"},  # the Direction Lab's own link keys
)
rows.image(image_row(images, natural.indices), caption=f"unit {UNIT}", width=420)
rows.image(image_row(images, random.indices), caption=f"random direction (seed {SEED})", width=420)
