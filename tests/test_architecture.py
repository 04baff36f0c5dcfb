"""The layout of docs/architecture.md, enforced: which package of core/ may import which (also inside
functions), no cycle between packages, core never imports dashboard/ or Streamlit, core/data never imports
core/models; and no function in core/ over 80 lines unless the allow-list below says why."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"
BASE = {"errors", "checks", "config", "provenance", "runtime", "stats"}
# docs/architecture.md's "Which imports which": each package may import its own layer and the ones before.
LAYERS = [
    BASE,
    {"data"},
    {"models"},
    {"attacks"},
    {"certify", "smoothing"},
    {"defences", "units"},
    {"evaluation", "visual", "lab"},
    {"experiments"},
    {"commands"},
    {"cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 80
# Functions allowed past MAX_LINES, each with its reason (a new long function fails the test).
LONG_FUNCTIONS: dict[str, str] = {
    "core.models.zoo._mnist_specs": "a table: one ModelSpec literal per zoo model, read top to bottom",
    "core.models.train.train": "the training loop of the zoo, being reworked with your own models (issue 21)",
    "core.commands.attack.run": "checks every flag before any work, then one loop: not yet split (issue 26)",
    "core.experiments.table5.run": "one experiment from its inputs to its card, in order: not yet split",
    "core.experiments.advtrain.run": "one experiment from training to its card, in order: not yet split",
    "core.experiments.adversarial.transfer_report": "one report written in order: not yet split",
}
# Edges allowed against the layers, each with its reason.
ALLOWED = {
    ("commands", "cli"): "each command's run() imports core.cli.emit lazily; cli registers the commands",
    ("models", "attacks"): "adversarial training (models/train.py) crafts each batch with the attacks' Linf "
    "geometry (attacks/norms.py); attacks never import models, so no cycle; to go when training moves up",
}


def modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(CORE.parent).with_suffix("")).replace("/", "."), ast.parse(path.read_text()))
        for path in sorted(CORE.rglob("*.py"))
    ]


def imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def package(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if parts[0] == "core" and len(parts) > 1 else ("__init__" if dotted == "core" else None)


def test_core_never_imports_the_dashboard_or_streamlit():
    bad = [
        (mod, name)
        for mod, tree in modules()
        for name in imports(tree)
        if name.split(".")[0] in ("dashboard", "streamlit")
    ]
    assert not bad


def test_each_package_imports_only_its_layer_and_the_ones_before():
    bad = []
    for mod, tree in modules():
        own = package(mod)
        for name in imports(tree):
            other = package(name)
            if other in (None, own, "__init__") or other not in RANK or (own, other) in ALLOWED:
                continue
            if RANK[other] > RANK[own]:
                bad.append(f"{mod} imports {name}")
    assert not bad, bad
    assert set(RANK) >= {package(m) for m, _ in modules()}, "a new package needs its place in LAYERS"


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for mod, tree in modules():
        own = package(mod)
        for name in imports(tree):
            other = package(name)
            if other not in (None, own, "__init__") and own != "__init__" and (own, other) not in ALLOWED:
                edges.setdefault(own, set()).add(other)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ())
        )

    assert not [p for p in edges if reaches(p, p, set())]


def test_data_never_imports_models():
    bad = [
        (m, n)
        for m, tree in modules()
        if package(m) == "data"
        for n in imports(tree)
        if package(n) == "models"
    ]
    assert not bad


def test_no_new_long_function_in_core():
    long = {}
    for mod, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long[f"{mod}.{node.name}"] = lines
    assert set(long) <= set(LONG_FUNCTIONS), {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert all(LONG_FUNCTIONS.values())  # every exception states its reason
