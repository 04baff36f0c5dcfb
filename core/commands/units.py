"""`intriguing units --model NAME`: are the top-k images of natural units more coherent than those of
random directions? Scores every unit of a layer and at least as many random directions, then tests."""

from __future__ import annotations


def _text(result: dict) -> str:
    from core.units.coherence import SCORES, verdict

    lines = [
        f"{result['model']} layer {result['layer']}: top-{result['k']} of {result['n_images']} held-out images "
        f"({result['data']}); {result['natural']['n']} units vs {result['random']['n']} random directions "
        f"(seed {result['seed']}); cosine judged by {result['judge']}",
        *(
            [f"{len(result['dead_units'])} dead units (constant on every held-out image) are not scored."]
            if result["dead_units"]
            else []
        ),
        *(verdict(result, score) for score in SCORES),
        "Purity: higher = more coherent; entropy: lower = more coherent; 95% t intervals; two-sided Mann-Whitney U.",
    ]
    if result.get("skipped_files"):
        lines.append(
            f"Skipped {len(result['skipped_files'])} non-image files: {', '.join(result['skipped_files'])}"
        )
    return "\n".join(lines)


def _arms_text(result: dict) -> str:
    from core.units.coherence import SCORES, comparison

    lines = [
        f"{result['model']} layer {result['layer']}: top-{result['k']}, learned directions fitted on "
        f"{result['n_fit']} held-out images, every arm scored on the other {result['n_score']}"
    ]
    units = result["arms"]["units"]
    for arm, side in result["arms"].items():
        if arm == "units":
            continue
        lines.append(f"{arm} ({side['n']} directions):")
        for score in SCORES:
            if result["verdict_withheld"]:
                lines.append(f"  {result['verdict_withheld']}")
                break
            lines.append("  " + comparison(score, units, side, result["p_value"][arm][score], arm))
    lines += [f"{arm}: skipped ({why})" for arm, why in result["skipped_arms"].items()]
    return "\n".join(lines)


def _sweep_text(result: dict) -> str:
    lines = [
        f"{result['model']} layer {result['layer']}: {result['n_directions']} directions, rows of R^alpha"
    ]
    for point in result["points"]:
        cells = [
            f"{score} {point[score]['mean']:.3f} [{point[score]['ci_low']:.3f}, {point[score]['ci_high']:.3f}]"
            for score in ("purity", "entropy", "cosine")
            if point[score] is not None
        ]
        lines.append(f"alpha {point['alpha']:.1f}: " + "; ".join(cells))
    return "\n".join(lines)


def run(args) -> int:
    from core.cli import emit
    from core.units.arms import parse_arms, study_arms
    from core.units.coherence import study
    from core.units.images import held_out_images
    from core.units.rotation import sweep

    images = held_out_images(args.model, args.image_folder)
    options = dict(layer=args.layer, k=args.k, seed=args.seed, images=images, judge=args.judge)
    if args.rotation_sweep:
        result = sweep(args.model, device=args.device, **options)
        emit(result, args.json, _sweep_text(result))
        return 0
    if args.arms:
        result = study_arms(
            args.model, arms=parse_arms(args.arms), n_random=args.random, device=args.device, **options
        ).summary()
        emit(result, args.json, _arms_text(result))
        return 0
    result = study(
        args.model,
        layer=args.layer,
        k=args.k,
        n_random=args.random,
        seed=args.seed,
        images=images,
        judge=args.judge,
        device=args.device,
    ).summary()
    skipped = getattr(images, "skipped", [])
    if skipped:
        result["skipped_files"] = skipped
    emit(result, args.json, _text(result))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "units", parents=[common], help="top-k coherence of natural units versus random directions"
    )
    p.add_argument("--model", required=True, help="zoo model (see `intriguing models`)")
    p.add_argument("--layer", help="readable layer (default: the layer before the output)")
    p.add_argument("--k", type=int, default=9, help="top-k images per direction (default 9)")
    p.add_argument(
        "--random",
        type=int,
        default=100,
        help="random directions (at least the number of units; default 100)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    p.add_argument(
        "--image-folder", help="held-out photos for ImageNet models (one sub-folder per class, optional)"
    )
    p.add_argument(
        "--judge", help="feature space of the cosine score: MODEL:LAYER or 'pixels' (default: another model)"
    )
    p.add_argument(
        "--arms",
        help="compare more arms on held-out halves: comma-separated from units,random,nmf,kmeans,dictionary",
    )
    p.add_argument(
        "--rotation-sweep",
        action="store_true",
        help="score the rows of R^alpha, alpha = 0, 0.1, ..., 1 (R: a seeded random rotation of the units)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
