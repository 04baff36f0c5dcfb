"""Randomized smoothing's CERTIFY cost: seconds per MNIST image at n = 100,000 noise samples on the MLP base
classifier (smooth-0.25) and on the small CNN, per batch size, and on paper the cost for 500 ImageNet images.

    python benchmarks/smoothing.py [--quick] [--json] [--save PATH] [--threads 1] [--samples 100000]
                                   [--device cuda --batches 1000,10000,100000 --card gpu-smoothing]

Three contenders per model and batch size, alternating in one process (ratios hold on a loaded machine):
"before" is the loop as first written (a fresh noise tensor and a fresh noisy batch per step, autograd off
with no_grad); "pixel noise" is core.smoothing's loop with the network's structure hidden from it (noise
drawn in place into a reused buffer under inference_mode); "projected" is core.smoothing as it runs, noise
drawn in the first layer's width where the network opens with Flatten, Linear (core/smoothing/noise.py).
Times are CPU seconds of the one-thread process (the wall time beside them mostly measures the machine's load).
The CNN is timed at --cnn-samples and scaled linearly to n (its cost is all forward passes).
The ImageNet row is an estimate, not a run: one batch of mobilenet_v2 timed, times 500 images x (n0 + n).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import harness  # first: puts the project root on sys.path  # isort: skip
import torch
from torch import nn

from core.data import load_mnist
from core.smoothing import SmoothingParams, certify
from core.smoothing.certify import make_generator

BATCHES = (250, 1000, 4000)
MODELS = {"smooth-0.25": "MLP 784-256-256-10", "cnn": "CNN conv32-conv64-fc128"}
IMAGENET_IMAGES = 500


class Opaque(nn.Module):
    """The same network behind a wrapper, so that core.smoothing cannot see its first layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@torch.no_grad()
def before(model: nn.Module, x: torch.Tensor, params: SmoothingParams, generator: torch.Generator) -> None:
    """The vote loop as first written, for the before/after ratio (n0 selection + n estimation votes)."""
    for num in (params.n0, params.n):
        counts = torch.zeros(10, dtype=torch.long, device=x.device)
        for start in range(0, num, params.batch):
            size = (min(params.batch, num - start), *x.shape)
            noise = torch.randn(size, generator=generator, device=x.device)
            counts += torch.bincount(model(x.unsqueeze(0) + params.sigma * noise).argmax(1), minlength=10)


def cpu_timed(fn: Callable[[], object], record: list[float]) -> Callable[[], None]:
    """fn, also recording the CPU seconds it took: on a loaded machine a one-thread run's CPU time is what
    the code costs, while its wall time mostly measures the others' load. On a GPU the host's CPU time
    (the launches, the GPU's queue synchronised at the end) is recorded the same way."""

    def timed() -> None:
        start = time.process_time()
        fn()
        harness.sync()
        record.append(time.process_time() - start)

    return timed


def contenders(model: nn.Module, x: torch.Tensor, params: SmoothingParams, cpu: dict) -> dict:
    opaque = Opaque(model)
    runs = {
        "before": lambda: before(model, x, params, make_generator(model, 0)),
        "pixel noise": lambda: certify(opaque, x, params, make_generator(model, 0)),
        "projected": lambda: certify(model, x, params, make_generator(model, 0)),
    }
    return {name: cpu_timed(fn, cpu.setdefault(name, [])) for name, fn in runs.items()}


def imagenet_estimate(params: SmoothingParams, batch: int = 32) -> tuple[float, str]:
    """Seconds for 500 ImageNet images from one timed batch of mobilenet_v2 (or a note why not)."""
    try:
        model, status = harness.load_model("mobilenet_v2")
    except Exception as exc:  # noqa: BLE001 - weights missing offline: say so in the table
        return float("nan"), f"mobilenet_v2 unavailable ({type(exc).__name__})"
    x = torch.rand(batch, 3, 224, 224, device=harness.DEVICE)
    with torch.inference_mode():
        model(x[:2])
        start = time.process_time()
        model(x)
    per_sample = (time.process_time() - start) / batch  # CPU seconds (see cpu_timed)
    return per_sample * IMAGENET_IMAGES * (params.n0 + params.n), status


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--cnn-samples", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--card", default="smoothing", help="the result card's name")
    args = p.parse_args()
    harness.set_threads(args.threads)
    harness.use_device(args.device)
    samples = 2_000 if args.quick else args.samples
    rounds = 1 if args.quick else args.rounds
    x = load_mnist("test").images[0].to(harness.DEVICE)
    rows = []
    for name, arch in MODELS.items():
        model, status = harness.load_model(name)
        timed = min(samples, 1_000 if args.quick else args.cnn_samples) if name == "cnn" else samples
        scale = (100 + samples) / (100 + timed)
        for batch in (1000,) if args.quick else [int(b) for b in args.batches.split(",")]:
            params = SmoothingParams(sigma=0.25, n=timed, batch=batch)
            cpu: dict[str, list[float]] = {}
            times = harness.alternate(contenders(model, x, params, cpu), rounds, warmup=False)
            base = harness.median(cpu["before"])
            for who, ts in times.items():
                rows.append({"model": name, "architecture": arch, "status": status, "batch": batch,
                             "samples": samples, "timed_samples": timed, "contender": who,
                             "s_per_image": harness.median(ts) * scale,
                             "cpu_s_per_image": harness.median(cpu[who]) * scale,
                             "cpu_vs_before": harness.median(cpu[who]) / base})  # fmt: skip
    seconds, status = imagenet_estimate(SmoothingParams(sigma=0.25, n=samples))
    result = {
        "benchmark": "smoothing",
        "threads": args.threads,
        "rounds": rounds,
        "rows": rows,
        "imagenet_500_images_cpu_s": seconds,
        "imagenet_model_status": status,
        "machine": harness.machine(),
    }
    columns = {"model": "model", "batch": "batch", "samples": "samples", "timed_samples": "timed at",
               "contender": "contender", "cpu_s_per_image": "CPU s / image", "cpu_vs_before": "x before",
               "s_per_image": "wall s / image"}  # fmt: skip
    headers, keys = list(columns.values()), list(columns)
    text = harness.table(headers, [[r[k] for k in keys] for r in rows])
    if not math.isnan(seconds):  # mobilenet_v2's weights were there to time
        text += (
            f"\n\nImageNet on paper (mobilenet_v2, {status}): {IMAGENET_IMAGES} images x {samples + 100} "
            f"samples ~ {seconds / 3600:.0f} CPU hours on {args.threads} thread(s)"
        )
    else:
        text += f"\n\nImageNet on paper: not estimated ({status})"
    harness.emit(result, args.json, text, args.save, args.card, args.update_docs)


if __name__ == "__main__":
    main()
