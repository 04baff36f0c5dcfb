"""Robustness: per-layer Lipschitz upper bounds beside empirical local estimates (Table 5), and adversarial
training before/after, from the stored results of `intriguing reproduce`."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.experiments import read_card, table5
from dashboard import url_state
from dashboard.common import registered_note, show_error
from dashboard.url_state import bound

st.title("Robustness")
st.caption(
    "How far can a small change of the input move the output? Each layer's operator norm bounds it from "
    "above; the product over layers bounds the whole network. The empirical local stretch (the Jacobian's "
    "largest singular value at real images) shows how loose these bounds are."
)

st.subheader("Lipschitz bounds per layer (Table 5)")
registered_note(
    "are not in these tables: the bounds are computed layer by layer for the zoo's networks, whose layers "
    "the lab knows (`intriguing reproduce table5`)."
)
card = st.session_state.get("rb_table5") or read_card("table5")
models = list(dict.fromkeys(r["model"] for r in card["rows"])) if card else []
url_state.accept_link({"rb_model": url_state.choice(models)})
if card is None:
    st.info("No stored result: run `intriguing reproduce table5`, or compute the MNIST CNN's bounds here.")
    if st.button("Compute for the MNIST CNN (20 images)", key="rb_go", icon=":material/calculate:"):
        bar = st.progress(0.0, text="starting")
        try:
            report = table5.run(
                n=20, models=("cnn",), progress=lambda f, t: bar.progress(min(f, 1.0), text=t)
            )
        except IntriguingError as exc:
            show_error(exc)
        else:
            st.session_state.rb_table5 = {**report.card, "rows": report.rows}
            st.rerun()
else:
    rows = card["rows"]
    model = st.radio("Network", models, horizontal=True, **bound("rb_model"))
    layers = [r for r in rows if r["model"] == model and r["layer"] != "network"]
    whole = next(r for r in rows if r["model"] == model and r["layer"] == "network")
    if not whole.get("trained", True):
        st.warning(
            f"{model}: untrained weights. Its bounds describe an architecture, not a trained network, and "
            "are not compared with the paper's.",
            icon=":material/warning:",
        )
    fig = go.Figure(
        [
            go.Bar(name="upper bound", x=[r["layer"] for r in layers], y=[r["upper_bound"] for r in layers]),
            go.Bar(
                name="empirical (max local)",
                x=[r["layer"] for r in layers],
                y=[r["empirical"] for r in layers],
            ),
        ]
    )
    if any(r.get("paper") for r in layers):
        fig.add_bar(
            name="paper (AlexNet)", x=[r["layer"] for r in layers], y=[r.get("paper") for r in layers]
        )
    # A log axis draws bars up from its bottom edge: left to autorange, a bound of 1.155 starts at about 1
    # and looks like zero. Start a decade below the smallest bar (both ends given: plotly autoranges a
    # half-open range whole), leave room above the tallest for its label, and label each bar.
    values = [v for trace in fig.data for v in trace.y if v]
    fig.update_traces(texttemplate="%{y:.3g}", textposition="outside")
    fig.update_layout(
        barmode="group",
        yaxis={
            "type": "log",
            "range": [math.floor(math.log10(min(values) / 2)), math.log10(max(values)) + 0.3],
        },
        height=380,
        margin={"t": 20, "b": 10},
    )
    st.plotly_chart(fig, width="stretch", key="rb_bars")
    a, b, c = st.columns(3)
    a.metric("network bound (product)", f"{whole['upper_bound']:.3g}")
    b.metric("largest local stretch", f"{whole['empirical']:.3g}")
    c.metric("bound / empirical", f"{whole['looseness']:.3g}")
    st.caption(whole["note"])
    st.dataframe(
        pd.DataFrame(layers)[["layer", "modules", "upper_bound", "empirical", "looseness", "note"]],
        hide_index=True,
    )

st.subheader("Adversarial training")
adv = read_card("advtrain")
if adv is None:
    st.info("No stored result: run `intriguing reproduce advtrain --install` (a few minutes on two cores).")
else:
    table = pd.DataFrame(adv["rows"])
    st.dataframe(
        table[["model", "test_error", "min_distortion", "pgd_error"]].rename(
            columns={
                "test_error": "test error",
                "min_distortion": "av. min. L-BFGS distortion",
                "pgd_error": f"error under PGD (Linf {adv['evaluation']['pgd']['eps']})",
            }
        ),
        hide_index=True,
    )
    curves = go.Figure()
    for scheme, curve in adv["curves"].items():
        curves.add_scatter(
            x=[p["epoch"] for p in curve],
            y=[100 * p["test_error"] for p in curve],
            mode="lines+markers",
            name=scheme,
        )
    curves.add_hline(y=1.2, line_dash="dot", annotation_text="paper: pool < 1.2%")
    curves.update_layout(xaxis_title="epoch", yaxis_title="test error (%)", height=320, margin={"t": 20})
    st.plotly_chart(curves, width="stretch", key="rb_curves")
    st.caption(" ".join(adv["notes"]))
