"""Certificates on the pages, computed in core and only drawn here: the Validate page's bracket (certified
radius <= exact minimum <= each attack's flip, on one Linf axis: core.certify.bracket.image_bracket) and the
Leaderboard's verified beside attack robust accuracy (core.evaluation.verified)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.attacks import format_eps
from core.certify.bracket import image_bracket
from core.evaluation.protocol import Protocol
from core.evaluation.verified import Bracket, brackets
from core.experiments.certify import stored_brackets
from dashboard.common import show_error, table

COLOURS = {"certified": "#2ca02c", "exact": "#1f77b4", "attack": "#d62728"}


def show_bracket(model, report) -> None:
    """The bracket for the report's image and prediction (MNIST models whose layers the bounds cover)."""
    if report.dataset != "mnist" or report.x is None:
        return
    st.subheader("Proved from below, found from above (Linf)")
    try:
        bracket = image_bracket(
            model, report.x, report.label, {f.attack: f.linf for f in report.findings if f.success}
        )
    except IntriguingError as exc:
        st.caption(f"No certificate for this model: {exc}")
        return
    st.info(bracket["verdict"], icon=":material/shield:")
    points = [("certified", "certified", bracket["certified"])]
    points += [("exact", "exact", bracket["exact"])] if bracket["exact"] is not None else []
    points += [("attack", name, value) for name, value in bracket["attacks"].items()]
    fig = go.Figure()
    # labels alternate above and below along the axis, so that flips found close together stay readable
    for i, (kind, name, value) in enumerate(sorted(points, key=lambda point: point[2])):
        where = "top center" if i % 2 == 0 else "bottom center"
        fig.add_trace(go.Scatter(x=[value], y=[0], mode="markers+text", text=[name], textposition=where,
                                 marker=dict(size=12, color=COLOURS[kind]), name=name, showlegend=False))  # fmt: skip
    fig.add_vrect(x0=0, x1=bracket["certified"], fillcolor=COLOURS["certified"], opacity=0.12, line_width=0)
    fig.update_layout(height=180, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="Linf distortion",
                      yaxis=dict(visible=False))  # fmt: skip
    st.plotly_chart(fig, key="val_bracket")
    if bracket["exact"] is None:
        st.caption("The exact minimum of a ReLU net: `intriguing certify --method exact` (a MILP, minutes).")


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def verified_panel(protocol_id: str, protocol: Protocol) -> None:
    """Leaderboard: per (model, budget) the verified robust accuracy beside the attacks' (the truth lies
    between), "—" with the reason where no certificate is recorded or none can be."""
    st.subheader("Verified beside attack robust accuracy")
    try:
        rows = brackets(protocol_id, protocol)
    except IntriguingError as exc:
        show_error(exc)
        return
    if not rows:
        st.caption("No budgeted run or certificate under this protocol yet: fill a budgeted cell below, or "
                   "`intriguing certify --model fc100-100-10-ibp --eps 0.1`.")  # fmt: skip
        _stored_panel()
        return
    table([_row(r) | {"why no certificate": r.note} for r in rows])
    st.caption(
        "The true robust accuracy lies between the two: verified counts the images a bound (IBP, CROWN, "
        "alpha-CROWN or the exact solver) proves no perturbation within the budget can flip; attack counts "
        "those no recorded attack flipped (a sweep's worst case per image, else the strongest cell). "
        "`intriguing certify --eps E` records the verified side."
    )
    _stored_panel()


def _stored_panel() -> None:
    """The stored certify card's brackets (docs/certify.md), apart from the user's own records."""
    rows, protocol = stored_brackets()
    if not rows:
        return
    st.markdown(f"**Stored with the docs**: {protocol} (`intriguing reproduce certify`, docs/certify.md)")
    table([_row(r) for r in rows])
    st.caption("Measured when the docs were made, not from your database: your own certificates and runs appear "
               "in the table above once recorded.")  # fmt: skip


def _row(r: Bracket) -> dict[str, str]:
    return {"model": r.model, "budget": f"{r.norm} {format_eps(r.budget, r.norm)}", "verified": _share(r.verified),
            "attack": _share(r.attack), "verified by": r.verified_by or "—", "attack by": r.attack_from or "—"}  # fmt: skip
