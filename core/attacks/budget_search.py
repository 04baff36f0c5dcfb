"""The smallest budget at which a budgeted attack flips one image: used by the Validate report (its
minimal-eps searches) and by the Attack Lab's hint when an attack fails at the budget it was given."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.attacks import make_attack
from core.checks import check_float, check_int


def minimal_eps(
    attack: str,
    model: nn.Module,
    x: torch.Tensor,
    label: torch.Tensor,
    *,
    params: dict[str, Any] | None = None,
    start: float = 1 / 255,
    fails_at: float = 0.0,
    bisection_steps: int = 7,
    device: torch.device | str | None = None,
):
    """The smallest Linf budget at which a budgeted attack flips the prediction: double eps from `start`
    until it succeeds (at most up to 1), then bisect between the last failure (at first `fails_at`, a budget
    known to fail) and the first success.
    Returns the AttackResult at the smallest successful eps found (or the failed eps=1 run) and that eps.
    FGSM's success is not monotone in eps, so this is the smallest success the search met, not a proof."""

    params = dict(params or {})
    check_float("start", start, low=0.0, high=1.0, strict_low=True)
    check_int("bisection_steps", bisection_steps, low=0, high=30)

    def attempt(eps: float):
        return make_attack(attack, model, device, eps=eps, **params).run(x, label)

    low, eps = check_float("fails_at", fails_at, low=0.0, high=start), start
    while True:
        result = attempt(eps)
        if bool(result.success[0]) or eps >= 1.0:
            break
        low, eps = eps, min(1.0, 2 * eps)
    if not bool(result.success[0]):
        return result, None
    best, high = result, eps
    for _ in range(bisection_steps):
        mid = (low + high) / 2
        result = attempt(mid)
        if bool(result.success[0]):
            best, high = result, mid
        else:
            low = mid
    return best, high
