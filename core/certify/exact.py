"""The exact minimal distortion that changes a prediction, where it can be solved, per image:

- linear models (the paper's fc10-*): Linf by one LP per target class (HiGHS through scipy.optimize.linprog);
  L2 by the convex QP min ||d|| s.t. the target's margin reaches 0 and x + d in [0, 1], solved through its
  one-dimensional dual: every multiplier gives a lower bound, every primal iterate an upper bound, and it
  stops when the two agree to QP_RTOL (so the value is proved to that tolerance, not estimated);
- ReLU networks: Linf by the MILP of Tjeng, Xiao and Tedrake (2019): big-M constants from CROWN bounds over
  the ball of the best attack's radius, target classes that CROWN rules out pruned, HiGHS through
  scipy.optimize.milp with a per-image time limit. A timeout returns the bracket (HiGHS's dual bound, its
  incumbent or the attack), never a guess.

"The minimum" is the infimum of distortions at which another class's logit reaches the true one's.
Sigmoid networks have no exact solver here: they get the bracket (certified radius, best attack) only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np
import torch

from core.certify.bounds import Activation, Ball, Network, intermediate_bounds, margin_bounds
from core.checks import check_choice, check_float
from core.errors import InvalidParameterError

QP_RTOL = 1e-6  # the L2 QP stops when its dual lower bound is within this share of its primal upper bound
MIP_RTOL = 1e-4  # HiGHS's relative MIP gap at which a MILP counts as solved
STATUSES = ("proven", "timeout", "bracket")


@dataclass
class Exact:
    """What is known about one image's minimal distortion: it lies in [lower, upper]; `value` is set only
    when proved (status 'proven'); 'timeout' means the solver ran out of time, 'bracket' that no exact
    solver applies."""

    lower: float
    upper: float
    status: str
    time_s: float
    value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _solvers() -> tuple[ModuleType, ModuleType]:
    """scipy.optimize and scipy.sparse, imported when a solver first runs: ~36 MB of resident memory that every
    dashboard page importing this module (the Attack Lab's and Validate's brackets) would pay, though only a
    linear model's LP or `certify --method exact` uses them (issue 25)."""
    import scipy.optimize
    import scipy.sparse

    return scipy.optimize, scipy.sparse


@contextlib.contextmanager
def solver_output_off() -> Iterator[None]:
    """File descriptor 1 sent to /dev/null while a solver runs: HiGHS's MILP prints some diagnostics straight
    to the C stdout whatever `disp` says, which would land inside `intriguing certify --json`'s output."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        libc.fflush(None)  # what C code buffered goes where it was written: to /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def dense_segments(net: Network) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """The network as affine maps (W, b) in float64 between its activations (consecutive linear ops,
    normalisation and convolutions included, composed by pushing the identity through them)."""
    segments, kinds = [], []
    shape = net.shapes[0]
    group: list = []
    for op, in_shape in zip([*net.ops, None], [*net.shapes[:-1], None], strict=True):
        if op is not None and not isinstance(op, Activation):
            if not group:
                shape = in_shape
            group.append(op)
            continue
        n_in = int(np.prod(shape))
        h = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).to(net.ops[-1].weight).view(-1, *shape)
        with torch.no_grad():
            for g in group:
                h = g.forward(h)
        h = h.flatten(1).detach().double().cpu().numpy()
        segments.append(((h[1:] - h[0]).T.copy(), h[0].copy()))
        group = []
        if op is not None:
            kinds.append(op.kind)
    return segments, kinds


def _linf_lp(w: np.ndarray, b: np.ndarray, x0: np.ndarray, label: int) -> tuple[float, np.ndarray | None]:
    """min t over targets j: (w_j - w_y) x + b_j - b_y >= 0, |x - x0| <= t, x in [0, 1] (one LP each)."""
    so, sp = _solvers()
    n = len(x0)
    best, best_x = np.inf, None
    eye = sp.eye(n, format="csr")
    ones = sp.csr_matrix(np.ones((n, 1)))
    box_rows = sp.vstack([sp.hstack([eye, -ones]), sp.hstack([-eye, -ones])], format="csr")
    box_rhs = np.concatenate([x0, -x0])
    cost = np.zeros(n + 1)
    cost[-1] = 1
    for j in range(len(b)):
        if j == label:
            continue
        g = w[label] - w[j]  # margin = g x + c <= 0 to flip
        c = b[label] - b[j]
        a = sp.vstack([box_rows, sp.csr_matrix(np.append(g, 0.0))], format="csr")
        res = so.linprog(
            cost, A_ub=a, b_ub=np.append(box_rhs, -c), bounds=[(0, 1)] * n + [(0, 1)], method="highs"
        )
        if res.status == 0 and res.fun < best:
            best, best_x = float(res.fun), res.x[:n]
    return best, best_x


def _l2_qp(w: np.ndarray, b: np.ndarray, x0: np.ndarray, label: int) -> tuple[float, float]:
    """(lower, upper) on min ||d|| s.t. some target's margin g.(x0 + d) + c <= 0 and x0 + d in [0, 1],
    from the dual of each target's QP: d(lam) = clip(-lam g, -x0, 1 - x0) minimises the Lagrangian."""
    lo_box, hi_box = -x0, 1 - x0
    best_lo, best_up = np.inf, np.inf
    for j in range(len(b)):
        if j == label:
            continue
        g = w[label] - w[j]
        need = -(g @ x0 + b[label] - b[j])  # g.d must be <= need (< 0 for a correct image)

        def d_of(lam: float, g=g) -> np.ndarray:
            return np.clip(-lam * g, lo_box, hi_box)

        if g @ d_of(1e12) > need:  # not even the whole box reaches this target
            continue
        lam_lo, lam_hi = 0.0, 1.0
        while g @ d_of(lam_hi) > need:
            lam_hi *= 2
        for _ in range(200):
            d_hi = d_of(lam_hi)
            upper = float(np.linalg.norm(d_hi))
            duals = [
                0.5 * d @ d + lam * (g @ d - need) for lam, d in ((lam_lo, d_of(lam_lo)), (lam_hi, d_hi))
            ]
            lower = float(np.sqrt(max(max(duals), 0.0) * 2))
            if upper - lower <= QP_RTOL * upper:
                break
            mid = 0.5 * (lam_lo + lam_hi)
            lam_lo, lam_hi = (mid, lam_hi) if g @ d_of(mid) > need else (lam_lo, mid)
        best_lo, best_up = min(best_lo, lower), min(best_up, upper)
    return best_lo, best_up


def exact_linear(net: Network, x: torch.Tensor, label: int, norm: str) -> Exact:
    """The minimal Linf (LP) or L2 (QP) distortion of one image for a network with no activation."""
    check_choice("norm", norm, ("linf", "l2"))
    segments, kinds = dense_segments(net)
    if kinds:
        raise InvalidParameterError("exact_linear needs a linear model (no activation layers).")
    start = time.perf_counter()
    (w, b), x0 = segments[0], x.flatten().double().cpu().numpy()
    if norm == "linf":
        value, _ = _linf_lp(w, b, x0, label)
        lower = upper = value
    else:
        lower, upper = _l2_qp(w, b, x0, label)
        value = upper
    status = "proven" if np.isfinite(upper) else "bracket"
    return Exact(lower, upper, status, time.perf_counter() - start, value if np.isfinite(value) else None)


def _milp_problem(bounds, x0: np.ndarray, label: int, target: int, radius: float, *, segments):
    """Tjeng et al.'s MILP for one target class: variables [x, t, (z, a, delta) per hidden layer];
    minimise t subject to the target's logit reaching the label's."""
    so, sp = _solvers()
    n0 = len(x0)
    sizes = [len(b) for _, b in segments[:-1]]
    n_vars = n0 + 1 + 3 * sum(sizes)
    rows, lo_c, up_c = [], [], []

    eye0 = sp.eye(n0, format="csr")
    t_col = sp.csr_matrix(np.ones((n0, 1)))
    pad = sp.csr_matrix((n0, n_vars - n0 - 1))
    rows.append(sp.hstack([eye0, -t_col, pad], format="csr"))  # x - t <= x0
    lo_c.append(np.full(n0, -np.inf))
    up_c.append(x0)
    rows.append(sp.hstack([eye0, t_col, pad], format="csr"))  # x + t >= x0
    lo_c.append(x0)
    up_c.append(np.full(n0, np.inf))
    lb = np.concatenate([np.clip(x0 - radius, 0, 1), [0.0]])
    ub = np.concatenate([np.clip(x0 + radius, 0, 1), [radius]])
    integrality = [np.zeros(n0 + 1)]
    prev_cols = np.arange(n0)
    offset = n0 + 1
    for (w, b), (lo, up) in zip(segments[:-1], bounds, strict=True):
        n = len(b)
        z, a, d = offset + np.arange(n), offset + n + np.arange(n), offset + 2 * n + np.arange(n)
        offset += 3 * n
        mat = sp.lil_matrix((n, n_vars))
        mat[:, z] = sp.eye(n)
        mat[:, prev_cols] = -w
        rows.append(mat.tocsr())
        lo_c.append(b)
        up_c.append(b)
        idx = np.arange(n)
        for coef_z, coef_d, rhs in ((1.0, 0.0, 0.0), (-1.0, -lo, -lo)):  # a >= z; a <= z - lo (1 - d)
            mat = sp.lil_matrix((n, n_vars))
            mat[idx, z] = coef_z
            mat[idx, a] = -coef_z
            mat[idx, d] = coef_d
            rows.append(mat.tocsr())
            lo_c.append(np.full(n, -np.inf))
            up_c.append(np.broadcast_to(rhs, n))
        mat = sp.lil_matrix((n, n_vars))  # a <= up d
        mat[idx, a] = 1.0
        mat[idx, d] = -up
        rows.append(mat.tocsr())
        lo_c.append(np.full(n, -np.inf))
        up_c.append(np.zeros(n))
        d_lo, d_up = (lo >= 0).astype(float), (up > 0).astype(float)
        lb = np.concatenate([lb, lo, np.maximum(lo, 0), d_lo])
        ub = np.concatenate([ub, up, np.maximum(up, 0), d_up])
        integrality += [np.zeros(2 * n), np.ones(n)]
        prev_cols = a
    w, b = segments[-1]
    mat = sp.lil_matrix((1, n_vars))  # margin_target <= 0
    mat[0, prev_cols] = w[label] - w[target]
    rows.append(mat.tocsr())
    lo_c.append(np.array([-np.inf]))
    up_c.append(np.array([b[target] - b[label]]))
    cost = np.zeros(n_vars)
    cost[n0] = 1.0
    cons = so.LinearConstraint(sp.vstack(rows, format="csr"), np.concatenate(lo_c), np.concatenate(up_c))
    return cost, cons, so.Bounds(lb, ub), np.concatenate(integrality)


def exact_relu_linf(
    net: Network, x: torch.Tensor, label: int, upper: float, time_limit: float = 60.0, lower: float = 0.0
) -> Exact:
    """The minimal Linf distortion of one image of a ReLU network by MILP, searched in [lower, upper]: `upper`
    is the distortion of an adversarial example already found, `lower` a certified radius. Each MILP runs
    inside a ball of radius r between them, with CROWN's bounds at r (far tighter than at `upper`): a flip
    found there at distortion t* <= r is the global minimum; none proves the minimum exceeds r, and the next
    ball is halfway up (a timeout halfway down). The bracket [lower, upper] narrows at every step."""
    check_float("time limit", time_limit, low=0, strict_low=True)
    upper = check_float("upper", upper, low=0, strict_low=True)
    if net.activations - {"relu"}:
        raise InvalidParameterError("the MILP is exact for ReLU networks only; sigmoid nets get the bracket.")
    start = time.perf_counter()
    segments, _ = dense_segments(net)
    lo, hi, radius = max(lower, 0.0), upper, upper if lower <= 0 else (max(lower, 0.0) + upper) / 2
    while (left := time_limit - (time.perf_counter() - start)) > 0 and hi - lo > MIP_RTOL * hi:
        found, floor, solved = _solve_ball(net, segments, x, label, radius, left)
        if solved and found is not None:  # the smallest flip lies inside this ball
            return Exact(found * (1 - MIP_RTOL), found, "proven", time.perf_counter() - start, found)
        hi, lo = min(hi, found if found is not None else hi), max(lo, floor)
        radius = (lo + hi) / 2 if solved else (lo + min(radius, hi)) / 2
    elapsed = time.perf_counter() - start
    if hi - lo <= MIP_RTOL * hi:
        return Exact(lo, hi, "proven", elapsed, hi)
    return Exact(lo, hi, "timeout", elapsed)


@dataclass
class Decision:
    """MIPVerify's question for one image at a budget: 'robust' (no flip within it, proved), 'flip' (one
    exists, at distortion `flip`: the smallest where `minimal`) or 'timeout' (undecided)."""

    status: str
    flip: float | None
    minimal: bool
    time_s: float


def decide_relu_linf(
    net: Network, x: torch.Tensor, label: int, eps: float, time_limit: float = 60.0
) -> Decision:
    """Whether any input of the Linf ball of `eps` (in the box) changes the label of a ReLU network: the MILP
    inside that ball, one target class at a time (those CROWN proves skipped). Far cheaper than the minimum
    itself: one ball, big-M constants from CROWN at eps (Tjeng et al.'s verification setting)."""
    check_float("time limit", time_limit, low=0, strict_low=True)
    check_float("eps", eps, low=0, strict_low=True)
    if net.activations - {"relu"}:
        raise InvalidParameterError("the MILP is exact for ReLU networks only; sigmoid nets get the bracket.")
    start = time.perf_counter()
    found, _, solved = _solve_ball(net, dense_segments(net)[0], x, label, eps, time_limit)
    status = "flip" if found is not None else "robust" if solved else "timeout"
    return Decision(status, found, solved and found is not None, time.perf_counter() - start)


def _solve_ball(net: Network, segments, x: torch.Tensor, label: int, radius: float, time_limit: float):
    """Tjeng et al.'s MILP inside the Linf ball of `radius`, one target class at a time (those CROWN proves
    at this radius skipped). Returns the smallest flip found (or None), a proved lower bound on the minimal
    flip, and whether every target was solved (then, with no flip found, the floor is `radius`)."""
    so, _ = _solvers()
    start = time.perf_counter()
    ball = Ball(x.unsqueeze(0), radius, "linf")
    margins = margin_bounds(net, ball, torch.tensor([label], device=x.device), "crown")[0]
    targets = sorted(
        (j for j in range(len(margins)) if j != label and margins[j] <= 0), key=lambda j: margins[j]
    )
    layer_bounds = _activation_bounds(net, ball) if targets else None
    x0 = x.flatten().double().cpu().numpy()
    best, floor = None, radius
    for j in targets:  # each target's MILP, searched below the best distortion so far
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            return best, 0.0, False
        cost, cons, bnds, integ = _milp_problem(layer_bounds, x0, label, j, best or radius, segments=segments)
        with solver_output_off():
            res = so.milp(cost, constraints=cons, bounds=bnds, integrality=integ,
                          options={"time_limit": left, "mip_rel_gap": MIP_RTOL, "disp": False})  # fmt: skip
        if res.x is not None:
            best = min(best or radius, float(res.fun))
        if res.status not in (0, 2):  # 2: nothing of this target below the best so far
            dual = getattr(res, "mip_dual_bound", None)
            floor = min(floor, float(dual)) if dual is not None and np.isfinite(dual) else 0.0
    solved = floor >= radius or (best is not None and floor >= best * (1 - MIP_RTOL))
    return best, min(floor, best) if best is not None else floor, solved


def _activation_bounds(net: Network, ball: Ball) -> list[tuple[np.ndarray, np.ndarray]]:
    """CROWN bounds of every activation's input (float64 numpy, one image), slightly widened for rounding."""
    bounds = intermediate_bounds(net, ball, "crown")
    out = []
    for i in sorted(bounds):
        lo, up = (t[0].detach().flatten().double().cpu().numpy() for t in bounds[i])
        out.append((lo - 1e-6, up + 1e-6))
    return out
