"""`intriguing defences`: which input-transformation defences hold against an adaptive (BPDA) attack, and
adversarially trained models beside their plain twins."""

from __future__ import annotations

DEFAULT_DEFENCES = ("bits:1", "bits:2", "median:3", "jpeg:75")


def _table(rows) -> str:
    lines = [f"{'defence':<16} {'clean':>6} {'transfer':>9} {'plain':>6} {'BPDA':>6}  verdict"]
    for r in rows:
        lines.append(
            f"{r.defence:<16} {r.clean_accuracy:>6.1%} {r.robust_transfer:>9.1%} {r.robust_plain:>6.1%} "
            f"{r.robust_adaptive:>6.1%}  {r.verdict}"
        )
    return "\n".join(lines)


def run(args) -> int:
    from tqdm import tqdm

    from core.attacks import format_eps
    from core.checks import check_int
    from core.cli import emit
    from core.data import load_mnist
    from core.defences.transforms import adversarial_twins, parse_transform
    from core.errors import InvalidParameterError
    from core.evaluation import defences
    from core.models import get_spec, load
    from core.runtime import bar_disabled

    n = check_int("-n", args.n, low=1, high=10_000)
    check_int("--seed", args.seed)
    if get_spec(args.model).dataset != "mnist":
        raise InvalidParameterError(
            f"{args.model} is an ImageNet model; defences are evaluated on MNIST test images."
        )
    transforms = [parse_transform(spec) for spec in (args.defence or DEFAULT_DEFENCES)]
    defences.check_attack_params(args.attack, args.eps, args.steps, args.norm)
    data = load_mnist("test")
    x, labels = data.images[:n], data.labels[:n]
    model = load(args.model, args.device)
    attack = dict(attack=args.attack, eps=args.eps, steps=args.steps, norm=args.norm, seed=args.seed)
    with tqdm(total=100, desc="defences", unit="%", disable=bar_disabled(not args.json)) as bar:

        def progress(fraction: float, text: str) -> None:
            bar.set_postfix_str(text)
            bar.update(round(100 * fraction) - bar.n)

        rows = defences.evaluate_transforms(
            model, x, labels, transforms, device=args.device, progress=progress, **attack
        )
    pairs = adversarial_twins() if args.twins else []
    twins = defences.compare_twins(pairs, x, labels, device=args.device, **attack) if pairs else []
    result = {
        "model": args.model,
        "n": n,
        "attack": attack,
        "input_transformations": defences.as_dicts(rows),
        "adversarially_trained": defences.as_dicts(twins),
    }
    text = [
        f"{args.model}, {n} MNIST test images, {args.attack} {args.norm} eps {format_eps(args.eps, args.norm)}: accuracy "
        "(clean; under attack: transfer from the bare model, plain attack on the defended model, BPDA)",
        _table(rows),
    ]
    if args.twins and not twins:
        text.append("No adversarially trained model (…-advpool, …-pgdtrain) is in the zoo yet.")
    for t in twins:
        text.append(
            f"{t.model}: clean {t.clean_accuracy:.1%}, robust {t.robust_accuracy:.1%}   vs   "
            f"{t.twin}: clean {t.twin_clean_accuracy:.1%}, robust {t.twin_robust_accuracy:.1%}"
        )
    emit(result, args.json, "\n".join(text))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "defences",
        parents=[common],
        help="input-transformation defences under plain vs adaptive (BPDA) attack; adversarial training",
    )
    p.add_argument("--model", default="fc100-100-10")
    p.add_argument(
        "--defence",
        action="append",
        metavar="NAME[:VALUE]",
        help=f"bits:B, median:SIZE or jpeg:QUALITY; repeatable (default: {' '.join(DEFAULT_DEFENCES)})",
    )
    p.add_argument("--attack", choices=("pgd", "fgsm"), default="pgd")
    from core.evaluation.defences import SETTINGS  # lazy like every command: `intriguing --help` stays fast

    settings = {s.name: s for s in SETTINGS}
    eps, steps = settings["eps"].default, settings["steps"].default
    p.add_argument("--eps", type=float, default=eps, help=f"attack budget (default {eps:g}, Linf)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--steps", type=int, default=steps, help=f"PGD steps (default {steps})")
    p.add_argument("-n", type=int, default=100, help="number of MNIST test images (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-twins", dest="twins", action="store_false", help="skip adversarially trained models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
