"""Sweeps on Ray: examples per second with 1 and 2 local workers against the same grid in one process
without Ray, Ray's overhead per task and the shard size at which it stops mattering, the one writer's
capacity, and, from these measured per-example costs, what a full ImageNet sweep would take.

    python benchmarks/sweep.py [--quick] [--json] [--save PATH] [--doc docs/scaling.md]
    python benchmarks/sweep.py --render docs/results/sweep/sweep.json --doc docs/scaling.md

Contenders on one grid (MNIST models x attacks, n images, fixed shard size): "one process" attacks each
(model, attack) cell's images in one batch, no Ray, no database; "tasks in one process" runs the very
sweep tasks one after another, no Ray (our own fixed cost per task: load the model, select the images);
"Ray, w workers" runs `core.sweep.execute` on a fresh local Ray (start-up timed apart) writing SQLite.

The ImageNet estimate multiplies, per model and attack, the image rows through forward+backward passes (counted
on MNIST with the attacks' ImageNet presets) by the measured forward+backward time of one 224-px image on
each of ten torchvision architectures (random weights: the time does not depend on them). Machines are
2-core boxes like this one; a GPU's speed-up cannot be measured here and is an input (`--gpu-speedup`),
printed as an assumption.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import harness  # first: puts the project root on sys.path  # isort: skip
import numpy as np
import torch
from attacks import RowCounter  # benchmarks/attacks.py: image rows through forward+backward passes

from core.attacks import attack_presets, is_budgeted, make_attack
from core.evaluation import leaderboard, sweep
from core.evaluation.protocol import Protocol
from core.models import load

IMAGENET_MODELS = (
    "mobilenet_v2", "resnet18", "resnet50", "vgg16", "alexnet", "densenet121", "efficientnet_b0",
    "convnext_tiny", "vit_b_16", "regnet_y_400mf",
)  # fmt: skip
IMAGENET_ATTACKS = ("lbfgs", "fgsm", "pgd", "cw", "deepfool", "apgd")  # the six gradient attacks
IMAGENET_IMAGES = 50_000
IMAGENET_BUDGETS = 3
TARGET_DAYS = 7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): numbers are not meaningful")
    p.add_argument("--json", action="store_true", help="print a machine-readable result instead of tables")
    p.add_argument("--save", metavar="PATH", help="also write the machine-readable result (the card) to PATH")
    p.add_argument("--doc", metavar="PATH", help="also render the Markdown page (docs/scaling.md) to PATH")
    p.add_argument("--render", metavar="CARD", help="only render --doc from a stored card, measure nothing")
    p.add_argument("--models", default="fc10-1e-2,fc100-100-10", help="MNIST models of the grid")
    p.add_argument("--attacks", default="fgsm,deepfool,pgd", help="attacks of the grid")
    p.add_argument("--n", type=int, default=2000, help="images per cell")
    p.add_argument("--shard", type=int, default=250, help="images per task")
    p.add_argument("--shards", default="25,100,500", help="shard sizes for the overhead curve (2 workers)")
    p.add_argument("--gpu-speedup", type=float, default=50.0, help="assumed GPU/2-core ratio (not measured)")
    return p.parse_args(argv)


def grid(args: argparse.Namespace, shard: int) -> list[sweep.Task]:
    return sweep.plan(
        args.models.split(","), args.attacks.split(","), protocol=Protocol(n=args.n), shard_size=shard
    )


def one_process(tasks: list[sweep.Task]) -> dict:
    """Each cell's images attacked in one batch: the attack work alone."""
    start = time.perf_counter()
    examples = 0
    for cell in {t.cell_id: t for t in tasks}.values():
        net = load(cell.model, "cpu")
        chosen = cell.protocol.select(net)
        examples += len(make_attack(cell.attack, net, **cell.params).run(chosen.images, chosen.labels))
    seconds = time.perf_counter() - start
    return {"examples": examples, "time_s": seconds, "examples_per_s": examples / seconds}


def tasks_in_process(tasks: list[sweep.Task]) -> dict:
    start = time.perf_counter()
    per_task = [sweep.run_task(t)["time_s"] for t in tasks]
    seconds = time.perf_counter() - start
    examples = sum(t.stop - t.start for t in tasks)
    return {"examples": examples, "time_s": seconds, "examples_per_s": examples / seconds, "tasks": len(tasks),
            "median_task_s": statistics.median(per_task)}  # fmt: skip


def on_ray(tasks: list[sweep.Task], workers: int, folder: Path) -> dict:
    """A fresh local Ray with `workers` CPUs: start-up, warm-up (each worker imports torch and runs one
    tiny task, as the first task of any sweep does), then the sweep into a fresh database."""
    import ray

    start = time.perf_counter()
    sweep.connect_ray(None, workers)
    startup = time.perf_counter() - start
    (tiny,) = sweep.plan([tasks[0].model], ["fgsm"], protocol=Protocol(n=1), shard_size=1)
    attempt = ray.remote(num_cpus=1)(sweep.attempt)
    ray.get([attempt.remote(tiny) for _ in range(workers)])
    warmup = time.perf_counter() - start - startup
    round_trips = []
    noop = ray.remote(num_cpus=1)(lambda: None)
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        round_trips.append(time.perf_counter() - t0)
    db = Path(tempfile.mkstemp(suffix=".sqlite", dir=folder)[1])
    db.unlink()
    summary = sweep.execute(tasks, path=db, progress=False)
    ray.shutdown()
    with leaderboard.connect(db) as conn:  # move the WAL into the file, so that its size is the data's
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not summary.failed, summary.failed
    return {
        "workers": workers, "startup_s": startup, "warmup_s": warmup, "time_s": summary.time_s,
        "examples": summary.examples, "examples_per_s": summary.examples / summary.time_s,
        "noop_task_round_trip_ms": 1e3 * statistics.median(round_trips),
        "db_bytes_per_example": db.stat().st_size / summary.examples,
    }  # fmt: skip


def rows_per_example(quick: bool) -> dict[str, float]:
    """Image rows through forward+backward passes per example of each attack with its ImageNet preset
    (counted on MNIST: L-BFGS's rows include its target labels; forward-only passes are left out)."""
    net = load("fc100-100-10", "cpu")
    chosen = Protocol(n=8 if quick else 50).select(net)
    rows = {}
    for name in IMAGENET_ATTACKS:
        params = attack_presets(name, "imagenet")
        if quick and name in ("lbfgs", "cw"):
            params |= {"max_iter": 5} if name == "lbfgs" else {"steps": 5}
        counter = RowCounter(net)
        make_attack(name, counter, **params).run(chosen.images, chosen.labels)
        rows[name] = counter.rows / len(chosen)
    return rows


def forward_backward_s(names: tuple[str, ...], batch: int) -> dict[str, dict]:
    """Seconds of one forward+backward pass per 224-px image, and the weights' size, per architecture."""
    import torchvision

    out = {}
    for name in names:
        net = torchvision.models.get_model(name, weights=None).eval()
        x = torch.rand(batch, 3, 224, 224, requires_grad=True)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            net(x).logsumexp(1).sum().backward()
            times.append(time.perf_counter() - t0)
        out[name] = {
            "seconds_per_image": min(times) / batch,
            "weights_mb": sum(p.numel() for p in net.parameters()) * 4 / 2**20,
        }
    return out  # fmt: skip


def writer_rows_per_s(folder: Path, tasks: int, rows: int) -> float:
    """How many per-example rows the one writer records per second (synthetic tasks, one transaction each)."""
    db = folder / "writer.sqlite"
    example = {"label": 1, "clean_pred": 1, "success": 1, "adv_pred": 2, "l2": 1.0, "linf": 0.1, "rms": 0.03,
               "model_calls": 5, "time_s": 0.01, "x_adv": None}  # fmt: skip
    start = time.perf_counter()
    for t in range(tasks):
        task = {"task_id": f"t{t}", "cell_id": f"c{t}", "cell_tasks": 2, "model": "m", "weights": "w", "attack": "a",
                "params": "{}", "protocol": "{}", "protocol_id": "p", "shard_start": 0, "shard_stop": rows}  # fmt: skip
        leaderboard.record_task(task, [{**example, "image_id": i} for i in range(rows)], path=db)
    return tasks * rows / (time.perf_counter() - start)


def imagenet_estimate(
    rows: dict[str, float], fb: dict[str, dict], gpu_speedup: float, fixed_s: float
) -> dict:
    """Compute-seconds for six attacks x ten models x three budgets on the ImageNet validation set, and the
    shard size at which a task's fixed cost `fixed_s` is under 10% of its cheapest kind of task."""
    runs = {
        a: (IMAGENET_BUDGETS if is_budgeted(a) else 1) for a in rows
    }  # a minimal attack serves every budget
    per_model = {
        m: sum(rows[a] * runs[a] for a in rows) * row["seconds_per_image"] * IMAGENET_IMAGES
        for m, row in fb.items()
    }
    core_s = sum(per_model.values())
    machine_s = core_s / 2  # one task per core on a 2-core machine
    target_s = TARGET_DAYS * 86_400
    examples = IMAGENET_IMAGES * len(fb) * sum(runs.values())
    cheapest = min((rows[a] * row["seconds_per_image"], f"{a} on {m}") for a in rows for m, row in fb.items())
    return {
        "models": len(fb), "attacks": len(rows), "budgets": IMAGENET_BUDGETS, "images": IMAGENET_IMAGES,
        "attack_runs_per_model": runs, "per_model_core_s": per_model, "core_s": core_s,
        "two_core_machine_days": machine_s / 86_400, "target_days": TARGET_DAYS,
        "two_core_machines_for_target": math.ceil(machine_s / target_s),
        "gpu_speedup_assumed": gpu_speedup, "gpu_machines_for_target": math.ceil(core_s / gpu_speedup / target_s),
        "per_example_rows": examples, "weights_mb": sum(r["weights_mb"] for r in fb.values()),
        "x_adv_mb_per_example": 3 * 224 * 224 * 4 / 2**20, "cheapest_example_s": cheapest[0],
        "cheapest": cheapest[1], "shard_for_10pct": max(1, math.ceil(9 * fixed_s / cheapest[0])),
    }  # fmt: skip


def measure(args: argparse.Namespace) -> dict:
    harness.set_threads(1)
    if args.quick:
        args.n, args.shard, args.shards, args.attacks = 40, 20, "", "fgsm,deepfool"
    tasks = grid(args, args.shard)
    folder = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        result = {"quick": args.quick, "machine": harness.machine(), "grid": {
            "models": args.models.split(","), "attacks": args.attacks.split(","), "n": args.n,
            "shard": args.shard, "tasks": len(tasks)}}  # fmt: skip
        for model in {t.model for t in tasks}:  # MNIST read and models loaded once before any timing
            Protocol(n=1).select(load(model, "cpu"))
        result["one_process"] = one_process(tasks)
        result["tasks_in_process"] = tasks_in_process(tasks)
        result["ray"] = [on_ray(tasks, w, folder) for w in (1, 2)]
        result["shards"] = [
            {"shard": s, **on_ray(grid(args, s), 2, folder)}
            for s in map(int, filter(None, args.shards.split(",")))
        ]
        result["writer_rows_per_s"] = writer_rows_per_s(folder, 5 if args.quick else 40, 250)
        result["rows_per_example"] = rows_per_example(args.quick)
        fb = forward_backward_s(
            IMAGENET_MODELS[:1] if args.quick else IMAGENET_MODELS, 1 if args.quick else 4
        )
        result["forward_backward_224"] = fb
        result |= overhead(result)
        result["imagenet"] = imagenet_estimate(
            result["rows_per_example"], fb, args.gpu_speedup, result["fixed_cost_per_task_s"]
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def overhead(result: dict) -> dict:
    """The fixed cost per task and the cost per example, from a straight line through the seconds per
    task at each shard size (2 workers: a task's time is workers x shard / examples per second), and the
    shard size from which the fixed cost is under 10% of a task."""
    curve = result["shards"] or [{"shard": result["grid"]["shard"], **result["ray"][1]}]
    points = [(c["shard"], c["workers"] * c["shard"] / c["examples_per_s"]) for c in curve]
    if len(points) > 1:
        slope, fixed = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
    else:
        slope, fixed = points[0][1] / points[0][0], 0.0
    per_example = slope if slope > 0 else points[-1][1] / points[-1][0]
    fixed = max(float(fixed), 0.0)
    return {"fixed_cost_per_task_s": fixed, "seconds_per_example": float(per_example),
            "shard_for_10pct": max(1, math.ceil(9 * fixed / per_example))}  # fmt: skip


def tables(result: dict) -> str:
    g = result["grid"]
    rows = [
        ("one process, one batch per cell", "-", "-", result["one_process"]["time_s"], result["one_process"]["examples_per_s"]),
        ("sweep tasks in one process", "-", "-", result["tasks_in_process"]["time_s"], result["tasks_in_process"]["examples_per_s"]),
        *((f"Ray, {r['workers']} worker(s)", r["startup_s"], r["warmup_s"], r["time_s"], r["examples_per_s"]) for r in result["ray"]),
    ]  # fmt: skip
    text = [
        f"Grid: {', '.join(g['attacks'])} on {', '.join(g['models'])}, {g['n']} images, shards of {g['shard']} "
        f"({g['tasks']} tasks)",
        harness.table(
            ["contender", "Ray start-up (s)", "worker warm-up (s)", "sweep time (s)", "examples/s"], rows
        ),
        "",
        harness.table(
            ["shard size (2 workers)", "examples/s", "no-op task round trip (ms)"],
            [(s["shard"], s["examples_per_s"], s["noop_task_round_trip_ms"]) for s in result["shards"]],
        ),
        "",
        f"Ray's own round trip per task: {result['ray'][0]['noop_task_round_trip_ms']:.1f} ms; fixed cost per task "
        f"(line through the shard sizes: Ray + load + select + write): {result['fixed_cost_per_task_s']:.3f} s; "
        f"per example: {result['seconds_per_example'] * 1e3:.2f} ms;"
        f" under 10% from shards of {result['shard_for_10pct']} images. Writer: {result['writer_rows_per_s']:.0f} rows/s.",
    ]
    return "\n".join(text)


def render(card: dict) -> str:
    """docs/scaling.md from a stored card: every number below comes from it."""
    im = card["imagenet"]
    fb = card["forward_backward_224"]
    rows = card["rows_per_example"]
    ray1, ray2 = card["ray"]
    one = card["one_process"]
    m = card["machine"]
    lines = [
        "# Sweeps at scale",
        "",
        "<!-- Rendered by `python benchmarks/sweep.py --save docs/results/sweep/sweep.json --doc docs/scaling.md`"
        " from the stored card; do not edit by hand. -->",
        "",
        "`intriguing sweep` runs an attack x model x budget grid as idempotent tasks on Ray (a local Ray, or a "
        "cluster by address) and merges each finished task's per-example rows into the leaderboard's SQLite "
        "file, one transaction per task (see `core/evaluation/sweep.py`).",
        "",
        f"Measured on {m['cpu']} ({m['cores']} cores, load average {m['load_average_1_5_15']}), torch "
        f"{m['torch']}, commit {m['commit']}, {m['date']}"
        + (" (**--quick: the numbers mean nothing**)." if card["quick"] else "."),
        "",
        "## Measured: one machine",
        "",
        tables(card),
        "",
        f"With 2 workers the sweep does {ray2['examples_per_s'] / one['examples_per_s']:.2f}x the examples per "
        f"second of one process without Ray ({ray1['examples_per_s'] / one['examples_per_s']:.2f}x with 1 worker); "
        f"a local Ray takes {ray1['startup_s']:.1f} s to start, paid once per sweep and not at all when every task "
        "is already recorded."
        + (
            f" The machine was shared (load average {m['load_average_1_5_15'][0]} on {m['cores']} cores), so a second "
            "worker competed with other processes for the cores rather than getting one of its own."
            if m["load_average_1_5_15"][0] > m["cores"]
            else ""
        ),
        "",
        f"## On paper: {im['attacks']} attacks x {im['models']} torchvision models x {im['budgets']} budgets on "
        f"{im['images']:,} ImageNet images",
        "",
        "Image rows through forward+backward passes per example (counted on MNIST with each attack's ImageNet "
        "preset; forward-only passes left out; minimal-distortion attacks run once and serve every budget):",
        "",
        harness.table(
            ["attack", "fwd+bwd rows per example", "runs per model"],
            [(a, c, im["attack_runs_per_model"][a]) for a, c in rows.items()],
        ),
        "",
        "Forward+backward time of one 224-px image, one thread (random weights: the time does not depend on them):",
        "",
        harness.table(
            ["model", "s per image", "weights (MB)", "sweep core-days"],
            [
                (n, r["seconds_per_image"], r["weights_mb"], im["per_model_core_s"][n] / 86_400)
                for n, r in fb.items()
            ],
        ),
        "",
        f"Total: {im['core_s'] / 86_400:.0f} core-days, {im['two_core_machine_days']:.0f} days of one 2-core machine; "
        f"to finish in {im['target_days']} days: {im['two_core_machines_for_target']} such machines, or "
        f"{im['gpu_machines_for_target']} GPU machine(s) if a GPU does {im['gpu_speedup_assumed']:g}x a 2-core "
        "machine (an assumption, not measured here).",
        "",
        "## What changes at that scale",
        "",
        f"- **The writer.** The sweep yields {im['per_example_rows']:,} per-example rows. The one SQLite writer "
        f"recorded {card['writer_rows_per_s']:,.0f} rows/s here, i.e. {im['per_example_rows'] / card['writer_rows_per_s'] / 60:.1f} minutes "
        f"of writing spread over the sweep, far below the compute: one writer, one transaction per task, is enough; "
        "what must scale is the compute, not the database.",
        f"- **Result size.** At {ray2['db_bytes_per_example']:.0f} bytes per example row (measured, with indexes), "
        f"the rows take {im['per_example_rows'] * ray2['db_bytes_per_example'] / 2**30:.1f} GB. Adversarial images "
        f"are not kept by default: at {im['x_adv_mb_per_example']:.2f} MB each (224x224x3 float32) they would take "
        f"{im['per_example_rows'] * im['x_adv_mb_per_example'] / 2**20:.1f} TB; keep them only for a few cells "
        "(as `reproduce table2 --on-ray` does for MNIST) or write them to object storage keyed by task id.",
        f"- **Weights distribution.** The {im['models']} models weigh {im['weights_mb']:.0f} MB together. Every worker must "
        "hold the same files: a task carries its model's weights checksum and refuses to run on different weights. "
        "On a cluster, bake the weights into the worker image (or a shared volume) rather than shipping them "
        "through Ray's object store with every task; group tasks by model so that a worker loads each model once.",
        f"- **Shard size.** The fixed cost per task measured here ({card['fixed_cost_per_task_s']:.2f} s: Ray plus "
        f"loading the model and choosing the images) falls under 10% of a task from {card['shard_for_10pct']} MNIST "
        f"images per task; an ImageNet example costs at least {im['cheapest_example_s']:.1f} s ({im['cheapest']}), so "
        f"with the same fixed cost {im['shard_for_10pct']} image(s) per task would do; loading a large model adds "
        "to it, which is one more reason to group a model's tasks on the workers that already hold it.",
        "- **The images.** Sweeps choose their images by `core.evaluation.protocol`, which walks MNIST today; an ImageNet "
        "sweep needs the protocol to walk the validation set (each worker reading its shard's files from shared "
        "storage, not from the driver) and the weights checksum to cover torchvision's weight files.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = json.loads(Path(args.render).read_text()) if args.render else measure(args)
    if args.save and not args.render:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(result, indent=2, default=float) + "\n")
    if args.doc:
        Path(args.doc).write_text(render(result))
    harness.emit(result, args.json, tables(result), card=None if args.render else "sweep")  # a run folder
    return result


if __name__ == "__main__":
    main()
