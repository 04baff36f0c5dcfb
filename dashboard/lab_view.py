"""Attack Lab view helpers: the live panel (original | best so far | current | perturbation, numbers, curves
and class bars) that the page refreshes from `core.lab.Frame`s, and the attack-parameter widgets (bound
to the URL). No model maths here.

Charts are Vega-Lite specs (constant during a run, so the browser swaps only their data): of the mechanisms measured by `benchmarks/live.py
--charts` (plotly with a new element per frame, plotly redrawn, Vega-Lite redrawn, matplotlib PNGs) it is
the only one with data drawn in every 200-ms sample of a live run."""

from __future__ import annotations

import base64
import html
import io
import textwrap
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.figure import Figure
from PIL import Image

from core.attacks import ATTACKS, attack_presets
from core.lab import Frame, Outcome, SearchRound
from core.visual.pictures import perturbation_picture, to_uint8
from dashboard.common import table
from dashboard.direction_view import show_inside
from dashboard.figure_buttons import figure_downloads
from dashboard.url_state import param_key, param_widget

CHART_INTERVAL_S = 0.5  # curves are redrawn at most this often while running (their data keeps every step)
TITLE_CHARS = 20  # characters of a chart title line: what a live chart holds at 1400 px (Chromium)
CHART_HEIGHT = 240  # pixels of a whole chart: title, plot and axes
MAX_POINTS = 400  # a curve drawn with more steps is thinned (every step stays in the run's series)
IMAGE_WIDTH = 150
TOP_K = 10
LABEL_COLOUR, TARGET_COLOUR, OTHER_COLOUR = "#1f77b4", "#d62728", "#9aa5b1"
REACHED_COLOURS = {"reached": "#2ca02c", "not reached": "#d62728"}
CERTIFIED_COLOUR = "#2ca02c"  # the proved floor on the distortion chart, green as on Validate's bracket
COLOUR_NAMES = {LABEL_COLOUR: "blue", TARGET_COLOUR: "red", OTHER_COLOUR: "grey", "#7f7f7f": "grey"}


def attack_names() -> list[str]:
    """The attacks in the order offered: the registry's (the paper's first)."""
    return list(ATTACKS)


def attack_title(name: str) -> str:
    """The attack's own title (its registry name when it has none)."""
    return ATTACKS[name].title or name if name in ATTACKS else name


def attack_parameters(name: str, dataset: str, prefix: str = "lab", model: str | None = None) -> dict:
    """One widget per parameter of the attack's spec (defaults from the engine, its presets on ImageNet),
    out-of-range values impossible, each bound to the URL; returns the chosen parameters. The seed is the
    page's own input."""
    params: dict = {}
    defaults = attack_presets(name, dataset, model)  # the model's own presets where it has them
    for p in ATTACKS[name].PARAMS:
        if p.seed:
            continue
        value = param_widget(
            p, defaults[p.name], param_key(prefix, dataset, name, p.name), params.get("norm")
        )
        if value is not None:
            params[p.name] = value
    return params


# ---------------------------------------------------------------- the live panel


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_POINTS rows, evenly spaced, the last one kept."""
    if len(frame) <= MAX_POINTS:
        return frame
    keep = np.unique(np.r_[np.linspace(0, len(frame) - 1, MAX_POINTS).astype(int), len(frame) - 1])
    return frame.iloc[keep]


def curve_data(series: dict[str, list], lines: dict[str, str], rounds: Sequence[SearchRound], y: str | None):
    """Long-format rows for one curve chart: a row per step and line (kind 'line'), and a row per finished
    round of the search over c at its value of `y` ('rms' or 'c'; kind 'round')."""
    data = pd.DataFrame({name: series[key] for name, key in lines.items()}, dtype=float)
    data["iteration"] = series["iteration"]
    data = _thin(data).melt("iteration", var_name="series", value_name="value").dropna()
    data["kind"] = "line"
    if y is not None and rounds:
        marks = pd.DataFrame(
            {
                "iteration": [r.iteration for r in rounds],
                "value": [getattr(r, y) for r in rounds],
                "series": ["reached" if r.reached else "not reached" for r in rounds],
                "kind": "round",
            }
        ).dropna()
        data = pd.concat([data, marks], ignore_index=True)
    return data


def curve_spec(
    title: str, colours: dict[str, str], log: bool = False, rounds: bool = False, floor: float | None = None
) -> dict:
    """A Vega-Lite spec: lines against the iteration, (`rounds`) the rounds of a search over c as points,
    and (`floor`, after a run) a dashed rule where a proof says no flip lies below. The subtitle names the
    colours (a legend would take the little room there is). Constant during a run, so the browser only
    swaps the data."""
    subtitle = [", ".join(f"{name}: {COLOUR_NAMES[c]}" for name, c in colours.items())]
    if rounds:
        subtitle.append("dots: rounds over c, green reached")
    if floor is not None:
        subtitle.append("green dashed: proved floor")
    colours = {**colours, **REACHED_COLOURS}
    colour = {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": list(colours), "range": list(colours.values())},
        "legend": None,
    }
    y = {
        "field": "value",
        "type": "quantitative",
        "title": None,
        "scale": {"type": "log" if log else "linear"},
    }
    if not log:
        y["scale"]["zero"] = False
    x = {"field": "iteration", "type": "quantitative", "title": "iteration"}
    proved = [] if floor is None else [
        {"mark": {"type": "rule", "color": CERTIFIED_COLOUR, "strokeDash": [5, 3], "strokeWidth": 2},
         "encoding": {"y": {"datum": floor}}}
    ]  # fmt: skip
    return {  # title in lines: one line is cut at the chart's width ("probability of Egyptian ...")
        "title": {"text": textwrap.wrap(title, TITLE_CHARS), "subtitle": subtitle, "anchor": "start"},
        "layer": proved
        + [
            {
                "transform": [{"filter": {"field": "kind", "equal": "line"}}],
                "mark": {"type": "line", "strokeWidth": 2, "interpolate": "step-after"},
                "encoding": {"x": x, "y": y, "color": colour},
            },
            {
                "transform": [{"filter": {"field": "kind", "equal": "round"}}],
                "mark": {"type": "point", "filled": True, "size": 40, "opacity": 0.9},
                "encoding": {"x": x, "y": y, "color": colour},
            },
        ],
    }


BARS_SPEC = {
    "title": {
        "text": "class probabilities (current)",
        "subtitle": "blue: class attacked, red: target",
        "anchor": "start",
    },
    "mark": "bar",
    "encoding": {
        "x": {
            "field": "probability",
            "type": "quantitative",
            "scale": {"domain": [0, 1]},
            "axis": {"format": "%"},
            "title": None,
        },
        "y": {
            "field": "class",
            "type": "nominal",
            "sort": "-x",
            "title": None,
            "axis": {"labelOverlap": False, "labelFontSize": 10},
        },
        "color": {"field": "colour", "type": "nominal", "scale": None},
    },
}


def bars_data(probs: np.ndarray, class_names: Sequence[str], highlight: dict[int, str]) -> pd.DataFrame:
    order = np.argsort(probs)[::-1][:TOP_K]
    return pd.DataFrame(
        {
            "class": [f"{class_names[i]} ({i})" if len(class_names) > 10 else class_names[i] for i in order],
            "probability": probs[order].astype(float),
            "colour": [highlight.get(int(i), OTHER_COLOUR) for i in order],
        }
    )


def picture_html(picture: np.ndarray, caption: str) -> str:
    """An image inline (a data: URI) with its caption: drawn together with its frame, never blank while a
    file loads, never left pointing at a file the server has dropped (a stopped script)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure style="margin:0"><img src="data:image/png;base64,{data}" width="{IMAGE_WIDTH}" '
        f'alt="{html.escape(caption)}"/><figcaption style="font-size:0.85rem;color:#555;max-width:'
        f'{IMAGE_WIDTH + 40}px">{html.escape(caption)}</figcaption></figure>'
    )


class LivePanel:
    """Placeholders for one run, filled again on every frame: four images, one line of numbers, three
    curves and the class bars. Curves are redrawn at most every CHART_INTERVAL_S seconds (and on the last
    frame), everything else on every frame."""

    DISTORTION = {"current": OTHER_COLOUR, "best so far": LABEL_COLOUR}  # line colours of each chart
    C = {"c": "#7f7f7f"}
    LOSS = {"loss": "#7f7f7f"}

    def __init__(
        self,
        x: np.ndarray,
        class_names: Sequence[str],
        label: int,
        target: int | None,
        probs: np.ndarray,
        attack: str,
    ) -> None:
        """Every slot drawn as soon as it exists (the image in all four, the clean class bars, the curves'
        axes at step 0), before Run and again on Run's rerun, so frames replace them in place: an empty slot
        collapses, and CI caught images and charts missing for 0.4 s between Run and the first frame."""
        self.class_names = class_names
        self.label = label
        self.target = target
        self.scale = max(1, -(-IMAGE_WIDTH // x.shape[-1]))  # nearest-neighbour upscaling of small images
        with st.container(key="lab_images"):
            images = st.columns(4, gap="small")
        picture = to_uint8(x, self.scale)
        images[0].html(picture_html(picture, f"original: {self._said(label, None)}"))
        self.best, self.current, self.perturbation = (column.empty() for column in images[1:])
        self.best.html(picture_html(picture, f"best so far: none yet (Run starts {attack})"))
        self.current.html(picture_html(picture, f"current: the original, {self._said(label, probs)}"))
        flat, _ = perturbation_picture(np.zeros_like(x), self.scale)
        self.perturbation.html(picture_html(flat, "perturbation: none yet"))
        self.numbers = st.empty()
        with st.container(key="lab_charts"):
            charts = st.columns([1, 1, 1, 1.1], gap="small")
        self.charts = [c.empty() for c in charts[:3]]
        self.bars = charts[3].empty()
        self.floor: float | None = None  # after a run: the RMS below which a proof says no flip exists
        self.highlight = {label: LABEL_COLOUR} | ({} if target is None else {target: TARGET_COLOUR})
        self.bars.vega_lite_chart(
            bars_data(probs, class_names, self.highlight), BARS_SPEC, height=CHART_HEIGHT
        )
        p = float(probs[label])  # step 0: no distortion yet, the clean probabilities
        p_target = None if target is None else float(probs[target])
        start = {"iteration": [0], "rms": [0.0], "best_rms": [0.0], "p_label": [p], "best_p_label": [p]}
        self._charts({**start, "p_target": [p_target], "c": [], "loss": [None]}, ())
        self.last_chart = -float("inf")

    def _said(self, cls: int, probs: np.ndarray | None) -> str:
        name = self.class_names[cls]
        return name if probs is None else f"{name} ({probs[cls]:.0%})"

    def show(
        self, frame: Frame, series: dict[str, list], rounds: Sequence[SearchRound], final: bool = False
    ) -> None:
        found = frame.best_pred != self.label if self.target is None else frame.best_pred == self.target
        best_caption = (
            f"best so far: {self._said(frame.best_pred, frame.best_probs)}, RMS {frame.best_rms:.4f}"
            if found
            else f"best so far: none yet ({self._said(frame.best_pred, frame.best_probs)})"
        )
        self.best.html(picture_html(to_uint8(frame.best_x_adv, self.scale), best_caption))
        current = f"current, step {frame.iteration}: {self._said(frame.pred, frame.probs)}"
        self.current.html(picture_html(to_uint8(frame.x_adv, self.scale), current))
        picture, amplification = perturbation_picture(frame.perturbation, self.scale)
        self.perturbation.html(
            picture_html(picture, f"current perturbation × {amplification:.3g} (blue darker, red brighter)")
        )
        numbers = (
            f"**step** {frame.iteration} · **current** {self._said(frame.pred, frame.probs)}, "
            f"RMS {frame.rms:.4f}, L2 {frame.l2:.3f}, Linf {frame.linf:.3f}"
        )
        if frame.c is not None:
            reached = sum(r.reached for r in rounds)
            numbers += f" · **c** {frame.c:.3g}, {len(rounds)} rounds done, {reached} reached the goal"
        self.numbers.markdown(numbers)
        self.bars.vega_lite_chart(
            bars_data(frame.probs, self.class_names, self.highlight), BARS_SPEC, height=CHART_HEIGHT
        )
        if final or time.perf_counter() - self.last_chart >= CHART_INTERVAL_S:
            self._charts(series, rounds)
            self.last_chart = time.perf_counter()

    def show_floor(self, floor: float, series: dict[str, list], rounds: Sequence[SearchRound]) -> None:
        """After the run: the certified radius, as the RMS no flip can lie below, drawn on the distortion
        chart beside the curve that found one from above."""
        self.floor = floor
        self._charts(series, rounds)

    def _charts(self, series: dict[str, list], rounds: Sequence[SearchRound]) -> None:
        probability = {"current": "p_label", "best so far": "best_p_label"}
        colours = dict(self.DISTORTION)
        if self.target is not None:
            probability["target"], colours["target"] = "p_target", TARGET_COLOUR
        distortion = {"current": "rms", "best so far": "best_rms"}
        charts = [
            (
                curve_data(series, distortion, rounds, "rms"),
                curve_spec("RMS distortion", self.DISTORTION, rounds=bool(rounds), floor=self.floor),
            ),
            (
                curve_data(series, probability, (), None),
                curve_spec(
                    f"probability of {self.class_names[self.label]}"
                    + ("" if self.target is None else f" (target {self.class_names[self.target]})"),
                    colours,
                ),
            ),
        ]
        if series["c"] and series["c"][-1] is not None:
            charts.append(
                (curve_data(series, {"c": "c"}, rounds, "c"), curve_spec("search over c", self.C, True))
            )
        else:
            charts.append(
                (curve_data(series, {"loss": "loss"}, (), None), curve_spec("attack loss", self.LOSS))
            )
        for placeholder, (data, spec) in zip(self.charts, charts, strict=True):
            placeholder.vega_lite_chart(data, spec, height=CHART_HEIGHT)


def rounds_table(rounds: Sequence[SearchRound], class_names: Sequence[str]) -> list[dict]:
    """The search over c as rows for st.dataframe, in the order the rounds ended."""
    return [
        {
            "target": "any other class" if r.target is None else class_names[r.target],
            "round": r.round + 1,
            "c": f"{r.c:.3g}",
            "reached the goal": r.reached,
            "RMS distortion": None if r.rms is None else round(r.rms, 4),
            "ended at step": r.iteration,
        }
        for r in rounds
    ]


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


def show_outcome(
    outcome: Outcome,
    class_names: Sequence[str],
    rounds: Sequence[SearchRound] = (),
    figure: Callable[[], Figure] | None = None,
) -> None:
    """Summary card, the search over c, the Gaussian-noise baseline, transfer to the other models,
    downloads (with `figure`, the run as a slide-ready Figure 5 panel, built on click)."""
    result, card = outcome.result, outcome.card
    ok = bool(result.success[0])
    before, after = int(result.pred_before[0]), int(result.pred_after[0])
    st.subheader("Result")
    # ImageNet class names are long: there the prediction gets a row of its own width
    wide = len(class_names) > 10
    cells = st.columns([1, 4, 1, 2] if wide else 8)
    cells[0].metric("Success", "yes" if ok else "no")
    cells[1].metric(  # a label, not a change: no arrow
        "Prediction", class_names[after], f"was {class_names[before]}", delta_color="off", delta_arrow="off"
    )
    cells[2].metric("Confidence", f"{float(result.probs_after[0, after]):.0%}")
    numbers = st.columns(5) if wide else cells[3:]
    numbers[0].metric("RMS distortion", f"{float(result.rms[0]):.4f}")
    numbers[1].metric("L2", f"{float(result.l2[0]):.3f}")
    numbers[2].metric("Linf", f"{float(result.linf[0]):.3f}")
    numbers[3].metric("Iterations", result.iterations)
    numbers[4].metric(
        "Attack time", f"{result.time_s:.2f} s", help="The attack's own compute; the status line above gives "
        "the wall clock of the live run, drawing every frame included.",
    )  # fmt: skip
    if card.summary.get("stopped_early"):
        st.caption("Stopped early: this is the best adversarial image found before Stop.")
    if "line" in outcome.certificate:  # proved from below, beside what the attack found from above
        st.info(outcome.certificate["line"], icon=":material/shield:")
    elif "why" in outcome.certificate:
        st.caption(f"No certified radius for this model: {outcome.certificate['why']}")
    if outcome.hint:
        st.warning(outcome.hint, icon=":material/tips_and_updates:")
    if rounds:
        reached = sum(r.reached for r in rounds)
        with st.expander(f"Search over c: {len(rounds)} rounds, {reached} reached the goal"):
            st.dataframe(rounds_table(rounds, class_names), hide_index=True, height=240)

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
        if not ok:
            st.caption("The attack failed: there is no adversarial image to show the other models.")
        elif outcome.transfer:
            table(
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
                max_rows=20,
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
    if figure is not None:
        figure_downloads(figure, f"{stem}_figure", "lab_figure", "Figure 5 panel")
    show_inside(card.model, result.x, result.x_adv, card.label, after)
