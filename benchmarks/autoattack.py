"""AutoAttack: our ensemble against torchattacks' AutoAttack(version="standard") on the same images of a zoo
model, timed side by side in one alternating run (goal: ours faster), with the robust accuracy each finds
(they should agree within the oracle test's 0.5 points) and which of our members broke how many images.

    python benchmarks/autoattack.py [--model cnn-robust] [--n 1000] [--eps 0.3] [--quick] [--json]
                                    [--save card.json] [--update-docs]

torchattacks fixes 10 steps per member; both run with the same --steps and --queries (the reference: 100
and 5000). No warm-up call (one ensemble run is long next to any first-call cost); --rounds alternates.
Ours is timed as a live view runs it, its events streamed (that is where the member times come from).
"""

from __future__ import annotations

import argparse
import time
import warnings

import harness  # first: puts the project root on sys.path  # isort: skip
import torch
import torch.nn.functional as F

from core.attacks import make_attack
from core.attacks.autoattack import AutoAttack
from core.attacks.autoattack import members as ensemble
from core.attacks.square import Square
from core.data import load_mnist


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument("--model", default="cnn-robust")
    p.add_argument("--n", type=int, default=1000, help="the first n MNIST test images")
    p.add_argument("--eps", type=float, default=0.3, help="Linf budget")
    p.add_argument("--steps", type=int, default=100, help="steps of every APGD and FAB member")
    p.add_argument("--queries", type=int, default=5000, help="Square's queries")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.queries = 16, 3, 20
    return args


def theirs(model: torch.nn.Module, args: argparse.Namespace):
    """torchattacks' standard AutoAttack with its members' steps and queries set to ours, or None."""
    try:
        import torchattacks
    except ImportError:
        return None
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=args.seed)
    for member in attack._autoattack.attacks:
        if hasattr(member, "steps"):
            member.steps = args.steps
        if hasattr(member, "n_queries"):
            member.n_queries = args.queries
    return attack


def streamed(attack: AutoAttack, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """Our run, its events read as a live view would (barely any cost): the adversarial images, and each
    member's wall time (its events' spacing), the images standing when it started and what it broke."""
    starts: dict[str, tuple[float, int]] = {}
    run = attack.start(x, y)
    for event in run:
        starts.setdefault(event.extra["member"], (time.perf_counter(), event.extra["standing"]))
    end = time.perf_counter()
    names = list(starts)
    rows = []
    for i, name in enumerate(names):
        t, standing = starts[name]
        until = starts[names[i + 1]][0] if i + 1 < len(names) else end
        rows.append(
            {"member": name, "standing": standing, "broken": attack.broken_by[name], "time_s": until - t}
        )
    return run.best.detach().clamp(0.0, 1.0), rows


def pass_time(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, backward: bool, reps: int = 10
) -> float:
    """The fastest of `reps` timed batched forward passes on x (with `backward`: and the input gradient of
    its cross-entropy), the unit a member's work is counted in. The fastest, not the median: it is timed
    after the runs, and a busier moment then would make the limit look slower than the members ran."""
    times = []
    for _ in range(reps):
        z = x.clone().requires_grad_(backward)
        start = time.perf_counter()
        logits = model(z)
        if backward:
            torch.autograd.grad(F.cross_entropy(logits, y), z)
        harness.sync()
        times.append(time.perf_counter() - start)
    return min(times)


def with_limits(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rows: list[dict], args) -> None:
    """Each member's limit, added to its row: the time of the passes it makes at the least (APGD and FAB: a
    forward+backward per step; Square: a forward per query) on a batch of the images standing when it
    started, and its time as a multiple of that. Square drops broken images as it goes, so its multiple can
    fall under 1."""
    spec = {m.title: m for m in ensemble("standard", "linf", args.eps, args.steps, args.queries, args.seed)}
    cache: dict[tuple[int, bool], float] = {}
    for row in rows:
        member = spec[row["member"]]
        backward = member.cls is not Square
        passes = member.params["queries"] if not backward else member.params["steps"]
        key = (row["standing"], backward)
        if key not in cache:
            cache[key] = pass_time(model, x[: row["standing"]], y[: row["standing"]], backward)
        row["limit_s"] = passes * cache[key]
        row["over_limit"] = row["time_s"] / row["limit_s"]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    harness.set_threads(1)
    harness.use_device(args.device)
    model, state = harness.load_model(args.model)
    data = load_mnist("test")
    x, y = data.images[: args.n].to(harness.DEVICE), data.labels[: args.n].to(harness.DEVICE)
    ours = make_attack(
        "autoattack", model, eps=args.eps, steps=args.steps, queries=args.queries, seed=args.seed
    )
    peer = theirs(model, args)
    accuracy: dict[str, float] = {}
    members: list[dict] = []

    def robust(name: str, x_adv: torch.Tensor) -> None:
        with torch.no_grad():
            accuracy[name] = float((model(x_adv.to(harness.DEVICE)).argmax(1) == y).float().mean())

    def run_ours() -> None:
        x_adv, members[:] = streamed(ours, x, y)
        robust("ours", x_adv)

    contenders = {"ours": run_ours}
    if peer is not None:
        contenders["torchattacks"] = lambda: robust("torchattacks", peer(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ensemble's own warnings are the indicators' business here
        times = harness.alternate(contenders, args.rounds, warmup=False)
    med = {k: harness.median(v) for k, v in times.items()}
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    with_limits(model, x, y, members, args)
    result = {
        "benchmark": "autoattack", "quick": args.quick, "model": args.model, "weights": state, "n": args.n, "eps": args.eps,
        "steps": args.steps, "queries": args.queries, "rounds": args.rounds, "seed": args.seed,
        "clean_accuracy": clean, "robust_accuracy": accuracy, "median_s": med,
        "theirs_over_ours": med["torchattacks"] / med["ours"] if "torchattacks" in med else None,
        "members": members, "machine": harness.machine(),
    }  # fmt: skip
    rows = [[k, f"{med[k]:.1f}", f"{med[k] / med['ours']:.2f}x", f"{100 * accuracy[k]:.1f}%"] for k in med]
    member_rows = [
        [
            m["member"],
            m["standing"],
            m["broken"],
            f"{m['time_s']:.1f}",
            f"{m['limit_s']:.1f}",
            f"{m['over_limit']:.2f}x",
        ]
        for m in members
        if m["standing"]
    ]
    text = (
        f"AutoAttack (standard, Linf {args.eps:g}, {args.steps} steps, {args.queries} queries) on the first "
        f"{args.n} MNIST test images of {args.model} ({state}); clean accuracy {100 * clean:.1f}%; "
        f"{args.rounds} alternating round(s), 1 thread, load average {result['machine']['load_average_1_5_15']}\n\n"
        + harness.table(["contender", "median s", "vs ours", "robust accuracy"], rows)
        + "\n\nOur members (the last round)\n\n"
        + harness.table(["member", "standing", "broken", "s", "limit s", "vs limit"], member_rows)
    )
    harness.emit(result, args.json, text, args.save, "autoattack", args.update_docs)
    return result


if __name__ == "__main__":
    main()
