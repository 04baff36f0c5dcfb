"""A dummy attack for tests/test_attacks_extend.py: what a new attack needs is this one file (and one
registry line). It adds uniform noise in the eps-ball, clipped to the box; it fools nothing on purpose."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, seed_param


class Jitter(Attack):
    name = "jitter"
    title, quick, cases = "Jitter (test only)", {"eps": 0.05}, ({"eps": 0.05, "tries": 2},)
    supports_targeted = False
    PARAMS = (
        eps_param(),
        Param("tries", int, 1, "Tries", "Noise draws; the last one is returned.", low=1, high=100),
        seed_param("noise"),
    )
    eps: float
    tries: int
    seed: int

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        gen = torch.Generator(device=run.x.device).manual_seed(self.seed)
        for _ in range(self.tries):
            noise = (torch.rand(run.x.shape, generator=gen, device=run.x.device) * 2 - 1) * self.eps
            x_adv = (run.x + noise).clamp(0.0, 1.0)
            logits = run.forward(x_adv)
            run.best = x_adv
            yield self._event(run, x_adv, logits, F.cross_entropy(logits, run.labels))
