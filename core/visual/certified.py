"""Randomized smoothing's certified accuracy against L2 radius (Cohen et al.'s Figure 7 / Table measure), one
curve per noise level from a stored card's per-image certificates, with the published points beside them.
A plain matplotlib Figure, exported as PNG, PDF or SVG by core.visual.figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from core.visual.figures import DPI, FONT


def certified_curve(images: Sequence[dict], radii: np.ndarray) -> np.ndarray:
    """Share of images correct and certified at radius >= r, for each r (abstentions count as wrong)."""
    certified = np.array([img["radius"] for img in images if img["prediction"] == img["label"]], dtype=float)
    return np.array([(certified >= r).sum() for r in radii], dtype=float) / max(len(images), 1)


def certified_figure(card: dict) -> Figure:
    """Curves per sigma from card["images"][sigma] (dicts with label, prediction, radius); card["paper"]
    (sigma -> certified accuracies at card["radii"]) drawn as markers in the same colour."""
    fig = Figure(figsize=(6.0, 3.8), dpi=DPI)
    ax = fig.add_subplot()
    top = max(card["radii"])
    grid = np.linspace(0.0, top + 0.25, 400)
    for k, (sigma, images) in enumerate(card["images"].items()):
        colour = f"C{k}"
        ax.plot(grid, 100 * certified_curve(images, grid), color=colour, label=f"ours, sigma {sigma}")
        published = card.get("paper", {}).get(sigma)
        if published is not None:
            ax.plot(card["radii"], [100 * v for v in published], "o", color=colour, mfc="none",
                    label=f"Cohen et al., sigma {sigma}")  # fmt: skip
    ax.set_xlabel("L2 radius (pixels in [0, 1])", fontsize=FONT)
    ax.set_ylabel("certified accuracy (%)", fontsize=FONT)
    ax.set_ylim(0, 112)  # headroom for the legend above the curves
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT - 1, ncol=2, loc="upper right")
    ax.set_title(
        f"Certified accuracy against L2 radius, first {card['n']} MNIST test images", fontsize=FONT + 1
    )
    fig.tight_layout()
    return fig
