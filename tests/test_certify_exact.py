"""Exact minimal distortions: the MILP on a tiny ReLU net equals a brute-force search over a fine grid; the
linear LP agrees with CROWN's certified radius (CROWN is exact on a linear model); certified <= exact."""

from __future__ import annotations

import ctypes
import itertools
import os

import numpy as np
import torch
from torch import nn

from core.certify.bounds import Network, certified_radius
from core.certify.exact import decide_relu_linf, exact_linear, exact_relu_linf, solver_output_off


def _tiny_net() -> nn.Sequential:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    with torch.no_grad():
        net[1].weight.mul_(8)  # several class regions inside the unit square
        net[1].bias.uniform_(-4, 4)
    return net


def _brute_force_linf(model, x0: torch.Tensor, label: int, step: float = 0.002) -> float:
    """Smallest Linf radius whose ball (on a grid of the box) holds a point of another class."""
    grid = torch.arange(0, 1 + step / 2, step, dtype=torch.double)
    pts = torch.tensor(list(itertools.product(grid.tolist(), repeat=2)), dtype=torch.double)
    with torch.no_grad():
        z = model(pts.view(-1, 1, 1, 2))
    flipped = (z.amax(1) > z[:, label] + 0) & (z.argmax(1) != label)
    dist = (pts - x0.flatten()).abs().amax(1)
    return float(dist[flipped].min())


def _tiny_cases():
    """(net, image, label, brute-force minimum) for the tiny net's images where another class is reachable."""
    model = _tiny_net()
    net = Network.from_module(model, (1, 1, 2))
    for seed in range(6):
        x0 = torch.rand(1, 1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.double)
        label = int(model(x0.unsqueeze(0)).argmax())
        try:
            truth = _brute_force_linf(model, x0, label)
        except RuntimeError:  # no grid point of another class
            continue
        if np.isfinite(truth):
            yield net, x0, label, truth


def test_milp_equals_brute_force_on_a_tiny_net():
    found = 0
    for net, x0, label, truth in _tiny_cases():
        result = exact_relu_linf(net, x0, label, upper=1.0, time_limit=20)
        assert result.status == "proven"
        assert abs(result.value - truth) <= 0.002 + 1e-6  # the grid's resolution
        radius = certified_radius(net, x0.unsqueeze(0), torch.tensor([label]), "linf", steps=20)
        assert radius[0] <= result.value + 1e-9
        narrowed = exact_relu_linf(net, x0, label, upper=1.0, time_limit=20, lower=float(radius[0]))
        assert narrowed.status == "proven"  # the search in balls between certified and upper: same minimum
        assert abs(narrowed.value - result.value) <= 1e-4 * result.value
        found += 1
    assert found >= 3


def test_the_milp_at_a_budget_decides_as_brute_force_does():
    """MIPVerify's question (is there a flip within eps?) on either side of the brute-force minimum: no flip
    a little below it, a flip a little above it, and that flip the minimum itself (the grid's resolution)."""
    decided = 0
    for net, x0, label, truth in _tiny_cases():
        if truth < 0.02:
            continue
        below = decide_relu_linf(net, x0, label, truth - 0.01, time_limit=20)
        above = decide_relu_linf(net, x0, label, truth + 0.01, time_limit=20)
        assert (below.status, below.flip) == ("robust", None)
        assert above.status == "flip" and above.minimal and abs(above.flip - truth) <= 0.002 + 1e-6
        decided += 1
    assert decided >= 3


def test_linear_lp_equals_crown_and_qp_brackets_the_l2_minimum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double().eval()
    net = Network.from_module(model, (1, 1, 6))
    x = torch.rand(5, 1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    labels = model(x.unsqueeze(1) if x.dim() == 3 else x).argmax(1)
    radius = certified_radius(net, x, labels, "linf", steps=30)
    l2_radius = certified_radius(net, x, labels, "l2", steps=30)
    for i in range(5):
        lp = exact_linear(net, x[i], int(labels[i]), "linf")
        assert lp.status == "proven"
        assert abs(lp.value - float(radius[i])) <= 1e-6  # CROWN is exact on an affine map with a box
        qp = exact_linear(net, x[i], int(labels[i]), "l2")
        assert qp.lower <= qp.upper <= qp.lower * (1 + 1e-5)
        assert float(l2_radius[i]) <= qp.upper + 1e-9


def test_what_a_solver_prints_never_reaches_stdout(capfd):
    """HiGHS prints diagnostics from C straight to file descriptor 1 (they broke `certify --json`): written
    through the descriptor or C's buffered stdout inside the guard, neither may come out; stdout works after."""
    print("before", flush=True)
    with solver_output_off():
        os.write(1, b"descriptor noise\n")
        ctypes.CDLL(None).printf(b"buffered C noise\n")
    print("after", flush=True)
    assert capfd.readouterr().out == "before\nafter\n"
