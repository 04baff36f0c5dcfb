"""Table 2 on ImageNet, in miniature: L-BFGS examples made for each of the two trained ImageNet networks
(mobilenet_v2, efficientnet_lite0) on the sample photos the lab ships, fed to both, with Gaussian-noise rows.

The photos carry no ImageNet labels, so a cell is the share of the row's images that change the column
network's own prediction on the clean photo (on the network the examples were made for this is 100% of its
successes, as on the paper's diagonal). With at most four photos this is a demonstration, not a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.errors import InvalidParameterError
from core.evaluation.validate import attack_settings
from core.experiments.adversarial import lbfgs_examples, noise_error, notify
from core.experiments.writer import Column, Report, base_card, heatmap
from core.models import imagenet, load

NAME = "table2-imagenet"
MODELS = imagenet.TRAINED_OFFLINE
NOISE_MULTIPLES = (1.0, 10.0)  # noise stddev as multiples of the largest average adversarial distortion
NOISE_DRAWS = 8  # noise draws per photo
DEMONSTRATION = "a demonstration, not a measurement"


@torch.no_grad()
def _predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images.to(next(model.parameters()).device)).argmax(1).cpu()


def _changed(model: nn.Module, clean: torch.Tensor, changed: torch.Tensor) -> float:
    """Share of the images whose prediction by `model` differs from its prediction on the clean ones."""
    if not len(clean):
        return float("nan")
    return float((_predictions(model, changed) != _predictions(model, clean)).float().mean())


def photos(n: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """The first n sample photos, cropped as the default network's weights expect (the same pixels go to
    both networks, as in the Attack Lab)."""
    if not 1 <= n <= len(SAMPLE_PHOTOS):
        raise InvalidParameterError(f"table2-imagenet takes 1 to {len(SAMPLE_PHOTOS)} photos, got {n}.")
    names = SAMPLE_PHOTOS[:n]
    return names, torch.cat([imagenet.preprocess(sample_photo(p), imagenet.DEFAULT_MODEL) for p in names])


def run(
    n: int = len(SAMPLE_PHOTOS),
    seed: int = 0,
    device=None,
    progress: bool | Callable[[float, str], None] = True,
) -> Report:
    """Both directions of transfer between the two ImageNet networks on n photos, and two noise rows."""
    start = time.perf_counter()
    names, x = photos(n)
    models = {name: load(name, device) for name in MODELS}
    params = attack_settings("lbfgs", "imagenet")
    rows: list[dict] = []

    def add_row(key: str, label: str, errors: list[float], distortion: float, count: int) -> None:
        rows.append(
            {"source": label, "key": key, "distortion": distortion, "examples": count}
            | dict(zip(MODELS, errors, strict=True))
        )

    torch.manual_seed(seed)
    examples = {}
    for i, (src, model) in enumerate(models.items()):
        notify(progress, i / (len(models) + 1), f"L-BFGS on {src}")
        own = _predictions(model, x)
        examples[src] = lbfgs_examples(src, model, x, own, params, progress is True, "imagenet")
        ex = examples[src]
        add_row(src, src, [_changed(m, ex.x, ex.x_adv) for m in models.values()], ex.mean_rms, len(ex.x))
    notify(progress, len(models) / (len(models) + 1), "Gaussian noise")
    scale = max((ex.mean_rms for ex in examples.values() if len(ex.x)), default=0.0)
    repeated = x.repeat(NOISE_DRAWS, 1, 1, 1)
    for k in NOISE_MULTIPLES:
        std = k * scale
        errs = [noise_error(m, repeated, _predictions(m, repeated), std, seed) for m in models.values()]
        add_row(f"gaussian x{k:g}", f"Gaussian noise, stddev {std:.2g} ({k:g}x)", errs, std, len(repeated))

    matrix = [[r[m] for m in MODELS] for r in rows]

    def draw(path):
        heatmap(path, matrix, [r["source"] for r in rows], list(MODELS), f"ImageNet Table 2 on {n} photos")

    card = base_card(
        NAME,
        n,
        seed,
        n_unit="photos",
        models=list(MODELS),
        photos=list(names),
        preprocessing=f"{imagenet.DEFAULT_MODEL}'s resize and centre crop, 224 px",
        attack={"name": "lbfgs", "untargeted": True, "params": params, "full_search": False},
        noise={"multiples": list(NOISE_MULTIPLES), "draws_per_photo": NOISE_DRAWS, "stddev_unit": scale},
        columns=list(MODELS),
        matrix=matrix,
        paper_matrix=None,
        row_labels=[r["source"] for r in rows],
        time_s=time.perf_counter() - start,
    )
    columns = [Column("source", "examples made for", "text")]
    columns += [Column(m, m, "pct") for m in MODELS]
    columns += [Column("distortion", "av. distortion (RMS)", "num"), Column("examples", "images", "text")]
    notes = [
        f"n = {n} photos ({', '.join(names)}): {DEMONSTRATION}.",
        "No ImageNet labels: a cell is the share of the row's images that change the column network's own "
        "prediction on the clean photo. L-BFGS: untargeted towards the most likely other class, "
        f"{params['rounds']} values of c, {params['max_iter']} iterations (the report's ImageNet setting).",
        f"Noise rows: {NOISE_DRAWS} draws per photo of N(0, stddev^2), clipped; stddev 1x and 10x the larger "
        "average adversarial distortion (RMS).",
    ]
    title = "Table 2 on ImageNet: transfer between mobilenet_v2 and efficientnet_lite0 (prediction changed)"
    return Report(NAME, title, columns, rows, card, draw, notes)
