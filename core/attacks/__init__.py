"""The attack engine: the paper's box-constrained L-BFGS and the modern attacks, batched and streaming.

    from core.attacks import make_attack
    attack = make_attack("pgd", model, eps=0.1, steps=40)      # or ATTACKS["pgd"](model, eps=...)
    result = attack.run(x, labels)                              # x (N,C,H,W) in [0,1]; target=None|int|(N,)
    result.summary()        # n, n_correct, success_rate, mean/median_rms_distortion, raw_box_violations, ...
    x_adv = attack.perturb(x, labels)                           # images only, unverified: training loops

    run = attack.start(x, labels, target=3)                     # live, step by step
    for event in run:       # AttackEvent after every iteration: iteration, loss, c, search_round,
        draw(event.x_adv, event.probs, event.rms)               #   x_adv, logits -> probs/pred/l2/linf/rms (lazy)
        if stop_pressed: break
    result = run.result()   # best so far, clipped and re-verified by a fresh forward pass; any time

Attacks (one file each; its docstring gives the method and every default): lbfgs (the paper's, with a
scipy reference path), fgsm, pgd (linf/l2), cw (C&W-L2), deepfool, apgd (APGD, CE or DLR), fab (FAB, minimal norm within eps), square (Square Attack, score-based: no gradients). `model_calls` counts
batched forward passes, a forward+backward counting as one. Every attack returns an `AttackResult` (x, x_adv, x_adv_raw, perturbation, success, labels, target,
pred_before, pred_after, probs_after, l2, linf, rms, iterations, model_calls, time_s, params).
`gaussian_noise_baseline(model, x, labels, rms, seed)` is the paper's random-noise control.
Each attack declares its parameters once, in `PARAMS` (`core.attacks.spec.Param`: type, default, bounds,
label, help, ImageNet preset, budget/seed flags); bad parameters raise `core.errors.InvalidParameterError`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.attacks.apgd import APGD
from core.attacks.autoattack import AutoAttack
from core.attacks.base import (
    Attack,
    AttackEvent,
    AttackResult,
    AttackRun,
    l2_norm,
    linf_norm,
    rms,
)
from core.attacks.cw import CarliniWagnerL2
from core.attacks.deepfool import DeepFool
from core.attacks.fab import FAB
from core.attacks.fgsm import FGSM
from core.attacks.lbfgs import LBFGS
from core.attacks.noise import GaussianNoise, gaussian_noise_baseline
from core.attacks.pgd import PGD
from core.attacks.spec import Param, format_eps, presets
from core.attacks.square import Square
from core.errors import InvalidParameterError

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (LBFGS, FGSM, PGD, CarliniWagnerL2, DeepFool, APGD, FAB, Square, AutoAttack)
}


def attack_class(name: str) -> type[Attack]:
    """The attack registered under `name`; InvalidParameterError listing the names otherwise."""
    if name not in ATTACKS:
        raise InvalidParameterError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}.")
    return ATTACKS[name]


def make_attack(
    name: str,
    model: nn.Module,
    device: torch.device | str | None = None,
    *,
    seed: int | None = None,
    **params: Any,
) -> Attack:
    """An attack by registry name with parameters validated against its spec (unknown names or parameters
    raise InvalidParameterError listing what is accepted). `seed` seeds the attacks that take one (random
    starts) and is ignored by the deterministic ones, so callers need not know which is which."""
    return attack_class(name)(model, device, **with_seed(name, params, seed))


def with_seed(name: str, params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """`params` plus `seed` when the attack takes one: the one place that decides it (what is recorded
    beside a run says the same as what ran)."""
    return {**params, "seed": seed} if seed is not None and is_seeded(name) else dict(params)


def is_budgeted(name: str) -> bool:
    """True for attacks held to an eps budget (FGSM, PGD, APGD), False for minimal-distortion attacks."""
    return any(p.budget for p in attack_class(name).PARAMS)


def is_seeded(name: str) -> bool:
    """True for attacks whose result depends on a seed (random starts)."""
    return any(p.seed for p in attack_class(name).PARAMS)


def attack_presets(name: str, dataset: str, model: str | None = None) -> dict[str, Any]:
    """Every parameter of an attack at its default for the dataset (lighter presets on ImageNet), or for
    the model when it has presets of its own (core.attacks.spec.MODEL_PRESET_REASONS)."""
    return presets(attack_class(name).PARAMS, dataset, model)


__all__ = [
    "APGD",
    "ATTACKS",
    "Attack",
    "AttackEvent",
    "AttackResult",
    "AttackRun",
    "CarliniWagnerL2",
    "DeepFool",
    "FAB",
    "FGSM",
    "GaussianNoise",
    "LBFGS",
    "PGD",
    "Param",
    "Square",
    "attack_class",
    "attack_presets",
    "format_eps",
    "gaussian_noise_baseline",
    "is_budgeted",
    "is_seeded",
    "l2_norm",
    "linf_norm",
    "make_attack",
    "rms",
    "with_seed",
]
