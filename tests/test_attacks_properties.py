"""Invariants every attack must keep, on small random models and inputs (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from core.attacks import ATTACKS, is_budgeted, make_attack

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cases(attacks) -> list[tuple[str, dict, float | None, float | None]]:
    """name, parameters, Linf budget, L2 budget: each attack's own `cases`, budgets read from them."""
    out = []
    for name, cls in attacks.items():
        for params in cls.cases:
            eps = params.get("eps") if is_budgeted(name) else None
            l2 = params.get("norm") == "l2"
            out.append((name, params, None if l2 else eps, eps if l2 else None))
    return out


CASES = cases(ATTACKS)


def random_model(seed: int, channels: int, classes: int, conv: bool) -> nn.Module:
    torch.manual_seed(seed)
    if conv:
        net = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, classes)
        )
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(channels * 36, 16), nn.Sigmoid(), nn.Linear(16, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3)  # sharper decision boundaries than the default initialisation
    return net.eval().requires_grad_(False)


DRAWS = {
    "seed": st.integers(0, 10_000),
    "n": st.integers(1, 4),
    "channels": st.sampled_from([1, 3]),
    "classes": st.integers(2, 6),
    "conv": st.booleans(),
    "targeted": st.booleans(),
    "saturate": st.booleans(),
}
# The attacks whose iterates could leave the ball in the most ways (random starts, restarts, square
# windows, boundary steps, members run on subsets): more draws each than the shared sample gives them.
BALL_CASES = cases({name: ATTACKS[name] for name in ("apgd", "fab", "square", "autoattack")})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), **DRAWS)
def test_attack_invariants(case, seed, n, channels, classes, conv, targeted, saturate):
    check_invariants(case, seed, n, channels, classes, conv, targeted, saturate)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(BALL_CASES), **DRAWS)
def test_every_iterate_of_apgd_fab_square_and_autoattack(
    case, seed, n, channels, classes, conv, targeted, saturate
):
    check_invariants(case, seed, n, channels, classes, conv, targeted, saturate)


def check_invariants(case, seed, n, channels, classes, conv, targeted, saturate) -> None:
    name, params, linf_budget, l2_budget = case
    model = random_model(seed, channels, classes, conv)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 6, 6, generator=gen)
    if saturate:  # pixels on the box edges, where clipping mistakes show
        x = (x > 0.5).float()
    labels = model(x).argmax(1)
    attack = make_attack(name, model, **params)
    target = None
    if targeted and attack.supports_targeted:
        target = (labels + 1 + torch.randint(classes - 1, (n,), generator=gen)) % classes
    iterates = []
    result = attack.run(x, labels, target=target, callback=lambda event: iterates.append(event.x_adv.clone()))

    # The raw output and every iterate the model was evaluated at stay in the box, before any clipping,
    # and in the ball: the result always, the iterates unless the attack searches from outside it (FAB).
    for z in (result.x_adv_raw, *iterates):
        assert ((z >= 0) & (z <= 1)).all()
    assert result.summary()["raw_box_violations"] == 0
    in_ball = [result.x_adv, result.x_adv_raw, *(iterates if attack.iterates_in_ball else ())]
    for z in in_ball:
        r = (z - x).flatten(1)
        if linf_budget is not None:
            assert (r.abs().amax(1) <= linf_budget + 1e-6).all()
        if l2_budget is not None:
            assert (r.norm(dim=1) <= l2_budget + 1e-5).all()
    r = (result.x_adv - x).flatten(1)
    assert torch.allclose(result.rms, r.pow(2).mean(1).sqrt())

    fresh = model(result.x_adv).argmax(1)  # success is what a new forward pass says, nothing else
    assert torch.equal(result.pred_after, fresh)
    if target is None:
        assert torch.equal(result.success, fresh != labels)
    else:
        assert torch.equal(result.success, fresh == target)
        assert (result.pred_after[result.success] == target[result.success]).all()
