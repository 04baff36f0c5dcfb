"""Slide-ready figures: the paper's Figure 5 panel (original | amplified perturbation | adversarial), a Unit
Explorer grid (top-k images of units beside random directions) and the transfer heatmaps (Tables 2 and 4).

Figures are plain `matplotlib.figure.Figure` objects (no pyplot: no global figure registry, no backend
switch), exported as PNG at 300 dpi, PDF or SVG. Pictures are laid out in whole output pixels and drawn
with nearest-neighbour resampling, so every image pixel becomes a crisp block, never a blur; in PDF and SVG
they are embedded at the same 300 dpi.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn

from core.attacks import AttackResult
from core.errors import InvalidParameterError
from core.units import ImageSet, dead_units, random_directions, top_k, unit_vector
from core.visual.grid import image_row
from core.visual.pictures import perturbation_picture, to_uint8

DPI = 300
FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}
PICTURE_INCHES = 1.2  # side of one image of the Figure 5 panel (rounded to whole pixels per image pixel)
THUMBNAIL_INCHES = 0.55  # side of one top-k thumbnail of the unit grid
THUMBNAIL_GAP = 2  # image pixels between two thumbnails of a row
FONT = 8  # points
HEATMAP_MIN_INCHES = 7.5  # wide enough for the tables' titles
LINE_SPACING = 1.25  # line height over font size
# Text stays text (searchable, editable on a slide); output is byte-stable for the same figure.
EXPORT_RC = {"svg.fonttype": "none", "svg.hashsalt": "intriguing-lab", "pdf.fonttype": 42}
METADATA = {"png": {"Software": "intriguing-lab"}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}


# ------------------------------------------------------------------------------------------ layout


def _pixels(inches: float) -> int:
    return round(inches * DPI)


def pixel_scale(side: int, inches: float) -> int:
    """Output pixels per image pixel for a picture of `side` pixels about `inches` wide: a whole number,
    so every image pixel becomes a block of equal size."""
    return max(1, round(_pixels(inches) / side))


class _Canvas:
    """A figure laid out in whole output pixels at DPI: one axes spans it, with data coordinates equal to
    pixels from the top left, so each picture is one image placed on whole pixels (and one axes, not one
    per picture, keeps building a 24-picture panel fast)."""

    def __init__(self, width_px: int, height_px: int) -> None:
        self.width, self.height = width_px, height_px
        self.figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_axis_off()
        self.axes.set_autoscale_on(False)
        self.axes.set_xlim(0, width_px)
        self.axes.set_ylim(height_px, 0)

    def picture(self, left: int, top: int, pixels: np.ndarray, scale: int) -> tuple[int, int, int, int]:
        """An RGB uint8 picture drawn at (left, top) with `scale` output pixels per image pixel; returns
        its box (left, top, right, bottom) in pixels."""
        h, w = pixels.shape[:2]
        box = (left, top, left + w * scale, top + h * scale)
        self.axes.imshow(
            _rgb(pixels),
            extent=(box[0], box[2], box[3], box[1]),
            interpolation="nearest",
            resample=False,
            aspect="auto",
        )
        return box

    def text(self, x: float, y: float, text: str, va: str = "top", fontsize: float = FONT, **kw) -> None:
        """Text anchored at pixel (x, y) from the top left (va: its top or bottom there). Lines are drawn
        one by one: matplotlib applies font features (no ligatures, see `export`) to one-line texts only."""
        lines = text.split("\n")
        step = fontsize * LINE_SPACING / 72 * DPI
        first = y if va == "top" else y - step * (len(lines) - 1)
        for i, line in enumerate(lines):
            self.axes.text(x, first + i * step, line, va=va, fontsize=fontsize, **kw)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


# ------------------------------------------------------------------------------- Figure 5 panel


@dataclass(frozen=True)
class Example:
    """One row of the Figure 5 panel: an image, its adversarial twin and how the model classifies both."""

    x: np.ndarray  # (C, H, W) in [0, 1]
    x_adv: np.ndarray
    clean_class: str
    clean_confidence: float
    adversarial_class: str
    adversarial_confidence: float

    @property
    def fooled(self) -> bool:
        return self.adversarial_class != self.clean_class


@torch.no_grad()
def examples(model: nn.Module, result: AttackResult, class_names: Sequence[str]) -> list[Example]:
    """The rows of a run: the clean confidences need one forward pass, the adversarial ones are recorded."""
    device = next(iter(model.parameters())).device
    clean = torch.softmax(model(result.x.to(device)).float(), dim=1).cpu()
    rows = []
    for i in range(len(result)):
        before, after = int(result.pred_before[i]), int(result.pred_after[i])
        rows.append(
            Example(
                x=result.x[i].numpy(),
                x_adv=result.x_adv[i].numpy(),
                clean_class=class_names[before],
                clean_confidence=float(clean[i, before]),
                adversarial_class=class_names[after],
                adversarial_confidence=float(result.probs_after[i, after]),
            )
        )
    return rows


def example_pictures(example: Example, scale: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """original, perturbation (diverging colours, amplified to fill the map) and adversarial as RGB uint8
    pictures, enlarged `scale` times; also the amplification factor."""
    perturbation, amplification = perturbation_picture(example.x_adv - example.x, scale)
    return (
        _rgb(to_uint8(example.x, scale)),
        perturbation,
        _rgb(to_uint8(example.x_adv, scale)),
        amplification,
    )


def example_captions(example: Example, amplification: float) -> tuple[str, str, str]:
    """The three captions of a row: class and confidence, and the perturbation's amplification."""
    verdict = "" if example.fooled else " (not fooled)"
    return (
        f"original\n{example.clean_class} ({example.clean_confidence:.1%})",
        f"perturbation\namplified ×{amplification:.3g}",
        f"adversarial{verdict}\n{example.adversarial_class} ({example.adversarial_confidence:.1%})",
    )


def adversarial_figure(
    rows: Sequence[Example], title: str | None = None, columns: int | None = None, note: str | None = None
) -> Figure:
    """The paper's Figure 5: one original | perturbation | adversarial triple per example, `columns`
    triples side by side (default: 1 up to four examples, else 2), each picture captioned."""
    if not rows:
        raise InvalidParameterError("A figure needs at least one example.")
    columns = columns or (1 if len(rows) <= 4 else 2)
    if columns < 1:
        raise InvalidParameterError(f"A figure needs at least one column of triples, got {columns}.")
    side_h, side_w = rows[0].x.shape[-2:]
    scale = pixel_scale(max(side_h, side_w), PICTURE_INCHES)
    w, h = side_w * scale, side_h * scale
    gap, triple_gap, caption, margin = _pixels(0.06), _pixels(0.35), _pixels(0.32), _pixels(0.12)
    header = _pixels(0.3) if title else 0
    footer = _pixels(0.25) if note else 0
    lines = math.ceil(len(rows) / columns)
    triple_w = 3 * w + 2 * gap
    canvas = _Canvas(
        2 * margin + columns * triple_w + (columns - 1) * triple_gap,
        2 * margin + header + lines * (caption + h + gap) + footer,
    )
    if title:
        canvas.text(canvas.width // 2, margin, title, ha="center", va="top", fontsize=FONT + 2)
    for i, example in enumerate(rows):
        line, column = divmod(i, columns)
        left = margin + column * (triple_w + triple_gap)
        top = margin + header + line * (caption + h + gap)
        *pictures, amplification = example_pictures(example)
        captions = example_captions(example, amplification)
        for j, (pixels, text) in enumerate(zip(pictures, captions, strict=True)):
            x = left + j * (w + gap)
            canvas.picture(x, top + caption, pixels, scale)
            canvas.text(x + w // 2, top + caption - _pixels(0.03), text, ha="center", va="bottom")
    if note:
        canvas.text(margin, canvas.height - margin, note, va="bottom", fontsize=FONT - 1, color="0.35")
    return canvas.figure


# ------------------------------------------------------------------------------- Unit Explorer grid


@dataclass(frozen=True)
class DirectionRow:
    """One row of the unit grid: a direction's name and its top-k held-out images, best first."""

    title: str
    indices: np.ndarray


def unit_rows(
    acts: np.ndarray, units: Sequence[int], seed: int, k: int
) -> tuple[list[DirectionRow], list[DirectionRow]]:
    """Top-k rows of the natural units `units` and of as many random directions (seeded), ranked as the
    Unit Explorer ranks them (`core.units.top_k`)."""
    n_units = acts.shape[1]
    dead = set(dead_units(acts).tolist())
    natural = [
        DirectionRow(
            f"unit {u}" + (" (dead)" if u in dead else ""), top_k(acts, unit_vector(n_units, u), k).indices
        )
        for u in units
    ]
    randoms = random_directions(n_units, len(units), seed)
    random = [
        DirectionRow(f"random direction {j} (seed {seed})", top_k(acts, v, k).indices)
        for j, v in enumerate(randoms)
    ]
    return natural, random


def row_picture(images: ImageSet, row: DirectionRow) -> np.ndarray:
    """A row's thumbnails side by side (the Unit Explorer's mosaic) as RGB uint8."""
    return to_uint8(image_row(images, row.indices, pad=THUMBNAIL_GAP).transpose(2, 0, 1))


def units_figure(
    images: ImageSet,
    natural: Sequence[DirectionRow],
    random: Sequence[DirectionRow],
    title: str | None = None,
) -> Figure:
    """Natural units (left) beside random directions (right): each row the top-k images of one
    direction, each thumbnail labelled below (its class, or its file name for unlabelled photos)."""
    if not natural and not random:
        raise InvalidParameterError("A unit grid needs at least one direction.")
    blocks = [("Natural units e_i", natural), ("Random directions v", random)]
    blocks = [(name, rows) for name, rows in blocks if rows]
    mosaics = [[row_picture(images, row) for row in rows] for _, rows in blocks]
    thumb_h, thumb_w = images.thumbnail(int(blocks[0][1][0].indices[0])).shape[:2]
    scale = pixel_scale(max(thumb_h, thumb_w), THUMBNAIL_INCHES)
    mosaic_h = max(m.shape[0] for block in mosaics for m in block) * scale
    mosaic_w = max(m.shape[1] for block in mosaics for m in block) * scale
    margin, block_gap, row_title, labels = _pixels(0.12), _pixels(0.4), _pixels(0.2), _pixels(0.18)
    header, block_header = (_pixels(0.3) if title else 0), _pixels(0.3)
    lines = max(len(rows) for _, rows in blocks)
    canvas = _Canvas(
        2 * margin + len(blocks) * mosaic_w + (len(blocks) - 1) * block_gap,
        2 * margin + header + block_header + lines * (row_title + mosaic_h + labels),
    )
    if title:
        canvas.text(canvas.width // 2, margin, title, ha="center", va="top", fontsize=FONT + 2)
    for b, ((name, rows), block) in enumerate(zip(blocks, mosaics, strict=True)):
        left = margin + b * (mosaic_w + block_gap)
        canvas.text(left, margin + header, name, va="top", fontsize=FONT + 1, fontweight="bold")
        for line, (row, pixels) in enumerate(zip(rows, block, strict=True)):
            top = margin + header + block_header + line * (row_title + mosaic_h + labels)
            canvas.text(left, top + row_title - _pixels(0.03), row.title, va="bottom")
            _, _, _, bottom = canvas.picture(left, top + row_title, pixels, scale)
            for i, index in enumerate(row.indices):
                centre = left + scale * (i * (thumb_w + THUMBNAIL_GAP) + thumb_w / 2)
                canvas.text(
                    centre,
                    bottom + _pixels(0.02),
                    images.describe(int(index)),
                    ha="center",
                    va="top",
                    fontsize=FONT - 2,
                )
    return canvas.figure


# ------------------------------------------------------------------------------ transfer heatmaps


def heatmap_figure(
    matrix: Sequence[Sequence[float | None]],
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    paper: Sequence[Sequence[float] | None] | None = None,
    note: str | None = None,
) -> Figure:
    """Error induced in percent, one cell per (examples made for, model fed to); with `paper`, each cell
    also shows the paper's number in brackets; missing cells read '-'."""
    data = np.array([[np.nan if v is None else 100 * v for v in row] for row in matrix], dtype=float)
    width = max(HEATMAP_MIN_INCHES, 1.3 * len(columns) + 3)
    fig = Figure(figsize=(width, 0.55 * len(rows) + 2.2 + (0.2 if note else 0)), dpi=DPI)
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    for i in range(len(rows)):
        for j in range(len(columns)):
            value = data[i, j]
            text = "-" if np.isnan(value) else f"{value:.0f}"
            if paper is not None and paper[i] is not None:
                text += f"\n({100 * paper[i][j]:.0f})"
            dark = np.isnan(value) or value < 60
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.suptitle(title, fontsize=9)  # over the whole figure: a long title is not cut at the axes' edge
    if paper is not None:
        ax.set_title("ours (the paper's in brackets)", fontsize=8)
    fig.colorbar(im, ax=ax, label="error induced (%)")
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, color="0.35", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def transfer_figure(card: dict) -> Figure:
    """A stored transfer card (`intriguing reproduce table2|table4`) as a heatmap, with what it ran."""
    params = card["attack"]["params"]
    note = (
        f"n = {card['n']} test images, seed {card['seed']}; L-BFGS over the {params['n_targets']} most likely "
        f"other labels, {params['rounds']} values of c, {params['max_iter']} iterations; {card['date'][:10]}"
    )
    return heatmap_figure(
        card["matrix"],
        card["row_labels"],
        card["columns"],
        card.get("title", card["experiment"]),
        card.get("paper_matrix"),
        note=note,
    )


# ------------------------------------------------------------------------------------------ export


def figure_format(path: str | Path) -> str:
    """The export format named by a file's suffix (png, pdf or svg); anything else is refused."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InvalidParameterError(
            f"Cannot tell the figure format from {str(path)!r}: end the file name in "
            f"{', '.join('.' + f for f in FORMATS)}."
        )
    return suffix


def export(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG (300 dpi, recorded in the file), PDF or SVG bytes."""
    if fmt not in FORMATS:
        raise InvalidParameterError(f"Unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    for text in fig.findobj(
        Text
    ):  # no ligatures: a PDF's text would hold one glyph for the "fi" of "amplified"
        text.set_fontfeatures(("-liga",))
    buffer = io.BytesIO()
    with matplotlib.rc_context(EXPORT_RC):
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=METADATA[fmt], facecolor="white")
    return buffer.getvalue()


def output_path(path: str | Path) -> Path:
    """A checked place to write a figure: a known suffix, an existing folder, not a folder itself."""
    path = Path(path).expanduser()
    fmt = figure_format(path)
    if path.is_dir():
        raise InvalidParameterError(f"{path} is a folder; give a file name ending in .{fmt}.")
    if not path.parent.is_dir():
        raise InvalidParameterError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    return path


def save(fig: Figure, path: str | Path) -> Path:
    """Write the figure to `path` in the format its suffix names."""
    path = output_path(path)
    data = export(fig, figure_format(path))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InvalidParameterError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    return path
