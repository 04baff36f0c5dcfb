"""docs/units.md from stored result cards: `intriguing units-doc` runs the fixed set of measurements below,
writes one JSON card each to docs/results/units/, and assembles the document from whatever cards are there
(`--render-only` re-renders without measuring). Every number in the document comes from a card.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core import config
from core.attacks import make_attack
from core.models import load
from core.units.activations import dead_units, layer_activations
from core.units.arms import DEFAULT_ARMS, study_arms
from core.units.coherence import SCORE_NAMES, SCORES, comparison, study
from core.units.directions import unit_vector
from core.units.featvis import default_settings, start
from core.units.images import held_out_images
from core.units.inside import AttackRecord, what_changed
from core.units.rotation import sweep

RESULTS = config.PROJECT_ROOT / "docs" / "results" / "units"
DOC = config.PROJECT_ROOT / "docs" / "units.md"
HEADER = Path(__file__).with_name("units_header.md")
DISCUSSION = Path(__file__).with_name("units_discussion.md")

STUDY_LAYERS = (
    ("fc100-100-10", "hidden1"),
    ("fc100-100-10", "hidden2"),
    ("fc200-200-10", "hidden1"),
    ("fc200-200-10", "hidden2"),
    ("ae400-10", "code"),
    ("cnn", "conv1"),
    ("cnn", "conv2"),
    ("cnn", "fc1"),
)
PHOTO_LAYERS = (("mobilenet_v2", "block6"), ("mobilenet_v2", "block13"), ("mobilenet_v2", "pool"))
ARM_LAYERS = (("fc100-100-10", "hidden2"), ("fc200-200-10", "hidden2"), ("cnn", "fc1"))
SWEEP_LAYERS = (("fc100-100-10", "hidden2"), ("cnn", "fc1"))
FEATVIS_UNITS = 5  # first live units of each layer visualised
INSIDE = {"model": "fc100-100-10", "attack": "lbfgs", "n": 20}


def _ci(side: dict, score: str) -> str:
    low, high = side[f"{score}_ci"]
    return f"{side[f'{score}_mean']:.3f} [{low:.3f}, {high:.3f}]"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


# ---------------------------------------------------------------- measuring


def measure_studies(seed: int, photos: Path) -> dict:
    rows = []
    for model, layer in STUDY_LAYERS:
        rows.append(study(model, layer, k=9, seed=seed).summary())
    for model, layer in PHOTO_LAYERS:
        images = held_out_images(model, photos)
        rows.append(study(model, layer, k=4, seed=seed, images=images).summary())
    return {"kind": "studies", "rows": rows}


def measure_arms(seed: int) -> dict:
    return {
        "kind": "arms",
        "rows": [
            study_arms(model, layer, DEFAULT_ARMS, k=9, seed=seed).summary() for model, layer in ARM_LAYERS
        ],
    }


def measure_sweeps(seed: int) -> dict:
    return {"kind": "sweeps", "rows": [sweep(model, layer, k=9, seed=seed) for model, layer in SWEEP_LAYERS]}


def measure_featvis(seed: int) -> dict:
    rows = []
    for model_name, layer in (("fc100-100-10", "hidden2"), ("cnn", "fc1")):
        model = load(model_name)
        images = held_out_images(model_name)
        acts = layer_activations(model_name, layer, images, model=model)
        live = np.setdiff1d(np.arange(acts.shape[1]), dead_units(acts))[:FEATVIS_UNITS]
        for unit in live.tolist():
            direction = unit_vector(acts.shape[1], unit)
            settings = default_settings("mnist", seed=seed)
            run = start(model_name, layer, direction, settings, model, held_out=(images, acts))
            for _ in run:
                pass
            result = run.result()
            rows.append(
                {
                    "model": model_name,
                    "layer": layer,
                    "direction": f"unit:{unit}",
                    "activation": result.activation,
                    "held_out_max": float(acts[:, unit].max()),
                    "steps": result.iterations,
                    "time_s": result.time_s,
                    "settings": result.settings,
                }
            )
    return {"kind": "featvis", "rows": rows}


def measure_inside(seed: int) -> dict:
    model = load(INSIDE["model"])
    images = held_out_images(INSIDE["model"])
    with torch.no_grad():
        pred = model(images.images[:200]).argmax(1).numpy()
    correct = np.flatnonzero(pred == images.labels[:200])[: INSIDE["n"]]
    x, labels = images.images[correct], torch.as_tensor(images.labels[correct])
    torch.manual_seed(seed)
    result = make_attack(INSIDE["attack"], model).run(x, labels)
    ok = result.success.numpy()
    record = AttackRecord(
        INSIDE["model"],
        result.x[ok],
        result.x_adv[ok],
        result.labels.numpy()[ok],
        result.pred_after.numpy()[ok],
    )
    card = what_changed(record, images, seed=seed, model=model)
    card.update(attack=INSIDE["attack"], attacked=len(x), attack_params=result.params)
    return {"kind": "inside", "rows": [card]}


MEASUREMENTS: dict[str, Callable[..., dict]] = {
    "studies": measure_studies,
    "arms": measure_arms,
    "sweeps": measure_sweeps,
    "featvis": measure_featvis,
    "inside": measure_inside,
}


# ---------------------------------------------------------------- rendering


def render_studies(card: dict) -> str:
    head = "| model:layer (live units, dead) | images | k | " + " | ".join(
        f"{SCORE_NAMES[s]} units | random | p" for s in SCORES
    )
    lines = [head + " |", "|" + "---|" * (3 + 3 * len(SCORES))]
    for r in card["rows"]:
        cells = [
            f"{r['model']}:{r['layer']} ({r['natural']['n']}, {len(r['dead_units'])})",
            str(r["n_images"]),
            str(r["k"]),
        ]
        for s in SCORES:
            if r["natural"][f"{s}_mean"] is None:
                cells += ["-", "-", "-"]
            else:
                cells += [_ci(r["natural"], s), _ci(r["random"], s), _p(r["p_value"][s])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_arms(card: dict) -> str:
    parts = []
    for r in card["rows"]:
        lines = [
            f"**{r['model']}:{r['layer']}**: fitted on {r['n_fit']} images, scored on {r['n_score']}, k = {r['k']}, "
            f"judge {r['judge']}",
            "",
            "| arm | directions | " + " | ".join(f"{SCORE_NAMES[s]} | p vs units" for s in SCORES) + " |",
            "|" + "---|" * (2 + 2 * len(SCORES)),
        ]
        for arm, side in r["arms"].items():
            p = r["p_value"].get(arm, {})
            cells = [arm, str(side["n"])] + [x for s in SCORES for x in (_ci(side, s), _p(p.get(s)))]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [f"\n{arm}: skipped ({why})" for arm, why in r["skipped_arms"].items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render_sweeps(card: dict) -> str:
    parts = []
    for r in card["rows"]:
        lines = [
            f"**{r['model']}:{r['layer']}** ({r['n_directions']} live directions, k = {r['k']}, judge {r['judge']}, "
            f"seed {r['seed']})",
            "",
            "| alpha | " + " | ".join(SCORE_NAMES[s] for s in SCORES) + " |",
            "|" + "---|" * (1 + len(SCORES)),
        ]
        for point in r["points"]:
            cells = [f"{point['alpha']:.1f}"] + [
                f"{point[s]['mean']:.3f} [{point[s]['ci_low']:.3f}, {point[s]['ci_high']:.3f}]"
                for s in SCORES
            ]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render_featvis(card: dict) -> str:
    lines = [
        "| model:layer | direction | <phi(x), v> reached | best held-out image | steps | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in card["rows"]:
        lines.append(
            f"| {r['model']}:{r['layer']} | {r['direction']} | {r['activation']:.4g} | {r['held_out_max']:.4g} | "
            f"{r['steps']} | {r['time_s']:.2f} |"
        )
    return "\n".join(lines)


def render_inside(card: dict) -> str:
    r = card["rows"][0]
    lines = [
        f"{r['attack']} on {r['model']}: {r['n']} successful adversarial images of the {r['attacked']} attacked "
        f"(seed {r['seed']}). Top-5 share: the part of |delta|^2 inside the 5 directions pushed most; "
        "neighbours: labels of the 10 nearest held-out images in that layer.",
        "",
        "| layer | units | mean \\|delta\\|^2 | top-5 share: units | random basis | nmf | kmeans | dictionary | "
        "neighbours of phi(x_adv) in the adversarial class | in the original class | neighbours of phi(x) in the original class |",
        "|" + "---|" * 11,
    ]
    for layer in r["layers"]:
        shares = [
            "-" if "skipped" in layer["arms"][a] else f"{layer['arms'][a]['top5_share']:.2f}"
            for a in ("units", "random", "nmf", "kmeans", "dictionary")
        ]
        n = layer.get("neighbours", {})
        near = [
            f"{n[key]:.2f}" if key in n else "-"
            for key in ("adv_share_of_adv_class", "adv_share_of_clean_class", "clean_share_of_clean_class")
        ]
        lines.append(
            f"| {layer['layer']} | {layer['units']} | {layer['delta_norm2']:.4g} | "
            + " | ".join(shares + near)
            + " |"
        )
    return "\n".join(lines)


def verdicts(arms_card: dict) -> str:
    """The arms' comparisons as sentences (rendered, not typed)."""
    lines = []
    for r in arms_card["rows"]:
        for arm in r["p_value"]:
            sentence = comparison(
                "purity", r["arms"]["units"], r["arms"][arm], r["p_value"][arm]["purity"], arm
            )
            lines.append(f"- {r['model']}:{r['layer']}, {sentence}")
    return "\n".join(lines)


SECTIONS = (
    ("studies", "Units versus random directions", render_studies),
    ("arms", "Three arms: units, random and learned directions", render_arms),
    ("sweeps", "The rotation sweep", render_sweeps),
    ("featvis", "Feature visualisation against the best held-out image", render_featvis),
    ("inside", "What an attack moves inside", render_inside),
)


def write_units_doc(results: Path = RESULTS, doc: Path = DOC) -> Path:
    """Assemble docs/units.md from the cards in `results` (a section without its card says how to make it)."""
    parts = [HEADER.read_text()]
    cards = {}
    for name, title, render in SECTIONS:
        path = results / f"{name}.json"
        parts.append(f"## {title}\n\n")
        if not path.is_file():
            parts.append(f"Not measured yet: `intriguing units-doc --only {name}`.\n\n")
            continue
        cards[name] = json.loads(path.read_text())
        meta = cards[name]["meta"]
        parts.append(render(cards[name]) + "\n\n")
        parts.append(
            f"<sub>`intriguing units-doc --only {name}`, seed {meta['seed']}, {meta['time_s']:.0f} s, "
            f"{meta['date']}, torch {meta['versions'].get('torch')}, commit {meta['commit']}</sub>\n\n"
        )
    if "arms" in cards:
        parts.append(
            "### The arms in one sentence each (label purity)\n\n" + verdicts(cards["arms"]) + "\n\n"
        )
    parts.append(DISCUSSION.read_text())
    doc.write_text("".join(parts))
    return doc
