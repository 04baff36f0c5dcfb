"""Units, random directions and learned directions scored side by side (three or more arms), and the
directions a user can name: `unit:3`, `random:SEED`, `nmf:2`, `kmeans:0`, `dictionary:5`, `mix:3:1,7:-0.5`.

Fairness: learned directions are fitted on one seeded half of the held-out set and every arm (units and
random directions too) is scored on the other half, so no direction is judged on the images it was fitted
to, and all arms are judged on the same images. Each arm is compared with the units by the same two-sided
Mann-Whitney U test as in `coherence.study`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import InvalidParameterError
from core.provenance import versions
from core.units.activations import dead_units
from core.units.coherence import (
    CONFIDENCE,
    SCORES,
    UNIT_DEFINITION,
    describe_scores,
    score_sets,
    study_header,
    study_inputs,
    two_sample_test,
    verdict_withheld,
)
from core.units.directions import combination, parse_combination, random_directions, top_k_sets, unit_vector
from core.units.images import ImageSet
from core.units.learned import METHODS, fit_directions, halves

ARMS = ("units", "random", *METHODS)
DEFAULT_ARMS = ("units", "random", "nmf", "kmeans", "dictionary")


def parse_arms(text: str) -> tuple[str, ...]:
    """'units,random,nmf' -> ('units', 'random', 'nmf'); units always come first (the reference arm)."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise InvalidParameterError(f"Unknown arm {', '.join(unknown)}; choose from {', '.join(ARMS)}.")
    return tuple(dict.fromkeys(["units", *arms]))


def learned_count(n_units: int) -> int:
    """How many directions each learned arm fits: as many as the layer has units, at most 100."""
    return max(2, min(n_units, 100))


def layer_directions(arm: str, acts_fit: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The directions (rows, unit length) of one arm; learned arms are fitted on `acts_fit`."""
    dim = acts_fit.shape[1]
    if arm == "units":
        return np.eye(dim, dtype=np.float32)
    if arm == "random":
        return random_directions(dim, count, seed)
    return fit_directions(arm, acts_fit, min(count, len(acts_fit)), seed)


def resolve_direction(text: str, acts: np.ndarray, seed: int = 0) -> np.ndarray:
    """A named direction of a layer whose held-out activations are `acts`: `unit:3`, `random:SEED`,
    `nmf:2` (learned on the fitting half of the held-out set for `seed`), or `mix:3:1,7:-0.5`."""
    kind, _, arg = text.strip().partition(":")
    dim = acts.shape[1]
    try:
        if kind == "unit":
            return unit_vector(dim, int(arg))
        if kind == "random":
            return random_directions(dim, 1, int(arg))[0]
        if kind == "mix":
            return combination(dim, parse_combination(arg))
        if kind in METHODS:
            index = int(arg)
            fit_rows, _ = halves(len(acts), seed)
            directions = fit_directions(kind, acts[fit_rows], learned_count(dim), seed)
            if not 0 <= index < len(directions):
                raise InvalidParameterError(f"{kind} has directions 0 to {len(directions) - 1}, not {index}.")
            return directions[index]
    except ValueError as exc:
        raise InvalidParameterError(f"Cannot read the direction {text!r}: {exc}") from exc
    raise InvalidParameterError(
        f"Cannot read the direction {text!r}: write unit:I, random:SEED, {':I, '.join(METHODS)}:I or "
        "mix:3:1,7:-0.5."
    )


@dataclass
class ArmStudy:
    """Scores of every arm's directions on the scoring half, and each arm against the units."""

    model: str
    layer: str
    k: int
    seed: int
    judge: str
    data: str
    n_fit: int
    n_score: int
    dead_units: np.ndarray
    scores: dict[str, dict[str, np.ndarray | None]]
    skipped: dict[str, str] = field(default_factory=dict)  # arm -> why it could not be fitted here
    p_value: dict[str, dict[str, float | None]] = field(init=False)

    def __post_init__(self) -> None:
        withheld = verdict_withheld(self.n_score, self.k) is not None
        units = self.scores["units"]
        self.p_value = {
            arm: {
                s: None
                if withheld or units[s] is None or values[s] is None
                else two_sample_test(units[s], values[s])
                for s in SCORES
            }
            for arm, values in self.scores.items()
            if arm != "units"
        }

    def summary(self) -> dict:
        return {
            **study_header(self),
            "n_fit": self.n_fit,
            "n_score": self.n_score,
            "unit": UNIT_DEFINITION,
            "dead_units": self.dead_units.tolist(),
            "arms": {arm: describe_scores(values) for arm, values in self.scores.items()},
            "skipped_arms": self.skipped,
            "p_value": self.p_value,
            "verdict_withheld": verdict_withheld(self.n_score, self.k),
            "protocol": "learned directions fitted on one seeded half of the held-out set; every arm scored "
            "on the other half; each arm vs units by a two-sided Mann-Whitney U test",
            "confidence": CONFIDENCE,
            "versions": versions(),
        }


def study_arms(
    model_name: str,
    layer: str | None = None,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    k: int = 9,
    n_random: int = 100,
    seed: int = 0,
    images: ImageSet | None = None,
    judge: str | None = None,
    device: torch.device | str | None = None,
) -> ArmStudy:
    """Score units, random directions and learned directions of `layer` on the scoring half."""
    layer, images, judge, acts, features = study_inputs(model_name, layer, k, images, judge, device)
    fit_rows, score_rows = halves(len(acts), seed)
    if k > len(score_rows):
        raise InvalidParameterError(f"k = {k} is more than the {len(score_rows)} images of the scoring half.")
    scored = acts[score_rows]
    dead = dead_units(scored)
    live = np.setdiff1d(np.arange(acts.shape[1]), dead)
    if len(live) == 0:
        raise InvalidParameterError(f"Every unit of {model_name} {layer} is constant on the held-out images.")
    labels = None if images.labels is None else images.labels[score_rows]
    scores, skipped = {}, {}
    for arm in parse_arms(",".join(arms)):
        count = max(n_random, len(live)) if arm == "random" else learned_count(len(live))
        try:
            directions = layer_directions(arm, acts[fit_rows], count, seed)
        except InvalidParameterError as exc:  # e.g. NMF on a layer with negative activations
            skipped[arm] = str(exc)
            continue
        if arm == "units":
            directions = directions[live]
        scores[arm] = score_sets(top_k_sets(scored, directions, k), labels, features[score_rows])
    return ArmStudy(
        model=model_name,
        layer=layer,
        k=k,
        seed=seed,
        judge=judge,
        data=images.key,
        n_fit=len(fit_rows),
        n_score=len(score_rows),
        dead_units=dead,
        scores=scores,
        skipped=skipped,
    )
