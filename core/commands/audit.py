"""`intriguing audit`: can this robustness number be trusted? One attack on a model (or a defended model)
with every indicator of attack failure; each fired indicator comes with its fix as flags of this command."""

from __future__ import annotations


def run(args) -> int:
    from core.checks import check_int
    from core.cli import emit
    from core.commands.attack import attack_params
    from core.evaluation.audit import audit
    from core.evaluation.indicators import table

    check_int("--seed", args.seed)
    check_int("--n", args.n, low=1, high=10_000)
    check_int("--square-queries", args.square_queries, low=1, high=100_000)
    found = audit(
        args.model,
        defence=args.defence,
        gradient=args.gradient,
        attack=args.attack,
        params=attack_params(args.attack, args, args.seed),
        n=args.n,
        seed=args.seed,
        square_queries=args.square_queries,
        device=args.device,
    )
    emit(found.to_dict(), args.json, "\n".join([found.describe(), *table(found.checks)]))
    return 0


def register(sub, common) -> None:
    from core.attacks import ATTACKS
    from core.commands.attack import add_attack_flags
    from core.defences.transforms import GRADIENTS

    p = sub.add_parser(
        "audit",
        parents=[common],
        help="indicators of attack failure: can a model's (or a defence's) robustness number be trusted?",
        description="Runs the attack on the first n correctly classified MNIST test images with every "
        "indicator of attack failure. A fired indicator prints its fix as flags of this command.",
    )
    p.add_argument("--model", required=True)
    p.add_argument(
        "--defence", default=None, metavar="NAME[:VALUE]", help="bits:B, median:SIZE or jpeg:QUALITY"
    )
    p.add_argument(
        "--gradient",
        choices=GRADIENTS,
        default="naive",
        help="through the defence: autograd's gradient (naive) or straight through (bpda)",
    )
    p.add_argument("--attack", choices=list(ATTACKS), default="pgd")
    p.add_argument("--n", type=int, default=50, help="number of images (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--square-queries", type=int, default=1000, help="queries of the Square Attack check (default 1000)"
    )
    add_attack_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
