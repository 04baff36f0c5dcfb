"""Home: the paper's two findings in plain words, and the way into each page."""

import streamlit as st

st.title("intriguing-lab")
st.markdown(
    "A laboratory for Szegedy et al., *Intriguing properties of neural networks* (ICLR 2014), "
    "and for what the field learned after it."
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
st.divider()
st.markdown("Pick a page in the sidebar to explore.")
