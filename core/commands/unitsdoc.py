"""`intriguing units-doc`: measure the Direction Lab's fixed set (units vs random on every MNIST layer and
on the sample photos, three arms, rotation sweeps, feature visualisations, what an L-BFGS attack moves
inside), write one JSON card each, and assemble docs/units.md from the cards."""

from __future__ import annotations


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.experiments.writer import base_card
    from core.units.document import MEASUREMENTS, RESULTS, write_units_doc
    from core.units.uploads import default_photo_folder

    only = args.only.split(",") if args.only else list(MEASUREMENTS)
    unknown = [name for name in only if name not in MEASUREMENTS]
    if unknown:
        raise InvalidParameterError(
            f"Unknown part {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}."
        )
    out = Path(args.out or RESULTS)
    written = {}
    if not args.render_only:
        torch.set_num_threads(max(1, args.threads))
        out.mkdir(parents=True, exist_ok=True)
        for name in only:
            start = time.perf_counter()
            extra = {"photos": default_photo_folder()} if name == "studies" else {}
            card = MEASUREMENTS[name](args.seed, **extra)
            meta = base_card(f"units-{name}", 0, args.seed, time_s=time.perf_counter() - start)
            meta["commit"] = _commit()
            card["meta"] = meta
            path = out / f"{name}.json"
            path.write_text(json.dumps(card, indent=1, default=str))
            written[name] = str(path)
    if out.resolve() == RESULTS.resolve():
        written["doc"] = str(write_units_doc())
    emit(written, args.json, "written: " + ", ".join(written.values()))
    return 0


def _commit() -> str:
    import subprocess

    from core import config

    try:
        answer = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=config.PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return answer.stdout.strip() or "unknown"


def register(sub, common) -> None:
    p = sub.add_parser(
        "units-doc", parents=[common], help="measure the Direction Lab's set and write docs/units.md"
    )
    p.add_argument("--only", help="comma-separated parts: studies,arms,sweeps,featvis,inside (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", help="output folder (default docs/results/units, which also rewrites docs/units.md)"
    )
    p.add_argument("--render-only", action="store_true", help="rewrite docs/units.md from the stored cards")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
