"""Randomized smoothing's CERTIFY cost: seconds per MNIST image at n = 100,000 noise samples on the MLP base
classifier (smooth-0.25) and on the small CNN, per batch size, and on paper the cost for 500 ImageNet images.

    python benchmarks/smoothing.py [--quick] [--json] [--save PATH] [--threads 1] [--samples 100000]

The ImageNet row is an estimate, not a run: one batch of mobilenet_v2 timed, times 500 images x (n0 + n).
"""

from __future__ import annotations

import time

import harness  # first: puts the project root on sys.path  # isort: skip
import torch

from core.data import load_mnist
from core.smoothing import SmoothingParams, certify
from core.smoothing.certify import make_generator

BATCHES = (500, 2000, 10000)
MODELS = {"smooth-0.25": "MLP 784-256-256-10", "cnn": "CNN conv32-conv64-fc128"}
IMAGENET_IMAGES = 500


def per_image(model: torch.nn.Module, x: torch.Tensor, params: SmoothingParams) -> float:
    """Seconds of one CERTIFY (n0 + n samples) on image x."""
    start = time.perf_counter()
    certify(model, x, params, make_generator(model, 0))
    return time.perf_counter() - start


def imagenet_estimate(params: SmoothingParams, batch: int = 32) -> tuple[float, str]:
    """Seconds for 500 ImageNet images from one timed batch of mobilenet_v2 (or a note why not)."""
    try:
        model, status = harness.load_model("mobilenet_v2")
    except Exception as exc:  # noqa: BLE001 - weights missing offline: say so in the table
        return float("nan"), f"mobilenet_v2 unavailable ({type(exc).__name__})"
    x = torch.rand(batch, 3, 224, 224)
    with torch.no_grad():
        model(x[:2])
        start = time.perf_counter()
        model(x)
    per_sample = (time.perf_counter() - start) / batch
    return per_sample * IMAGENET_IMAGES * (params.n0 + params.n), status


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=100_000)
    args = p.parse_args()
    harness.set_threads(args.threads)
    samples = 5_000 if args.quick else args.samples
    x = load_mnist("test").images[0]
    rows = []
    for name, arch in MODELS.items():
        model, status = harness.load_model(name)
        for batch in BATCHES:
            params = SmoothingParams(sigma=0.25, n=samples, batch=batch)
            rows.append({"model": name, "architecture": arch, "status": status, "batch": batch,
                         "samples": samples, "s_per_image": per_image(model, x, params)})  # fmt: skip
    seconds, status = imagenet_estimate(SmoothingParams(sigma=0.25, n=samples))
    result = {
        "benchmark": "smoothing",
        "threads": args.threads,
        "rows": rows,
        "imagenet_500_images_s": seconds,
        "imagenet_model_status": status,
        "machine": harness.machine(),
    }
    text = harness.table(
        ["model", "architecture", "batch", "samples", "s / image"],
        [[r["model"], r["architecture"], r["batch"], r["samples"], r["s_per_image"]] for r in rows],
    )
    text += (
        f"\n\nImageNet on paper (mobilenet_v2, {status}): {IMAGENET_IMAGES} images x {samples + 100} samples "
        f"~ {seconds / 3600:.1f} h on {args.threads} thread(s)"
    )
    harness.emit(result, args.json, text, args.save)


if __name__ == "__main__":
    main()
