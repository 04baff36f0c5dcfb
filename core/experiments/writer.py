"""One writer for every reproduced table: a markdown table with the paper's numbers beside ours, a CSV,
a figure (PNG) and a JSON card of what ran (models, attack parameters, n, seed, versions, date)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core import config
from core.errors import CardError
from core.provenance import gpu, versions
from core.visual.figures import heatmap_figure

RESULTS_DIR = config.RESULTS_DIR


@dataclass(frozen=True)
class Column:
    """A column: the row key, its header and how to show it (text | pct | dist | num)."""

    key: str
    header: str
    kind: str = "num"
    paper_key: str | None = None  # when set, the markdown cell reads "ours (paper)"


@dataclass
class Report:
    """A reproduced table: its rows (raw values, CSV as-is), how to show them and what ran."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    card: dict[str, Any]
    draw: Callable[[Path], None]  # writes the figure to the given PNG path
    notes: list[str] = field(default_factory=list)


def fmt(value: Any, kind: str) -> str:
    """A cell as the paper prints it: errors in percent, distortions with three decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%" if value >= 0.1 or value == 0 else f"{100 * value:.2f}%"
    if kind == "dist":
        return f"{value:.3f}"
    if kind == "num":
        return f"{value:.3g}"
    return str(value)


def markdown(report: Report) -> str:
    lines = [
        f"### {report.title}",
        "",
        "| " + " | ".join(c.header for c in report.columns) + " |",
        "|" + "|".join("---" for _ in report.columns) + "|",
    ]

    def cell(row: dict, c: Column) -> str:
        text = fmt(row.get(c.key), c.kind)
        if c.paper_key and row.get(c.paper_key) is not None:
            text += f" ({fmt(row[c.paper_key], c.kind)})"
        return text

    for row in report.rows:
        lines.append("| " + " | ".join(cell(row, c) for c in report.columns) + " |")
    card = report.card
    lines += [
        "",
        f"n = {card.get('n')} {card.get('n_unit', 'test images')}, seed {card.get('seed')}, {card.get('time_s', 0):.0f} s "
        f"({card.get('threads', '?')} torch thread(s)), {card.get('date', '')[:10]}.",
    ]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def base_card(name: str, n: int, seed: int, **fields: Any) -> dict[str, Any]:
    """What every card records: the experiment, n, seed, library versions, threads, the GPU and date."""
    return {
        "experiment": name,
        "n": n,
        "seed": seed,
        **fields,
        "threads": torch.get_num_threads(),
        "gpu": gpu(),
        "versions": versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write(report: Report, out: str | Path) -> dict[str, str]:
    """Write <out>/<name>/<name>.{md,csv,png,json}; return the paths."""
    folder = Path(out) / report.name
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{report.name}.{ext}" for ext in ("md", "csv", "png", "json")}
    paths["md"].write_text(markdown(report))
    with paths["csv"].open("w", newline="") as handle:
        keys = list(dict.fromkeys(k for row in report.rows for k in row))
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(report.rows)
    report.draw(paths["png"])
    card = {**report.card, "title": report.title, "rows": report.rows, "notes": report.notes}
    paths["json"].write_text(json.dumps(_jsonable(card), indent=2) + "\n")
    return {k: str(v) for k, v in paths.items()}


def read_card(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A stored card, or None: docs/results/<name>/<name>.json by default, or docs/results/<name>.json for a
    name with a folder in it (the benchmarks' cards: "performance/attacks")."""
    root = Path(folder or RESULTS_DIR)
    path = root / f"{name}.json" if "/" in name else root / name / f"{name}.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CardError(_damaged(name, path, str(exc))) from None
    if not isinstance(card, dict):
        raise CardError(_damaged(name, path, f"a JSON {type(card).__name__}, not a card"))
    return card


def _damaged(name: str, path: Path, why: str) -> str:
    """What to say of a damaged card: which file, why, and the two ways back."""
    shown = path.relative_to(config.PROJECT_ROOT) if path.is_relative_to(config.PROJECT_ROOT) else path
    again = "the benchmark that wrote it" if "/" in name else f"`intriguing reproduce {name} --update-docs`"
    return (
        f"The stored result card {shown} is damaged ({why}). Restore it with `git checkout -- {shown}`, "
        f"or make it again with {again}."
    )


# ------------------------------------------------------------------------------------------- figures


def figure(width: float = 7.0, height: float = 4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=90)


def heatmap(
    path: Path, matrix: list[list[float]], rows: list[str], cols: list[str], title: str, paper=None
) -> None:
    """Error-induced matrix in percent; with `paper`, each cell also shows the paper's number."""
    heatmap_figure(matrix, rows, cols, title, paper).savefig(path, dpi=90)


def bars(
    path: Path, labels: list[str], series: dict[str, list[float | None]], title: str, ylabel: str, log=False
):
    """Grouped bars, one group per label, one bar per series (missing values are skipped)."""
    plt, fig, ax = figure(max(6.0, 0.55 * len(labels) * len(series) + 2), 4.5)
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + k * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=name)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
