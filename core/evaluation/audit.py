"""Audit an evaluation: run one attack on a model (or a model behind an input-transformation defence) over
the images an evaluation protocol chooses, with every indicator of attack failure (core.evaluation.indicators), and
say whether its robustness number can be trusted. `intriguing audit` prints it; the JSON shape is
{"model", "defence", "verdict", "indicators": [{"name", "fired", "rate", "meaning", "fix"}, ...]}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.attacks import AttackResult, attack_presets, make_attack, with_seed
from core.checks import check_int
from core.defences.transforms import ADVERSARIAL_SUFFIXES, DefendedModel, parse_transform
from core.errors import InvalidParameterError
from core.evaluation.indicators import IndicatorResult, fired, run_checked, verdict
from core.evaluation.protocol import Protocol, Selection
from core.models import get_spec, list_models, load


@dataclass
class Audit:
    model: str
    defence: str | None
    gradient: str
    attack: str
    params: dict[str, Any]
    selection: Selection
    result: AttackResult
    checks: list[IndicatorResult]

    @property
    def verdict(self) -> str:
        return verdict(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "defence": self.defence,
            "verdict": self.verdict,
            "indicators": [c.to_dict() for c in self.checks],
        }

    def describe(self) -> str:
        """The verdict with its reasons, for people."""
        target = self.model + (f" behind {self.defence} ({self.gradient} gradient)" if self.defence else "")
        rate = self.result.summary()["success_rate"]
        head = (
            f"{self.attack} on {target}, {self.selection.protocol.describe()}: success {rate:.1%}. "
            f"Verdict: {self.verdict}."
        )
        return head + ("" if fired(self.checks) else " No indicator of attack failure fired.")


def plain_twin(model_name: str) -> str | None:
    """The plainly trained model of the same architecture as an adversarially trained one, if present."""
    names = list_models(include_unavailable=False)
    for suffix in ADVERSARIAL_SUFFIXES:
        twin = model_name.removesuffix(suffix)
        if model_name.endswith(suffix) and twin in names:
            return twin
    return None


def audit(
    model_name: str,
    *,
    defence: str | None = None,
    gradient: str = "naive",
    attack: str = "pgd",
    params: Mapping[str, Any] | None = None,
    n: int = 50,
    seed: int = 0,
    square_queries: int = 1000,
    device: torch.device | str | None = None,
    load_model: Callable[[str], nn.Module] | None = None,
) -> Audit:
    """Attack the first n correctly classified MNIST test images of the (defended) model and compute every
    indicator. The transfer check uses examples made on the undefended model (with a defence) or on the
    plain twin (for an adversarially trained model)."""
    if get_spec(model_name).dataset != "mnist":
        raise InvalidParameterError(
            f"{model_name} is an ImageNet model; the audit runs on MNIST test images."
        )
    n = check_int("n", n, low=1, high=10_000)
    load_model = load_model or (lambda name: load(name, device))
    bare = load_model(model_name)
    model = DefendedModel(bare, parse_transform(defence), gradient) if defence else bare
    params = {**attack_presets(attack, "mnist"), **(params or {})}
    params = with_seed(attack, params, seed)
    make_attack(attack, model, device, **params)  # refuse bad parameters before any work
    selection = Protocol(n=n, seed=seed).select(model, device)
    x, labels = selection.images, selection.labels
    twin_name = None if defence else plain_twin(model_name)
    twin = bare if defence else (load_model(twin_name) if twin_name else None)
    twin_x_adv = None
    if twin is not None and "eps" in params:
        twin_x_adv = make_attack(attack, twin, device, **params).perturb(x, labels).cpu()
    result, checks = run_checked(
        model, attack, params, x, labels, device=device, twin_x_adv=twin_x_adv, square_queries=square_queries
    )
    return Audit(model_name, defence, gradient, attack, params, selection, result, checks)
