"""How "semantic" is a direction's top-k set? Scores per direction, and units versus random directions.

Three scores of a direction's top-k held-out images:
- label purity: the share of the most common label (1 = all the same class; 1/k at worst);
- label entropy: the entropy of the label histogram in bits (0 = one class; lower is more coherent);
- judge cosine: the mean pairwise cosine similarity of the k images in the feature space of a *different*
  model (the judge), after centring the judge's features on the held-out mean. Label-free, so it works for
  unlabelled photo folders too.

The claim under test (Szegedy et al., Section 3): the top-k sets of natural units are no more coherent than
those of random directions. `study` scores all live units of a layer (dead units, constant on every held-out
image, have no top-k set) and at least as many random directions, and compares the two distributions (means
with t confidence intervals, two-sided Mann-Whitney U test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core import stats
from core.attacks import Param
from core.errors import CheckpointError, InvalidParameterError, WeightsMissingError
from core.models import get_spec, imagenet, model_status
from core.provenance import versions
from core.units.activations import PIXELS, dead_units, default_layer, layer_activations
from core.units.directions import random_directions, top_k_sets
from core.units.images import ImageSet, held_out_images

SCORES = ("purity", "entropy", "cosine")
CONFIDENCE = 0.95
IMAGENET_JUDGE_LAYER = "pool"  # the penultimate, globally pooled features (1280-d in both ImageNet networks)
MIN_IMAGES_PER_K = 20  # held-out images per top-k slot below which no verdict is given
# The images shown and scored per direction in the Direction Lab: pairs at least (the cosine score), at most
# two rows' worth; 4 on photo sets, which are small (80 sample crops: a verdict needs 20 images per slot).
TOP_K = Param("k", int, 8, "k", "Held-out images shown and scored per direction.", low=2, high=16, imagenet=4)
UNIT_DEFINITION = "fully connected: one neuron; convolutional: one channel, averaged over space"


def label_purity(labels: np.ndarray) -> float:
    """Share of the most common label among `labels`."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(counts.max() / counts.sum())


def label_entropy(labels: np.ndarray) -> float:
    """Entropy of the label histogram in bits."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() + 0.0)


def mean_pairwise_cosine(features: np.ndarray) -> float:
    """Mean cosine similarity over the k(k-1)/2 distinct pairs of rows (zero rows count as similarity 0)."""
    if len(features) < 2:
        raise InvalidParameterError("The cosine score needs at least two images (k >= 2).")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    gram = unit @ unit.T
    k = len(features)
    return float((gram.sum() - np.trace(gram)) / (k * (k - 1)))


def score_sets(top_sets: np.ndarray, labels: np.ndarray | None, judge: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of many top-k sets (rows of indices): purity and entropy (None without labels) and cosine.
    Each set's rows are centred on the held-out mean as they are read: no centred copy of all N rows."""
    mean = judge.mean(axis=0, keepdims=True)
    scores: dict[str, np.ndarray | None] = {
        "cosine": np.array([mean_pairwise_cosine(judge[s] - mean) for s in top_sets]),
        "purity": None,
        "entropy": None,
    }
    if labels is not None:
        scores["purity"] = np.array([label_purity(labels[s]) for s in top_sets])
        scores["entropy"] = np.array([label_entropy(labels[s]) for s in top_sets])
    return scores


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean with a two-sided t confidence interval, plus spread and size."""
    values = np.asarray(values, dtype=np.float64)
    n, mean = len(values), float(values.mean())
    sem = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(stats.t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sem) if n > 1 and sem > 0 else 0.0
    return {
        "mean": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "std": float(values.std(ddof=1)) if n > 1 else 0.0,
        "n": n,
    }


def describe_scores(scores: dict[str, np.ndarray | None]) -> dict:
    """JSON-able mean, interval and spread of each score of one arm (None where there are no labels)."""
    out: dict[str, object] = {"n": len(scores["cosine"])}
    for name in SCORES:
        if scores[name] is None:  # no labels: only the label-free score
            out.update({f"{name}_mean": None, f"{name}_ci": None, f"{name}_std": None})
            continue
        s = summarize(scores[name])
        out.update(
            {f"{name}_mean": s["mean"], f"{name}_ci": [s["ci_low"], s["ci_high"]], f"{name}_std": s["std"]}
        )
    return out


def verdict_withheld(n_images: int, k: int) -> str | None:
    """Why no verdict is given for n held-out images and top-k sets, or None when there are enough.

    Below MIN_IMAGES_PER_K * k images, the top-k sets of a hundred directions are drawn from so few images
    that they share most of them: their scores are not independent samples, and a p-value would claim far
    more evidence than there is. 20 sets' worth keeps most top-k sets of different directions distinct."""
    if n_images >= MIN_IMAGES_PER_K * k:
        return None
    return (
        f"No verdict and no p-value: {n_images} held-out images are fewer than {MIN_IMAGES_PER_K} x k = "
        f"{MIN_IMAGES_PER_K * k}, so the top-{k} sets of different directions would mostly share the same "
        "images and their scores would not be independent. Add images or lower k."
    )


def two_sample_test(natural: np.ndarray, random: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value: do the two score distributions differ in location?"""
    if np.ptp(np.concatenate([natural, random])) == 0:
        return 1.0  # all scores identical: no evidence of any difference
    return stats.mann_whitney_u(natural, random)


def judge_choices(model_name: str) -> list[str]:
    """Judges worth offering for a model, its default first."""
    if get_spec(model_name).dataset != "mnist":
        return list(dict.fromkeys([default_judge(model_name), PIXELS]))
    return list(dict.fromkeys([default_judge(model_name), "cnn:fc1", "fc100-100-10:hidden2", PIXELS]))


def default_judge(model_name: str) -> str:
    """The feature space that scores a model's top-k sets: always a different model.

    MLPs and other MNIST models are judged by the CNN's hidden layer (cnn:fc1), the CNN by the MLP's last
    hidden layer (fc100-100-10:hidden2); ImageNet models by the penultimate (pooled) features of the other
    trained ImageNet network (mobilenet_v2 <-> efficientnet_lite0), or by the downsampled pixels, a crude
    judge, when neither other network can be loaded.
    """

    if get_spec(model_name).dataset != "mnist":
        others = [m for m in imagenet.TRAINED_OFFLINE if m != model_name and model_status(m) != "missing"]
        return f"{others[0]}:{IMAGENET_JUDGE_LAYER}" if others else PIXELS
    return "fc100-100-10:hidden2" if model_name == "cnn" else "cnn:fc1"


def judge_features(
    judge: str, images: ImageSet, device=None, progress: Callable[[float], None] | None = None
) -> np.ndarray:
    """Features of the judge ("MODEL:LAYER" or "pixels") for every held-out image."""
    if judge == PIXELS:
        return layer_activations(PIXELS, PIXELS, images)
    model_name, sep, layer = judge.partition(":")
    if not sep or not layer:
        raise InvalidParameterError(f"A judge is 'MODEL:LAYER' or 'pixels', got {judge!r}.")
    try:
        return layer_activations(model_name, layer, images, device=device, progress=progress)
    except (CheckpointError, WeightsMissingError) as exc:
        raise CheckpointError(f"The judge {judge} is unavailable: {exc} Or choose another judge.") from exc


def study_header(study: Any) -> dict:
    """What every study's summary opens with: which model, layer, k, seed, judge and held-out data."""
    return {name: getattr(study, name) for name in ("model", "layer", "k", "seed", "judge", "data")}


@dataclass
class UnitStudy:
    """Scores of every unit of a layer and of random directions, with the comparison between them."""

    model: str
    layer: str
    k: int
    seed: int
    judge: str
    data: str
    n_images: int
    units: np.ndarray  # the scored units (row j of `natural` is unit units[j])
    dead_units: np.ndarray  # units constant on every held-out image: no top-k set, so not scored
    natural: dict[str, np.ndarray | None]
    random: dict[str, np.ndarray | None]
    p_value: dict[str, float | None] = field(init=False)

    def __post_init__(self) -> None:
        withheld = verdict_withheld(self.n_images, self.k) is not None
        self.p_value = {
            s: None
            if withheld or self.natural[s] is None
            else two_sample_test(self.natural[s], self.random[s])
            for s in SCORES
        }

    def summary(self) -> dict:
        """A JSON-able record of what was run and what it showed."""
        return {
            **study_header(self),
            "n_images": self.n_images,
            "unit": UNIT_DEFINITION,
            "n_units": len(self.units) + len(self.dead_units),
            "dead_units": self.dead_units.tolist(),
            "natural": describe_scores(self.natural),
            "random": describe_scores(self.random),
            "p_value": self.p_value,
            "verdict_withheld": verdict_withheld(self.n_images, self.k),
            "test": "two-sided Mann-Whitney U, natural units vs random directions",
            "confidence": CONFIDENCE,
            "versions": versions(),
        }


def study_inputs(
    model_name: str,
    layer: str | None,
    k: int,
    images: ImageSet | None,
    judge: str | None,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[str, ImageSet, str, np.ndarray, np.ndarray]:
    """What every study of a layer starts from (units vs random, the arms, the rotation sweep): k checked,
    the defaults filled in, the layer's activations on the held-out images and the judge's features of them.
    Returns (layer, images, judge, activations, judge features)."""
    if k < 2:
        raise InvalidParameterError(f"k must be at least 2 (the cosine score compares pairs), got {k}.")
    layer = layer or default_layer(model_name)
    images = images or held_out_images(model_name)
    judge = judge or default_judge(model_name)
    acts = layer_activations(model_name, layer, images, device=device, progress=progress)
    return layer, images, judge, acts, judge_features(judge, images, device=device)


def study(
    model_name: str,
    layer: str | None = None,
    k: int = 9,
    n_random: int = 100,
    seed: int = 0,
    images: ImageSet | None = None,
    judge: str | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
) -> UnitStudy:
    """Score every live unit of `layer` and max(n_random, live units) random directions (seeded)."""
    layer, images, judge, acts, features = study_inputs(model_name, layer, k, images, judge, device, progress)
    n_units = acts.shape[1]
    dead = dead_units(acts)
    live = np.setdiff1d(np.arange(n_units), dead)
    if len(live) == 0:
        raise InvalidParameterError(f"Every unit of {model_name} {layer} is constant on the held-out images.")
    natural_sets = top_k_sets(acts, np.eye(n_units, dtype=np.float32)[live], k)
    random_sets = top_k_sets(acts, random_directions(n_units, max(n_random, len(live)), seed), k)
    return UnitStudy(
        model=model_name,
        layer=layer,
        k=k,
        seed=seed,
        judge=judge,
        data=images.key,
        n_images=len(images),
        units=live,
        dead_units=dead,
        natural=score_sets(natural_sets, images.labels, features),
        random=score_sets(random_sets, images.labels, features),
    )


HIGHER_IS_MORE_COHERENT = {"purity": True, "entropy": False, "cosine": True}
SCORE_NAMES = {"purity": "label purity", "entropy": "label entropy (bits)", "cosine": "judge cosine"}


def verdict(summary: dict, score: str, alpha: float = 0.05) -> str:
    """One sentence: the two means with intervals, the p-value, and what they say about the claim."""
    if summary.get("verdict_withheld"):
        return f"{SCORE_NAMES[score]}: {summary['verdict_withheld']}"
    return comparison(score, summary["natural"], summary["random"], summary["p_value"][score], alpha=alpha)


def comparison(
    score: str, units: dict, other: dict, p: float | None, other_name: str = "random", alpha: float = 0.05
) -> str:
    """Units against another arm on one score (`units`, `other` as from `describe_scores`)."""
    if p is None:
        return f"{SCORE_NAMES[score]}: not available (the held-out set has no labels)."
    means = (
        f"{SCORE_NAMES[score]}: units {units[f'{score}_mean']:.3f} "
        f"[{units[f'{score}_ci'][0]:.3f}, {units[f'{score}_ci'][1]:.3f}] vs {other_name} "
        f"{other[f'{score}_mean']:.3f} [{other[f'{score}_ci'][0]:.3f}, {other[f'{score}_ci'][1]:.3f}], p = {p:.2g}"
    )
    if p >= alpha:
        return f"{means}: no significant difference, consistent with the paper's claim."
    units_better = (units[f"{score}_mean"] > other[f"{score}_mean"]) == HIGHER_IS_MORE_COHERENT[score]
    if units_better:
        return f"{means}: units are significantly more coherent than {other_name} directions, against the paper's claim."
    return f"{means}: {other_name} directions are significantly more coherent than units (the claim holds, and more)."
