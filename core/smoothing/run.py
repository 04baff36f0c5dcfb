"""Certify the first n MNIST test images of one model: the run behind `intriguing smooth` and the
certified-accuracy curves, with the per-image certificates and the curve in one JSON-able record."""

from __future__ import annotations

import time

import torch

from core.data import load_mnist
from core.errors import InvalidParameterError
from core.models import get_spec, load
from core.smoothing.certify import SmoothingParams, SmoothResult, certify_batch, estimate_seconds
from core.smoothing.curves import DEFAULT_RADII, average_certified_radius, certified_accuracy

HOURS_WITHOUT_ASKING = 1.0  # a run estimated longer than this needs the user's explicit yes


def mnist_model(name: str, device: torch.device | str | None = None) -> torch.nn.Module:
    """The named model, refusing one that does not take MNIST digits."""
    spec = get_spec(name)
    if spec.dataset != "mnist":
        raise InvalidParameterError(
            f"{name} takes {spec.dataset} images; `smooth` certifies MNIST test images and needs an MNIST "
            "model such as smooth-0.25."
        )
    return load(name, device)


def check_affordable(model: torch.nn.Module, params: SmoothingParams, images: int, yes: bool) -> float:
    """The estimated seconds; InvalidParameterError (stating the estimate) when over the limit without yes."""
    seconds = estimate_seconds(model, (1, 28, 28), params, images)
    if seconds > 3600 * HOURS_WITHOUT_ASKING and not yes:
        raise InvalidParameterError(
            f"{images} images x {params.n0 + params.n} noise samples would take about {seconds / 3600:.1f} h "
            "here; pass --yes to run it anyway, or lower --n or --samples."
        )
    return seconds


def smooth_run(
    model_name: str,
    params: SmoothingParams,
    n_images: int,
    seed: int = 0,
    device: torch.device | str | None = None,
    yes: bool = False,
    progress: bool = True,
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> dict:
    """Certify the first n_images test images, all of them (Cohen et al. count a wrong or abstained
    prediction as uncertified, so none is skipped); the per-image results, certified accuracy and ACR."""
    model = mnist_model(model_name, device)
    data = load_mnist("test")
    if not 1 <= n_images <= len(data):
        raise InvalidParameterError(f"n must be between 1 and {len(data)} test images, got {n_images}.")
    estimate = check_affordable(model, params, n_images, yes)
    start = time.perf_counter()
    results = certify_batch(model, data.images[:n_images], params, seed=seed, progress=progress)
    run = summarise(model_name, params, seed, results, data.labels[:n_images].tolist(), radii)
    return run | {"time_s": time.perf_counter() - start, "estimated_s": estimate}


def summarise(
    model_name: str,
    params: SmoothingParams,
    seed: int,
    results: list[SmoothResult],
    labels: list[int],
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> dict:
    """The JSON-able record of certificates of the first len(results) test images: each image's result,
    certified accuracy at `radii`, ACR and abstentions."""
    images = [
        {"index": i, "label": y, **r.to_dict()} for i, (y, r) in enumerate(zip(labels, results, strict=True))
    ]
    curve = certified_accuracy(results, labels, radii)
    return {
        "model": model_name,
        "params": params.to_dict(),
        "seed": seed,
        "split": "test",
        "clipped": False,
        "images": images,
        "certified_accuracy": {f"{r:g}": acc for r, acc in curve.items()},
        "average_certified_radius": average_certified_radius(results, labels),
        "abstained": sum(r.prediction is None for r in results),
    }
