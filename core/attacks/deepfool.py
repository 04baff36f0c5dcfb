"""DeepFool-L2 (Moosavi-Dezfooli et al., 2016): step to the nearest linearised decision boundary among the
most likely other classes, until the prediction flips; then overshoot slightly. Untargeted only."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from core.attacks.base import Attack, AttackEvent, AttackRun, LaggedFlag, l2_norm
from core.attacks.spec import Param


class DeepFool(Attack):
    """Defaults: steps=50, candidates=10 (the true class and the 9 most likely others), overshoot=0.02.
    Like Foolbox: x_adv = clip(x + (1 + overshoot) * sum of steps); each step adds 1e-4 to the distance
    for numerical stability; images stop moving once misclassified. One iteration = one forward pass and
    one backward pass per candidate class, counted as (candidates - 1) model calls. Events: every
    iteration; the loss is each image's distance to the nearest linearised boundary (0 once adversarial).

    Args:
        model: a classifier returning logits, on its device.
        steps (int): iterations (default 50).
        candidates (int): classes considered, the true one included (default 10).
        overshoot (float): how far past the boundary (default 0.02).

    Shape:
        - x: (N, C, H, W) in [0, 1]; labels: (N,) ints; target: None, an int or (N,) ints.
        - result.x_adv: (N, C, H, W) in [0, 1], re-verified by a fresh forward pass.

    Example:
        >>> attack = make_attack("deepfool", model, steps=50)
        >>> result = attack.run(x, labels)
    """

    name = "deepfool"
    title, quick, cases = "DeepFool", {"steps": 10}, ({"steps": 15},)  # see Attack
    supports_targeted = False

    PARAMS = (
        Param(
            "steps",
            int,
            50,
            "Steps",
            "Most linearised steps towards the nearest boundary.",
            low=1,
            high=10_000,
            imagenet=20,
        ),
        Param(
            "candidates",
            int,
            10,
            "Candidate classes",
            "Classes DeepFool considers: the most likely ones.",
            low=2,
            high=10_000,
            imagenet=5,
        ),
        Param(
            "overshoot",
            float,
            0.02,
            "Overshoot",
            "How far each step goes past the linearised boundary.",
            low=0.0,
            high=10.0,
            step=0.01,
        ),
    )
    steps: int
    candidates: int
    overshoot: float

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        x, labels = run.x, run.labels
        k = min(self.candidates, run.num_classes) - 1
        others = run.clean_logits.scatter(1, labels[:, None], -math.inf).topk(k, dim=1).indices
        total = torch.zeros_like(x)
        z = x
        rows = torch.arange(len(x), device=x.device)  # on the device once: a host arange is a copy per step
        moving = LaggedFlag(x.device)  # is any image still correctly classified (set by the previous step)
        for _ in range(self.steps):
            if not moving:
                return
            with torch.enable_grad():
                z_grad = z.detach().requires_grad_(True)
                logits = run.forward(z_grad)
                run.model_calls += k - 1  # one forward + k backward passes, counted as k calls
                diffs = logits.gather(1, others) - logits.gather(1, labels[:, None])
                grads = [
                    torch.autograd.grad(diffs[:, j].sum(), z_grad, retain_graph=j < k - 1)[0]
                    for j in range(k)
                ]
            logits, diffs = logits.detach(), diffs.detach()
            running = logits.argmax(1) == labels
            grads = torch.stack(grads, dim=1).flatten(2)
            distances = diffs.abs() / (grads.norm(dim=2) + 1e-8)
            nearest = distances.argmin(1)
            distance = distances.gather(1, nearest[:, None]).squeeze(1)
            event = self._event(run, z, logits, torch.where(running, distance, torch.zeros_like(distance)))
            moving.set(running.any())  # none running: this step's update below leaves z as it is
            grad = grads[rows, nearest].view_as(x)
            step = (
                (distance + 1e-4).view(-1, 1, 1, 1) / l2_norm(grad).clamp_min(1e-12).view(-1, 1, 1, 1) * grad
            )
            total = total + step * running.view(-1, 1, 1, 1)
            z = torch.where(running.view(-1, 1, 1, 1), (x + (1 + self.overshoot) * total).clamp(0, 1), z)
            run.best = z
            yield event
