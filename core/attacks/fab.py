"""FAB, the fast adaptive boundary attack (Croce & Hein, 2020): a minimal-norm attack, Linf or L2. At each
step it linearises the model around the current point, takes the nearest linearised decision boundary
(untargeted: of every other class, one backward pass per class; targeted, FAB-T: only the target's, one
pass) and projects both the current point and the clean image onto it inside the box [0, 1]; the next
point is a mix of the two projections (the clean image's share at most alpha_max), overshot by eta. Once
a point is adversarial it is kept if it is the smallest so far and pulled back towards the clean image by
beta, so the search closes in on the boundary. A result counts only within eps, as in AutoAttack.

Follows the AutoAttack authors' reference as torchattacks 3.5 ports it: the first run starts at the clean
image, so with one restart it is deterministic and equals torchattacks' FAB image for image
(tests/test_fab.py); later restarts start at random points of half the eps-ball. Its iterates are not held
to the ball (it searches from outside in); only what it keeps is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.attacks import norms
from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param, eps_param, norm_param, seed_param, steps_param


def project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest-Linf step d with w.(t + d) = b and t + d in [0, 1]; rows (M, D). A bisection over
    the coordinates sorted by how far each can move (the reference's algorithm, kept op for op)."""
    w, b = w.clone(), b.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    b.mul_(sign)
    a = (w < 0).float()
    d = (a - t) * (w != 0).float()
    p = a - t * (2 * a - 1)
    order = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    rev = order.flip((1,))
    ws = w.gather(1, rev)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(-ws * d.gather(1, rev), dim=1) + b0.unsqueeze(1)
    whole = b - (sb[:, -1] - s[:, -1] * p.gather(1, order[:, 0:1]).squeeze(1)) > 0
    inner = (b - b0 > 0) & ~whole
    lb = torch.zeros(int(inner.sum()), device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    order_, sb_, s_, p_, b_ = order[inner], sb[inner], s[inner], p[inner], b[inner]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        k = mid.long().unsqueeze(1)
        at = order_.gather(1, order_.size(1) - 1 - k)
        c = b_ - (sb_.gather(1, k) - s_.gather(1, k) * p_.gather(1, at)).squeeze(1) > 0
        lb, ub = torch.where(c, mid, lb), torch.where(c, ub, mid)
    lb = lb.long()
    if whole.any():
        lam = torch.clamp_min((b[whole] - sb[whole, -1]) / (-s[whole, -1]), min=0).unsqueeze(-1)
        d[whole] = (2 * a[whole] - 1) * lam
    lam = torch.clamp_min((b[inner] - sb[inner, lb]) / (-s[inner, lb]), min=0).unsqueeze(-1)
    d[inner] = torch.min(lam, d[inner]) * a[inner] + torch.max(-lam, d[inner]) * (1 - a[inner])
    return d * (w != 0).float()


def project_l2(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest-L2 step d with w.(t + d) = b and t + d in [0, 1]; rows (M, D). A bisection over
    the breakpoints where a coordinate hits the box (the reference's algorithm, kept op for op)."""
    w = w.clone()
    c = (w * t).sum(1) - b
    sign = 2 * (c >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    c = c * sign
    r = torch.max(t / w, (t - 1) / w).clamp(min=-1e12, max=1e12)
    r.masked_fill_(w.abs() < 1e-8, 1e12)
    r[r == -1e12] *= -1
    rs, order = torch.sort(r, dim=1)
    rs2 = F.pad(rs[:, 1:], (0, 1))
    rs.masked_fill_(rs == 1e12, 0)
    rs2.masked_fill_(rs2 == 1e12, 0)
    w3s = (w**2).gather(1, order)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - torch.cumsum(w3s, dim=1)
    d = -(r * w)
    d.mul_((w.abs() > 1e-8).float())
    s = torch.cat((-w5 * rs[:, 0:1], torch.cumsum((-rs2 + rs) * ws, dim=1) - w5 * rs[:, 0:1]), 1)
    free = s[:, 0] + c < 0
    inner = ~(free | ((d * w).sum(dim=1) + c > 0))
    lb = torch.zeros(int(inner.sum()), device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    s_, c_ = s[inner], c[inner]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        above = s_.gather(1, mid.long().unsqueeze(1)).squeeze(1) + c_ > 0
        lb, ub = torch.where(above, mid, lb), torch.where(above, ub, mid)
    lb = lb.long()
    if free.any():
        d[free] = -(c[free] / w5[free].squeeze(-1)).unsqueeze(-1) * w[free]
    if inner.any():
        alpha = (s[inner, lb] + c[inner]) / ws[inner, lb] + rs[inner, lb]
        alpha[ws[inner, lb] == 0] = 0
        keep = (alpha.unsqueeze(-1) > r[inner]).float()
        d[inner] = d[inner] * keep - alpha.unsqueeze(-1) * w[inner] * (1 - keep)
    return d * (w.abs() > 1e-8).float()


class FAB(Attack):
    """FAB (untargeted) and FAB-T (targeted) in Linf or L2, held to eps (Croce & Hein, 2020).

    Attacks the images not yet adversarial; keeps for each the smallest adversarial point it finds within
    eps (else the clean image). Untargeted, a step costs one forward pass plus one backward pass per class
    (counted as that many model calls) and one forward pass to test the new point. Events: every step, at
    the point linearised, with `loss` = the distance to the nearest linearised boundary and
    `extra["best_norm"]`, the smallest adversarial norm so far (inf: none yet).

    Args:
        model: classifier taking [0, 1] images, returning logits.
        norm: "linf" | "l2". eps: the budget results are held to (default 0.1).
        steps: steps per restart (100). restarts: the first from the clean image, later ones from random
        points of half the ball (1). alpha_max (0.1), eta (1.05), beta (0.9): the reference's constants.
        seed: draws the random starts.

    Example:
        >>> result = FAB(model, norm="linf", eps=0.3).run(x, labels, target=3)
    """

    name = "fab"
    title, quick, cases = (  # see Attack
        "FAB (minimal norm)",
        {"eps": 0.1, "steps": 5},
        (
            {"eps": 0.08, "steps": 5},
            {"norm": "l2", "eps": 0.5, "steps": 5, "restarts": 2},
            {"eps": 0.08, "steps": 4, "restarts": 2},
        ),
    )

    iterates_in_ball = False

    PARAMS = (
        norm_param(),
        eps_param(high_l2=1000.0),
        steps_param(100, imagenet=10),
        Param("restarts", int, 1, "Restarts", "Runs, each on the images still unbroken.", low=1, high=100),
        Param(
            "alpha_max",
            float,
            0.1,
            "Largest step towards the clean image",
            "Share of the clean image's projection in each step, at most.",
            low=0.0,
            high=1.0,
            step=0.05,
        ),
        Param(
            "eta",
            float,
            1.05,
            "Overshoot eta",
            "Each step goes this far past the boundary.",
            low=1.0,
            high=2.0,
        ),
        Param(
            "beta",
            float,
            0.9,
            "Backward step beta",
            "An adversarial point is pulled back to this share of its distance to the clean image.",
            low=0.0,
            high=1.0,
            step=0.05,
        ),
        seed_param("random starts"),
    )
    norm: str
    eps: float
    steps: int
    restarts: int
    alpha_max: float
    eta: float
    beta: float
    seed: int

    def _adversarial(self, run: AttackRun, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == run.target[idx] if run.target is not None else pred != run.labels[idx]

    def _linearise(self, run: AttackRun, z: torch.Tensor, idx: torch.Tensor):
        """Logits at z, and each candidate boundary's f_j - f_y (n, K) with its gradient (n, K, D)."""
        labels, rows = run.labels[idx], torch.arange(len(idx), device=z.device)
        if run.target is not None:
            target = run.target[idx]
            gap, grad, logits = run.loss_and_grad(z, lambda out, _: out[rows, target] - out[rows, labels])
            return logits, gap.unsqueeze(1), grad.flatten(1).unsqueeze(1)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            out = run.forward(z)
            classes = out.shape[1]
            jac = torch.stack(
                [
                    torch.autograd.grad(out[:, k].sum(), z, retain_graph=k < classes - 1)[0].flatten(1)
                    for k in range(classes)
                ],
                1,
            )
        run.model_calls += classes - 1  # one backward pass per class
        logits = out.detach()
        gap = logits - logits[rows, labels].unsqueeze(1)
        gap[rows, labels] = 1e10  # the label's own "boundary" is never the nearest
        return logits, gap, jac - jac[rows, labels].unsqueeze(1)

    def _size(self, r: torch.Tensor) -> torch.Tensor:
        """Each row's Linf or L2 norm, written as the reference writes it (so that results match it)."""
        r = r.flatten(1)
        return r.abs().max(dim=1)[0] if self.norm == "linf" else r.pow(2).sum(dim=-1).sqrt()

    def _step(self, z: torch.Tensor, x0: torch.Tensor, gap: torch.Tensor, grad: torch.Tensor):
        """The next point: projections of z and x0 onto the nearest linearised boundary, mixed and
        overshot; and each image's distance to that boundary."""
        n, rows = len(z), torch.arange(len(z), device=z.device)
        dual = grad.abs().sum(-1) if self.norm == "linf" else grad.pow(2).sum(-1).sqrt()
        dist = gap.abs() / (1e-12 + dual)
        nearest = dist.min(dim=1)[1]
        w = grad[rows, nearest]
        b = -gap[rows, nearest] + (w * z.flatten(1)).sum(-1)
        project = project_linf if self.norm == "linf" else project_l2
        d = project(torch.cat((z.flatten(1), x0.flatten(1))), torch.cat((w, w)), torch.cat((b, b)))
        size = self._size(d).clamp_min(1e-8)
        alpha = norms.per_image((size[:n] / (size[:n] + size[n:])).clamp(min=0).clamp(max=self.alpha_max), z)
        moved = (z + self.eta * d[:n].view_as(z)) * (1 - alpha) + (x0 + d[n:].view_as(z) * self.eta) * alpha
        return moved.clamp(0.0, 1.0), dist.min(dim=1)[0]

    def _start(self, x0: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """The clean image (first run), else a random point at half the radius of the eps-ball."""
        if gen is None:
            return x0.clone()
        if self.norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=gen) - 1
        else:
            t = torch.randn(x0.shape, generator=gen)
        t = t.to(x0.device)
        return (x0 + 0.5 * self.eps * t / norms.per_image(self._size(t), t)).clamp(0.0, 1.0)

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        gen = torch.Generator().manual_seed(self.seed)
        found = self._adversarial(run, run.clean_logits, torch.arange(len(run.x), device=run.x.device))
        run.best, shown = run.x, run.clean_logits.clone()  # shown: the logits of each image's best point
        for restart in range(self.restarts):
            idx = (~found).nonzero().flatten()
            if not len(idx):
                return
            yield from self._one_run(run, idx, found, shown, gen if restart else None)

    def _one_run(self, run: AttackRun, idx, found, shown, gen: torch.Generator | None):
        """One run on the images `idx`; those that end with an adversarial point within eps join `found`."""
        x0, n_all = run.x[idx], len(run.x)
        z, best_norm = self._start(x0, gen), torch.full((len(idx),), math.inf, device=x0.device)
        for _ in range(self.steps):
            logits, gap, grad = self._linearise(run, z, idx)
            z_next, dist = self._step(z, x0, gap, grad)
            yield self._event(
                run,
                run.best.index_copy(0, idx, z),
                shown.index_copy(0, idx, logits),
                torch.zeros(n_all, device=z.device).index_copy(0, idx, dist),
                extra={
                    "best_norm": torch.full((n_all,), math.inf, device=z.device).index_copy(0, idx, best_norm)
                },
            )
            z = z_next
            with torch.no_grad():
                after = run.forward(z)
            hit = self._adversarial(run, after, idx)
            size = self._size(z - x0)
            closer = hit & (size < best_norm)
            best_norm = torch.where(closer, size, best_norm)
            kept = closer & (size <= self.eps)
            run.best = run.best.index_copy(0, idx[kept], z[kept])
            shown[idx[kept]] = after[kept]
            z = torch.where(norms.per_image(hit, z), x0 + (z - x0) * self.beta, z)
        found[idx[best_norm <= self.eps]] = True
