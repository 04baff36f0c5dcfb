"""Unit Explorer speed: building the activation cache, and ranking the held-out images along one direction.

    python benchmarks/units.py [--quick] [--json] [--models fc100-100-10,cnn] [--threads 1]

Cache build: phi(x) for every held-out image (the 10,000 MNIST test images), computed with forward hooks
and written to disk, as the Unit Explorer does on first use: cold (nothing cached for the model: the one
pass that builds every readable layer at once), from the disk cache (a new process), and from memory.
Top-k: `core.units.top_k` for one direction (a natural unit or a random direction), the work behind every
click in the explorer; also with numpy's BLAS held to one thread (threadpoolctl), since a BLAS thread pool
on a busy machine turns a 0.1 ms product into tens of ms. Goals: build under 5 s, top-k under 50 ms.

Direction Lab (one torch thread, one BLAS thread): feature visualisation of one unit, 256 steps on an MNIST
model (goal under 1 s) and streamed steps per second of mobilenet_v2 at 224 px, each step's image copied
out as a live view would (goal at least 5/s); learned directions (NMF, k-means, dictionary) for a 100-unit
layer fitted on half the held-out set, cold (goal under 10 s for all three); the rotation sweep, 11 alphas x
100 directions on fc100-100-10 (goal under 10 s). --quick: 16 steps, no mobilenet, 500 images.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time

import harness  # first: puts the project root on sys.path  # isort: skip
import numpy as np
import torch

from core import models, units
from core.lab import torch_threads
from core.units import activations as cache
from core.units import arms, featvis, learned, rotation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument("--models", default="fc100-100-10,cnn", help="zoo models (MNIST)")
    p.add_argument("--k", type=int, default=9, help="images per ranking (the explorer's grid row)")
    p.add_argument("--directions", type=int, default=200, help="directions timed per layer (half units)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, as in the app)"
    )
    return p.parse_args(argv)


def held_out(quick: bool) -> units.MnistImages:
    images = units.MnistImages()
    if quick:  # the first 500 images, under their own cache key
        images.images, images.labels = images.images[:500], images.labels[:500]
        images.key += "-first500"
    return images


def blas_threads(limit: int | None):
    """threadpoolctl's limit on numpy's BLAS pool when it is installed (it is optional here)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limit)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench_layer(model_name: str, layer: str, model, images, k: int, directions: int, seed: int = 0) -> dict:
    # Cold means nothing cached for this model: opening any layer first builds every readable layer.
    shutil.rmtree(cache.cache_file(model_name, layer, images.key, "x").parent, ignore_errors=True)
    cache.clear_memory()
    cold_s, acts = timed(lambda: units.layer_activations(model_name, layer, images, model=model))
    cache.clear_memory()
    disk_s, _ = timed(lambda: units.layer_activations(model_name, layer, images, model=model))
    memory_s, _ = timed(lambda: units.layer_activations(model_name, layer, images, model=model))

    dim = acts.shape[1]
    rng = np.random.default_rng(seed)
    unit_dirs = [units.unit_vector(dim, int(u)) for u in rng.integers(0, dim, directions // 2)]
    random_dirs = list(units.random_directions(dim, directions - len(unit_dirs), seed))
    per_direction = {}
    for kind, dirs in (("unit", unit_dirs), ("random", random_dirs), ("random, 1 BLAS thread", random_dirs)):
        with blas_threads(1 if "1 BLAS" in kind else None):
            units.top_k(acts, dirs[0], k)  # warm-up
            times = [timed(lambda d=d: units.top_k(acts, d, k))[0] for d in dirs]
        per_direction[kind] = {
            "median_ms": 1000 * float(np.median(times)),
            "p95_ms": 1000 * float(np.percentile(times, 95)),
            "max_ms": 1000 * max(times),
        }
    return {
        "images": len(images),
        "units": dim,
        "cache_cold_s": cold_s,
        "cache_disk_s": disk_s,
        "cache_memory_s": memory_s,
        "cache_mb": acts.nbytes / 2**20,
        "top_k": per_direction,
    }


def bench_featvis(model_name: str, layer: str, steps: int, model) -> dict:
    """One unit's feature visualisation, streamed: each step's image copied out as a live view would."""
    spec = models.get_spec(model_name)
    dim = cache.units_at(
        model, models.layer_modules(model, model_name)[layer], torch.zeros((1, *spec.input_shape))
    ).shape[1]
    run = featvis.start(
        model_name, layer, units.unit_vector(dim, 1), featvis.default_settings(spec.dataset, steps), model
    )
    start = time.perf_counter()
    for event in run:
        event.x.numpy().copy()
    wall = time.perf_counter() - start
    return {
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "activation": run.result().activation,
    }


def bench_directions(images, quick: bool) -> dict:
    """Feature visualisation, learned directions and the rotation sweep (see the module docstring)."""
    steps = 16 if quick else 256
    model, _ = harness.load_model("fc100-100-10")
    cnn, _ = harness.load_model("cnn")
    out: dict = {"featvis": {}}
    out["featvis"]["fc100-100-10:hidden2"] = bench_featvis("fc100-100-10", "hidden2", steps, model)
    out["featvis"]["cnn:fc1"] = bench_featvis("cnn", "fc1", steps, cnn)
    if not quick:
        mobilenet, _ = harness.load_model("mobilenet_v2")
        out["featvis"]["mobilenet_v2:block13"] = bench_featvis("mobilenet_v2", "block13", 32, mobilenet)
        out["featvis"]["mobilenet_v2:pool"] = bench_featvis("mobilenet_v2", "pool", 32, mobilenet)
    acts = units.layer_activations("fc100-100-10", "hidden2", images, model=model)
    fit_rows, _ = learned.halves(len(acts), 0)
    count = 10 if quick else arms.learned_count(acts.shape[1])
    out["learned"] = {
        method: timed(lambda m=method: learned.fit_directions(m, acts[fit_rows], count, 0))[0]
        for method in learned.METHODS
    }
    out["learned_directions"] = count
    out["sweep_s"], sweep = timed(
        lambda: rotation.sweep("fc100-100-10", "hidden2", images=images, judge="pixels")
    )
    out["sweep_directions"] = sweep["n_directions"]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    harness.use_device(args.device)
    if args.threads:
        harness.set_threads(args.threads)
    with harness.private_cache("bench-units-"):
        images = held_out(args.quick)
        result = {"machine": harness.machine(), "quick": args.quick, "k": args.k, "layers": {}}
        directions = 10 if args.quick else args.directions
        for model_name in args.models.split(","):
            load_s, (model, weights) = timed(lambda m=model_name: harness.load_model(m))
            for layer in models.get_spec(model_name).layers:
                if layer == "logits":
                    continue
                row = bench_layer(model_name, layer, model, images, args.k, directions)
                row["model_load_s"], row["weights"] = load_s, weights
                result["layers"][f"{model_name}:{layer}"] = row
        with blas_threads(1), torch_threads(1):
            result["directions"] = bench_directions(images, args.quick)
    cache.clear_memory()
    rows = [
        [
            name,
            r["images"],
            r["units"],
            r["model_load_s"],
            r["cache_cold_s"],
            r["cache_disk_s"] * 1000,
            r["top_k"]["unit"]["median_ms"],
            r["top_k"]["random"]["median_ms"],
            max(r["top_k"]["unit"]["p95_ms"], r["top_k"]["random"]["p95_ms"]),
            r["top_k"]["random, 1 BLAS thread"]["median_ms"],
            r["top_k"]["random, 1 BLAS thread"]["p95_ms"],
        ]
        for name, r in result["layers"].items()
    ]
    headers = [
        "model:layer",
        "images",
        "units",
        "model load s",
        "cache build s (cold)",
        "cache load ms (disk)",
        "top-k ms (unit)",
        "top-k ms (random)",
        "top-k p95 ms",
        "top-k ms, 1 BLAS thread",
        "p95 ms, 1 BLAS thread",
    ]
    d = result["directions"]
    lab_rows = [
        [
            f"featvis {n}",
            r["steps"],
            r["wall_s"],
            r["steps_per_s"],
            "256 steps < 1 s (MNIST), >= 5/s (mobilenet)",
        ]
        for n, r in d["featvis"].items()
    ]
    lab_rows += [
        [f"learned {m} ({d['learned_directions']} directions)", "", s, "", "all three < 10 s"]
        for m, s in d["learned"].items()
    ]
    lab_rows.append([f"rotation sweep (11 alphas x {d['sweep_directions']})", "", d["sweep_s"], "", "< 10 s"])
    text = (
        f"Unit Explorer, k = {args.k}\n\n"
        + harness.table(headers, rows)
        + "\n\nDirection Lab\n\n"
        + harness.table(["what", "steps", "seconds", "steps/s", "goal"], lab_rows)
    )
    harness.emit(result, args.json, text, args.save, "units", args.update_docs)
    return result


if __name__ == "__main__":
    main()
