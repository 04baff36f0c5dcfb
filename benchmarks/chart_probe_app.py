"""A bare Streamlit page that redraws two charts (growing curves, class bars) at a browser's pace, one way
per `?mechanism=`: what benchmarks/live.py --charts measures to choose the Attack Lab's chart mechanism.

    streamlit run benchmarks/chart_probe_app.py  (then open ?mechanism=plotly_new and press Run)
"""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

MECHANISMS = ("plotly_new", "plotly_same", "vega_replace", "matplotlib_png")
FRAMES = 60
PACES_S = (0.04, 0.2)  # seconds between frames: 25 a second, and 5


def plotly_curve(x: np.ndarray, y: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def plotly_bars(p: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Bar(x=p, y=[str(i) for i in range(len(p))], orientation="h"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=10), xaxis_range=[0, 1])
    return fig


def matplotlib_png(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[bytes, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for draw in (lambda ax: ax.plot(x, y), lambda ax: ax.barh(range(len(p)), p)):
        fig, ax = plt.subplots(figsize=(3.5, 2.2), dpi=100)
        draw(ax)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        out.append(buffer.getvalue())
    return out[0], out[1]


def main() -> None:
    mechanism = st.query_params.get("mechanism", MECHANISMS[0])
    if mechanism not in MECHANISMS:
        st.error(f"unknown mechanism; one of {MECHANISMS}")
        return
    pace = float(st.query_params.get("pace", PACES_S[0]))
    st.title(f"chart probe: {mechanism}, a frame every {pace} s")
    if st.button("Run", key="probe_go"):
        curve_slot = st.container(key="probe_chart_0").empty()
        bars_slot = st.container(key="probe_chart_1").empty()
        counter = st.empty()
        rng = np.random.default_rng(0)
        for i in range(1, FRAMES + 1):
            x = np.arange(i)
            y = np.sin(x / 10.0)
            p = rng.dirichlet(np.ones(10))
            if mechanism == "plotly_new":  # a new element key every frame (the lab before issue 13)
                curve_slot.plotly_chart(plotly_curve(x, y), key=f"curve_{i}")
                bars_slot.plotly_chart(plotly_bars(p), key=f"bars_{i}")
            elif mechanism == "plotly_same":  # no key: the figure content names the element
                curve_slot.plotly_chart(plotly_curve(x, y))
                bars_slot.plotly_chart(plotly_bars(p))
            elif mechanism == "vega_replace":
                curve_slot.line_chart(pd.DataFrame({"y": y}, index=x), height=220)  # no add_rows in 1.67
                bars_slot.bar_chart(pd.DataFrame({"p": p}), horizontal=True, height=220)
            else:
                curve_png, bars_png = matplotlib_png(x, y, p)
                curve_slot.image(curve_png)
                bars_slot.image(bars_png)
            counter.caption(f"probe frame {i}")
            time.sleep(pace)
        counter.caption("probe done")


if __name__ == "__main__":  # streamlit runs it as __main__; benchmarks/live.py imports MECHANISMS
    main()
