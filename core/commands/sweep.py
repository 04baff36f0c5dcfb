"""`intriguing sweep`: an attack x model x budget grid as idempotent tasks on Ray (local, or a cluster by
address), merged into the leaderboard with per-example rows; rerunning the same command resumes it.

Every input is checked before Ray starts or the database is opened: bad input exits 2 with one line and
leaves the database as it was. A sweep whose tasks failed exits 1 after the others finished."""

from __future__ import annotations

import argparse
import os

EXIT_FAILED_TASKS = 1


def _names(text: str, what: str) -> list[str]:
    from core.errors import InvalidParameterError

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InvalidParameterError(f"--{what} lists nothing.")
    return names


def _budgets(text: str | None) -> list[float] | None:
    from core.errors import InvalidParameterError

    if text is None:
        return None
    try:
        return [float(part) for part in _names(text, "eps")]
    except ValueError:
        raise InvalidParameterError(f"--eps must be comma-separated numbers, got {text!r}.") from None


def plan(args: argparse.Namespace) -> list:
    """Every task of the grid the flags describe (InvalidParameterError & co. on any bad input)."""
    from core.attacks import ATTACKS
    from core.checks import check_int
    from core.evaluation import sweep
    from core.evaluation.protocol import Protocol

    flags = {p.name for cls in ATTACKS.values() for p in cls.PARAMS if not (p.seed or p.budget)}
    if args.workers is not None:
        check_int("--workers", args.workers, low=1, high=4096)
    protocol = Protocol(
        n=args.n, correct_only=not args.all_images, order=args.order, seed=args.seed, dataset=args.dataset
    )
    return sweep.plan(
        _names(args.models, "models"),
        _names(args.attacks, "attacks"),
        protocol=protocol,
        shard_size=args.shard_size,
        eps=_budgets(args.eps),
        params={name: getattr(args, name) for name in flags if getattr(args, name, None) is not None},
        seed=args.seed,
    )


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _dry_run(tasks: list, args: argparse.Namespace) -> int:
    """List the tasks with their estimated cost; reads the database only if it exists, never writes."""
    from core.cli import emit
    from core.evaluation import sweep

    seconds = sweep.estimate(tasks, args.db)
    done = sweep.recorded(tasks, args.db)
    workers = args.workers or os.cpu_count() or 1
    rows = [
        {"task_id": t.task_id, "task": t.describe(), "done": t.task_id in done, "estimated_s": s}
        for t, s in zip(tasks, seconds, strict=True)
    ]
    todo = [r for r in rows if not r["done"]]
    known = [r["estimated_s"] for r in todo if r["estimated_s"] is not None]
    total = sum(known)
    lines = [
        f"{r['task_id']}  {r['task']:<56} {'done' if r['done'] else _seconds(r['estimated_s'])}" for r in rows
    ]
    lines.append(
        f"{len(rows)} tasks, {len(rows) - len(todo)} already done; to compute: {len(todo)}, estimated "
        f"{total:.0f} s of compute (~{total / workers:.0f} s on {workers} workers) from measured costs of "
        f"{len(known)} of them"
    )
    emit(
        {"tasks": rows, "to_compute": len(todo), "estimated_s": total, "estimated_tasks": len(known)},
        args.json,
        "\n".join(lines),
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from core.cli import emit
    from core.evaluation import sweep

    tasks = plan(args)
    if args.dry_run:
        return _dry_run(tasks, args)
    label = f"{args.attacks} x {args.models}" + (f" at eps {args.eps}" if args.eps else "") + f", n={args.n}"
    summary = sweep.execute(
        tasks,
        path=args.db,
        address=args.address,
        workers=args.workers,
        label=label,
        progress=not args.quiet,
        device=args.device,
    )
    lines = [summary.describe(), *(f"  failed: {message}" for message in summary.failed.values())]
    emit({**summary.as_dict(), "database": str(sweep.database(args.db))}, args.json, "\n".join(lines))
    return EXIT_FAILED_TASKS if summary.failed else 0


def register(sub, common) -> None:
    from core.commands.attack import add_attack_flags

    p = sub.add_parser(
        "sweep",
        parents=[common],
        conflict_handler="resolve",  # --eps below takes a list, replacing the attacks' one-value flag
        help="attack x model x budget grid on Ray, resumable, per-example rows into the leaderboard",
        description="Runs every (model, attack, budget, shard) task not yet in the database, on a local Ray "
        "or the cluster at --address, and records each task's per-example rows as it finishes. Rerunning "
        "the same command reuses the finished tasks. Attack parameter flags go to the attacks that take them.",
    )
    p.add_argument(
        "--models", required=True, help="comma-separated models of one dataset (zoo or registered)"
    )
    p.add_argument("--dataset", default="mnist", help="mnist or a registered dataset (default mnist)")
    p.add_argument("--attacks", required=True, help="comma-separated attacks, e.g. fgsm,pgd,deepfool")
    add_attack_flags(p)
    p.add_argument(
        "--eps", default=None, help="comma-separated budgets for the budgeted attacks (default: theirs)"
    )
    p.add_argument("--n", type=int, default=1000, help="images of the protocol (default 1000)")
    p.add_argument("--shard-size", type=int, default=250, help="images per task (default 250)")
    p.add_argument(
        "--all-images", action="store_true", help="also attack images the model already misclassifies"
    )
    p.add_argument("--order", choices=("dataset", "random"), default="dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and of --order random")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray)",
    )
    p.add_argument("--workers", type=int, default=None, help="local Ray CPUs (default: the machine's)")
    p.add_argument("--db", default=None, help="leaderboard database (default: the leaderboard's)")
    p.add_argument("--dry-run", action="store_true", help="list the tasks and their estimated cost")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
