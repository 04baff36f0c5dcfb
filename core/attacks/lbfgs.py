"""The paper's attack (Szegedy et al., 2014, Sec. 4.1): box-constrained L-BFGS with a search over c.

For an image x and a target label l, minimise  c * |r|^2 + CE(f(x + r), l)  subject to x + r in [0, 1]^m,
and search c per image for the smallest-distortion r whose prediction is l.

Choices (all parameters are attributes and end up in `result.params`):
- |r| is the squared L2 norm: smooth at r = 0 (the plain norm is not differentiable there, which stalls a
  quasi-Newton method at its very start), and it traces the same family of minimisers as the L2 norm
  (the penalty is a monotone function of it), so the smallest-L2 success is also the smallest-RMS success.
- The search over c. In c|r|^2 + loss a larger c buys a smaller r, so the smallest distortion is at the
  LARGEST c whose minimiser still hits l (the paper's "minimum c" is for the reciprocal weighting). Each
  image starts at `c_init`; while it has no success c is divided by 10, while it has no failure above
  its largest success c is multiplied by 10, once both are known c is bisected geometrically between
  the largest success and the smallest failure above it (the objective is not convex, so a failure can
  lie below a success; it then no longer bounds the search); `rounds` minimisations in all, each
  started from r = 0. The smallest-distortion success over all rounds is kept.
- Untargeted (no target given): the attack is run towards each of the `n_targets` most likely other
  classes of the clean image (all 9 on MNIST) and keeps the smallest-distortion success over them: the
  paper's Table 1 "minimum distortion" needs the minimum over target labels.
- Two optimisers for the inner problem, tested against each other:
  `method="scipy"`: the reference, scipy's L-BFGS-B with bounds = the box, one problem at a time, loss and
  gradient from torch in float64, run with scipy's own defaults (maxcor 10, its tolerances); `memory`,
  `max_iter`, `ftol` and `gtol` belong to the batched path.
  `method="batched"` (default): a batched projected L-BFGS in torch. Every (image, target) problem keeps
  its own c, curvature history, step length, convergence test and round counter; the batch never waits
  for one problem (a problem that converged moves on to its next c at once, finished problems leave it).
  Step: two-loop L-BFGS direction on the free variables (those not held at a bound by the gradient),
  projected onto the box, Armijo back-tracking one halving per iteration. A round ends when the relative
  decrease of the objective falls below `ftol`, the projected gradient below `gtol`, or after `max_iter`.
Events: one per optimiser iteration (batched) or per finished round of one problem (scipy). Per image they
show the target problem currently closest to its target (lowest cross-entropy), with its c and round;
`event.extra` holds the per-target c, round and the best RMS distortion found so far per image, and
`ended_rounds`: the minimisations that finished since the previous event (image, target, round, c, whether
the minimiser reached its target, its RMS distortion), or None, so a live view can mark the search over c.
`model_calls` counts batched forward+backward passes (one per iteration, for the whole active batch).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import ThreadpoolController
from torch import nn

from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.spec import Param


def objective(
    model: nn.Module, z: torch.Tensor, x0: torch.Tensor, goal: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """c * |z - x0|^2 + CE(model(z), goal) per problem (rows of z), its gradient in z, the cross-entropy
    alone and the logits. This is exactly what both optimisers minimise. Autograd runs through the model's
    cross-entropy only (the forward+backward pass every gradient attack pays); the penalty's gradient
    2c(z - x0) is added in one fused pass."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        logits = model(z)
        ce = F.cross_entropy(logits, goal, reduction="none")
        (grad,) = torch.autograd.grad(ce.sum(), z)
    diff = (z.detach() - x0).flatten(1)
    c = c.to(diff).expand(len(diff))
    f = c * _rowdot(diff, diff) + ce.detach()
    grad = grad.flatten(1).addcmul_(2 * c[:, None], diff).view_as(z)
    return f, grad, ce.detach(), logits.detach()


@contextmanager
def _single_threaded(blas: ThreadpoolController):
    """One small problem at a time: extra torch or BLAS threads only wait for each other (6x slower on a
    busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas.limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def next_c(lo: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
    """The next c of each problem from lo (largest c that succeeded, 0 if none) and every c that failed
    (rows of `failures`, inf where none). The minimiser's success is not always monotone in c (the
    objective is not convex), so only failures above lo bound the search: hi = smallest of those."""
    hi = torch.where(failures > lo[:, None], failures, torch.full_like(failures, math.inf)).amin(1)
    bisect = (lo * hi.clamp(max=1e30)).sqrt()
    grow_or_shrink = torch.where(lo > 0, lo * 10, failures.amin(1) / 10)
    return torch.where((lo > 0) & torch.isfinite(hi), bisect, grow_or_shrink)


class LBFGS(Attack):
    r"""Box-constrained L-BFGS, the paper's attack (Szegedy et al., 2014, Sec. 4.1); the method is in the
    module docstring.

    Distance Measure : L2 (squared in the objective; the paper's RMS distortion in the result)

    Arguments:
        model (nn.Module): the classifier, in eval mode; images in [0, 1].
        device (torch.device or str, optional): where the attack runs (default: the model's device).
        c_init (float): first trade-off constant c of c·|r|² + CE. (Default: 1.0)
        rounds (int): minimisations per target, each at a new c (grow, shrink, then bisect). (Default: 10)
        n_targets (int): untargeted: the most likely other classes attacked; the smallest change wins.
            (Default: 9)
        method (str): 'batched' (projected L-BFGS on every problem at once) or 'scipy' (the reference
            L-BFGS-B, one problem at a time). (Default: 'batched')
        max_iter (int): most iterations per round. (Default: 100)
        memory (int): curvature pairs kept. (Default: 5)
        ftol (float): a round ends when the objective's relative decrease falls below this. (Default: 1e-4)
        gtol (float): ... or the projected gradient's largest entry. (Default: 1e-5)

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1].
        - labels: :math:`(N)`, each in [0, number of classes).
        - target (optional): :math:`(N)` or a scalar; none: untargeted over `n_targets` classes.
        - output: an AttackResult whose `x_adv` is :math:`(N, C, H, W)`; `start()` yields one AttackEvent
          per optimiser iteration with `ended_rounds` in `event.extra`.

    Examples::
        >>> attack = LBFGS(model, rounds=10, n_targets=9)
        >>> result = attack.run(images, labels)
        >>> result.success, result.rms

    The defaults give, on 200 MNIST test images, the reference's mean RMS distortion to 0.03% at a third
    less work than memory=10, ftol=1e-5.
    """

    name = "lbfgs"
    title, quick, cases = (
        "L-BFGS (the paper's)",
        {"rounds": 3, "max_iter": 30},
        ({"rounds": 4, "max_iter": 40},),
    )  # see Attack

    PARAMS = (
        Param(
            "c_init",
            float,
            1.0,
            "First c",
            "First value of the trade-off constant c of c·|r|² + loss.",
            low=0.0,
            high=1e8,
            strict_low=True,
        ),
        Param(
            "rounds",
            int,
            10,
            "Search rounds over c",
            "Minimisations per target class, each at a new c (grow, shrink, then bisect).",
            low=1,
            high=100,
            imagenet=4,
        ),
        Param(
            "n_targets",
            int,
            9,
            "Target classes tried",
            "Untargeted: attack this many most likely other classes and keep the smallest change.",
            low=1,
            high=10_000,
            imagenet=1,
        ),
        Param(
            "method",
            str,
            "batched",
            "Optimiser",
            "batched: our projected L-BFGS on the whole batch; scipy: the reference L-BFGS-B, one problem "
            "at a time.",
            choices=("batched", "scipy"),
        ),
        Param(
            "max_iter",
            int,
            100,
            "Iterations per round",
            "Most L-BFGS iterations for one value of c.",
            low=1,
            high=100_000,
            imagenet=30,
        ),
        Param(
            "memory",
            int,
            5,
            "L-BFGS memory",
            "How many past steps shape the curvature estimate.",
            low=1,
            high=100,
        ),
        Param(
            "ftol",
            float,
            1e-4,
            "Objective tolerance",
            "A round ends when the objective's relative decrease falls below this.",
            low=0.0,
            high=1.0,
        ),
        Param(
            "gtol",
            float,
            1e-5,
            "Gradient tolerance",
            "A round ends when the projected gradient's largest entry falls below this.",
            low=0.0,
            high=1e3,
        ),
    )
    RECORDED = {"norm": "squared_l2"}
    c_init: float
    rounds: int
    n_targets: int
    method: str
    max_iter: int
    memory: int
    ftol: float
    gtol: float

    def _problems(self, run: AttackRun) -> tuple[torch.Tensor, torch.Tensor]:
        """(image index, target label) of every problem, image-major: T problems per image."""
        n = len(run.x)
        if run.target is not None:
            return torch.arange(n, device=run.x.device), run.target
        t = min(self.n_targets, run.num_classes - 1)
        logits = run.clean_logits.clone()
        logits.scatter_(1, run.labels[:, None], -math.inf)
        targets = logits.topk(t, dim=1).indices
        return torch.arange(n, device=run.x.device).repeat_interleave(t), targets.reshape(-1)

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        image, goal = self._problems(run)
        search = _Search(self, run, image, goal)
        if self.method == "scipy":
            yield from self._scipy_steps(run, search)
        else:
            yield from self._batched_steps(run, search)

    # ------------------------------------------------------------------ reference: scipy L-BFGS-B

    def _scipy_steps(self, run: AttackRun, search: _Search) -> Iterator[AttackEvent]:
        from scipy.optimize import minimize  # the reference path only: keeps 1-2 s off every app start

        model64 = copy.deepcopy(self.model).double()
        blas = ThreadpoolController()
        shape = run.x.shape[1:]
        bounds = [(0.0, 1.0)] * int(np.prod(shape))
        for p in range(search.num_problems):
            x0 = run.x[search.image[p]].double()[None]
            goal = search.goal[p : p + 1]
            for _ in range(self.rounds):
                c = search.c[p : p + 1].double()

                def fun(flat: np.ndarray, c=c, x0=x0, goal=goal) -> tuple[float, np.ndarray]:
                    z = torch.from_numpy(flat).to(x0.device).view(1, *shape)
                    f, grad, _, _ = objective(model64, z, x0, goal, c)
                    run.model_calls += 1
                    return float(f), grad.flatten().cpu().numpy()

                with _single_threaded(blas):
                    res = minimize(
                        fun,
                        x0.flatten().cpu().numpy(),
                        jac=True,
                        method="L-BFGS-B",
                        bounds=bounds,
                        options={"maxiter": 15000},
                    )
                z = torch.from_numpy(res.x).to(run.x).view(1, *shape)
                with torch.no_grad():
                    logits = self.model(z)
                search.finish_round(torch.tensor([p], device=z.device), z, logits, torch.tensor([res.fun]))
                yield search.event(run)

    # ------------------------------------------------------------------ fast path: batched projected L-BFGS

    def _batched_steps(self, run: AttackRun, search: _Search) -> Iterator[AttackEvent]:
        shape = run.x.shape[1:]
        x0_all = run.x.flatten(1)[search.image]
        # The clean cross-entropy and its gradient do not depend on c: every round restarts from them.
        _, g0_all, ce0_all, logits0_all = objective(
            self.model, x0_all.view(-1, *shape), x0_all.view(-1, *shape), search.goal, torch.zeros(1)
        )
        run.model_calls += 1
        g0_all = g0_all.flatten(1)
        active = torch.arange(search.num_problems, device=x0_all.device)
        opt = _ProjectedLBFGS(self, x0_all, g0_all, ce0_all, logits0_all, search.c)
        search.track(active, opt)
        x0, goal = x0_all, search.goal  # the active rows' clean images and targets, gathered on compaction
        while len(active):
            trial = opt.trial_point()
            c = search.c[active]
            f, g, ce, logits = objective(self.model, trial.view(-1, *shape), x0.view(-1, *shape), goal, c)
            run.model_calls += 1
            finished = opt.update(trial, f, g.flatten(1), logits)
            live = search.round[active] < self.rounds  # rows waiting for compaction: their search is over
            search.set_current(active, live, opt.logits, opt.f, ce)
            finished &= live
            if finished.any():  # the one host sync per iteration: which problems move on to their next c
                done_idx = finished.nonzero().squeeze(1)
                problems = active[done_idx]
                search.finish_round(problems, opt.z[done_idx], opt.logits[done_idx], opt.f[done_idx])
                restart = done_idx[search.round[problems] < self.rounds]
                p = active[restart]
                opt.restart(restart, x0_all[p], g0_all[p], ce0_all[p], logits0_all[p], search.c[p])
                over = search.round[active] >= self.rounds
                if over.float().mean() > 0.1:  # compaction costs a few passes; over rows cost a full one
                    keep = (~over).nonzero().squeeze(1)
                    active = active[keep]
                    opt.keep(keep)
                    x0, goal = x0_all[active], search.goal[active]
                    search.track(active, opt)
            yield search.event(run)


class _Search:
    """The search over c and the best result of every problem, plus the per-image view events show."""

    def __init__(self, attack: LBFGS, run: AttackRun, image: torch.Tensor, goal: torch.Tensor) -> None:
        self.attack = attack
        self.image = image
        self.goal = goal
        self.num_problems = len(goal)
        self.per_image = self.num_problems // len(run.x)
        dev = run.x.device
        self.c = torch.full((self.num_problems,), attack.c_init, device=dev)
        self.lo = torch.zeros_like(self.c)
        self.failures = torch.full((self.num_problems, attack.rounds), math.inf, device=dev)
        self.round = torch.zeros(self.num_problems, dtype=torch.long, device=dev)
        self.best_r2 = torch.full_like(self.c, math.inf)
        self.best_z = run.x.flatten(1)[image].clone()
        x_flat = run.x.flatten(1)
        self.x_flat = x_flat
        self.cur_z = x_flat[image].clone()
        self.cur_logits = run.clean_logits[image].clone()
        self.cur_f = torch.zeros_like(self.c)
        self.cur_ce = torch.full_like(self.c, math.inf)
        self.shape = run.x.shape
        self.ended: list[tuple[torch.Tensor, ...]] = []  # finished rounds not yet reported by an event
        self.just_ended = torch.zeros_like(self.round, dtype=torch.bool)  # events show their minimiser
        self.pos = torch.full_like(self.round, -1)
        self.opt: _ProjectedLBFGS | None = None

    def track(self, active: torch.Tensor, opt: _ProjectedLBFGS) -> None:
        """Where each problem's current point lives: row `pos` of the optimiser's z while it is active (-1
        once dropped). Events read the lead rows from there: no per-iteration copy of every row's z."""
        self.opt = opt
        self.pos = torch.full_like(self.round, -1)
        self.pos[active] = torch.arange(len(active), device=active.device)

    def set_current(self, idx, live, logits, f, ce) -> None:
        """The current logits, objective and cross-entropy of the active rows whose search is not over."""
        self.cur_logits[idx] = torch.where(live[:, None], logits, self.cur_logits[idx])
        self.cur_f[idx] = torch.where(live, f.to(self.cur_f), self.cur_f[idx])
        self.cur_ce[idx] = torch.where(live, ce.to(self.cur_ce), self.cur_ce[idx])

    def finish_round(self, problems: torch.Tensor, z: torch.Tensor, logits: torch.Tensor, f) -> None:
        """A problem's minimiser for its current c is in: keep it if it is the best success, move c on."""
        z = z.flatten(1)
        success = logits.argmax(1) == self.goal[problems]
        r2 = (z - self.x_flat[self.image[problems]]).pow(2).sum(1)
        better = success & (r2 < self.best_r2[problems])
        self.best_r2[problems] = torch.where(better, r2, self.best_r2[problems])
        self.best_z[problems[better]] = z[better]
        c = self.c[problems]
        self.ended.append((problems, self.round[problems].clone(), c, success, r2))
        self.lo[problems] = torch.where(success, torch.maximum(self.lo[problems], c), self.lo[problems])
        self.failures[problems[~success], self.round[problems[~success]]] = c[~success]
        self.c[problems] = next_c(self.lo[problems], self.failures[problems])
        self.round[problems] += 1
        self.cur_z[problems] = z
        self.just_ended[problems] = True
        self.cur_logits[problems] = logits
        self.cur_f[problems] = torch.as_tensor(f).to(self.cur_f)
        self.cur_ce[problems] = F.cross_entropy(logits.float(), self.goal[problems], reduction="none")

    def event(self, run: AttackRun) -> AttackEvent:
        n, t = len(run.x), self.per_image
        lead = self.cur_ce.view(n, t).argmin(1) + torch.arange(n, device=self.c.device) * t
        best = self.best_r2.view(n, t).argmin(1) + torch.arange(n, device=self.c.device) * t
        run.best = self.best_z[best].view(self.shape)
        d = self.x_flat.shape[1]
        return self.attack._event(
            run,
            self._lead_z(lead).view(self.shape),
            self.cur_logits[lead],
            self.cur_f[lead],
            c=self.c[lead],
            search_round=self.round[lead],
            extra={
                "target": self.goal[lead],
                "target_c": self.c.view(n, t),
                "target_round": self.round.view(n, t),
                "best_rms": (self.best_r2.view(n, t).amin(1) / d).sqrt(),
                "ended_rounds": self._take_ended(d),
            },
        )

    def _lead_z(self, lead: torch.Tensor) -> torch.Tensor:
        """The current point of each lead problem: the optimiser's row while it is being solved, else the
        minimiser of its last round."""
        z = self.cur_z[lead]
        pos = self.pos[lead]
        if self.opt is not None and len(self.opt.z):
            live = (pos >= 0) & ~self.just_ended[lead] & (self.round[lead] < self.attack.rounds)
            z = torch.where(live[:, None], self.opt.z[pos.clamp(min=0)], z)
        self.just_ended.zero_()
        return z

    def _take_ended(self, d: int) -> dict[str, torch.Tensor] | None:
        """The rounds finished since the last event, per problem (None if none): what ended the round."""
        if not self.ended:
            return None
        problems, rounds, c, reached, r2 = (torch.cat(parts) for parts in zip(*self.ended, strict=True))
        self.ended = []
        return {
            "image": self.image[problems],
            "target": self.goal[problems],
            "round": rounds,
            "c": c,
            "reached": reached,
            "rms": (r2 / d).sqrt(),
        }


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product of matching rows (a product and a sum: twice as fast on CPU as linalg.vecdot, and
    far faster than a batched matrix-vector product)."""
    return torch.mul(a, b).sum(1)


def _free(z: torch.Tensor, g: torch.Tensor, *buffers: torch.Tensor) -> torch.Tensor:
    """1.0 for the variables not held at a bound by the gradient (a descent step would leave the box), else
    0.0: (z > 0 or g <= 0) and (z < 1 or g >= 0), the comparisons written as floats, `or` as maximum and
    `and` as a product (on CPU, kernels on bool tensors are 2-4x slower). `buffers`: three (rows, d) tensors
    to write into, the first gets the result (fresh ones if none are given)."""
    out, tmp, tmp2 = buffers or [torch.empty_like(z) for _ in range(3)]
    free = torch.maximum(torch.gt(z, 0, out=out), torch.le(g, 0, out=tmp), out=out)
    return free.mul_(torch.maximum(torch.lt(z, 1, out=tmp), torch.ge(g, 0, out=tmp2), out=tmp))


BLOCK, BLOCKED_FROM = 128, 256  # rows on CPU; measured on a 2-core Xeon (2 MB L2 per core), see update()


def _blocks(rows: int, device: torch.device) -> list[slice]:
    """Row blocks for the update's passes. Rows are independent, so on CPU a batch goes through in blocks
    whose vectors stay in the cache over the ~40 passes of a block (the same numbers); on a GPU one block
    (every extra kernel launch only costs there)."""
    step = rows if device.type != "cpu" or rows < BLOCKED_FROM else BLOCK
    return [slice(lo, lo + step) for lo in range(0, rows, step)]


def _dot(
    a: torch.Tensor, b: torch.Tensor, work: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """_rowdot with the product written into `work` (no fresh temporary; the same numbers)."""
    return torch.sum(torch.mul(a, b, out=work), 1, out=out)


def _two_loop(order, S, Y, rho, gamma, q, work) -> torch.Tensor:
    """H q for each row from its stored (s, y) pairs (slots in `order`, newest first), H0 = gamma * I, in
    place on q. Pairs a row must not use have rho = 0, which zeroes their contribution."""
    S, Y, rho = S.unbind(), Y.unbind(), rho.unbind()  # one op, not one per slot read
    alphas = {}
    for j in order:
        alphas[j] = _dot(S[j], q, work).mul_(rho[j])
        q.addcmul_(alphas[j][:, None], Y[j], value=-1.0)
    q.mul_(gamma[:, None])
    for j in reversed(order):
        beta = _dot(Y[j], q, work).mul_(rho[j])
        q.addcmul_((alphas[j] - beta)[:, None], S[j])
    return q


class _ProjectedLBFGS:
    """Batched projected L-BFGS state over the active problems (rows). Every row has its own history
    validity, step length and convergence; the ring of history slots is shared. Every operation is one
    tensor op over all rows, or over a block of rows (no loop over problems, no host sync): a row's fate
    (accepted or not, uphill or not) is a mask applied with torch.where. The (rows, d) buffers are made
    once: z and the trial point, d and the next direction swap roles each iteration."""

    def __init__(self, attack: LBFGS, z, g, f, logits, c) -> None:
        self.attack = attack
        a, d, m = z.shape[0], z.shape[1], attack.memory
        self.z, self.g, self.f, self.logits = z.clone(), g.clone(), f.clone(), logits.clone()
        self.S = torch.zeros(m, a, d, device=z.device)
        self.Y = torch.zeros(m, a, d, device=z.device)
        self.rho = torch.zeros(m, a, device=z.device)
        self.slot = 0
        self.t = torch.ones(a, device=z.device)
        self.iters = torch.zeros(a, dtype=torch.long, device=z.device)
        self.gamma = torch.ones(a, device=z.device)
        self.d = torch.zeros_like(self.z)
        self.next_d = torch.empty_like(self.z)  # the new direction is written here, then the two swap
        self.spare = torch.empty_like(self.z)  # the next trial point; the accepted one becomes z
        self.q = torch.empty_like(self.z)  # the gradient on the free variables
        self.free = torch.empty_like(self.z)  # 1.0 on the free variables, 0.0 on those held at a bound
        self.work = torch.empty_like(self.z)  # the row dots' products: no fresh (rows, d) temporary each
        self.restart(torch.arange(a, device=z.device), z, g, f, logits, c)

    def restart(self, rows, z, g, f, logits, c) -> None:
        """Start a new round for these rows from the clean image (objective = clean CE, gradient = CE's)."""
        self.z[rows], self.g[rows], self.f[rows], self.logits[rows] = z, g, f, logits
        self.rho[:, rows] = 0.0
        self.t[rows] = 1.0
        self.iters[rows] = 0
        q = g * _free(z, g)
        self.gamma[rows] = 1.0 / q.norm(dim=1).clamp_min(1e-12)
        self.d[rows] = -self.gamma[rows, None] * q

    def trial_point(self) -> torch.Tensor:
        return torch.addcmul(self.z, self.t[:, None], self.d, out=self.spare).clamp_(0.0, 1.0)

    def update(self, trial, f, g, logits) -> torch.Tensor:
        """Accept or shrink each row's step; store curvature; new directions; returns rows that converged.
        The (rows, d) passes go through in row blocks (see _blocks): first the new pair and its four dots,
        then, once every row's fate is known, the accepted point and the new direction."""
        k, blocks = self.slot, _blocks(len(trial), trial.device)
        dots = torch.empty(4, len(trial), device=trial.device)
        for b in blocks:
            self._pair(b, k, trial, g, dots)
        gs, sy, yy, ss = dots
        accept = f <= self.f + 1e-4 * gs
        good = accept & (sy > 1e-10 * (yy * ss).clamp_min(0).sqrt())
        self.rho[k] = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        self.slot = (k + 1) % self.attack.memory
        self.gamma = torch.where(good, sy / yy.clamp_min(1e-30), self.gamma)

        decrease = self.f - f
        small = decrease <= self.attack.ftol * torch.maximum(
            torch.maximum(self.f.abs(), f.abs()), torch.ones_like(f)
        )
        self.logits = torch.where(accept[:, None], logits, self.logits)
        self.f = torch.where(accept, f, self.f)
        self.t = torch.where(accept, torch.ones_like(self.t), self.t * 0.5)
        self.iters += 1

        pg = torch.empty_like(f)
        weights = (~accept).to(trial.dtype), accept.to(trial.dtype)
        for b in blocks:
            self._direction(b, k, trial, g, weights, pg)
        self.spare, self.z, self.g = self.z, trial, g
        self.d, self.next_d = self.next_d, self.d
        return (
            (accept & (small | (pg <= self.attack.gtol)))
            | (~accept & (self.t < 1e-3))
            | (self.iters >= self.attack.max_iter)
        )

    def _pair(self, b: slice, k: int, trial, g, dots) -> None:
        """The step and gradient change of these rows, written straight into history slot k, and the row
        dots the acceptance and curvature tests need: g.s, s.y, y.y, s.s."""
        step = torch.sub(trial[b], self.z[b], out=self.S[k, b])
        y = torch.sub(g[b], self.g[b], out=self.Y[k, b])
        work = self.work[b]
        for i, (u, v) in enumerate(((self.g[b], step), (step, y), (y, y), (step, step))):
            _dot(u, v, work, out=dots[i, b])

    def _direction(self, b: slice, k: int, trial, g, weights, pg) -> None:
        """For these rows: the accepted point (a rejected row steps back), the projected gradient's largest
        entry and the new direction: the two-loop direction on the free variables, -gamma q where that is
        not downhill, the last direction (to be halved) for a rejected row."""
        rejected, accepted = weights[0][b, None], weights[1][b]
        # Rejections are rare: take the trial everywhere, then step the rejected rows back (one fused pass
        # each, where torch.where and index_put would cost more or a host sync).
        z = trial[b].addcmul_(self.S[k, b], rejected, value=-1.0)
        g = g[b].addcmul_(self.Y[k, b], rejected, value=-1.0)
        free = _free(z, g, self.free[b], self.work[b], self.q[b])
        q = torch.mul(g, free, out=self.q[b])
        torch.amax(torch.abs(q, out=self.work[b]), 1, out=pg[b])  # 8x faster than aminmax on CPU
        order = [(self.slot - 1 - i) % self.attack.memory for i in range(self.attack.memory)]
        work, gamma = self.work[b], self.gamma[b]
        h = _two_loop(order, self.S[:, b], self.Y[:, b], self.rho[:, b], gamma, self.next_d[b].copy_(q), work)
        h.mul_(free)
        # H q must point downhill (h . q > 0, q being the gradient on the free variables): else -gamma q;
        # a rejected row retries its last direction with half the step. Per-row weights, no branches.
        uphill = _dot(h, q, work) <= 0
        h.mul_((-accepted * ~uphill)[:, None])
        h.addcmul_(q, (-accepted * uphill * gamma)[:, None])
        h.addcmul_(self.d[b], rejected)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows (compaction, so the model only sees problems still being solved)."""
        for name in ("z", "g", "f", "logits", "t", "iters", "gamma", "d"):
            setattr(self, name, getattr(self, name)[rows])
        self.S, self.Y = self.S[:, rows], self.Y[:, rows]
        self.rho = self.rho[:, rows]
        for name in ("next_d", "spare", "q", "free", "work"):  # scratch: any rows will do
            setattr(self, name, getattr(self, name)[: len(rows)])
