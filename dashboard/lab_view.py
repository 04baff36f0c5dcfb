"""Attack Lab view helpers: the live panel (images, numbers, curves, probability bars) that the page
refreshes from `core.lab.Frame`s, and the attack-parameter widgets. No model maths here."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.attacks import ATTACKS, Param, attack_presets
from core.lab import Frame, Outcome
from core.pictures import perturbation_picture, to_uint8
from dashboard.direction_view import show_inside

# Attacks in the order offered (only those the engine has are shown); the paper's first.
ATTACK_TITLES = {
    "lbfgs": "L-BFGS (box-constrained, the paper's)",
    "fgsm": "FGSM",
    "pgd": "PGD",
    "cw": "Carlini-Wagner L2",
    "deepfool": "DeepFool",
    "apgd": "APGD",
    "square": "Square Attack (black-box)",
}
CHART_INTERVAL_S = 0.3  # curves are redrawn at most this often while running (their data keeps every step)
TOP_K = 10


def attack_names() -> list[str]:
    return [name for name in ATTACK_TITLES if name in ATTACKS] + [
        n for n in ATTACKS if n not in ATTACK_TITLES
    ]


def _param_widget(p: Param, default, key: str, norm: str | None):
    """One widget for one spec'd parameter: its label, help and bounds come from the engine's spec."""
    if p.kind is bool:
        return st.checkbox(p.label, value=bool(default), key=key, help=p.help)
    if p.kind is str:
        return st.selectbox(p.label, p.choices, index=p.choices.index(default), key=key, help=p.help)
    high = p.upper(norm)
    if p.kind is int:
        return st.number_input(
            p.label, min_value=int(p.low or 0), max_value=None if high is None else int(high),
            value=default, step=1, key=key, help=p.help,
        )  # fmt: skip
    low = float(p.low) if p.low is not None else None
    fmt = "%.4g" if p.step is None else "%.4f"
    value = None if default is None else float(default)
    return st.number_input(
        p.label, min_value=low, max_value=high, value=value, step=p.step, format=fmt, key=key, help=p.help
    )


def attack_parameters(name: str, dataset: str) -> dict:
    """One widget per parameter of the attack's spec (defaults from the engine, its presets on ImageNet),
    out-of-range values impossible; returns the chosen parameters. The seed is the lab's own input."""
    params: dict = {}
    defaults = attack_presets(name, dataset)
    for p in ATTACKS[name].PARAMS:
        if p.seed:
            continue
        key = f"lab_param_{dataset}_{name}_{p.name}"
        value = _param_widget(p, defaults[p.name], key, params.get("norm"))
        if value is not None:
            params[p.name] = value
    return params


# ---------------------------------------------------------------- the live panel


def _probability_bars(probs: np.ndarray, class_names: Sequence[str], highlight: dict[int, str]) -> go.Figure:
    order = np.argsort(probs)[::-1][:TOP_K][::-1]
    colours = [highlight.get(int(i), "#9aa5b1") for i in order]
    fig = go.Figure(
        go.Bar(
            x=probs[order],
            y=[f"{class_names[i]} ({i})" if len(class_names) > 10 else class_names[i] for i in order],
            orientation="h",
            marker_color=colours,
        )
    )
    fig.update_layout(
        height=300,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_range=[0, 1],
        yaxis_type="category",
        title="class probabilities",
    )
    return fig


def _curve(title: str, x: list, lines: dict[str, list], y_title: str) -> go.Figure:
    fig = go.Figure([go.Scatter(x=x, y=y, name=name, mode="lines") for name, y in lines.items() if y])
    fig.update_layout(
        height=250,
        margin=dict(l=10, r=10, t=30, b=10),
        title=title,
        xaxis_title="iteration",
        yaxis_title=y_title,
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


class LivePanel:
    """Placeholders for one run, filled again on every frame; curves are redrawn at most every
    CHART_INTERVAL_S seconds (and on the last frame), everything else on every frame."""

    def __init__(self, x: np.ndarray, class_names: Sequence[str], label: int, target: int | None) -> None:
        self.class_names = class_names
        self.label = label
        self.target = target
        self.scale = max(1, 168 // x.shape[-1])
        self.width = x.shape[-1] * self.scale
        columns = st.columns(3)
        columns[0].image(to_uint8(x, self.scale), caption=f"original: {class_names[label]}", width=self.width)
        self.adversarial = columns[1].empty()
        self.perturbation = columns[2].empty()
        self.numbers = st.empty()
        chart_columns = st.columns([1, 1, 1, 1.2])
        self.charts = [c.empty() for c in chart_columns[:3]]
        self.bars = chart_columns[3].empty()
        self.last_chart = -float("inf")
        self.updates = 0  # unique element keys: a placeholder may show an identical figure twice in one run

    def show(self, frame: Frame, series: dict[str, list], final: bool = False) -> None:
        pred_name = self.class_names[frame.pred]
        self.adversarial.image(
            to_uint8(frame.x_adv, self.scale),
            caption=f"adversarial, iteration {frame.iteration}: {pred_name} ({frame.probs[frame.pred]:.0%})",
            width=self.width,
        )
        picture, amplification = perturbation_picture(frame.perturbation, self.scale)
        self.perturbation.image(
            picture,
            caption=f"perturbation × {amplification:.3g} (blue: darker, red: brighter)",
            width=self.width,
        )
        numbers = (
            f"**iteration** {frame.iteration} &nbsp; **prediction** {pred_name} &nbsp; "
            f"**loss** {frame.loss:.4g} &nbsp; **L2** {frame.l2:.4f} &nbsp; **Linf** {frame.linf:.4f} &nbsp; "
            f"**RMS** {frame.rms:.4f}"
        )
        if frame.c is not None:
            numbers += f" &nbsp; **c** {frame.c:.4g} &nbsp; **search round** {frame.search_round}"
        self.numbers.markdown(numbers)
        highlight = {self.label: "#1f77b4"}
        if self.target is not None:
            highlight[self.target] = "#d62728"
        self.updates += 1
        self.bars.plotly_chart(
            _probability_bars(frame.probs, self.class_names, highlight), key=f"lab_bars_{self.updates}"
        )
        if final or time.perf_counter() - self.last_chart >= CHART_INTERVAL_S:
            self._charts(series)
            self.last_chart = time.perf_counter()

    def _charts(self, series: dict[str, list]) -> None:
        it = series["iteration"]
        probabilities = {f"p({self.class_names[self.label]})": series["p_label"]}
        if self.target is not None:
            probabilities[f"p({self.class_names[self.target]}) target"] = series["p_target"]
        figures = (
            _curve("loss", it, {"loss": series["loss"]}, "attack loss"),
            _curve("distortion", it, {"RMS": series["rms"], "Linf": series["linf"]}, "pixel scale [0, 1]"),
            _curve("probability", it, probabilities, "softmax"),
        )
        for i, (placeholder, fig) in enumerate(zip(self.charts, figures, strict=True)):
            placeholder.plotly_chart(fig, key=f"lab_curve_{i}_{self.updates}")


# ---------------------------------------------------------------- inputs and outcome


def draw_digit() -> bytes | None:
    """A canvas to draw a digit on (streamlit-drawable-canvas); PNG bytes of the drawing, or None."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except ImportError:
        st.info("Drawing needs the streamlit-drawable-canvas package; upload a photo of a digit instead.")
        return None
    st.caption("Draw one digit, large and centred; it is scaled and centred like MNIST.")
    canvas = st_canvas(
        stroke_width=18,
        stroke_color="#000000",
        background_color="#ffffff",
        height=280,
        width=280,
        drawing_mode="freedraw",
        return_image_data=True,
        key="lab_canvas",
    )
    if not (canvas.json_data or {}).get("objects"):
        return None
    return canvas.image_bytes


def show_outcome(outcome: Outcome, class_names: Sequence[str]) -> None:
    """Summary card, the Gaussian-noise baseline, transfer to the other models, downloads."""
    result, card = outcome.result, outcome.card
    ok = bool(result.success[0])
    before, after = int(result.pred_before[0]), int(result.pred_after[0])
    st.subheader("Result")
    cells = st.columns(4)
    cells[0].metric("Success", "yes" if ok else "no")
    cells[1].metric("Prediction", class_names[after], f"was {class_names[before]}", delta_color="off")
    cells[2].metric("Iterations", result.iterations)
    cells[3].metric("Model calls", result.model_calls)
    cells = st.columns(4)
    cells[0].metric("RMS distortion", f"{float(result.rms[0]):.4f}")
    cells[1].metric("L2", f"{float(result.l2[0]):.3f}")
    cells[2].metric("Linf", f"{float(result.linf[0]):.3f}")
    cells[3].metric("Time", f"{result.time_s:.2f} s")
    if card.summary.get("stopped_early"):
        st.caption("Stopped early: this is the best adversarial image found before Stop.")

    noise, transfer_column = st.columns([1, 2], gap="large")
    with noise:
        st.markdown("**Gaussian noise of the same RMS**")
        baseline = outcome.baseline
        scale = max(1, 168 // baseline.x.shape[-1])
        noise_pred = int(baseline.pred_after[0])
        st.image(
            to_uint8(baseline.x_adv[0], scale),
            caption=f"RMS {float(baseline.rms[0]):.4f}: {class_names[noise_pred]} "
            f"({float(baseline.probs_after[0, noise_pred]):.0%})",
        )
        changed = "changes" if bool(baseline.success[0]) else "does not change"
        st.caption(
            f"Random noise this large {changed} the prediction; the optimised perturbation is what matters."
        )
    with transfer_column:
        st.markdown("**Transfer: the adversarial image shown to the other models of this input domain**")
        if outcome.transfer:
            st.dataframe(
                [
                    {
                        "model": row.model,
                        "clean image": class_names[row.clean_pred],
                        "adversarial image": class_names[row.adv_pred],
                        "confidence": f"{row.adv_confidence:.0%}",
                        "fooled": row.fooled,
                    }
                    for row in outcome.transfer
                ],
                hide_index=True,
            )
            fooled = sum(row.fooled for row in outcome.transfer)
            st.caption(f"{fooled} of {len(outcome.transfer)} other models are fooled too.")
        else:
            st.caption("No other model of this input domain is available.")

    stem = f"{card.model}_{card.attack}_seed{card.seed}"
    downloads = st.columns(3)
    downloads[0].download_button(
        "Adversarial image (PNG)",
        outcome.png,
        f"{stem}.png",
        "image/png",
        on_click="ignore",
        key="lab_dl_png",
    )
    downloads[1].download_button(
        "x, x_adv, r + card (npz)",
        outcome.npz,
        f"{stem}.npz",
        "application/octet-stream",
        on_click="ignore",
        key="lab_dl_npz",
    )
    downloads[2].download_button(
        "Run card (JSON)",
        card.to_json(),
        f"{stem}.json",
        "application/json",
        on_click="ignore",
        key="lab_dl_json",
    )
    show_inside(card.model, result.x, result.x_adv, card.label, after)
