"""`intriguing train NAME`: train a zoo model with a progress bar; write checkpoint and JSON card."""

from __future__ import annotations


def run(args) -> int:
    from core.certify.training import loss_for
    from core.cli import emit
    from core.models.train import train

    loss_fn = loss_for(args.model)
    card = train(
        args.model, epochs=args.epochs, seed=args.seed, out=args.out, device=args.device, loss_fn=loss_fn
    )
    errs = ", ".join(f"{k} {100 * v:.2f}%" for k, v in card.items() if k.endswith("_error"))
    emit(
        card,
        args.json,
        f"{args.model}: {errs} ({card['train_time_s']} s); written to {args.out or 'the model folder'}",
    )
    return 0


def register(sub, common) -> None:
    from core.models import MNIST_MODELS

    p = sub.add_parser("train", parents=[common], help="train an MNIST zoo model")
    trainable = [n for n, spec in MNIST_MODELS.items() if spec.trainable]
    p.add_argument("model", choices=trainable)
    p.add_argument("--epochs", type=int, default=None, help="override the model's default epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None, help="output folder (default: $INTRIGUING_MODEL_DIR or assets/models)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
