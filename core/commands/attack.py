"""`intriguing attack`: run one attack on the MNIST test images an evaluation protocol chooses (by default
the first n the model classifies correctly). Its flags come from the attacks' parameter specs."""

from __future__ import annotations

import argparse
import json


def _bool(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def add_attack_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per attack parameter of any attack (from the specs); a flag is passed on only when given."""
    from core.attacks import ATTACKS

    seen: dict[str, list[str]] = {}
    first = {}
    for name, cls in ATTACKS.items():
        for p in cls.PARAMS:
            if not p.seed:
                seen.setdefault(p.name, []).append(name)
                first.setdefault(p.name, p)
    for flag, attacks in seen.items():
        p = first[flag]
        kind = _bool if p.kind is bool else p.kind
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=flag,
            type=kind,
            default=None,
            choices=p.choices or None,
            help=f"{p.label}: {p.help} ({', '.join(attacks)})".replace("%", "%%"),  # argparse formats help
        )


def attack_params(attack: str, args: argparse.Namespace, seed: int) -> dict:
    """The parameters given on the command line for `attack` (validated by the attack) over the model's own
    presets (core.attacks.spec.MODEL_PRESET_REASONS), plus the seed when the attack is seeded; a flag the
    attack does not take is refused by it with the list it accepts."""
    from core.attacks import ATTACKS, attack_class, with_seed
    from core.attacks.spec import overrides

    names = {p.name for cls in ATTACKS.values() for p in cls.PARAMS if not p.seed}
    given = {name: getattr(args, name) for name in sorted(names) if getattr(args, name, None) is not None}
    presets = (
        overrides(attack_class(attack).PARAMS, "mnist", getattr(args, "model", None))
        if attack in ATTACKS
        else {}
    )
    return with_seed(attack, {**presets, **given}, seed)


def run(args) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from core.attacks import AttackResult, make_attack
    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.evaluation import indicators, leaderboard
    from core.evaluation.protocol import Protocol
    from core.models import class_names, get_spec, load
    from core.provenance import versions
    from core.runtime import bar_disabled

    domain = get_spec(args.model).dataset
    dataset = args.dataset or domain
    if domain == "imagenet":
        raise InvalidParameterError(
            f"{args.model} is an ImageNet model; `attack` runs on a dataset's test images."
        )
    if dataset != domain:
        raise InvalidParameterError(f"{args.model} belongs to {domain}, not to the dataset {dataset}.")
    if args.batch_size < 1:
        raise InvalidParameterError("--batch-size must be at least 1.")
    top = len(class_names(args.model)) - 1
    if args.target is not None and not 0 <= args.target <= top:
        raise InvalidParameterError(f"--target must be a class number 0..{top}.")
    protocol = Protocol(
        n=args.n, correct_only=not args.all_images, order=args.order, seed=args.seed, dataset=dataset
    )
    params = attack_params(args.attack, args, args.seed)
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidParameterError("--threads must be at least 1.")
        torch.set_num_threads(args.threads)
    model = load(args.model, args.device)
    attack = make_attack(args.attack, model, args.device, **params)
    chosen = protocol.select(model, attack.device)
    keep = (
        chosen.labels != args.target if args.target is not None else torch.ones(len(chosen), dtype=torch.bool)
    )
    if not keep.any():
        raise InvalidParameterError(f"every selected image already has label {args.target}.")
    x, labels, ids = chosen.images[keep], chosen.labels[keep], chosen.ids[keep]

    results, checks = [], []
    with tqdm(
        desc=f"{args.attack} on {args.model}",
        unit="step",
        disable=bar_disabled(not args.quiet),
        mininterval=1.0,
    ) as bar:
        for start in range(0, len(x), args.batch_size):
            xb, yb = x[start : start + args.batch_size], labels[start : start + args.batch_size]
            run_ = attack.start(xb, yb, target=args.target)
            recorder = indicators.LossRecorder(yb, run_.target)
            for event in run_:
                recorder(event)
                bar.update(1)
            results.append(run_.result())
            if args.check:
                checks.append(indicators.stream_checks(model, args.attack, params, results[-1], recorder))
    result = AttackResult.concat(results)
    if args.check:
        checks = indicators.merge(checks)
        if args.target is None:  # the extra runs attack untargeted
            checks += indicators.extra_checks(model, args.attack, params, result, device=args.device)
    summary = {"model": args.model, **result.summary(), "protocol": chosen.record(), "seed": args.seed}
    summary["versions"] = versions()
    fired = indicators.fired(checks) if args.check else None
    summary["leaderboard_id"] = leaderboard.record_result(
        result, args.model, source="cli", dataset=dataset, selection=chosen, indicators=fired
    )
    if args.check:
        summary["indicators"] = [c.to_dict() for c in checks]
    if args.target is not None:
        summary["skipped_already_target"] = len(chosen) - len(result)
    if args.out:
        np.savez_compressed(
            args.out,
            ids=ids.numpy(),
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
        f"{args.attack} on {args.model}, {len(result)} images ({protocol.describe()}): "
        f"success {100 * summary['success_rate']:.1f}%, "
        f"mean RMS distortion {'n/a' if distortion is None else f'{distortion:.4f}'}, "
        f"raw iterate outside [0, 1]: {summary['raw_box_violations']} pixels, {summary['time_s']:.1f} s"
    )
    if args.check:
        text += "\nIndicators of attack failure:\n" + "\n".join(indicators.table(checks))
    emit(summary, args.json, text)
    return 0


def register(sub, common) -> None:
    from core.attacks import ATTACKS

    p = sub.add_parser(
        "attack",
        parents=[common],
        help="attack the first n correctly classified MNIST test images",
        description="Attack parameters are flags (each lists the attacks that take it); a flag the chosen "
        "attack does not take is refused with a message listing the ones it does.",
    )
    p.add_argument("--model", required=True, help="a zoo model or a registered one (`intriguing models`)")
    p.add_argument("--attack", required=True, choices=list(ATTACKS))
    p.add_argument("--dataset", default=None, help="a registered dataset (default: the model's domain)")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument(
        "--all-images",
        action="store_true",
        help="also attack images the model already misclassifies (they never count as successes)",
    )
    p.add_argument(
        "--order",
        choices=("dataset", "random"),
        default="dataset",
        help="walk the test set in its order or in a seeded random order",
    )
    p.add_argument("--target", type=int, default=None, help="target label (default: untargeted)")
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and of --order random")
    p.add_argument("--batch-size", type=int, default=1000, help="images per batch (default 1000)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 is fastest for MNIST nets on a busy machine",
    )
    add_attack_flags(p)
    p.add_argument(
        "--out", default=None, help="write x, x_adv, labels, predictions and parameters to FILE.npz"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="also compute the indicators of attack failure (a few extra runs) and record the fired ones",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
