"""Defences: which guards hold and which only seem to (core.defences.transforms)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.config import DEFAULT_MODEL
from core.defences import transforms as guards
from core.evaluation import defences
from core.models import get_spec, usable_models
from dashboard import url_state
from dashboard.common import cached_model, model_names, show_error
from dashboard.smoothing_view import certified_panel
from dashboard.url_state import bound, param_widget

COLUMNS = {
    "clean_accuracy": ("clean", "#9aa5b1"),
    "robust_transfer": ("transfer from bare model", "#8fb8de"),
    "robust_plain": ("plain attack on the defence", "#2a9d8f"),
    "robust_adaptive": ("adaptive (BPDA) attack", "#d62728"),
}

st.title("Defences")
st.caption(
    "Input transformations squeeze the image before the model. Against a plain attack they can look strong; an "
    "adaptive attack (BPDA: the transformation in the forward pass, the identity in the backward pass) shows "
    "which really hold. Adversarially trained models change the model instead."
)
certified_panel()

# MNIST's models and those of a registered dataset (judged on its images); ImageNet's photos are too few.
models = [m for m in usable_models(model_names()) if get_spec(m).dataset != "imagenet"]
url_state.accept_link(
    {
        "def_model": url_state.choice(models),
        "def_transforms": url_state.several(guards.PRESETS),
        **url_state.spec_checks("def", defences.SETTINGS),
    }
)
inputs = {p.name: p for p in defences.SETTINGS}
left, right = st.columns(2, gap="large")
with left:
    default = models.index(DEFAULT_MODEL) if DEFAULT_MODEL in models else 0
    model_name = st.selectbox("Model", models, index=default, **bound("def_model"))
    domain = get_spec(model_name).dataset
    chosen = st.multiselect(
        "Input transformations", guards.PRESETS, default=guards.DEFAULT_PRESETS, **bound("def_transforms")
    )
    seed = param_widget(inputs["seed"], inputs["seed"].default, "def_seed")
with right:
    attack = param_widget(inputs["attack"], inputs["attack"].default, "def_attack")
    eps = param_widget(inputs["eps"], inputs["eps"].default, "def_eps")
    steps = param_widget(inputs["steps"], inputs["steps"].default, "def_steps", disabled=attack == "fgsm")
    n = param_widget(inputs["n"], inputs["n"].default, "def_n")

settings = dict(attack=attack, eps=float(eps), steps=int(steps), norm=defences.NORM, seed=int(seed))
key = (model_name, tuple(chosen), tuple(settings.items()), int(n))
if st.button("Evaluate", type="primary", icon=":material/security:", key="def_go"):
    bar = st.progress(0.0, text="starting")
    try:
        transforms = [guards.parse_transform(spec) for spec in chosen]
        chosen_images = defences.images(cached_model(model_name), int(n), dataset=domain)
        x, labels = chosen_images.images, chosen_images.labels
        rows = defences.evaluate_transforms(
            cached_model(model_name), x, labels, transforms,
            progress=lambda f, text: bar.progress(min(1.0, f), text=text), **settings,
        )  # fmt: skip
        bar.progress(1.0, text="adversarially trained models")
        pairs = guards.adversarial_twins()
        pairs = pairs if domain == "mnist" else []  # the twins are MNIST networks
        twins = defences.compare_twins(pairs, x, labels, load=cached_model, **settings) if pairs else []
    except IntriguingError as exc:
        show_error(exc)
        st.stop()
    bar.empty()
    st.session_state.def_result = (key, rows, twins, len(chosen_images))

stored = st.session_state.get("def_result")
if stored is None or stored[0] != key:
    st.info("Choose the defences and the attack, then Evaluate.")
    st.stop()
_, rows, twins, count = stored

st.subheader("Input transformations: accuracy under attack")
fig = go.Figure(
    [
        go.Bar(
            name=title, x=[r.defence for r in rows], y=[getattr(r, field) for r in rows], marker_color=colour
        )
        for field, (title, colour) in COLUMNS.items()
    ]
)
fig.update_layout(
    barmode="group",
    height=360,
    yaxis_range=[0, 1],
    yaxis_tickformat=".0%",
    margin=dict(l=10, r=10, t=30, b=10),
)
st.plotly_chart(fig, key="def_chart")
for r in rows[1:]:
    holds = r.category == "holds"
    seems = r.category in ("seems", "unverified")  # unverified: an indicator fired
    icon = ":material/check_circle:" if holds else ":material/warning:" if seems else ":material/cancel:"
    (st.success if holds else st.warning if seems else st.error)(f"**{r.defence}**: {r.verdict}", icon=icon)
st.caption(
    f"Undefended {model_name}: clean {rows[0].clean_accuracy:.0%}, under attack {rows[0].robust_plain:.0%}. "
    f"{attack.upper()} Linf eps {eps:g}"
    + (f", {steps} steps" if attack == "pgd" else "")
    + f", {count} {domain} test images."
)

st.subheader("Adversarially trained models beside their plain twin")
if domain != "mnist":
    st.info(f"The adversarially trained twins are MNIST networks; none takes {domain}'s images.")
elif not twins:
    st.info("No adversarially trained model (fc100-100-10-advpool, fc100-100-10-pgdtrain) is in the zoo yet.")
else:
    st.dataframe(
        [
            {
                "model": t.model, "clean": t.clean_accuracy, "robust": t.robust_accuracy,
                "twin": t.twin, "twin clean": t.twin_clean_accuracy, "twin robust": t.twin_robust_accuracy,
            }
            for t in twins
        ],
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="percent") for c in ("clean", "robust", "twin clean", "twin robust")},
    )  # fmt: skip
