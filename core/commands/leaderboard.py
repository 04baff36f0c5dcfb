"""`intriguing leaderboard`: which attack works best on which net, from every run recorded so far."""

from __future__ import annotations

import dataclasses


def _grid(matrix, fmt: str) -> str:
    """The matrix as text, each cell with the number of images it was measured on."""
    if not matrix.attacks:
        return f"{matrix.title}: no runs recorded yet."

    def cell(attack: str, model: str) -> str:
        value = matrix.values[attack].get(model)
        return "-" if value is None else f"{format(value, fmt)} (n={matrix.cells[attack][model].n})"

    width = max(18, *(len(m) for m in matrix.models))
    lines = [matrix.title, f"{'attack':<12}" + "".join(f" {m:>{width}}" for m in matrix.models)]
    for attack in matrix.attacks:
        lines.append(f"{attack:<12}" + "".join(f" {cell(attack, m):>{width}}" for m in matrix.models))
    return "\n".join(lines)


def _verified(rows) -> str:
    """The verified-beside-attack table as text: the true robust accuracy lies between the two columns."""
    if not rows:
        return "verified beside attack robust accuracy: no budgeted run or certificate recorded yet."

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    lines = ["verified beside attack robust accuracy (the truth lies between)"]
    for r in rows:
        why = f"  [{r.note}]" if r.note else ""
        lines.append(
            f"{r.model:<24} {r.norm} {r.budget:<6g} verified {share(r.verified):>4} {r.verified_by:<18} "
            f"attack {share(r.attack):>4} {r.attack_from}{why}"
        )
    return "\n".join(lines)


def _budget(text: str) -> tuple[str, float]:
    from core.checks import check_choice
    from core.errors import InvalidParameterError
    from core.evaluation.leaderboard import check_budget

    norm, _, eps = text.partition(":")
    check_choice("budget norm", norm, ("linf", "l2"))
    try:
        value = float(eps)
    except ValueError:
        raise InvalidParameterError(f"--budget must look like linf:0.1, got {text!r}.") from None
    return check_budget(norm, value)


def run(args) -> int:
    from core.attacks import is_budgeted
    from core.cli import emit
    from core.evaluation import cells, leaderboard, verified
    from core.evaluation.protocol import Protocol

    if args.fill:
        from tqdm import tqdm

        from core.checks import check_int
        from core.config import DEFAULT_MODEL
        from core.errors import IntriguingError
        from core.models import get_spec
        from core.runtime import bar_disabled

        protocol = Protocol(
            n=leaderboard.CELL_N.check(args.n), dataset=args.dataset or "mnist"
        )  # flags first
        check_int("seed", args.seed)
        for name in args.models or []:
            get_spec(name)
        for attack in args.fill:
            is_budgeted(attack)  # an unknown attack stops here, before any cell runs
        norm, eps = _budget(args.budget) if args.budget else leaderboard.DEFAULT_BUDGET
        missing = [(attack, model) for attack in args.fill for model in args.models or [DEFAULT_MODEL]]
        with tqdm(total=len(missing), desc="filling", disable=bar_disabled(not args.json)) as bar:

            def advance(fraction: float, what: str) -> None:
                bar.n = round(fraction * len(missing))
                bar.set_postfix_str(what)

            errors = cells.fill_cells(
                missing, protocol=protocol, norm=norm, budget=eps, seed=args.seed, device=args.device,
                source="cli", check=args.check, progress=advance,
            )  # fmt: skip
            bar.n = len(missing)
        if errors:
            raise IntriguingError("\n".join(str(exc) for exc in errors))
    known = leaderboard.protocols(dataset=args.dataset)
    chosen = args.protocol if args.protocol is not None else leaderboard.default_protocol(args.dataset)
    about = next((k.describe() for k in known if k.protocol_id == chosen), "no runs")
    matrices = [leaderboard.distortion_matrix(dataset=args.dataset, protocol_id=chosen)]
    budgets = [_budget(args.budget)] if args.budget else leaderboard.budgets(protocol_id=chosen)
    matrices += [
        leaderboard.success_matrix(norm, eps, dataset=args.dataset, protocol_id=chosen)
        for norm, eps in budgets
    ]
    text = "\n\n".join(_grid(m, ".4f" if m.metric == "median_rms" else ".0%") for m in matrices)
    protocol = next(
        (k.protocol for k in known if k.protocol_id == chosen), Protocol.for_dataset(args.dataset)
    )
    brackets = verified.brackets(chosen, protocol)
    text += "\n\n" + _verified(brackets)
    others = [f"  {k.protocol_id}: {k.describe()} ({k.runs} runs)" for k in known if k.protocol_id != chosen]
    header = f"protocol {chosen}: {about}"
    footer = ("\n\nother protocols (--protocol ID):\n" + "\n".join(others)) if others else ""
    emit(
        {
            "protocol_id": chosen,
            "protocol": about,
            "matrices": [m.as_dict() for m in matrices],
            "verified": [dataclasses.asdict(b) for b in brackets],
        },
        args.json,
        f"{header}\n\n{text}{footer}\n\n(database: {leaderboard.default_path()})",
    )
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "leaderboard", parents=[common], help="attack x model matrices from every recorded run"
    )
    p.add_argument("--dataset", default=None, help="mnist, imagenet or a registered dataset (default: all)")
    p.add_argument(
        "--budget", metavar="NORM:EPS", help="one success-rate budget, e.g. linf:0.1 (default: all)"
    )
    p.add_argument(
        "--fill",
        nargs="+",
        metavar="ATTACK",
        help="run these attacks first (on --models, -n images; budgeted ones at --budget, default linf:0.1)",
    )
    p.add_argument("--models", nargs="+", metavar="MODEL", help="models to fill (default fc100-100-10)")
    p.add_argument("-n", type=int, default=100, help="MNIST test images per filled cell (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--check",
        action="store_true",
        help="with --fill: also compute the indicators of attack failure and mark the cells where one fired",
    )
    p.add_argument(
        "--protocol",
        metavar="ID",
        default=None,
        help="show the runs of this protocol (default: the one with the most runs)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
