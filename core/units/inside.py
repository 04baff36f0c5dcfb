"""What an attack moves inside the network: the paper's two findings linked. For each readable layer,
delta = phi(x_adv) - phi(x), and:

- its energy |delta|^2 spread over the units, over a seeded random orthonormal basis (both complete
  orthonormal bases, so each one's energies sum to |delta|^2) and over the learned directions (not a basis:
  the share of delta inside their span);
- the directions the attack pushed most (largest |<delta, v>|), to be shown with their top-k natural images
  and feature visualisations;
- where phi(x_adv) lands: the labels of its nearest held-out neighbours in that layer, beside those of phi(x).

Input: an `AttackResult` (the Attack Lab, the Validate page) or the run.npz written by
`intriguing attack ... --out run.npz` or downloaded from the Attack Lab (`load_run`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import InvalidParameterError
from core.models import get_spec, layer_modules, load
from core.units.activations import layer_activations, units_at
from core.units.arms import layer_directions, learned_count
from core.units.images import ImageSet
from core.units.learned import METHODS, halves
from core.units.rotation import random_rotation

TOP = 5  # directions listed per arm
NEIGHBOURS = 10


@dataclass(frozen=True)
class AttackRecord:
    """The images of an attack run, whatever wrote them: (N, C, H, W) float32 in [0, 1]."""

    model: str
    x: torch.Tensor
    x_adv: torch.Tensor
    labels: np.ndarray  # the class attacked
    pred_after: np.ndarray  # the model's prediction on x_adv


def load_run(path: str | Path) -> AttackRecord:
    """An attack run from `intriguing attack --out run.npz` or the Attack Lab's npz download."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(
            f"{path}: no such run file (write one with `intriguing attack ... --out`)."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidParameterError(f"{path.name} is not a readable .npz run file: {exc}") from exc
    try:
        if "summary" in fields:  # intriguing attack --out
            card = json.loads(str(fields["summary"]))
            x, x_adv = fields["x"], fields["x_adv"]
            labels, pred_after = fields["labels"], fields["pred_after"]
        else:  # the Attack Lab's download: one image and its card
            card = json.loads(str(fields["card"]))
            x, x_adv = fields["x"][None], fields["x_adv"][None]
            labels = np.array([card["label"]])
            pred_after = np.array([card["summary"]["pred_after"]])
        model = str(card["model"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidParameterError(f"{path.name} lacks what a run file holds ({exc}).") from exc
    x, x_adv = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (x, x_adv))
    if x.dim() != 4 or x.shape != x_adv.shape or len(labels) != len(x):
        raise InvalidParameterError(f"{path.name}: x and x_adv must be (N, C, H, W) of the same shape.")
    if not (torch.isfinite(x).all() and torch.isfinite(x_adv).all()):
        raise InvalidParameterError(f"{path.name}: the images hold NaN or infinite values.")
    return AttackRecord(model, x, x_adv, np.asarray(labels, np.int64), np.asarray(pred_after, np.int64))


def energy_shares(delta: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N, m) squared projections <delta, v_j>^2 of each image's delta on each direction (rows of unit
    length). For an orthonormal basis of the whole space each row sums to |delta|^2 (Parseval)."""
    return (delta.astype(np.float64) @ directions.T.astype(np.float64)) ** 2


def span_share(delta: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Share of each image's |delta|^2 that lies in the span of `directions` (N,), in [0, 1]."""
    q, _ = np.linalg.qr(directions.T.astype(np.float64))
    inside = ((delta.astype(np.float64) @ q) ** 2).sum(axis=1)
    total = (delta.astype(np.float64) ** 2).sum(axis=1)
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def _arm(delta: np.ndarray, directions: np.ndarray, names: list[str]) -> dict:
    """The TOP directions with the largest mean |<delta, v>| (with the mean signed push along each), and
    the share of |delta|^2 inside their span (for an orthonormal basis: the sum of their energies)."""
    push = delta.astype(np.float64) @ directions.T.astype(np.float64)  # (N, m)
    order = np.argsort(-np.abs(push).mean(axis=0), kind="stable")[:TOP]
    return {
        f"top{TOP}_share": float(span_share(delta, directions[order]).mean()),
        "pushed": [{"direction": names[j], "push": float(push[:, j].mean())} for j in order],
    }


def _neighbours(acts: np.ndarray, labels: np.ndarray | None, points: np.ndarray) -> list[list[int]] | None:
    """Labels of the NEIGHBOURS held-out images nearest (Euclidean, in this layer) to each point."""
    if labels is None:
        return None
    d2 = (points**2).sum(1)[:, None] - 2 * points @ acts.T + (acts**2).sum(1)[None]
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :NEIGHBOURS]
    return labels[nearest].tolist()


def _share(neighbour_labels: list[list[int]], classes: np.ndarray) -> float:
    """Mean share, over images, of an image's neighbours that carry its given class."""
    return float(np.mean([np.mean(np.array(n) == c) for n, c in zip(neighbour_labels, classes, strict=True)]))


def _layer(name: str, clean: np.ndarray, adv: np.ndarray, held_out: np.ndarray, record, images, seed) -> dict:
    delta = adv - clean
    dim = delta.shape[1]
    total = (delta.astype(np.float64) ** 2).sum(axis=1)
    bases = {"units": np.eye(dim), "random": random_rotation(dim, seed)}
    out: dict = {"layer": name, "units": dim, "delta_norm2": float(total.mean()), "arms": {}}
    for arm, basis in bases.items():
        prefix = "unit" if arm == "units" else f"rotation{seed}"
        energy = energy_shares(delta, basis).sum(axis=1).mean()
        out["arms"][arm] = {
            "energy_sum": float(energy),  # equals delta_norm2: an orthonormal basis (Parseval)
            **_arm(delta, basis, [f"{prefix}:{j}" for j in range(dim)]),
        }
    fit_rows, _ = halves(len(held_out), seed)
    for method in METHODS:
        try:
            learned = layer_directions(method, held_out[fit_rows], learned_count(dim), seed)
        except InvalidParameterError as exc:
            out["arms"][method] = {"skipped": str(exc)}
            continue
        out["arms"][method] = _arm(delta, learned, [f"{method}:{j}" for j in range(len(learned))])
    nearest_adv = _neighbours(held_out, images.labels, adv)
    if nearest_adv is not None:
        out["neighbours"] = {
            "k": NEIGHBOURS,
            "adv_share_of_adv_class": _share(nearest_adv, record.pred_after),
            "adv_share_of_clean_class": _share(nearest_adv, record.labels),
            "clean_share_of_clean_class": _share(_neighbours(held_out, images.labels, clean), record.labels),
        }
    return out


def what_changed(
    record: AttackRecord,
    images: ImageSet,
    layers: list[str] | None = None,
    model: nn.Module | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """For each layer (default: every readable one): how much delta = phi(x_adv) - phi(x) is, how its energy
    spreads over units, random and learned directions, which directions were pushed most, and where
    phi(x_adv) lands among the held-out images. JSON-able."""

    spec = get_spec(record.model)
    layers = layers or list(spec.layers)
    unknown = [name for name in layers if name not in spec.layers]
    if unknown:
        raise InvalidParameterError(f"{record.model} has no readable layer {', '.join(unknown)}.")
    if tuple(record.x.shape[1:]) != spec.input_shape:
        raise InvalidParameterError(f"The run's images are not {record.model} inputs {spec.input_shape}.")
    model = model if model is not None else load(record.model, device)
    modules = layer_modules(model, record.model)
    model_device = next(iter(model.parameters())).device
    out = []
    with torch.no_grad():
        for name in layers:
            clean = units_at(model, modules[name], record.x.to(model_device)).float().cpu().numpy()
            adv = units_at(model, modules[name], record.x_adv.to(model_device)).float().cpu().numpy()
            held_out = layer_activations(record.model, name, images, model=model)
            out.append(_layer(name, clean, adv, held_out, record, images, seed))
    return {
        "model": record.model,
        "n": len(record.x),
        "seed": seed,
        "data": images.key,
        "success_rate": float(np.mean(record.pred_after != record.labels)),
        "layers": out,
    }
