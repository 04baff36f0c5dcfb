"""Leaderboard: which attack works best on which net, from every run recorded (CLI, dashboard, reports,
sweeps): the worst case per image over every attack tried, each attack's matrices with n in every cell,
and the progress of recent sweeps. MNIST and ImageNet are never mixed."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.attacks import ATTACKS, format_eps, is_budgeted
from core.data import datasets
from core.evaluation import cells, leaderboard
from core.evaluation.protocol import Protocol
from core.models import get_spec, usable_models
from dashboard import url_state
from dashboard.certify_view import verified_panel
from dashboard.common import model_names, show_error, table
from dashboard.smoothing_view import certificates_panel
from dashboard.url_state import bound

DEFAULT_BUDGET = leaderboard.DEFAULT_BUDGET
BUILTIN_DOMAINS = {"mnist": "MNIST", "imagenet": "ImageNet"}
SWEEP_EXAMPLE = (
    "intriguing sweep --models fc100-100-10,fc10-1e-2 --attacks fgsm,pgd,deepfool --eps 0.05,0.1 --n 100"
)
DOMAINS = BUILTIN_DOMAINS | {name: name for name in datasets.names() if name not in BUILTIN_DOMAINS}
st.title("Leaderboard")
st.caption(
    "Every attack run is recorded in a local SQLite database; numbers are compared only between runs on "
    "images chosen the same way (one evaluation protocol), and every cell shows how many images it "
    f"measured (n); one-image runs are listed apart. Database: `{leaderboard.default_path()}` "
    f"({leaderboard.count_runs()} runs)."
)


def heatmap(matrix: leaderboard.Matrix, fmt: str, colorscale: str, key: str) -> None:
    """The matrix with its value and n in every cell; no chart at all when no shown cell has a run."""
    z = [[matrix.values[a][m] for m in matrix.models] for a in matrix.attacks]
    if all(v is None for row in z for v in row):
        st.caption("No run yet for these attacks and models: fill the cells below, or run a sweep.")
        return
    runs = [[matrix.cells.get(a, {}).get(m) for m in matrix.models] for a in matrix.attacks]

    def label(attack: str, model: str, value: float | None, run: leaderboard.Run | None) -> str:
        if value is None or run is None:
            return ""
        warn = (
            " ⚠" if matrix.flagged.get(attack, {}).get(model) else ""
        )  # an indicator of attack failure fired
        return f"{format(value, fmt)}{warn}<br>n={run.n}"

    text = [
        [label(a, m, v, r) for m, v, r in zip(matrix.models, zrow, rrow, strict=True)]
        for a, zrow, rrow in zip(matrix.attacks, z, runs, strict=True)
    ]
    hover = [[f"n={r.n}, {r.source}, {r.created_at[:16]}" if r else "no run" for r in row] for row in runs]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=matrix.models, y=matrix.attacks, text=text, texttemplate="%{text}", customdata=hover,
            hovertemplate="%{y} on %{x}: %{text}<br>%{customdata}<extra></extra>", colorscale=colorscale,
        )
    )  # fmt: skip
    fig.update_layout(
        height=120 + 45 * len(matrix.attacks), margin=dict(l=10, r=10, t=30, b=10), title=matrix.title
    )
    st.plotly_chart(fig, key=key)


SOURCES = ("all", *leaderboard.SOURCES[:-1])
link = url_state.accept_link(
    {"lb_dataset": url_state.choice(DOMAINS, DOMAINS.get), "lb_source": url_state.choice(SOURCES)},
    later=("lb_protocol",),
)
try:
    all_models = usable_models(model_names())
    dataset = st.radio(
        "Domain", tuple(DOMAINS), format_func=DOMAINS.get, horizontal=True, **bound("lb_dataset"),
        help="MNIST and ImageNet runs are never shown together.",
    )  # fmt: skip
    source = st.selectbox("Recorded by", SOURCES, **bound("lb_source"))
    source = None if source == "all" else source
    domain_models = [m for m in all_models if get_spec(m).dataset == dataset]
    known = {k.protocol_id: k for k in leaderboard.protocols(dataset=dataset)}
    fallback = Protocol.for_dataset(dataset)  # the images cells are filled on before any run
    if "lb_next_protocol" in st.session_state:  # cells were just filled: show their protocol
        st.session_state["lb_protocol"] = st.session_state.pop("lb_next_protocol")

    def describe(pid: str) -> str:
        """The protocol and its id (stable, so a link keeps naming it as runs are added)."""
        return f"{known[pid].describe() if pid in known else fallback.describe()} [{pid}]"

    protocol_options = list(known) or [leaderboard.default_protocol(dataset)]
    link.check_later("lb_protocol", url_state.choice(protocol_options, describe))
    protocol_id = st.selectbox(
        "Images (evaluation protocol)",
        protocol_options,
        index=protocol_options.index(leaderboard.default_protocol(dataset)),
        format_func=describe,
        **bound("lb_protocol"),
        help="Numbers are only compared between runs on images chosen the same way.",
    )
    st.caption(
        f"{known[protocol_id].runs} runs under this protocol." if protocol_id in known else "No runs yet."
    )
    chosen_protocol = known[protocol_id].protocol if protocol_id in known else fallback
    distortion = leaderboard.distortion_matrix(dataset=dataset, source=source, protocol_id=protocol_id)
    budgets = leaderboard.budgets(protocol_id=protocol_id)
    sweeps = leaderboard.sweep_progress(limit=5)
    worst = leaderboard.robust_accuracy(protocol_id=protocol_id, dataset=dataset)
    empty = not leaderboard.runs(dataset=dataset, limit=1)
    hand_chosen = leaderboard.hand_chosen_runs(dataset=dataset, source=source)
except IntriguingError as exc:
    show_error(exc)
    st.stop()

if empty:
    how = (
        f"Fill cells with the button below (MNIST test images), or from a terminal: `{SWEEP_EXAMPLE}`; "
        "every attack run in the Attack Lab and the Validate page lands here too."
        if dataset == "mnist"
        else "ImageNet runs come from the Attack Lab and the Validate page (attack a photo there)."
        if dataset == "imagenet"
        else f"Fill cells with the button below, or run `intriguing sweep --dataset {dataset}`; the Attack Lab's "
        "and the Validate page's runs land here too."
    )
    st.info(f"No {DOMAINS[dataset]} runs recorded yet. {how}", icon=":material/leaderboard:")

if sweeps and dataset == "mnist":
    st.subheader("Sweeps")
    for swept in sweeps:
        failed = f", {swept.failed} failed" if swept.failed else ""
        text = f"{swept.label or swept.sweep_id}: {swept.done}/{swept.tasks} tasks done{failed}"
        st.progress(swept.done / swept.tasks, text=text)

st.subheader("Robust accuracy: the worst case per image")
if worst:
    attacks = sorted({a for w in worst for a in w.attacks})
    table(
        [
            {
                "model": w.model, "budget": f"{w.norm} {format_eps(w.budget, w.norm)}", "images (n)": w.n,
                "robust accuracy": w.robust_accuracy, **{a: w.attacks.get(a) for a in attacks},
            }
            for w in worst
        ],
        column_config={c: st.column_config.NumberColumn(format="percent") for c in ["robust accuracy", *attacks]},
    )  # fmt: skip
    st.caption(
        "Robust accuracy: the share of images that no attack tried fooled within the budget (a minimal-"
        "distortion attack counts where its perturbation fits the budget). The attack columns are each "
        "attack's own success rate on the same images. From sweeps' per-example rows."
    )
else:
    st.caption(f"No sweep has per-example rows under this protocol yet. From a terminal: `{SWEEP_EXAMPLE}`")
verified_panel(protocol_id, chosen_protocol)

minimal = [a for a in ATTACKS if not is_budgeted(a)]
budgeted = [a for a in ATTACKS if is_budgeted(a)]
shown_models = st.multiselect(
    "Models", sorted(set(domain_models) | set(distortion.models)), default=distortion.models or domain_models[:4],
    key="lb_models",
)  # fmt: skip

certificates_panel()  # smoothing's CERTIFY and core.certify's bounds
st.subheader("Median minimal distortion (RMS)")
rows = [a for a in distortion.attacks if a not in minimal] + minimal
shown_minimal = st.multiselect("Attacks", rows, default=distortion.attacks or minimal, key="lb_min_attacks")
heatmap(distortion.select(shown_minimal, shown_models), ".4f", "Viridis", "lb_dist")

st.subheader("Success rate at a fixed budget")
choices = sorted(set(budgets) | {DEFAULT_BUDGET})
norm, eps = st.selectbox(
    "Budget",
    choices,
    index=choices.index(DEFAULT_BUDGET),
    format_func=lambda b: f"{b[0]} eps {format_eps(b[1], b[0])}",
    key="lb_budget",
)
success = leaderboard.success_matrix(norm, eps, dataset=dataset, source=source, protocol_id=protocol_id)
options = budgeted + [a for a in success.attacks if a not in budgeted]
shown_budgeted = st.multiselect(
    "Attacks", options, default=success.attacks or budgeted, key="lb_budget_attacks"
)
heatmap(success.select(shown_budgeted, shown_models), ".0%", "RdYlGn", "lb_success")

st.subheader("Fill missing cells")
missing = (
    distortion.select(shown_minimal, shown_models).missing()
    + success.select(shown_budgeted, shown_models).missing()
)
if dataset == "imagenet":
    st.caption("ImageNet has no labelled test images here: its runs come from the Attack Lab and reports.")
elif not missing:
    st.caption("Every shown cell has a run.")
else:
    st.caption(
        f"{len(missing)} empty cells, filled on the {chosen_protocol.describe()}: "
        + ", ".join(f"{a} on {m}" for a, m in missing)
    )
    if st.button(f"Fill {len(missing)} cells", type="primary", key="lb_fill"):
        bar = st.progress(0.0)
        for exc in cells.fill_cells(
            missing, protocol=chosen_protocol, norm=norm, budget=eps, progress=bar.progress
        ):
            show_error(exc)
        bar.progress(1.0, text="done")
        st.session_state["lb_next_protocol"] = chosen_protocol.fingerprint
        st.rerun()


def run_rows(found: list[leaderboard.Run]) -> None:
    table(
        [
            {
                "date": r.created_at[:19], "model": r.model, "attack": r.attack, "n": r.n,
                "success": r.success_rate, "median RMS": r.median_rms, "budget": r.budget, "norm": r.norm,
                "source": r.source, "time (s)": r.time_s,
            }
            for r in found
        ],
        column_config={"success": st.column_config.NumberColumn(format="percent")},
    )  # fmt: skip


if hand_chosen:
    with st.expander(f"One-image runs, never compared in a matrix ({len(hand_chosen)} newest)"):
        st.caption(
            "Runs on an image chosen by hand (a test image, a photo, an upload, a drawing): each measured "
            "its own image, so no two of them are pooled."
        )
        run_rows(hand_chosen)
with st.expander("Recent runs"):
    run_rows(leaderboard.runs(dataset=dataset, source=source, limit=100))
