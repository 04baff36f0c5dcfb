"""PGD (Madry et al., 2018): repeated signed (Linf) or normalised (L2) gradient steps on the cross-entropy,
each followed by projection onto the eps-ball around x and onto the box [0, 1]. Same update order as
Foolbox 3 (step, project onto the ball, clip to the box), so without random start the two agree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.attacks import norms
from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, norm_param, seed_param, steps_param


class PGD(Attack):
    """Projected gradient ascent on CE(label) (untargeted) or descent on CE(target) (targeted).

    Parameters: norm 'linf' | 'l2'; eps, the ball radius; steps; step_size, the absolute step (default
    2.5 * eps / steps); random_start, a uniform start in the ball drawn with `seed`. Returns the last
    iterate, like Foolbox and torchattacks. Events show the iterate each gradient was taken at and its CE.

    Args:
        model: a classifier returning logits, on its device.
        norm (str): 'linf' or 'l2' (default 'linf').
        eps (float): the ball radius (default 0.1).
        steps (int): gradient steps (default 40; 10 on ImageNet).
        step_size (float | None): absolute step (default 2.5 * eps / steps).
        random_start (bool): start uniformly in the ball (default True).
        seed (int): seed of the random start (default 0).

    Shape:
        - x: (N, C, H, W) in [0, 1]; labels: (N,) ints; target: None, an int or (N,) ints.
        - result.x_adv: (N, C, H, W) in [0, 1], re-verified by a fresh forward pass.

    Example:
        >>> attack = make_attack("pgd", model, norm="l2", eps=1.5, steps=40, seed=0)
        >>> result = attack.run(x, labels, target=3)
    """

    name = "pgd"
    title, quick, cases = (
        "PGD",
        {"eps": 0.1, "steps": 5},
        (
            {"eps": 0.08, "steps": 6},
            {"norm": "l2", "eps": 0.5, "steps": 6},
            {"eps": 0.08, "steps": 6, "random_start": False},
        ),
    )  # see Attack

    PARAMS = (
        norm_param(),
        eps_param(high_l2=1000.0),
        steps_param(40, imagenet=10, light=20),
        Param(
            "step_size",
            float,
            None,
            "Step size",
            "Absolute size of each step; empty: 2.5 * eps / steps.",
            low=0.0,
            high=1000.0,
            optional=True,
            step=0.001,
        ),
        Param(
            "random_start", bool, True, "Random start", "Start from a uniform random point of the eps-ball."
        ),
        seed_param("random start"),
    )
    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool
    seed: int

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, **params: Any) -> None:
        super().__init__(model, device, **params)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps
            self.params["step_size"] = self.step_size

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        x = run.x
        goal, sign = (run.labels, 1.0) if run.target is None else (run.target, -1.0)

        def loss_fn(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, goal, reduction="none")

        gen = torch.Generator().manual_seed(self.seed)
        z = norms.random_start(x, self.eps, self.norm, gen) if self.random_start else x
        if self.norm == "linf":  # the ball and the box in one clamp: lean steps (benchmarked)
            low, high = (x - self.eps).clamp_(min=0.0), (x + self.eps).clamp_(max=1.0)
        run.best = z
        for _ in range(self.steps):
            loss, grad, logits = run.loss_and_grad(z, loss_fn)
            event = self._event(run, z, logits, loss)
            if self.norm == "linf":
                # Three passes inside the fresh gradient buffer, no allocation: 45% less than z.add(grad.sign()).
                z = torch.add(z, grad.sign_(), alpha=sign * self.step_size, out=grad).clamp_(low, high)
            else:
                z = norms.project(
                    z + (sign * self.step_size) * norms.normalise(grad, "l2"), x, self.eps, "l2"
                )
            run.best = z
            yield event
