"""`intriguing models`: the zoo with architecture, dataset, status and recorded errors."""

from __future__ import annotations


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def columns(table: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> str:
    """Rows of text cells as aligned columns, each as wide as its longest cell (numbers right-aligned)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(args) -> int:
    from core.cli import emit
    from core.models import describe, list_models

    rows = [describe(n) for n in list_models()]
    table = [("model", "dataset", "status", "test err", "paper", "architecture")]
    table += [
        (
            r["name"],
            r["dataset"],
            r["status"],
            _pct(r["recorded"].get("test_error")),
            _pct(r["paper"].get("test_error")),
            r["architecture"],
        )
        for r in rows
    ]
    emit(rows, args.json, columns(table, right=(3, 4)))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("models", parents=[common], help="list the model zoo and its status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
