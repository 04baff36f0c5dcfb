"""`intriguing evaluate NAME`: the error of a model on a split of MNIST or of a registered dataset."""

from __future__ import annotations


def run(args) -> int:
    from core.cli import emit
    from core.data.datasets import load_split
    from core.errors import InvalidParameterError
    from core.models import get_spec, load
    from core.models.train import error_rate

    spec = get_spec(args.model)
    dataset = args.dataset or spec.dataset
    if spec.dataset == "imagenet" or dataset != spec.dataset:
        raise InvalidParameterError(
            f"{args.model} belongs to {spec.dataset}; `evaluate` needs its labelled dataset."
        )
    data = load_split(dataset, args.split, spec.input_shape if spec.origin == "registered" else None)
    model = load(args.model, args.device)
    err = error_rate(model, data.images, data.labels)
    result = {"model": args.model, "dataset": dataset, "split": args.split, "error": err, "n": len(data)}
    emit(result, args.json, f"{args.model} on {args.split} ({len(data)} images): error {100 * err:.2f}%")
    return 0


def register(sub, common) -> None:
    from core.data import SPLITS

    p = sub.add_parser("evaluate", parents=[common], help="error of a model on an MNIST split")
    p.add_argument("model")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--dataset", default=None, help="a registered dataset (default: the model's domain)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
