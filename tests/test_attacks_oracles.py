"""Our attacks against an independent implementation: Foolbox 3 (a test-only dependency)."""

from __future__ import annotations

import pytest
import torch

from core.attacks import make_attack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

fb = pytest.importorskip("foolbox")


@pytest.fixture(scope="module")
def setting(mnist_test):
    from core.models import load

    model = load("fc100-100-10", "cpu")
    x, y = mnist_test.images[:40], mnist_test.labels[:40]
    keep = model(x).argmax(1) == y
    return model, fb.PyTorchModel(model, bounds=(0, 1)), x[keep][:30], y[keep][:30]


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_random_start_matches_foolbox_linf_pgd(setting, targeted):
    model, fmodel, x, y = setting
    ours = make_attack("pgd", model, eps=0.1, steps=10, step_size=0.01, random_start=False)
    theirs = fb.attacks.LinfPGD(steps=10, abs_stepsize=0.01, random_start=False)
    if targeted:
        target = (y + 1) % 10
        mine = ours.run(x, y, target=target)
        _, clipped, _ = theirs(fmodel, x, fb.criteria.TargetedMisclassification(target), epsilons=0.1)
    else:
        mine = ours.run(x, y)
        _, clipped, _ = theirs(fmodel, x, y, epsilons=0.1)
    assert (mine.x_adv - clipped).abs().max() <= 1e-5


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_random_start_matches_foolbox_l2_pgd(setting, targeted):
    """L2 PGD step for step: the normalised gradient step, the projection onto the L2 ball, the box."""
    model, fmodel, x, y = setting
    ours = make_attack("pgd", model, norm="l2", eps=1.5, steps=10, step_size=0.25, random_start=False)
    theirs = fb.attacks.L2PGD(steps=10, abs_stepsize=0.25, random_start=False)
    if targeted:
        target = (y + 1) % 10
        mine = ours.run(x, y, target=target)
        _, clipped, _ = theirs(fmodel, x, fb.criteria.TargetedMisclassification(target), epsilons=1.5)
    else:
        mine = ours.run(x, y)
        _, clipped, _ = theirs(fmodel, x, y, epsilons=1.5)
    assert (mine.x_adv - clipped).abs().max() <= 1e-5
    assert float(mine.l2.max()) <= 1.5 + 1e-4


def test_cw_mean_l2_within_10_percent_of_foolbox(setting):
    model, fmodel, x, y = setting
    params = {"binary_search_steps": 5, "steps": 100, "initial_const": 0.01, "abort_early": False}
    mine = make_attack("cw", model, lr=0.1, **params).run(x, y)
    theirs = fb.attacks.L2CarliniWagnerAttack(stepsize=0.1, **params)
    _, clipped, success = theirs(fmodel, x, y, epsilons=None)
    both = mine.success & success
    assert both.float().mean() >= 0.9
    l2_theirs = (clipped - x).flatten(1).norm(dim=1)[both].mean()
    assert abs(mine.l2[both].mean() - l2_theirs) <= 0.1 * l2_theirs


def test_deepfool_mean_l2_within_10_percent_of_foolbox(setting):
    model, fmodel, x, y = setting
    mine = make_attack("deepfool", model, steps=50, candidates=10, overshoot=0.02).run(x, y)
    _, clipped, success = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)(
        fmodel, x, y, epsilons=None
    )
    both = mine.success & success
    assert both.float().mean() >= 0.9
    l2_theirs = (clipped - x).flatten(1).norm(dim=1)[both].mean()
    assert abs(mine.l2[both].mean() - l2_theirs) <= 0.1 * l2_theirs


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_square_matches_torchattacks_draw_for_draw(setting, norm, eps):
    """Same seed, same random squares: the same images are fooled by the same adversarial images."""
    torchattacks = pytest.importorskip("torchattacks")
    model, _, x, y = setting
    x, y = x[:20], y[:20]
    mine = make_attack("square", model, norm=norm, eps=eps, queries=150, restarts=2, seed=3).run(x, y)
    theirs = torchattacks.Square(model, norm=norm.capitalize() if norm == "l2" else "Linf", eps=eps,
                                 n_queries=150, n_restarts=2, seed=3)(x, y)  # fmt: skip
    fooled = model(theirs).argmax(1) != y
    assert 0 < int(fooled.sum()) < len(y)  # a comparison that could differ either way
    assert torch.equal(mine.fooled, fooled)
    assert (mine.x_adv[fooled] - theirs[fooled]).abs().max() <= 1e-6
