"""FAB against torchattacks' FAB (an independent port of the AutoAttack authors' code), and its own invariants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.attacks import make_attack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

torchattacks = pytest.importorskip("torchattacks")
THEIR_NORM = {"linf": "Linf", "l2": "L2"}


@pytest.fixture(scope="module")
def images(mnist_test):
    return mnist_test.images[:100], mnist_test.labels[:100]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_untargeted_fab_equals_torchattacks_image_for_image(fc100, images, norm, eps):
    """One run from the clean image is deterministic: the linearisation, both projections, the mixing,
    the backward step and the eps test all show in the images."""
    x, y = images
    mine = make_attack("fab", fc100, norm=norm, eps=eps, steps=10).run(x, y)
    theirs = torchattacks.FAB(fc100, norm=THEIR_NORM[norm], eps=eps, steps=10, n_classes=10)(x, y)
    assert 0 < mine.fooled.sum() < mine.fooled.numel()  # the comparison covers broken and unbroken images
    torch.testing.assert_close(mine.x_adv, theirs, rtol=0, atol=1e-6)


class _TwoClasses(nn.Module):
    """fc100 restricted to the logits of 3 and 8: a two-class model, where FAB-T's goal (the target) and
    torchattacks' (any other class) are the same."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, [3, 8]]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.5)])
def test_targeted_fab_equals_torchattacks_on_two_classes(fc100, mnist_test, norm, eps):
    keep = (mnist_test.labels == 3) | (mnist_test.labels == 8)
    x, y = mnist_test.images[keep][:80], (mnist_test.labels[keep][:80] == 8).long()
    model = _TwoClasses(fc100)
    mine = make_attack("fab", model, norm=norm, eps=eps, steps=10).run(x, y, target=1 - y)
    # multi_targeted with 2 classes: the one target is the second most likely class, i.e. the other one.
    theirs = torchattacks.FAB(
        model, norm=THEIR_NORM[norm], eps=eps, steps=10, multi_targeted=True, n_classes=2
    )(x, y)
    assert 0 < mine.fooled.sum() < mine.fooled.numel()
    torch.testing.assert_close(mine.x_adv, theirs, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_fab_t_robust_accuracy_within_half_a_point_of_torchattacks(fc100, mnist_test):
    """With 10 classes ours counts a hit only at the target (the lab's targeted contract), torchattacks at
    any other class: the trajectories part only where a step lands in a third class."""
    x, y = mnist_test.images[:500], mnist_test.labels[:500]
    logits = fc100(x)
    second = logits.sort(1, descending=True).indices[:, 1]
    target = torch.where(logits.argmax(1) == y, second, (y + 1) % 10)  # misclassified: any other label
    mine = make_attack("fab", fc100, eps=0.05, steps=10).run(x, y, target=target)
    theirs = torchattacks.FAB(fc100, eps=0.05, steps=10, multi_targeted=True, n_classes=2)(x, y)
    assert (mine.pred_after[mine.success] == target[mine.success]).all()
    their_acc = (fc100(theirs).argmax(1) == y).float().mean().item()
    my_acc = (mine.pred_after == y).float().mean().item()
    assert abs(my_acc - their_acc) <= 0.005


def test_a_larger_budget_keeps_every_image_a_smaller_one_broke(fc100, images):
    """One run's search does not depend on eps (only what it keeps does), so the images broken within 0.05
    are broken within 0.1, at the same point."""
    x, y = images
    small = make_attack("fab", fc100, eps=0.05, steps=10).run(x, y)
    large = make_attack("fab", fc100, eps=0.1, steps=10).run(x, y)
    assert small.fooled.sum() < large.fooled.sum()
    assert (large.fooled[small.fooled]).all()
    assert torch.equal(small.x_adv[small.fooled], large.x_adv[small.fooled])
    assert (large.linf[large.fooled] <= 0.1 + 1e-6).all()
