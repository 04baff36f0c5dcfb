"""Square Attack (Andriushchenko et al., 2020): a score-based black-box attack. It never takes a gradient:
each query changes the current best image inside one random square window (Linf: the window jumps to a
vertex of the eps-ball, one random sign per channel; L2: mass moves between two windows, the radius stays
eps) and keeps the change when the margin loss falls. The window shrinks on a fixed schedule.

Follows the AutoAttack authors' reference as torchattacks 3.5 ports it, draw for draw: with the same seed
both make the same random choices, which is how tests/test_attacks_oracles.py compares them step by step.
Needing no gradient, it is also an indicator of attack failure (core.evaluation.indicators): where Square succeeds
and a gradient attack at the same budget fails, the gradient attack was misled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, norm_param, seed_param

# Queries (rescaled to a budget of 10000) after which the square's share p_init is halved once more.
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def margin(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The loss Square lowers: logit(label) - best other logit (untargeted), best other - logit(target)
    (targeted). An image is adversarial once it is <= 0."""
    rows = torch.arange(len(goal), device=logits.device)
    own = logits[rows, goal].clone()
    others = logits.clone()
    others[rows, goal] = -math.inf
    best_other = others.amax(1)
    return best_other - own if targeted else own - best_other


def _rectangles(rows: int, cols: int) -> torch.Tensor:
    """The reference's profile of a rows x cols block: nested rectangles weighted 1/k^2, unit L2 norm."""
    delta = torch.zeros(rows, cols)
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        r, c = rows // 2 - k, cols // 2 - k
        delta[max(r, 0) : min(r + 2 * k + 1, rows), max(c, 0) : min(c + 2 * k + 1, cols)] += 1.0 / (
            torch.tensor([k + 1.0]) ** 2
        )
    return delta / delta.pow(2).sum().sqrt()


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A draw from the host's generator onto the device without a host sync: a plain `.to("cuda")` waits
    for the GPU's queue to drain (every query), a copy from pinned memory is queued behind the work."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def _l2_normalise(delta: torch.Tensor) -> torch.Tensor:
    return delta / (delta.pow(2).flatten(1).sum(-1).sqrt().view(-1, 1, 1, 1) + 1e-12)


class Square(Attack):
    """Defaults: norm linf, eps 0.1, 1000 queries per restart, p_init 0.8 (the first squares cover 80% of
    the pixels), one restart, the margin loss. Only images not yet adversarial are attacked; a restart
    attacks the ones still unfooled, continuing the random stream. One event per query: each image's best
    point so far (`x_adv`), its logits and its margin loss."""

    name = "square"
    title, quick, cases = (
        "Square Attack (black-box)",
        {"eps": 0.1, "queries": 20},
        ({"eps": 0.08, "queries": 30, "restarts": 2}, {"norm": "l2", "eps": 0.5, "queries": 30}),
    )  # see Attack

    PARAMS = (
        norm_param(),
        eps_param(high_l2=1000.0),
        Param(
            "queries",
            int,
            1000,
            "Queries",
            "Model queries per restart (one random square tried per query).",
            low=1,
            high=100_000,
            imagenet=100,
        ),
        Param(
            "p_init",
            float,
            0.8,
            "First square's share",
            "Share of the pixels the first squares cover; a fixed schedule shrinks it.",
            low=0.0,
            high=1.0,
            strict_low=True,
            step=0.05,
        ),
        Param(
            "restarts",
            int,
            1,
            "Restarts",
            "Random-search runs on the images still unfooled.",
            low=1,
            high=100,
        ),
        seed_param("random search"),
    )
    norm: str
    eps: float
    queries: int
    p_init: float
    restarts: int
    seed: int

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        self._gen = torch.Generator().manual_seed(self.seed)
        x, targeted = run.x, run.target is not None
        goal = run.target if targeted else run.labels
        best_logits = run.clean_logits.clone()
        loss = margin(best_logits, goal, targeted)
        run.best = x

        def query(chosen: torch.Tensor, x_new: torch.Tensor, always: bool = False) -> AttackEvent:
            logits = run.forward(x_new)
            new_loss = margin(logits, goal[chosen], targeted)
            better = torch.ones_like(new_loss, dtype=torch.bool) if always else new_loss < loss[chosen]
            # Every chosen row written back, the ones not better with their old values: selecting the better
            # rows instead (chosen[better]) would be a host sync per query. Out of place: an event handed out
            # keeps showing its own query.
            keep = better.view(-1, *[1] * (x_new.dim() - 1))
            run.best = run.best.index_put((chosen,), torch.where(keep, x_new, run.best[chosen]))
            best_logits[chosen] = torch.where(better[:, None], logits, best_logits[chosen])
            loss[chosen] = torch.where(better, new_loss, loss[chosen])
            return self._event(run, run.best, best_logits.clone(), loss.clone())

        for _ in range(self.restarts):
            todo = (loss > 0).nonzero().flatten()
            if not len(todo):
                return
            yield query(todo, self._start(x[todo]), always=True)
            for step in range(self.queries):
                active = todo[loss[todo] > 0]
                if not len(active):
                    break
                yield query(active, self._propose(x[active], run.best[active], step))

    # ------------------------------------------------------------ random draws, in the reference's order

    def _sign(self, shape: list[int], device: torch.device) -> torch.Tensor:
        return _to(torch.sign(2 * torch.rand(shape, generator=self._gen) - 1), device)

    def _int(self, high: int) -> int:
        return int((high * torch.rand([1], generator=self._gen)).long())

    def _eta(self, side: int) -> torch.Tensor:
        """An L2 window: + rectangles in one half, - in the other, unit norm, randomly transposed."""
        delta = torch.zeros(side, side)
        delta[: side // 2] = _rectangles(side // 2, side)
        delta[side // 2 :] = -_rectangles(side - side // 2, side)
        delta = delta / delta.pow(2).sum().sqrt()
        return delta.T if torch.rand([1], generator=self._gen) > 0.5 else delta

    def _side(self, step: int, c: int, h: int, w: int, smallest: int) -> int:
        """The square's side at this query: share p_init halved on the reference's (rescaled) schedule."""
        share = self.p_init / 2 ** sum(int(step / self.queries * 10000) > mark for mark in SCHEDULE)
        return min(max(int(round(math.sqrt(share * (c * h * w) / c))), smallest), h, w)

    # ------------------------------------------------------------ start points and proposals

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":  # vertical stripes at the ball's vertices
            return (x + self.eps * self._sign([n, c, 1, w], x.device)).clamp(0.0, 1.0)
        delta = torch.zeros_like(x)
        side = max(h // 5, 1)
        first = (h - side * 5) // 2
        for i in range(h // side):
            for j in range(w // side):
                top, left = first + i * side, first + j * side
                window = _to(self._eta(side).view(1, 1, side, side), x.device)
                delta[:, :, top : top + side, left : left + side] += window * self._sign(
                    [n, c, 1, 1], x.device
                )
        return (x + _l2_normalise(delta) * self.eps).clamp(0.0, 1.0)

    def _propose(self, x: torch.Tensor, best: torch.Tensor, step: int) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":
            side = self._side(step, c, h, w, 1)
            top, left = self._int(h - side), self._int(w - side)
            delta = torch.zeros(c, h, w, device=x.device)
            delta[:, top : top + side, left : left + side] = 2.0 * self.eps * self._sign([c, 1, 1], x.device)
            return torch.min(torch.max(best + delta, x - self.eps), x + self.eps).clamp(0.0, 1.0)
        side = self._side(step, c, h, w, 3)
        side += side % 2 == 0 and side < min(h, w)  # odd, as the reference's windows are
        delta = best - x
        top, left = self._int(h - side), self._int(w - side)
        top2, left2 = self._int(h - side), self._int(w - side)
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        window2 = (slice(None), slice(None), slice(top2, top2 + side), slice(left2, left2 + side))
        mask = torch.zeros_like(x)
        mask[window] = 1.0
        mask[window2] = 1.0
        norm_window = delta[window].pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        norm_image = delta.pow(2).flatten(1).sum(-1).sqrt().view(-1, 1, 1, 1)
        norm_windows = (delta * mask).pow(2).flatten(1).sum(-1).sqrt().view(-1, 1, 1, 1)
        new = torch.ones([n, c, side, side], device=x.device)
        new *= _to(self._eta(side).view(1, 1, side, side), x.device) * self._sign([n, c, 1, 1], x.device)
        new += delta[window] / (1e-12 + norm_window)
        room = torch.max((self.eps * torch.ones_like(new)) ** 2 - norm_image**2, torch.zeros_like(new))
        new = (
            new
            / (1e-12 + new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt())
            * (room / c + norm_windows**2).sqrt()
        )
        delta[window2] = 0.0
        delta[window] = new
        return (x + _l2_normalise(delta) * self.eps).clamp(0.0, 1.0)
