"""FGSM (Goodfellow et al., 2015): one step of size eps along the sign of the loss gradient (Linf)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import eps_param


class FGSM(Attack):
    """x_adv = clip(x + eps * sign(grad CE(x, label))); targeted: clip(x - eps * sign(grad CE(x, target))).
    One model call. The single event shows the clean point and the cross-entropy the step climbs."""

    name = "fgsm"
    title, quick, cases = "FGSM", {"eps": 0.1}, ({"eps": 0.05},)  # see Attack

    PARAMS = (eps_param(),)
    eps: float

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        goal, sign = (run.labels, 1.0) if run.target is None else (run.target, -1.0)
        loss, grad, logits = run.loss_and_grad(
            run.x, lambda out, _: F.cross_entropy(out, goal, reduction="none")
        )
        # In the gradient's own buffer: three passes and no allocation.
        run.best = torch.add(run.x, grad.sign_(), alpha=sign * self.eps, out=grad).clamp_(0.0, 1.0)
        yield self._event(run, run.x, logits, loss)
