"""Robust accuracy of zoo models under the AutoAttack ensemble (standard: APGD-CE, APGD-T, FAB-T, Square), the
way the field reports it, and docs/autoattack.md, which puts it beside AutoAttack's MNIST leaderboard
(core.experiments.paper). `intriguing reproduce autoattack --update-docs` stores the card the page is
rendered from; benchmarks/autoattack.py's card (ours against torchattacks, timed side by side) is quoted
when it is stored too.

Two definitions, both in the card: RobustBench's (the first n test points; a misclassified clean point
counts as broken; what the leaderboard prints) and the lab's (over the correctly classified points only).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from core.attacks import make_attack
from core.evaluation.protocol import Protocol
from core.experiments import paper
from core.experiments.adversarial import notify
from core.experiments.writer import RESULTS_DIR, Column, Report, bars, base_card, read_card
from core.models import load

# Each model at the budget it was trained for (cnn-robust: Madry et al.'s MNIST setting; the MLP: 0.1).
MODELS = (("cnn-robust", 0.3), ("fc100-100-10-pgdtrain", 0.1), ("fc100-100-10", 0.1))
STEPS, QUERIES = 100, 5000  # the reference's settings
BENCHMARK_CARD = Path("performance") / "autoattack.json"  # under docs/results, by benchmarks/autoattack.py
COLUMNS = [
    Column("model", "model", "text"),
    Column("eps", "Linf eps", "num"),
    Column("clean_accuracy", "clean", "pct"),
    Column("robust_accuracy", "AutoAttack (RobustBench)", "pct"),
    Column("robust_of_correct", "of the correct ones", "pct"),
    Column("broken_by_apgd_ce", "APGD-CE broke", "text"),
    Column("broken_later", "later members broke", "text"),
    Column("time_s", "s", "num"),
]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion k/n (how far n test points pin a robust accuracy down)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    return max(0.0, min(low, p)), min(1.0, max(high, p))  # it holds p; rounding alone could say otherwise


def _row(name: str, eps: float, n: int, seed: int, device) -> dict:
    protocol = Protocol(split="test", n=n, correct_only=False)  # RobustBench: the first n points
    model = load(name, device)
    chosen = protocol.select(model, device)
    attack = make_attack("autoattack", model, device, eps=eps, steps=STEPS, queries=QUERIES, seed=seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = attack.run(chosen.images, chosen.labels)
    correct = int((result.pred_before == result.labels).sum())
    standing = int((~result.success).sum())
    low, high = wilson(standing, n)
    later = sum(v for k, v in attack.broken_by.items() if k != "APGD-CE")
    return {
        "model": name,
        "eps": eps,
        "n": n,
        "clean_accuracy": correct / n,
        "robust_accuracy": standing / n,
        "robust_interval": [low, high],
        "robust_of_correct": standing / correct if correct else 0.0,
        "broken_by_apgd_ce": str(attack.broken_by.get("APGD-CE", 0)),
        "broken_later": str(later),
        "broken_by": attack.broken_by,
        "warnings": sorted({str(w.message) for w in caught}),
        "model_calls": result.model_calls,
        "time_s": time.perf_counter() - start,
    }


def run(
    n: int = 1000, seed: int = 0, device=None, progress: bool | Callable[[float, str], None] = True
) -> Report:
    """Every model of MODELS under the standard ensemble on the first n test images."""
    start = time.perf_counter()
    rows = []
    for i, (name, eps) in enumerate(MODELS):
        notify(progress, i / len(MODELS), f"AutoAttack on {name} at Linf {eps:g}")
        rows.append(_row(name, eps, n, seed, device))
    notify(progress, 1.0, "done")
    card = base_card(
        "autoattack", n, seed, version="standard", norm="linf", steps=STEPS, queries=QUERIES,
        protocol=Protocol(split="test", n=n, correct_only=False).describe(), time_s=time.perf_counter() - start,
    )  # fmt: skip
    notes = [
        f"AutoAttack standard ({STEPS} APGD/FAB steps, {QUERIES} Square queries, seed {seed}) on the first {n} "
        "MNIST test images; robust accuracy counts a misclassified clean image as broken (RobustBench), the "
        "next column is over the correctly classified ones (the lab's protocol)."
    ]

    def draw(path: Path) -> None:
        labels = [f"{r['model']} @ {r['eps']:g}" for r in rows]
        series = {
            "clean": [r["clean_accuracy"] for r in rows],
            "AutoAttack": [r["robust_accuracy"] for r in rows],
        }
        bars(path, labels, series, "Zoo models under AutoAttack (standard)", "accuracy")

    return Report("autoattack", "Robust accuracy under AutoAttack", COLUMNS, rows, card, draw, notes)


def _standing(row: dict) -> list[str]:
    """The leaderboard at Linf 0.3 with our model placed in it by robust accuracy."""
    entries = [
        (name, v["clean"], v["robust"], "published, 10000 test points")
        for name, v in paper.AUTOATTACK_MNIST.items()
    ]
    low, high = row["robust_interval"]
    entries.append(
        (f"**{row['model']} (this lab)**", row["clean_accuracy"], row["robust_accuracy"],
         f"first {row['n']} test points; 95% interval {100 * low:.1f}-{100 * high:.1f}%")
    )  # fmt: skip
    lines = ["| model | clean | AutoAttack | on |", "|---|---|---|---|"]
    for name, clean, robust, where in sorted(entries, key=lambda e: -e[2]):
        lines.append(f"| {name} | {100 * clean:.2f}% | {100 * robust:.2f}% | {where} |")
    return lines


def _black_box(rows: list[dict]) -> list[str]:
    """Where Square broke images the gradient members left standing (AutoAttack's warning, the indicator
    black_box_beats_white_box): the model's gradients mislead, so its gradient-attack numbers overstate it."""
    lines = [
        f"- `{r['model']}`: Square, which takes no gradient, broke {r['broken_by']['Square']} images that "
        "every gradient member left standing (the indicator *black-box attack succeeds*): its gradients "
        "partly mislead, and only the ensemble's number, not a gradient attack's, holds."
        for r in rows
        if r["broken_by"].get("Square", 0) > 0
    ]
    return ["## What the gradient attacks missed", "", *lines, ""] if lines else []


def _benchmark(results: Path) -> list[str]:
    path = results / BENCHMARK_CARD
    if not path.is_file():
        return ["Not measured yet: `python benchmarks/autoattack.py --update-docs`."]
    b = json.loads(path.read_text())
    acc = b["robust_accuracy"]
    if "torchattacks" not in acc:
        return [
            f"The stored run measured ours only ({b['median_s']['ours']:.0f} s): torchattacks was not importable."
        ]
    return [
        f"benchmarks/autoattack.py, in one alternating run on the first {b['n']} test images of `{b['model']}` "
        f"at Linf {b['eps']:g} ({b['steps']} steps, {b['queries']} queries, 1 thread, load average "
        f"{b['machine_after']['load_average_1_5_15'][0]:g} at the end): ours took {b['median_s']['ours']:.0f} s, "
        f"torchattacks' AutoAttack {b['median_s']['torchattacks']:.0f} s ({b['theirs_over_ours']:.2f}x ours); "
        f"robust accuracy {100 * acc['ours']:.1f}% (ours) and {100 * acc['torchattacks']:.1f}% (theirs).",
        *_member_limits(b["members"]),
    ]


def _member_limits(members: list[dict]) -> list[str]:
    """Each member kind's time as a multiple of its limit, when the benchmark card measured it: how close to
    its bare model passes each member runs (a card from before the limits were measured has none)."""
    kinds: dict[str, list[float]] = {}
    for m in members:
        if "over_limit" in m:
            kinds.setdefault(m["member"].split(" (")[0], []).append(m["over_limit"])
    if not kinds:
        return []
    spans = [
        f"{kind} {min(v):.2f}x" if len(v) == 1 else f"{kind} {min(v):.2f}-{max(v):.2f}x"
        for kind, v in kinds.items()
    ]
    return [
        "",
        "Each member's time as a multiple of its limit (the passes it makes at the least, the fastest of 10 "
        "timed on a batch of the images standing when it started: a forward+backward per APGD or FAB step, a "
        "forward per Square query; Square drops the images it breaks, so it can run under 1x): "
        + ", ".join(spans)
        + ".",
    ]


def doc(results: Path = RESULTS_DIR) -> str:
    """docs/autoattack.md from the stored cards."""
    head = [
        "# AutoAttack: the robust accuracy the field reports",
        "",
        "Rendered by `intriguing reproduce autoattack --update-docs` (or `intriguing reproduce docs`) from "
        "the stored cards in `docs/results/autoattack/` and `docs/results/performance/autoattack.json`.",
        "",
    ]
    card = read_card("autoattack", results)
    if card is None:
        return "\n".join([*head, "Not run yet: `intriguing reproduce autoattack --update-docs`.", ""])
    table = (results / "autoattack" / "autoattack.md").read_text()
    robust = next(
        (r for r in card["rows"] if r["eps"] == paper.AUTOATTACK_MNIST_LINF and r["model"] == MODELS[0][0]),
        None,
    )
    parts = [*head, table, "![autoattack](results/autoattack/autoattack.png)", ""]
    if robust is not None:
        parts += [
            f"## Where {robust['model']} stands (MNIST, Linf {paper.AUTOATTACK_MNIST_LINF:g})",
            "",
            *_standing(robust),
            "",
        ]
    parts += [*_black_box(card["rows"]), "## Against torchattacks' AutoAttack", "", *_benchmark(results), ""]
    return "\n".join(parts)
