"""Certificates on the zoo's trained models against attacks and exact solvers: per image certified <= exact
<= attack (what each side promises), bounds that contain the outputs at an attack's adversarial example, and
on fc10 (affine softmax) the exact L2 minimum found again by DeepFool (exact on an affine model)."""

from __future__ import annotations

import pytest
import torch

from core.attacks import make_attack
from core.certify.bounds import Ball, Network, certified_radius, output_bounds
from core.certify.bracket import attack_distortions, image_bracket
from core.certify.exact import exact_linear, exact_relu_linf
from core.evaluation.protocol import Protocol
from core.models import load


def _images(model, n: int):
    sel = Protocol(n=n).select(model)
    return sel.images, sel.labels


def test_fc10_exact_minimum_below_every_attack_and_deepfool_finds_it(one_torch_thread):
    model = load("fc10-1", "cpu")
    x, y = _images(model, 4)
    net = Network.from_module(model)
    linf_cert = certified_radius(net, x, y, "linf")
    l2_cert = certified_radius(net, x, y, "l2")
    deepfool = make_attack("deepfool", model).run(x, y)
    lbfgs = make_attack("lbfgs", model, rounds=4).run(x, y)
    pgd = attack_distortions(model, x, y, "linf")
    assert deepfool.success.all() and lbfgs.success.all()
    for i in range(4):
        lp, qp = (exact_linear(net, x[i], int(y[i]), norm) for norm in ("linf", "l2"))
        assert lp.status == qp.status == "proven"
        assert linf_cert[i] <= lp.value * (1 + 1e-5) and lp.value <= pgd[i] * (1 + 1e-5)
        assert l2_cert[i] <= qp.upper * (1 + 1e-5)
        for attack in (deepfool, lbfgs):  # a flip below the proved minimum would be a bug of one side
            assert attack.l2[i] >= qp.lower * (1 - 1e-5)
        assert deepfool.l2[i] <= qp.upper * 1.01  # an affine model: DeepFool's first step is the exact one


@pytest.mark.slow
def test_relu_mlp_bracket_certified_exact_attack(one_torch_thread):
    """fc100-100-10-ibp (few unstable units, so the MILP has a chance): the bracket never inverts."""
    model = load("fc100-100-10-ibp", "cpu")
    x, y = _images(model, 2)
    net = Network.from_module(model)
    cert = certified_radius(net, x, y, "linf")
    attack = attack_distortions(model, x, y, "linf")
    for i in range(2):
        assert 0 < cert[i] <= attack[i]
        exact = exact_relu_linf(net, x[i], int(y[i]), float(attack[i]), time_limit=8, lower=float(cert[i]))
        assert cert[i] * (1 - 1e-5) <= exact.lower <= exact.upper <= attack[i] * (1 + 1e-5)
        if exact.status == "proven":
            assert exact.lower <= exact.value <= exact.upper


@pytest.mark.slow
@pytest.mark.parametrize(("name", "eps"), [("cnn", 0.05), ("cnn-robust", 0.1)])
def test_cnn_bounds_contain_the_attack_point(name, eps, one_torch_thread):
    """The zoo's cnn (MaxPool2d twice) and cnn-robust (StridedCNN: 4x4 stride-2 padded convolutions in
    nested blocks): IBP's and CROWN's logit bounds over the ball contain the logits at PGD's adversarial
    example and at random points; the certified radius is below PGD's flip."""
    model = load(name, "cpu")
    x, y = _images(model, 2)
    net = Network.from_module(model)
    adv = make_attack("pgd", model, norm="linf", eps=eps, steps=20, seed=0).run(x, y).x_adv
    noise = (torch.rand(64, *x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).sign() * eps
    pts = torch.cat([adv.unsqueeze(0), (x + noise).clamp(0, 1)]).flatten(0, 1)
    with torch.no_grad():
        z = model(pts).view(-1, len(x), 10)
    for method in ("ibp", "crown"):
        lo, up = output_bounds(net, Ball(x, eps, "linf"), method)
        assert (z >= lo - 1e-4).all() and (z <= up + 1e-4).all()
    cert = certified_radius(net, x, y, "linf", steps=8)
    assert (cert <= attack_distortions(model, x, y, "linf")).all()


def test_image_bracket_orders_certified_exact_attack(one_torch_thread):
    """The Validate page's bracket on fc10-1: CROWN is exact on an affine model, so the certified radius
    meets the LP's minimum (to the search's resolution), and every attack lies above both."""
    model = load("fc10-1", "cpu")
    x, y = _images(model, 1)
    pgd = float(attack_distortions(model, x, y, "linf")[0])
    bracket = image_bracket(model, x, int(y[0]), {"pgd": pgd, "failed": None})
    assert bracket["exact"] - 2 / 2**14 <= bracket["certified"] <= bracket["exact"] <= pgd * (1 + 1e-5)
    assert bracket["attacks"] == {"pgd": pgd} and f"{bracket['certified']:.4f}" in bracket["verdict"]
