"""Transferability: Tables 2 and 4 (examples made for one model, fed to the others) as heatmaps, from the
stored results of `intriguing reproduce`, with a recompute on a small subset."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.experiments import read_card, table2, table2_imagenet, table4
from core.experiments.adversarial import SUBSET
from core.visual import figures
from dashboard import url_state
from dashboard.common import registered_note, show_error
from dashboard.figure_buttons import figure_downloads
from dashboard.url_state import param_widget

TABLES = {
    "table2": ("Table 2: across models", table2.run),
    "table4": ("Table 4: across disjoint training halves P1 / P2", table4.run),
}

st.title("Transferability")
st.caption(
    "Adversarial examples made for one network fool other networks too, even ones trained on a different "
    "half of the data, far more than random noise of the same size does. Rows: the model the examples were "
    "made for (or noise); columns: the model they are fed to; cells: error induced (ours, paper in brackets)."
)


def heatmap(card: dict) -> go.Figure:
    z = [[None if v is None else 100 * v for v in row] for row in card["matrix"]]
    paper = card.get("paper_matrix") or [None] * len(z)
    text = [
        [
            f"{v:.1f}" + (f" ({100 * p[j]:.0f})" if p is not None else "") if v is not None else "-"
            for j, v in enumerate(row)
        ]
        for row, p in zip(z, paper, strict=True)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=card["columns"],
            y=card["row_labels"],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            zmin=0,
            zmax=100,
            colorbar={"title": "error %"},
            hovertemplate="made for %{y}<br>fed to %{x}<br>error induced %{z:.1f}%<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 45 * len(z), margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def caption(card: dict, origin: str) -> str:
    params = card["attack"]["params"]
    return (
        f"{origin}: n = {card['n']} test images, seed {card['seed']}, L-BFGS over the {params['n_targets']} most "
        f"likely other labels, {params['rounds']} values of c, {params['max_iter']} iterations; "
        f"{card['time_s']:.0f} s, {card['date'][:10]}."
    )


registered_note(
    "are not in these tables, which are the paper's networks: the Attack Lab's transfer panel feeds an "
    "attack on one of them to the other models of its domain."
)
url_state.accept_link(
    {key: check for name in TABLES for key, check in url_state.spec_checks(f"tr_{name}", SUBSET).items()}
)
for name, (title, compute) in TABLES.items():
    st.subheader(title)
    fresh = st.session_state.get(f"tr_{name}")
    stored = read_card(name)
    card, origin = (fresh, "recomputed here") if fresh else (stored, "stored result (docs/results)")
    if card is None:
        st.info(f"No stored result: run `intriguing reproduce {name}`, or recompute on a subset below.")
    else:
        st.plotly_chart(heatmap(card), width="stretch", key=f"tr_fig_{name}")
        st.caption(caption(card, origin))
        for note in table2.noise_gaps(card) if name == "table2" else ():
            st.info(note, icon=":material/info:")
        figure_downloads(
            lambda card=card: figures.transfer_figure(card), f"{name}_transfer", f"tr_dl_{name}", "Heatmap"
        )
    with st.expander("Recompute on a small subset", expanded=card is None):
        cols = st.columns(3)
        chosen = {}
        for column, p in zip(cols, SUBSET, strict=False):
            with column:
                chosen[p.name] = param_widget(p, p.default, f"tr_{name}_{p.name}")
        if cols[2].button("Recompute", key=f"tr_go_{name}", icon=":material/refresh:"):
            bar = st.progress(0.0, text="starting")
            try:
                report = compute(
                    n=int(chosen["n"]),
                    seed=int(chosen["seed"]),
                    progress=lambda f, t, bar=bar: bar.progress(min(f, 1.0), text=t),
                )
            except IntriguingError as exc:
                show_error(exc)
            else:
                st.session_state[f"tr_{name}"] = {**report.card, "rows": report.rows}
                st.rerun()


st.subheader("Table 2 on ImageNet: mobilenet_v2 and efficientnet_lite0")
photo_card = read_card(table2_imagenet.NAME)
if photo_card is None:
    st.info(f"No stored result: run `intriguing reproduce {table2_imagenet.NAME}` (a few minutes).")
else:
    st.warning(
        f"n = {photo_card['n']} photos ({', '.join(photo_card['photos'])}): {table2_imagenet.DEMONSTRATION}.",
        icon=":material/info:",
    )
    st.plotly_chart(heatmap(photo_card), width="stretch", key="tr_fig_imagenet")
    st.caption(
        " ".join(photo_card["notes"][1:]) + f" {photo_card['time_s']:.0f} s, {photo_card['date'][:10]}."
    )
