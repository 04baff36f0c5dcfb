"""The certified radius a page shows after a one-image run (core.certify.bracket.page_radius): CROWN's
full search where it fits the page's cost budget, else IBP's full search and CROWN's search cut to the
budget (bounds.budget_radius), named by the bound that proved it. Checked by sampling and PGD inside the
ball of the radius returned, against IBP's radius (never below) and the attack's flip (never above), and
against CROWN's full search (a budget that never runs out finds the same radius)."""

from __future__ import annotations

import pytest
import torch

from core.certify import bounds as B
from core.certify import bracket
from tests.test_certify_bounds import margin_violation
from tests.test_certify_strided import _images, _strided


@pytest.fixture(scope="module")
def case():
    model = _strided(channels=(3, 4), hidden=10)
    x = _images(4, seed=3)
    return model, B.Network.from_module(model), x, model(x).argmax(1)


@pytest.mark.parametrize("norm", B.NORMS)
@pytest.mark.parametrize("budget", [0.0, 2e5, 1e12])
def test_the_budgeted_radius_is_proved_by_the_bound_it_names(case, norm, budget):
    """Every image's radius: its margins' lower bound by the named method is positive on that ball, and no
    sampled or PGD point inside falls below it; never below IBP's radius, never above the flip given."""
    model, net, x, labels = case
    interval = B.certified_radius(net, x, labels, norm, "ibp").detach()
    flip = 3 * float(interval.max())  # a stand-in for an attack's flip, above every image's radius
    for high in (None, flip):
        radius, by_crown = B.budget_radius(net, x, labels, norm, budget, high)
        assert (radius >= interval).all() and (high is None or (radius <= high).all())
        for i in range(len(x)):
            if radius[i] == 0:
                continue
            # a hair inside: the search's last step lands where the bound is ~1e-15, whose sign the
            # rounding of a one-image batch (not the search's four) may flip
            ball = B.Ball(x[i : i + 1], radius[i : i + 1] * (1 - 1e-9), norm)
            method = "crown" if by_crown[i] else "ibp"
            assert B.worst_margin(net, ball, labels[i : i + 1], method) > 0
            assert margin_violation(model, net, ball, labels[i : i + 1], method, count=200) <= 1e-9
    if budget == 1e12:
        assert by_crown.any()  # CROWN proves more than IBP somewhere, else nothing here tests its search


@pytest.mark.parametrize("norm", B.NORMS)
def test_a_budget_that_never_runs_out_finds_crowns_radius(case, norm):
    """The guarded search converges to the radius CROWN's full search finds (both to high / 2**14, the
    margin bound falling in eps on these images), from either start."""
    _, net, x, labels = case
    full = B.certified_radius(net, x, labels, norm, "crown")
    tol = B.MAX_RADIUS[norm] / 2**14
    for high in (None, 2 * float(full.max())):
        radius, _ = B.budget_radius(net, x, labels, norm, 1e12, high)
        tol_high = tol if high is None else high / 2**14
        assert torch.allclose(radius, full, atol=2 * max(tol, tol_high))


def test_a_smaller_budget_spends_fewer_bounds(case, monkeypatch):
    """The search stops once the budget is spent: with none, no CROWN bound (IBP's radius); more budget,
    more bounds (and a radius at least as large, each the largest proved so far)."""
    _, net, x, labels = case
    calls = []
    real = B.worst_margin
    monkeypatch.setattr(
        B, "worst_margin", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k) or real(*a, **k)
    )
    counts, radii = [], []
    for budget in (0.0, 5e5, 1e12):
        calls.clear()
        radii.append(B.budget_radius(net, x, labels, "linf", budget)[0])
        counts.append(sum(1 for method in calls if method == "crown"))
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2]
    assert torch.equal(radii[0], B.certified_radius(net, x, labels, "linf", "ibp"))
    assert (radii[0] <= radii[1]).all() and (radii[1] <= radii[2]).all()


def test_the_page_runs_crowns_full_search_where_it_fits_and_says_which_bound_proved(case, monkeypatch):
    model, net, x, labels = case
    label = int(labels[1])
    full = float(B.certified_radius(net, x[1:2], labels[1:2], "linf", "crown")[0])
    assert bracket.page_radius(net, x[1:2], label, "linf") == (full, "CROWN")  # this narrow net fits
    monkeypatch.setattr(bracket, "PAGE_BUDGET", 0.0)  # as cnn-robust's search does not
    radius, method = bracket.page_radius(net, x[1:2], label, "linf", high=2 * full)
    assert method in ("IBP", "CROWN, a search cut to its cost budget") and 0 < radius <= full + 1e-12
    check = "crown" if method.startswith("CROWN") else "ibp"
    assert B.worst_margin(net, B.Ball(x[1:2], radius * (1 - 1e-9), "linf"), labels[1:2], check) > 0
