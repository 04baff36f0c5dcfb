"""`intriguing certify --model M --norm linf --method crown [--eps E]`: per test image the certified radius,
the exact minimal distortion where a solver proves it, and the best attack; with --eps, verified beside
attack robust accuracy, recorded in the leaderboard's certificates."""

from __future__ import annotations


def run(args) -> int:
    from tqdm.auto import tqdm

    from core.certify.bounds import Network
    from core.certify.bracket import certify_images, check_request
    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.evaluation.leaderboard import record_certificate
    from core.evaluation.protocol import Protocol
    from core.models import get_spec, load

    if get_spec(args.model).dataset != "mnist":
        raise InvalidParameterError(
            f"{args.model} is an ImageNet model; `certify` handles MNIST models only."
        )
    model = load(args.model, args.device)
    check_request(Network.from_module(model), args.norm, args.method, args.eps, args.time_limit)
    protocol = Protocol(n=args.n)
    sel = protocol.select(model)
    bar = tqdm(total=len(sel), desc=f"certify {args.model}", disable=args.json)
    result = certify_images(
        model, sel.images.to(next(model.parameters()).device), sel.labels.to(next(model.parameters()).device),
        sel.ids, norm=args.norm, method=args.method, eps=args.eps, time_limit=args.time_limit,
        progress=lambda done, total: bar.update(done - bar.n),
    )  # fmt: skip
    bar.close()
    result = {"model": args.model, **sel.record(), **result}
    if args.eps is not None:
        params = {"time_limit": args.time_limit} if args.method == "exact" else {}
        record_certificate(
            model=args.model, method=args.method, norm=args.norm, budget=args.eps, n=len(sel),
            certified=result["verified"], protocol=protocol, params=params, time_s=result["time_s"],
        )  # fmt: skip
    emit(result, args.json, _text(result))
    return 0


def _text(result: dict) -> str:
    rows = [f"{'index':>6} {'label':>5} {'certified':>9} {'exact':>9} {'attack':>9}  status"]
    for im in result["images"]:
        exact = "-" if im["exact"] is None else f"{im['exact']:.4f}"
        attack = "-" if im["attack"] is None else f"{im['attack']:.4f}"
        rows.append(
            f"{im['index']:>6} {im['label']:>5} {im['certified']:>9.4f} {exact:>9} {attack:>9}  {im['status']}"
        )
    if "eps" in result:
        rows.append(
            f"{result['norm']} {result['eps']:g}: verified robust accuracy {100 * result['verified_robust_accuracy']:.1f}%"
            f" <= true <= attack robust accuracy {100 * result['attack_robust_accuracy']:.1f}%"
        )
    if "milp_decided" in result:
        exact = result["exact_robust_accuracy"]
        rows.append(
            f"the MILP at {result['eps']:g} settled {result['milp_decided']} open image(s) ({result['milp_flips']} "
            f"flip(s) the attacks missed), {result['milp_undecided']} timed out"
            + ("" if exact is None else f": exact robust accuracy {100 * exact:.1f}%")
        )
    return "\n".join(rows)


def register(sub, common) -> None:
    from core.certify.bracket import ALL_METHODS

    p = sub.add_parser(
        "certify", parents=[common], help="certified radius, exact minimum and best attack per image"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=100, help="first n correctly classified test images")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--method", choices=ALL_METHODS, default="crown")
    p.add_argument("--eps", type=float, default=None, help="budget for verified vs attack robust accuracy")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per image for the exact solver")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
