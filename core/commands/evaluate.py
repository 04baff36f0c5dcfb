"""`intriguing evaluate NAME`: the error of a zoo model on an MNIST split, computed now."""

from __future__ import annotations


def run(args) -> int:
    from core.cli import emit
    from core.data import load_mnist
    from core.errors import InvalidParameterError
    from core.models import get_spec, load
    from core.models.train import error_rate

    if get_spec(args.model).dataset != "mnist":
        raise InvalidParameterError(
            f"{args.model} is an ImageNet model; `evaluate` measures MNIST models only."
        )
    data = load_mnist(args.split)
    model = load(args.model, args.device)
    err = error_rate(model, data.images, data.labels)
    result = {"model": args.model, "split": args.split, "error": err, "n": len(data)}
    emit(result, args.json, f"{args.model} on {args.split} ({len(data)} images): error {100 * err:.2f}%")
    return 0


def register(sub, common) -> None:
    from core.data import SPLITS

    p = sub.add_parser("evaluate", parents=[common], help="error of a model on an MNIST split")
    p.add_argument("model")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
