"""Table 5: upper bounds of each layer's Lipschitz constant (operator norms, see `core.certify.lipschitz`) with an
empirical local estimate beside each, for the MNIST CNN and the two trained ImageNet networks (MobileNetV2,
EfficientNet-Lite0). torchvision's AlexNet (the paper's Table 5 is for an AlexNet-like net) joins by default
when its ImageNet weights are in TORCH_HOME; asked for without them it runs at random initialisation, is
named so in every row and is kept out of the comparison with the paper."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from core.certify.lipschitz import network_bounds
from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.errors import InvalidParameterError
from core.experiments import paper
from core.experiments.adversarial import candidate_images, experiment_protocol, notify
from core.experiments.writer import Column, Report, bars, base_card
from core.models import get_spec, imagenet, load
from core.runtime import bar_disabled

MODELS = ("cnn", "mobilenet_v2", "efficientnet_lite0")
RANDOM_INIT = "alexnet (RANDOM INIT, not comparable)"  # the model column of an untrained AlexNet


def default_models() -> tuple[str, ...]:
    """The CNN and both trained ImageNet networks, and AlexNet only when its trained weights are present."""
    return MODELS + (("alexnet",) if imagenet.pick_weights("alexnet") is not None else ())


def _alexnet(seed: int) -> tuple[torch.nn.Module, str, bool]:
    """AlexNet with ImageNet weights when TORCH_HOME has them, else torchvision's random initialisation."""
    if imagenet.pick_weights("alexnet") is not None:
        return load("alexnet", "cpu"), "ImageNet weights (IMAGENET1K_V1)", True
    torch.manual_seed(seed)
    net = imagenet.build_untrained("alexnet").eval().requires_grad_(False)
    return net, f"RANDOM INITIALISATION (seed {seed}): no AlexNet weights in TORCH_HOME", False


def _model_and_images(name: str, n: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, str, bool]:
    """The model, its images, where its weights come from, and whether it is trained."""
    if name == "alexnet":
        model, weights, trained = _alexnet(seed)
    else:
        model, weights, trained = load(name, "cpu"), "trained (zoo)", True
    if get_spec(name).dataset == "mnist":
        images = candidate_images(experiment_protocol(n, seed))[0]
    else:
        photos = SAMPLE_PHOTOS[: max(1, min(n, len(SAMPLE_PHOTOS)))]
        images = torch.cat([imagenet.preprocess(sample_photo(p), name) for p in photos])
    return model, images, weights, trained


def run(
    n: int = 100,
    seed: int = 0,
    models: tuple[str, ...] | None = None,
    iters: int = 100,
    tol: float = 1e-5,
    device=None,
    progress=True,
) -> Report:
    """Per-layer bounds and empirical estimates; `n` MNIST test images (ImageNet nets: the sample photos,
    at most 4). `iters`/`tol` control the power iteration of the operator norms; `models` defaults to
    `default_models()`."""
    models = default_models() if models is None else models
    if not models:
        raise InvalidParameterError("table5 needs at least one model.")
    start = time.perf_counter()
    rows: list[dict] = []
    weights: dict[str, str] = {}
    for i, name in enumerate(
        tqdm(models, desc="Lipschitz bounds", unit="model", disable=bar_disabled(progress is True))
    ):
        notify(progress, i / len(models), f"Lipschitz bounds of {name}")
        model, images, weights[name], trained = _model_and_images(name, n, seed)
        layers, summary = network_bounds(model, images, iters=iters, tol=tol)
        ref = paper.TABLE5_ALEXNET if name == "alexnet" and trained else {}
        label = name if trained else RANDOM_INIT
        for layer in layers:
            rows.append(
                {
                    "model": label,
                    "trained": trained,
                    "layer": layer.label,
                    "modules": layer.modules,
                    "input_shape": "x".join(map(str, layer.input_shape)),
                    "upper_bound": layer.upper_bound,
                    "empirical": layer.empirical,
                    "looseness": layer.upper_bound / max(layer.empirical, 1e-12),
                    "paper": ref.get(layer.label),
                    "note": layer.note,
                }
            )
        rows.append(
            {
                "model": label,
                "trained": trained,
                "layer": "network",
                "modules": "product of the layer bounds / whole-network Jacobian",
                "input_shape": "x".join(map(str, images.shape[1:])),
                "upper_bound": summary["network_bound"],
                "empirical": summary["network_empirical"],
                "looseness": summary["network_bound"] / max(summary["network_empirical"], 1e-12),
                "paper": None,
                "note": f"{summary['n_images']} images; {weights[name]}",
            }
        )
    columns = [
        Column("model", "model", "text"),
        Column("layer", "layer", "text"),
        Column("modules", "modules", "text"),
        Column("upper_bound", "upper bound", "num"),
        Column("empirical", "empirical (max local)", "num"),
        Column("looseness", "bound / empirical", "num"),
        Column("paper", "paper (AlexNet)", "num"),
        Column("note", "note", "text"),
    ]
    layer_rows = [r for r in rows if r["layer"] != "network"]

    def draw(path):
        bars(
            path,
            [f"{r['model']} {r['layer']}" for r in layer_rows],
            {
                "upper bound": [r["upper_bound"] for r in layer_rows],
                "empirical": [r["empirical"] for r in layer_rows],
                "paper": [r["paper"] for r in layer_rows],
            },
            "Table 5: per-layer Lipschitz upper bounds vs empirical local estimates",
            "Lipschitz constant (log)",
            log=True,
        )

    card = base_card(
        "table5",
        n,
        seed,
        models=list(models),
        weights=weights,
        method={
            "affine": "exact L2 operator norm of each run of affine modules (conv+BN folded, strided, "
            "padded, on the real input grid) by power iteration with autograd",
            "iters": iters,
            "tol": tol,
            "nonlinear": "ReLU/ReLU6 1, sigmoid 1/4, max pool sqrt(windows covering a pixel)",
            "empirical": "max over images of the spectral norm of the layer's Jacobian at real activations",
        },
        time_s=time.perf_counter() - start,
    )
    notes = [
        "Upper bound: product of the exact norms of the layer's affine parts (power iteration, converging "
        f"from below to tolerance {tol:g} in at most {iters} iterations) and of its nonlinearities' constants.",
        "Empirical: the largest local stretch (Jacobian spectral norm) at real inputs; it can never exceed "
        "the bound. MNIST: test images; ImageNet nets: scikit-image's sample photos.",
        *(f"{m}: {w}." for m, w in weights.items()),
    ]
    return Report("table5", "Table 5: upper Lipschitz bounds per layer", columns, rows, card, draw, notes)
