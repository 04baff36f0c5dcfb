"""Home: the paper's two findings in plain words, one picture made by our engine, and the way into each page."""

import json

import streamlit as st

from core.config import ASSETS_DIR
from dashboard.app import NAVIGATION, PAGES

PICTURE = ASSETS_DIR / "home_triple.png"  # made by `python -m core.experiments.home_picture`

st.title("intriguing-lab")
st.markdown(
    "A laboratory for Szegedy et al., *Intriguing properties of neural networks* (ICLR 2014), "
    "and for what the field learned after it."
)
if (PAGES / "tour.py").is_file():
    st.page_link(
        str(PAGES / "tour.py"),
        label="New here? The guided tour shows both findings in five live steps",
        icon=":material/tour:",
    )
left, right = st.columns(2)
with left:
    st.subheader("1. Adversarial examples")
    st.markdown(
        "A tiny perturbation, found by optimisation, makes a network misclassify an image it got right. "
        "The paper finds it with box-constrained L-BFGS: the smallest change that reaches a chosen label "
        "while every pixel stays in [0, 1]. The same perturbed images often fool other networks too, "
        "even ones trained on a different half of the data."
    )
with right:
    st.subheader("2. Units vs random directions")
    st.markdown(
        "The held-out images that most activate a single hidden unit look no more 'semantic' than those "
        "that most activate a random direction in the same layer: the meaning lives in the space, "
        "not in individual units."
    )
if PICTURE.is_file():
    card = json.loads(PICTURE.with_suffix(".json").read_text())
    st.image(
        str(PICTURE),
        width=640,
        caption=f"Original | perturbation | adversarial: {card['summary']['caption']}. "
        f"Box-constrained L-BFGS on {card['model']}, MNIST test image {card['image_source'].split('#')[-1]}.",
    )
st.divider()
st.markdown("**Explore**")
for section, entries in NAVIGATION.items():
    links = [
        (file, title, icon) for file, title, icon in entries if file != "home.py" and (PAGES / file).is_file()
    ]
    if links:
        st.caption(section)
        for file, title, icon in links:
            st.page_link(str(PAGES / file), label=title, icon=icon)
