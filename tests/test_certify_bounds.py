"""Soundness of bound propagation: every bound must contain the model's outputs at thousands of random
points of the ball and at PGD's strongest points; a deliberately wrong relaxation must be caught; CROWN is
never tighter than the triangle LP over the same intermediate bounds (scipy linprog)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch import nn

from core.certify import bounds as B
from core.certify.exact import dense_segments
from core.models import nets


def _random_points(ball: B.Ball, count: int, gen: torch.Generator) -> torch.Tensor:
    """(N, count, *shape) points of the ball ∩ box: corners and uniform points (Linf), sphere and inside (L2)."""
    n, shape = len(ball.center), ball.center.shape[1:]
    if ball.norm == "linf":
        u = torch.rand(n, count, *shape, generator=gen, dtype=ball.center.dtype) * 2 - 1
        u[:, : count // 2] = u[:, : count // 2].sign()  # vertices, where linear pieces reach their extremes
        d = u * ball.eps.view(-1, 1, *[1] * len(shape))
    else:
        g = torch.randn(n, count, *shape, generator=gen, dtype=ball.center.dtype)
        g = g / g.flatten(2).norm(dim=2).view(n, count, *[1] * len(shape))
        r = torch.rand(n, count, *[1] * len(shape), generator=gen, dtype=g.dtype) ** 0.2
        d = g * r * ball.eps.view(-1, 1, *[1] * len(shape))
    pts = (ball.center.unsqueeze(1) + d).clamp(0, 1)
    if ball.norm == "l2":  # clipping only shrinks the perturbation: still inside the ball
        assert ((pts - ball.center.unsqueeze(1)).flatten(2).norm(dim=2) <= ball.eps[:, None] + 1e-9).all()
    return pts


def _pgd_points(model: nn.Module, ball: B.Ball, labels: torch.Tensor, steps: int = 15) -> torch.Tensor:
    """For every class j, PGD's point minimising logit_y - logit_j inside the ball: (N, classes, *shape)."""
    x0, eps = ball.center, ball.eps.view(-1, *[1] * (ball.center.dim() - 1))
    out = []
    for j in range(10):
        x = x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            z = model(x)
            margin = z.gather(1, labels[:, None]).squeeze(1) - z[:, j]
            (g,) = torch.autograd.grad(margin.sum(), x)
            with torch.no_grad():
                if ball.norm == "linf":
                    x = torch.minimum(torch.maximum(x - eps / 8 * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
                else:
                    step = g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view_as(eps)
                    d = x - eps / 8 * step - x0
                    d = d * (eps / d.flatten(1).norm(dim=1).clamp(min=1e-12).view_as(eps)).clamp(max=1)
                    x = (x0 + d).clamp(0, 1)
        out.append(x.detach())
    return torch.stack(out, 1)


def margin_violation(model, net, ball, labels, method, count=2000, seed=0) -> float:
    """The largest amount by which a sampled or PGD margin falls below its claimed lower bound (<= 0: sound)."""
    lower = B.margin_bounds(net, ball, labels, method).detach()
    pts = torch.cat([_random_points(ball, count, torch.Generator().manual_seed(seed)),
                     _pgd_points(model, ball, labels)], 1)  # fmt: skip
    n, k = pts.shape[:2]
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(n, k, -1)
    margins = z.gather(2, labels.view(n, 1, 1).expand(n, k, 1)) - z
    return float((lower - margins.amin(1)).max())


def _random_nets():
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 10),
    )  # fmt: skip
    for bn in (conv[1], conv[7]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    pool = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 10),
    )  # fmt: skip  (a 2x2 pool as in the zoo's cnn, then overlapping windows)
    mlp_relu = nets.SigmoidMLP((20, 16), nn.ReLU)
    mlp_sig = nets.Normalized(nets.SigmoidMLP((20, 16)), (0.13,), (0.31,))
    return {"conv-bn-relu-sigmoid": (conv, (1, 12, 12)), "conv-relu-maxpool": (pool, (1, 10, 10)),
            "relu-mlp": (mlp_relu, (1, 28, 28)), "normalized-sigmoid-mlp": (mlp_sig, (1, 28, 28))}  # fmt: skip


# The quick loop (-m "not slow") checks each method on one net, both norms (conv-bn-relu-sigmoid there through
# test_output_bounds_contain_logits); the full suite checks every combination.
QUICK = {
    ("ibp", "relu-mlp", "l2"),
    ("crown", "normalized-sigmoid-mlp", "l2"),
    ("crown", "conv-relu-maxpool", "linf"),
    ("alpha-crown", "relu-mlp", "linf"),
}


def _random_net_cases():
    for method in B.METHODS:
        for norm, eps in (("linf", 0.05), ("l2", 0.8)):
            for name in _random_nets():
                marks = () if (method, name, norm) in QUICK else (pytest.mark.slow,)
                yield pytest.param(name, norm, eps, method, marks=marks, id=f"{method}-{norm}-{eps}-{name}")


@pytest.mark.parametrize(("name", "norm", "eps", "method"), list(_random_net_cases()))
def test_bounds_hold_on_random_nets(name, norm, eps, method):
    model, shape = _random_nets()[name]
    model = model.double().eval()
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    x[0] = 0.0  # an image on the box's corner: the box must clip the ball
    labels = model(x).argmax(1)
    net = B.Network.from_module(model, shape)
    assert torch.allclose(net.forward(x), model(x))
    assert margin_violation(model, net, B.Ball(x, eps, norm), labels, method) <= 1e-9


def test_output_bounds_contain_logits():
    model, shape = _random_nets()["conv-bn-relu-sigmoid"]
    model = model.double().eval()
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.double)
    ball = B.Ball(x, 0.05, "linf")
    pts = _random_points(ball, 2000, torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(3, 2000, -1)
    for method in B.METHODS[:2]:
        lo, up = B.output_bounds(B.Network.from_module(model, shape), ball, method)
        assert (z >= lo[:, None] - 1e-9).all() and (z <= up[:, None] + 1e-9).all()


def test_output_bounds_contain_logits_through_maxpool():
    """Both sides of every logit, IBP and CROWN, with pooling windows whose maximum changes inside the ball."""
    model, shape = _random_nets()["conv-relu-maxpool"]
    model = model.double().eval()
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.double)
    ball = B.Ball(x, 0.1, "linf")
    net = B.Network.from_module(model, shape)
    pts = _random_points(ball, 3000, torch.Generator().manual_seed(6))
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(3, 3000, -1)
    bounds = B.intermediate_bounds(net, ball, "crown")
    pool = next(i for i, op in enumerate(net.ops) if isinstance(op, B.MaxPool))
    slope = net.ops[pool]._relaxation(*bounds[pool])[2]
    assert ((slope > 0) & (slope < 1)).any()  # windows whose maximum is undecided: the chord is exercised
    for method in B.METHODS[:2]:
        lo, up = B.output_bounds(net, ball, method)
        assert (z >= lo[:, None] - 1e-9).all() and (z <= up[:, None] + 1e-9).all()


def test_a_wrong_maxpool_relaxation_is_caught(monkeypatch):
    """Lower the upper line's intercept by 10% of the window's spread: sampled points must exceed a bound."""
    model, shape = _random_nets()["conv-relu-maxpool"]
    model = model.double().eval()
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    labels = model(x).argmax(1)
    net = B.Network.from_module(model, shape)
    ball = B.Ball(x, 0.02, "linf")
    assert margin_violation(model, net, ball, labels, "crown") <= 1e-9
    right = B.MaxPool._relaxation

    def wrong(self, lo, up):
        k_lo, k_up, slope, intercept = right(self, lo, up)
        return k_lo, k_up, 0.9 * slope, 0.9 * intercept

    monkeypatch.setattr(B.MaxPool, "_relaxation", wrong)
    assert margin_violation(model, net, ball, labels, "crown") > 1e-6


@pytest.mark.parametrize("kind", ["relu", "sigmoid"])
def test_a_wrong_relaxation_is_caught(kind, monkeypatch):
    """Shrink the upper line of one activation by 10%: the soundness check must find a violation."""
    hidden = nn.ReLU if kind == "relu" else nn.Sigmoid
    model = nets.SigmoidMLP((20, 16), hidden).double().eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    labels = model(x).argmax(1)
    net = B.Network.from_module(model)
    right = B.RELAXATIONS[kind]

    def wrong(lo, up, alpha=None):
        lw, lb, uw, ub = right(lo, up, alpha)
        return lw, lb, 0.9 * uw, 0.9 * ub

    ball = B.Ball(x, 0.01, "linf")  # small: CROWN is nearly tight there, so a 10% error must show
    assert margin_violation(model, net, ball, labels, "crown") <= 1e-9
    monkeypatch.setitem(B.RELAXATIONS, kind, wrong)
    assert margin_violation(model, net, ball, labels, "crown") > 1e-6


def test_unsupported_layer_is_named():
    with pytest.raises(B.UnsupportedLayerError, match="Tanh"):
        B.Network.from_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Tanh(), nn.Linear(10, 10)))
    with pytest.raises(B.UnsupportedLayerError, match="MaxPool2d with padding"):
        B.Network.from_module(nn.Sequential(nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(225, 10)))


def _triangle_lp(net: B.Network, ball: B.Ball, labels, bounds, i: int, j: int) -> float:
    """min logit_y - logit_j over the triangle relaxation of a one-hidden-layer ReLU net (scipy linprog)."""
    (w1, b1), (w2, b2) = (
        (op.weight.detach().numpy(), op.bias.detach().numpy()) for op in net.ops if isinstance(op, B.Linear)
    )
    lo, up = (t[i].detach().numpy() for t in bounds[2])
    xlo, xhi = (t[i].flatten().numpy() for t in ball.box())
    n0, n1 = w1.shape[1], w1.shape[0]
    # variables [x (n0), z (n1), a (n1)]
    g = w2[labels[i]] - w2[j]
    cost = np.concatenate([np.zeros(n0 + n1), g])
    eq = np.hstack([-w1, np.eye(n1), np.zeros((n1, n1))])
    s = np.where(up > lo, up / np.maximum(up - lo, 1e-12), 0)
    s = np.where(lo >= 0, 1.0, np.where(up <= 0, 0.0, s))
    ub_rows = np.hstack([np.zeros((n1, n0)), -s[:, None] * np.eye(n1), np.eye(n1)])  # a <= s z - s lo
    ub_rhs = np.where((lo < 0) & (up > 0), -s * lo, 0.0)
    ge_rows = np.hstack([np.zeros((n1, n0)), np.eye(n1), -np.eye(n1)])  # z - a <= 0 (a >= z)
    bnds = [
        *zip(xlo, xhi, strict=True),
        *zip(lo, up, strict=True),
        *zip(np.maximum(lo, 0), np.maximum(up, 0), strict=True),
    ]
    res = so.linprog(cost, A_ub=np.vstack([ub_rows, ge_rows]), b_ub=np.concatenate([ub_rhs, np.zeros(n1)]),
                     A_eq=eq, b_eq=b1, bounds=bnds, method="highs")  # fmt: skip
    assert res.status == 0
    return float(res.fun + b2[labels[i]] - b2[j])


def test_crown_never_tighter_than_the_triangle_lp():
    torch.manual_seed(3)
    model = nets.SigmoidMLP((12,), nn.ReLU).double().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=torch.double)
    labels = model(x).argmax(1)
    net = B.Network.from_module(model)
    ball = B.Ball(x, 0.03, "linf")
    bounds = B.intermediate_bounds(net, ball, "crown")
    assert any(((lo < 0) & (up > 0)).any() for lo, up in bounds.values())  # unstable units: a real test
    for method in ("crown", "alpha-crown"):
        lower = B.margin_bounds(net, ball, labels, method)
        for i in range(3):
            for j in range(10):
                if j != labels[i]:
                    assert lower[i, j] <= _triangle_lp(net, ball, labels, bounds, i, j) + 1e-7


@pytest.mark.parametrize("name", ["conv-bn-relu-sigmoid", "normalized-sigmoid-mlp"])
def test_l2_intervals_before_the_first_activation_are_the_balls_own(name):
    """Inside the box, an L2 ball takes each first-layer unit to centre -+ eps * |row|_2 exactly: the
    intervals must reach the value the unit takes at x0 -+ eps row / |row| (its Jacobian row, from autograd),
    never go past it, and be no wider than the box's anywhere further up."""
    model, shape = _random_nets()[name]
    model = model.double().eval()
    net = B.Network.from_module(model, shape)
    p = next(i for i, op in enumerate(net.ops) if isinstance(op, B.RELAXED_OPS))
    x0 = 0.3 + 0.4 * torch.rand(2, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.double)
    ball = B.Ball(x0, 0.25, "l2")  # inside the [0, 1] box: the box cannot clip it
    los, ups = B.ball_intervals(net, ball)
    box_los, box_ups = B.interval_forward(net, *ball.box())
    for lo, up, blo, bup in zip(los, ups, box_los, box_ups, strict=True):
        assert (lo >= blo - 1e-12).all() and (up <= bup + 1e-12).all()
    first = B.Network(net.ops[:p], net.shapes[: p + 1])
    for i in range(len(x0)):
        rows = torch.autograd.functional.jacobian(
            lambda v: first.forward(v).flatten(), x0[i : i + 1]
        ).flatten(1)
        step = 0.25 * rows / rows.norm(dim=1, keepdim=True)
        with torch.no_grad():
            low_at = first.forward(x0[i] - step.view(-1, *shape)).flatten(1).diagonal()
            high_at = first.forward(x0[i] + step.view(-1, *shape)).flatten(1).diagonal()
        torch.testing.assert_close(los[p][i].flatten(), low_at)
        torch.testing.assert_close(ups[p][i].flatten(), high_at)
    assert (ups[p] - los[p] < box_ups[p] - box_los[p] - 1e-6).any()  # the ball's bound is the tighter one


def _exact_second_layer_range(net, ball, image: int, unit: int) -> tuple[float, float]:
    """min and max over the Linf ball of one unit of the second ReLU's input, by MILP: the first ReLU
    encoded exactly (Tjeng et al.), with its input's interval bounds as big-M constants."""
    (w1, b1), (w2, b2) = dense_segments(net)[0][:2]
    x0, eps = ball.center[image].flatten().double().numpy(), float(ball.eps[image])
    box_lo, box_hi = np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)
    lo1 = np.minimum(w1, 0) @ box_hi + np.maximum(w1, 0) @ box_lo + b1
    up1 = np.maximum(w1, 0) @ box_hi + np.minimum(w1, 0) @ box_lo + b1
    n0, n1 = len(x0), len(b1)  # variables: x, z = W1 x + b1, a = relu(z), d (binary: z > 0)
    o, eye = np.zeros((n1, n1)), np.eye(n1)
    rows = np.vstack([
        np.hstack([-w1, eye, o, o]),  # z - W1 x = b1
        np.hstack([np.zeros((n1, n0)), eye, -eye, o]),  # z - a <= 0
        np.hstack([np.zeros((n1, n0)), -eye, eye, -np.diag(lo1)]),  # a - z <= -lo (1 - d)
        np.hstack([np.zeros((n1, n0)), o, eye, -np.diag(up1)]),  # a <= up d
    ])  # fmt: skip
    never = np.full(n1, -np.inf)
    cons = so.LinearConstraint(rows, np.concatenate([b1, never, never, never]),
                               np.concatenate([b1, np.zeros(n1), -lo1, np.zeros(n1)]))  # fmt: skip
    bounds = so.Bounds(np.concatenate([box_lo, lo1, np.zeros(n1), np.zeros(n1)]),
                       np.concatenate([box_hi, up1, np.maximum(up1, 0), np.ones(n1)]))  # fmt: skip
    integrality = np.concatenate([np.zeros(n0 + 2 * n1), np.ones(n1)])
    cost = np.concatenate([np.zeros(n0 + n1), w2[unit], np.zeros(n1)])
    low = so.milp(cost, constraints=cons, bounds=bounds, integrality=integrality)
    high = so.milp(-cost, constraints=cons, bounds=bounds, integrality=integrality)
    assert low.status == 0 and high.status == 0
    return low.fun + b2[unit], -high.fun + b2[unit]


def test_alpha_crowns_intermediate_bounds_are_tighter_than_crowns_and_hold():
    """Optimised slopes of the first ReLU tighten the second layer's pre-activation bounds (somewhere
    strictly), never loosen them, and never past the exact range a MILP finds for the units they tightened
    most."""
    torch.manual_seed(5)
    model = nets.SigmoidMLP((24, 24), nn.ReLU).double().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(6), dtype=torch.double)
    net = B.Network.from_module(model)
    ball = B.Ball(x, 0.02, "linf")
    crown = B.intermediate_bounds(net, ball, "crown")
    alpha = B.intermediate_bounds(net, ball, "alpha-crown", steps=20)
    second = sorted(crown)[1]
    (c_lo, c_up), (a_lo, a_up) = crown[second], alpha[second]
    assert ((c_lo < 0) & (c_up > 0)).any()  # unstable units: there is something to tighten
    assert (a_lo >= c_lo).all() and (a_up <= c_up).all()
    assert ((a_lo > c_lo + 1e-6) | (a_up < c_up - 1e-6)).any()
    gained = ((a_lo - c_lo) + (c_up - a_up)).flatten(1)
    for flat in gained.flatten().argsort(descending=True)[:6].tolist():  # the most tightened units
        image, unit = divmod(flat, gained.shape[1])
        low, high = _exact_second_layer_range(net, ball, image, unit)
        assert a_lo.flatten(1)[image, unit] <= low + 1e-7 and a_up.flatten(1)[image, unit] >= high - 1e-7
