"""APGD (Croce & Hein, 2020): step-size-free PGD on the cross-entropy (APGD-CE) or the difference of logits
ratio (DLR; targeted: APGD-T), Linf or L2. Momentum 0.75; each image halves its own step size at the
checkpoints when its loss rose in fewer than rho=75% of the steps since the last checkpoint, or when neither
its step size nor its best loss changed; it then restarts from its best point. Follows the reference
implementation of the AutoAttack authors; restarts run again from fresh random starts on the images not yet
adversarial."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.attacks import norms
from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, norm_param, seed_param


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio, to maximise, invariant to shifting and scaling the logits.
    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted: -(z_y - z_t) / (z_pi1 -
    (z_pi3 + z_pi4) / 2), pi sorting the logits in decreasing order (Croce & Hein 2020, eqs. 5 and 7).
    With fewer than 3 (4) classes the last logit stands in for the missing ranks."""
    ranked = logits.sort(dim=1, descending=True).values
    last = logits.shape[1] - 1
    ranked = ranked[:, [min(k, last) for k in range(4)]]
    rows = torch.arange(len(labels), device=logits.device)
    own = logits[rows, labels]
    if target is not None:
        return -(own - logits[rows, target]) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)
    others = logits.clone()
    others[rows, labels] = -math.inf
    return -(own - others.amax(1)) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if q <= 1})


class APGD(Attack):
    """APGD in Linf or L2 with the CE or DLR loss (Croce & Hein, 2020).

    Untargeted, it climbs the loss of the true label; targeted, it descends the target's cross-entropy
    (loss "ce") or climbs the targeted DLR (loss "dlr", AutoAttack's APGD-T). Result per image: the latest
    iterate that was adversarial in the loop, else the highest-loss one (re-verified afterwards like every
    result). Events: every step, with the loss and the step sizes.

    Args:
        model: classifier taking [0, 1] images, returning logits.
        norm: "linf" | "l2". eps: the ball's radius (default 0.1).
        steps: gradient steps per restart (100). rho: step-halving threshold (0.75).
        loss: "ce" | "dlr". restarts: random starts, each on the images not yet adversarial (1).
        seed: draws the random starts.

    Shape:
        x: (N, C, H, W) in [0, 1]; labels, target: (N,) or an int. Result x_adv: (N, C, H, W).

    Example:
        >>> attack = APGD(model, norm="linf", eps=0.3, loss="dlr")
        >>> result = attack.run(x, labels, target=3)
    """

    name = "apgd"
    title, quick, cases = (  # see Attack
        "APGD",
        {"eps": 0.1, "steps": 8},
        (
            {"eps": 0.08, "steps": 8},
            {"norm": "l2", "eps": 0.5, "steps": 8, "loss": "dlr"},
            {"eps": 0.08, "steps": 6, "loss": "dlr", "restarts": 2},
        ),
    )

    PARAMS = (
        norm_param(),
        eps_param(high_l2=1000.0),
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
        Param(
            "loss",
            str,
            "ce",
            "Loss",
            "Cross-entropy or the difference of logits ratio.",
            choices=("ce", "dlr"),
        ),
        Param(
            "restarts",
            int,
            1,
            "Restarts",
            "Random starts, each on the images still unbroken.",
            low=1,
            high=100,
        ),
        seed_param("random start"),
    )
    norm: str
    eps: float
    steps: int
    rho: float
    loss: str
    restarts: int
    seed: int

    def _loss_fn(self, run: AttackRun):
        """The per-image loss APGD climbs, and the test of an adversarial point."""
        targeted = run.target is not None
        goal = run.target if targeted else run.labels

        def ascent(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            if self.loss == "dlr":
                return dlr_loss(logits, run.labels, run.target)
            ce = F.cross_entropy(logits, goal, reduction="none")
            return -ce if targeted else ce

        def adversarial(logits: torch.Tensor) -> torch.Tensor:
            pred = logits.argmax(1)
            return pred == goal if targeted else pred != goal

        return ascent, adversarial

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        gen = torch.Generator().manual_seed(self.seed)
        found = torch.zeros(len(run.x), dtype=torch.bool, device=run.x.device)
        run.best = run.x
        for restart in range(self.restarts):
            if restart and found.all():
                return
            yield from self._one_start(run, gen, found, restart)

    def _one_start(self, run: AttackRun, gen: torch.Generator, found: torch.Tensor, restart: int):
        """One APGD run from a random start; images already adversarial keep their point."""
        ascent_loss, adversarial = self._loss_fn(run)
        x, n = run.x, len(run.x)

        def project(z: torch.Tensor) -> torch.Tensor:
            return norms.project(z, x, self.eps, self.norm)

        z = norms.random_start(x, self.eps, self.norm, gen)
        loss, grad, logits = run.loss_and_grad(z, ascent_loss)
        best_z, best_loss, best_grad, best_logits = z, loss, grad, logits
        start_best = run.best
        step = torch.full((n,), 2 * self.eps, device=x.device)
        marks = set(checkpoints(self.steps))
        last_mark, increases = 0, torch.zeros(n, device=x.device)
        reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
        best_at_mark = best_loss.clone()
        z_prev, hit_here = z, adversarial(logits) & ~found
        run.best = z if restart == 0 else torch.where(hit_here.view(-1, 1, 1, 1), z, start_best)
        for i in range(self.steps):
            yield self._event(run, z, logits, loss, extra={"step_size": step, "restart": restart})
            alpha = 1.0 if i == 0 else 0.75
            candidate = project(z + norms.per_image(step, x) * norms.normalise(grad, self.norm))
            z_new = project(z + alpha * (candidate - z) + (1 - alpha) * (z - z_prev))
            z_prev = z
            new_loss, grad, logits = run.loss_and_grad(z_new, ascent_loss)
            increases += (new_loss > loss).float()
            z, loss = z_new, new_loss
            hit = adversarial(logits) & ~found
            improved = loss > best_loss
            imp = improved.view(-1, 1, 1, 1)
            best_z, best_grad = torch.where(imp, z, best_z), torch.where(imp, grad, best_grad)
            best_logits = torch.where(improved[:, None], logits, best_logits)
            best_loss = torch.where(improved, loss, best_loss)
            fallback = best_z if restart == 0 else start_best  # a later restart keeps a failed point
            here = torch.where(
                hit.view(-1, 1, 1, 1), z, torch.where(hit_here.view(-1, 1, 1, 1), run.best, fallback)
            )
            run.best = torch.where(found.view(-1, 1, 1, 1), start_best, here)
            hit_here |= hit
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
        found |= hit_here
