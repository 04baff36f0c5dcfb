"""`intriguing smooth --model M --sigma S --n N --samples K`: randomized smoothing's CERTIFY (Cohen et al.
2019) on the first N MNIST test images; per-image certificates and certified accuracy at radii, recorded on
the leaderboard as L2 certificates (method 'smoothing')."""

from __future__ import annotations


def run(args) -> int:
    from core import config
    from core.cli import emit
    from core.experiments.smoothing import record
    from core.smoothing import SmoothingParams
    from core.smoothing.certify import batch_for
    from core.smoothing.run import smooth_run

    batch = args.batch if args.batch is not None else batch_for(args.device or config.default_device())
    params = SmoothingParams(sigma=args.sigma, n0=args.n0, n=args.samples, alpha=args.alpha, batch=batch)
    result = smooth_run(args.model, params, args.n, seed=args.seed, device=args.device, yes=args.yes)
    result["leaderboard_ids"] = record(result, source="cli")
    curve = ", ".join(f"r={r}: {100 * a:.1f}%" for r, a in result["certified_accuracy"].items())
    text = (
        f"{args.model}, sigma {args.sigma:g}, {args.n} images x {args.samples} samples: certified accuracy "
        f"{curve}; average certified radius {result['average_certified_radius']:.3f}; "
        f"{result['abstained']} abstained ({result['time_s']:.0f} s)"
    )
    emit(result, args.json, text)
    return 0


def register(sub, common) -> None:
    from core.smoothing import SmoothingParams
    from core.smoothing.certify import GPU_BATCH

    defaults = SmoothingParams()
    p = sub.add_parser(
        "smooth", parents=[common], help="randomized smoothing: certified L2 radii (Cohen et al.)"
    )
    p.add_argument("--model", required=True, help="an MNIST model (e.g. smooth-0.25)")
    p.add_argument("--sigma", type=float, default=defaults.sigma, help="noise std in [0, 1] pixels")
    p.add_argument("--n", type=int, default=100, help="first N MNIST test images")
    p.add_argument("--samples", type=int, default=defaults.n, help="estimation noise samples per image")
    p.add_argument("--n0", type=int, default=defaults.n0, help="selection noise samples per image")
    p.add_argument("--alpha", type=float, default=defaults.alpha, help="failure probability")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"noisy copies per forward pass (default: {defaults.batch} on a CPU, {GPU_BATCH:,} on a GPU)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--yes", action="store_true", help="run even when the estimate is over an hour")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
