"""`intriguing models`: the zoo and the registered models with architecture, dataset, status, source and
checksum; `models add NAME PATH [--card CARD.toml]` registers the user's own, `models remove NAME` forgets it."""

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


def _change(args) -> int:
    from core.cli import emit
    from core.models import registry
    from core.models.zoo import add_model

    if args.action == "remove":
        gone = registry.remove(args.name)
        emit({"removed": args.name, **gone.to_dict()}, args.json, f"removed {args.name}")
        return 0
    # the CLI is the user's own shell: TorchScript and package.module:function factories run their code
    new = add_model(args.name, args.path, args.card, allow_code=True)
    text = f"registered {args.name}: {new.format}, {len(new.card.classes)} classes, domain {new.card.domain}, sha256 {new.sha256[:12]}"
    emit({"name": args.name, **new.to_dict()}, args.json, text)
    return 0


def run(args) -> int:
    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.models import describe, list_models

    if args.action is not None:
        if args.name is None or (args.action == "add" and args.path is None):
            need = "NAME PATH" if args.action == "add" else "NAME"
            raise InvalidParameterError(f"`intriguing models {args.action}` needs {need}.")
        return _change(args)
    rows = [describe(n) for n in list_models()]
    table = [("model", "dataset", "status", "test err", "paper", "source", "sha256", "architecture")]
    table += [
        (
            r["name"],
            r["dataset"],
            r["status"],
            _pct(r["recorded"].get("test_error")),
            _pct(r["paper"].get("test_error")),
            r["source"] if r["source"] == "zoo" else r["format"],
            (r["sha256"] or "")[:12],
            r["architecture"],
        )
        for r in rows
    ]
    emit(rows, args.json, columns(table, right=(3, 4)))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "models",
        parents=[common],
        help="list the model zoo and registered models; `models add NAME PATH` / `models remove NAME`",
    )
    p.add_argument("action", nargs="?", choices=("add", "remove"), help="register or forget a model of yours")
    p.add_argument("name", nargs="?", help="the name to register it under (letters, digits, . _ -)")
    p.add_argument(
        "path", nargs="?", help="ONNX, safetensors, state_dict, TorchScript file, or package.module:function"
    )
    p.add_argument("--card", default=None, help="the model card (TOML); default: PATH with .toml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
