"""`intriguing models`: the zoo with architecture, dataset, status and recorded errors."""

from __future__ import annotations


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def run(args) -> int:
    from core.cli import emit
    from core.models import describe, list_models

    rows = [describe(n) for n in list_models()]
    lines = [f"{'model':<18} {'dataset':<9} {'status':<16} {'test err':>9} {'paper':>7}  architecture"]
    for r in rows:
        lines.append(
            f"{r['name']:<18} {r['dataset']:<9} {r['status']:<16} {_pct(r['recorded'].get('test_error')):>9} "
            f"{_pct(r['paper'].get('test_error')):>7}  {r['architecture']}"
        )
    emit(rows, args.json, "\n".join(lines))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("models", parents=[common], help="list the model zoo and its status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
