"""APGD-CE (Croce & Hein, 2020): step-size-free PGD on the cross-entropy, Linf. Momentum 0.75; each image
halves its own step size at the checkpoints when its loss rose in fewer than rho=75% of the steps since the
last checkpoint, or when neither its step size nor its best loss changed; it then restarts from its best
point. Follows the reference implementation of the AutoAttack authors."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, seed_param


def checkpoints(steps: int) -> list[int]:
    """w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if q <= 1})


class APGD(Attack):
    """Defaults: eps=0.1 (Linf), steps=100, rho=0.75, random start drawn with `seed`. Targeted: descends
    the cross-entropy of the target. Result per image: the latest iterate that was adversarial in the
    loop, else the highest-loss one (re-verified afterwards like every result). Events: every step, with
    the loss (cross-entropy, to climb; for targeted runs, the target's, to descend) and the step sizes."""

    name = "apgd"
    title, quick, cases = "APGD", {"eps": 0.1, "steps": 8}, ({"eps": 0.08, "steps": 8},)  # see Attack

    PARAMS = (
        eps_param(),
        Param("steps", int, 100, "Steps", "Number of gradient steps.", low=1, high=100_000, imagenet=10),
        Param(
            "rho",
            float,
            0.75,
            "Step-halving threshold rho",
            "APGD halves its step when less than this share of the steps since the last checkpoint improved.",
            low=0.0,
            high=1.0,
            step=0.05,
        ),
        seed_param("random start"),
    )
    RECORDED = {"norm": "linf"}
    eps: float
    steps: int
    rho: float
    seed: int

    def _project(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(z, x - self.eps), x + self.eps).clamp(0.0, 1.0)

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        x, n = run.x, len(run.x)
        targeted = run.target is not None
        goal = run.target if targeted else run.labels
        sign = -1.0 if targeted else 1.0

        def ascent_loss(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return sign * F.cross_entropy(logits, goal, reduction="none")

        def adversarial(logits: torch.Tensor) -> torch.Tensor:
            pred = logits.argmax(1)
            return pred == goal if targeted else pred != goal

        gen = torch.Generator().manual_seed(self.seed)
        z = self._project(x + ((torch.rand(x.shape, generator=gen) * 2 - 1) * self.eps).to(x.device), x)
        loss, grad, logits = run.loss_and_grad(z, ascent_loss)
        best_z, best_loss, best_grad, best_logits = z, loss, grad, logits
        found = adversarial(logits)
        run.best = z
        step = torch.full((n,), 2 * self.eps, device=x.device)
        marks = set(checkpoints(self.steps))
        last_mark, increases = 0, torch.zeros(n, device=x.device)
        reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
        best_at_mark = best_loss.clone()
        z_prev = z
        for i in range(self.steps):
            yield self._event(run, z, logits, sign * loss, extra={"step_size": step})
            alpha = 1.0 if i == 0 else 0.75
            s = step.view(-1, 1, 1, 1)
            candidate = self._project(z + s * grad.sign(), x)
            z_new = self._project(z + alpha * (candidate - z) + (1 - alpha) * (z - z_prev), x)
            z_prev = z
            new_loss, grad, logits = run.loss_and_grad(z_new, ascent_loss)
            increases += (new_loss > loss).float()
            z, loss = z_new, new_loss
            hit = adversarial(logits)
            improved = loss > best_loss
            imp = improved.view(-1, 1, 1, 1)
            best_z, best_grad = torch.where(imp, z, best_z), torch.where(imp, grad, best_grad)
            best_logits = torch.where(improved[:, None], logits, best_logits)
            best_loss = torch.where(improved, loss, best_loss)
            run.best = torch.where(
                hit.view(-1, 1, 1, 1), z, torch.where(found.view(-1, 1, 1, 1), run.best, best_z)
            )
            found |= hit
            if i + 1 in marks:
                oscillating = increases < self.rho * (i + 1 - last_mark)
                stalled = ~reduced_last & (best_at_mark >= best_loss)
                halve = oscillating | stalled
                step = torch.where(halve, step / 2, step)
                h = halve.view(-1, 1, 1, 1)
                z = torch.where(h, best_z, z)
                grad = torch.where(h, best_grad, grad)
                logits = torch.where(halve[:, None], best_logits, logits)
                loss = torch.where(halve, best_loss, loss)
                reduced_last, best_at_mark = halve, best_loss.clone()
                last_mark, increases = i + 1, torch.zeros_like(increases)
