"""`intriguing reproduce TABLE`: recompute one of the paper's tables (or the validate measurements) from our
models and data and write a markdown table beside the paper's numbers, a CSV, a figure and a JSON card of
what ran, into a fresh run folder. Only `--update-docs` stores the card in docs/results and re-renders the
documents that quote it; `intriguing reproduce docs` re-renders them from the stored cards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

DOCS = "docs"
LBFGS_TABLES = ("table1", "table2", "table3", "table4")  # made of L-BFGS examples: --full-search, --on-ray


def run_folder(table: str) -> Path:
    """A new folder for one run: <cache_dir>/runs/<table>-<UTC timestamp>."""
    from core import config

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return config.cache_dir() / "runs" / f"{table}-{stamp}"


def run(args) -> int:
    import torch

    from core import config
    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.experiments import DEFAULT_N, RESULTS_DIR, run_experiment
    from core.experiments.docs import render_docs
    from core.experiments.writer import markdown

    if args.table == DOCS:
        written = render_docs()
        emit({"files": written}, args.json, "rendered from docs/results: " + ", ".join(written))
        return 0
    if args.threads < 1:
        raise InvalidParameterError("--threads must be at least 1.")
    if args.update_docs and args.out:
        raise InvalidParameterError("--update-docs writes to docs/results; leave out --out.")
    if args.update_docs and not (config.PROJECT_ROOT / "docs").is_dir():
        raise InvalidParameterError("--update-docs rewrites a checkout's docs; run it from a clone.")
    torch.set_num_threads(args.threads)
    options = {
        "n": DEFAULT_N[args.table] if args.n is None else args.n,
        "seed": args.seed,
        "device": args.device,
    }
    if args.table in LBFGS_TABLES:
        options["full_search"] = args.full_search
    if args.table == "advtrain" and args.epochs is not None:
        options["epochs"] = args.epochs
    if args.table == "advtrain":
        options["install"] = args.install
    if args.table == "smoothing":
        options["minutes"] = args.minutes
    if args.table == "table5" and args.models:
        options["models"] = tuple(args.models.split(","))
    if args.on_ray is not None:
        options["on_ray"] = _cluster(args)
    out = RESULTS_DIR if args.update_docs else Path(args.out) if args.out else run_folder(args.table)
    report, paths = run_experiment(args.table, out, **options)
    if args.update_docs:
        paths["docs"] = ", ".join(render_docs())
    emit(
        {**report.card, "rows": report.rows, "files": paths},
        args.json,
        markdown(report) + "\nwritten: " + ", ".join(paths.values()),
    )
    return 0


def _cluster(args):
    """--on-ray: the table's attack work as a sweep on a local Ray ('local') or the cluster at ADDRESS."""
    from core.errors import InvalidParameterError
    from core.evaluation.sweep import Cluster

    if args.table not in LBFGS_TABLES:
        raise InvalidParameterError(
            f"--on-ray runs the L-BFGS examples of {', '.join(LBFGS_TABLES)} as a sweep; {args.table} runs here."
        )
    return Cluster(address=None if args.on_ray == "local" else args.on_ray)


def register(sub, common) -> None:
    from core.experiments import EXPERIMENTS

    p = sub.add_parser(
        "reproduce",
        parents=[common],
        help="reproduce one of the paper's tables (or `docs`: re-render the docs from the stored cards)",
    )
    p.add_argument("table", choices=(*EXPERIMENTS, DOCS))
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="test images (default: 1000; table5: 100; advtrain: 500; validate: 100; smoothing: 1000 per sigma; table2-imagenet: the 4 photos)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None, help="output folder (default: a new <cache_dir>/runs/<table>-<time> folder)"
    )
    p.add_argument(
        "--update-docs",
        action="store_true",
        help="store the card in docs/results and re-render docs/*.md and the README's results",
    )
    p.add_argument(
        "--full-search", action="store_true", help="L-BFGS over all 9 labels, 10 c values, 100 iterations"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--epochs", type=int, default=None, help="advtrain: training epochs")
    p.add_argument("--install", action="store_true", help="advtrain: also save the trained models in the zoo")
    p.add_argument(
        "--models",
        default=None,
        help="table5: comma-separated models (default cnn,mobilenet_v2,efficientnet_lite0, and alexnet "
        "when its trained weights are present)",
    )
    p.add_argument(
        "--on-ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="tables 1-4: compute the L-BFGS examples as a resumable sweep on Ray (local, or auto / HOST:PORT / "
        "ray://); a killed run continues where it stopped",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="smoothing: stop after this many minutes with the images done so far (the card says how many)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
