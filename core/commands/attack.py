"""`intriguing attack`: run one attack on the first n MNIST test images a model classifies correctly."""

from __future__ import annotations

import inspect
import json

# CLI flag -> attack parameter; a flag is passed on only when given, and only attacks that take it accept it.
PARAM_FLAGS = {
    "eps": float,
    "steps": int,
    "step_size": float,
    "norm": str,
    "random_start": int,
    "c_init": float,
    "rounds": int,
    "n_targets": int,
    "method": str,
    "max_iter": int,
    "binary_search_steps": int,
    "lr": float,
    "initial_const": float,
    "confidence": float,
    "candidates": int,
    "overshoot": float,
    "rho": float,
}


def run(args) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from core import leaderboard
    from core.attacks import ATTACKS, AttackResult, make_attack
    from core.cli import emit
    from core.data import load_mnist
    from core.errors import InvalidParameterError
    from core.models import get_spec, load
    from core.models.train import versions

    if get_spec(args.model).dataset != "mnist":
        raise InvalidParameterError(f"{args.model} is an ImageNet model; `attack` runs on MNIST test images.")
    if args.n < 1 or args.batch_size < 1:
        raise InvalidParameterError("--n and --batch-size must be at least 1.")
    params = {name: getattr(args, name) for name in PARAM_FLAGS if getattr(args, name) is not None}
    if "random_start" in params:
        params["random_start"] = bool(params["random_start"])
    if "seed" in inspect.signature(ATTACKS[args.attack].__init__).parameters:
        params["seed"] = args.seed
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidParameterError("--threads must be at least 1.")
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load(args.model, args.device)
    attack = make_attack(args.attack, model, args.device, **params)

    data = load_mnist("test")
    with torch.no_grad():
        device = attack.device
        pred = torch.cat(
            [model(data.images[i : i + 2000].to(device)).argmax(1).cpu() for i in range(0, len(data), 2000)]
        )
    correct = (pred == data.labels).nonzero().squeeze(1)[: args.n]
    if len(correct) < args.n:
        raise InvalidParameterError(f"only {len(correct)} test images are classified correctly; lower --n.")
    x, labels = data.images[correct], data.labels[correct]
    if args.target is not None and not 0 <= args.target <= 9:
        raise InvalidParameterError("--target must be a digit 0..9.")

    results = []
    with tqdm(desc=f"{args.attack} on {args.model}", unit="step", disable=args.quiet) as bar:
        for start in range(0, len(x), args.batch_size):
            xb, yb = x[start : start + args.batch_size], labels[start : start + args.batch_size]
            keep = torch.ones(len(yb), dtype=torch.bool) if args.target is None else yb != args.target
            if not keep.any():
                continue
            run_ = attack.start(xb[keep], yb[keep], target=args.target)
            for _ in run_:
                bar.update(1)
            results.append(run_.result())
    if not results:
        raise InvalidParameterError(f"every selected image already has label {args.target}.")
    result = AttackResult.concat(results)
    summary = {"model": args.model, **result.summary(), "seed": args.seed, "versions": versions()}
    summary["leaderboard_id"] = leaderboard.record_result(result, args.model, source="cli", dataset="mnist")
    if args.target is not None:
        summary["skipped_already_target"] = len(x) - len(result)
    if args.out:
        np.savez_compressed(
            args.out,
            x=result.x.numpy(),
            x_adv=result.x_adv.numpy(),
            labels=result.labels.numpy(),
            pred_before=result.pred_before.numpy(),
            pred_after=result.pred_after.numpy(),
            success=result.success.numpy(),
            target=np.full(len(result), -1) if result.target is None else result.target.numpy(),
            rms=result.rms.numpy(),
            l2=result.l2.numpy(),
            linf=result.linf.numpy(),
            summary=json.dumps(summary),
        )
        summary["out"] = args.out
    distortion = summary["mean_rms_distortion"]
    text = (
        f"{args.attack} on {args.model}, {len(result)} images: success {100 * summary['success_rate']:.1f}%, "
        f"mean RMS distortion {'n/a' if distortion is None else f'{distortion:.4f}'}, "
        f"box violations {summary['box_violations']}, {summary['time_s']:.1f} s"
    )
    emit(summary, args.json, text)
    return 0


def register(sub, common) -> None:
    from core.attacks import ATTACKS

    p = sub.add_parser(
        "attack",
        parents=[common],
        help="attack the first n correctly classified MNIST test images",
        description="Flags an attack does not take are refused with a message listing the ones it does.",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--attack", required=True, choices=list(ATTACKS))
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--target", type=int, default=None, help="target label (default: untargeted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000, help="images per batch (default 1000)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 is fastest for MNIST nets on a busy machine",
    )
    for name, kind in PARAM_FLAGS.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, help="attack parameter"
        )
    p.add_argument(
        "--out", default=None, help="write x, x_adv, labels, predictions and parameters to FILE.npz"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
