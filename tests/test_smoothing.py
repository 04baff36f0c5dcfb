"""Randomized smoothing: soundness of CERTIFY's radius, PREDICT's abstention, seeding, the adaptive attack."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from core.errors import InvalidParameterError
from core.smoothing import SmoothingParams, certify, certify_batch, predict
from core.smoothing.attack import smooth_pgd
from core.smoothing.certify import make_generator, sample_counts
from core.smoothing.noise import noise_path


class Constant(nn.Module):
    """Always class 3 of 10, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 10) + self.w
        out[:, 3] = 1.0
        return out


class Tie(nn.Module):
    """Class 0 or 1, each with probability 1/2 under symmetric noise around pixel value 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1)[:, 0] - 0.5
        return torch.stack([s, -s], 1)


class Threshold(nn.Module):
    """A linear classifier (class 1 when mean pixel > 0.5): its smoothed version is known in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 0.5
        return torch.stack([-s, s], 1)


def test_constant_classifier_certifies_exactly_the_bound_of_n_votes_of_n():
    sigma, n, alpha = 0.5, 2000, 0.001
    res = certify(
        Constant(),
        torch.rand(1, 4, 4),
        SmoothingParams(sigma, 10, n, alpha, 500),
        make_generator(Constant(), 0),
    )
    assert res.prediction == 3 and res.count == n
    assert res.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)


def test_radius_recomputed_from_stored_counts_with_scipy():
    model, x = Threshold(), torch.full((1, 8, 8), 0.52)
    params = SmoothingParams(sigma=0.25, n0=50, n=3000, alpha=0.01, batch=1000)
    res = certify(model, x, params, make_generator(model, 1))
    assert res.prediction == 1 and 0 < res.count < params.n  # a non-trivial vote split
    assert res.counts[res.prediction] == res.count
    pa = beta.ppf(params.alpha, res.count, params.n - res.count + 1)  # one-sided Clopper-Pearson
    assert res.pa_lower == pytest.approx(pa, rel=1e-12)
    assert res.radius == pytest.approx(params.sigma * norm.ppf(pa), rel=1e-12)


def test_certified_radius_is_below_the_true_radius_of_the_threshold_classifier():
    """The smoothed threshold classifier's exact radius is the distance to its boundary (the mean-pixel
    hyperplane); a certificate above it would be unsound."""
    model, x = Threshold(), torch.full((1, 8, 8), 0.52)
    params = SmoothingParams(sigma=0.25, n0=50, n=20000, alpha=0.001, batch=5000)
    res = certify(model, x, params, make_generator(model, 2))
    true_radius = 0.02 * 8  # distance from x to {mean = 0.5}: 0.02 per pixel along the unit normal 1/8
    assert 0 < res.radius <= true_radius


def test_noise_drawn_in_the_first_layer_has_the_distribution_of_pixel_noise():
    """A two-layer linear network opening with Flatten, Linear(16, 3): its votes come from the projected
    path, and P(class 1) under pixel noise is Phi(margin / (sigma |u|)) in closed form, u the composed
    direction of class 1 minus class 0; the vote share must lie in a 1e-6 Clopper-Pearson interval of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Linear(3, 2)).requires_grad_(False)
    x, sigma, n = torch.rand(1, 4, 4), 0.5, 40000
    assert noise_path(model, x, sigma).factor is not None  # the projected draw, not pixel noise
    first, second = model[1], model[2]
    u = (second.weight[1] - second.weight[0]) @ first.weight
    margin = float(u @ x.flatten() + (second.weight[1] - second.weight[0]) @ first.bias)
    margin += float(second.bias[1] - second.bias[0])
    p_true = norm.cdf(margin / (sigma * float(u.norm())))
    assert 0.05 < p_true < 0.95  # a split that a wrong covariance would move
    votes = int(sample_counts(model, x, sigma, n, 7000, make_generator(model, 3))[1])
    low, high = beta.ppf(5e-7, votes, n - votes + 1), beta.ppf(1 - 5e-7, votes + 1, n - votes)
    assert low <= p_true <= high


def test_tie_abstains():
    model, x = Tie(), torch.full((1, 2, 2), 0.5)
    params = SmoothingParams(sigma=0.5, n0=100, n=4000, alpha=0.001, batch=1000)
    assert certify(model, x, params, make_generator(model, 0)).prediction is None
    assert predict(model, x, params, make_generator(model, 0)).prediction is None


def test_same_seed_same_counts_other_seed_other_counts():
    model, xs = Threshold(), torch.full((2, 1, 8, 8), 0.51)
    params = SmoothingParams(sigma=0.5, n0=20, n=2000, alpha=0.001, batch=300)
    a = certify_batch(model, xs, params, seed=5, progress=False)
    b = certify_batch(model, xs, params, seed=5, progress=False)
    c = certify_batch(model, xs, params, seed=6, progress=False)
    assert [r.counts for r in a] == [r.counts for r in b]
    assert [r.counts for r in a] != [r.counts for r in c]


@pytest.mark.parametrize(
    "kwargs",
    [{"sigma": 0.0}, {"sigma": 50.0}, {"n0": 200, "n": 100}, {"alpha": 0.0}, {"alpha": 1.0}, {"batch": 0}],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InvalidParameterError):
        SmoothingParams(**kwargs)


@pytest.fixture(scope="module")
def mnist_smooth():
    from core.data import load_mnist
    from core.models import load

    data = load_mnist("test")
    return load("smooth-0.25", "cpu"), data.images[:8], data.labels[:8]


def test_tiny_sigma_equals_the_base_classifier(mnist_smooth):
    model, x, _ = mnist_smooth
    params = SmoothingParams(sigma=1e-6, n0=10, n=200, alpha=0.001, batch=200)
    smoothed = [r.prediction for r in certify_batch(model, x, params, progress=False)]
    assert smoothed == model(x).argmax(1).tolist()


@pytest.mark.slow
def test_adaptive_attack_finds_nothing_inside_the_radius_and_something_outside(mnist_smooth):
    model, x, y = mnist_smooth
    params = SmoothingParams(sigma=0.25, n0=100, n=10000, alpha=0.001, batch=5000)
    certs = certify_batch(model, x, params, seed=0, progress=False)
    gen = make_generator(model, 1)
    inside_flips, outside_flips = 0, 0
    for xi, yi, cert in zip(x, y.tolist(), certs, strict=True):
        if cert.prediction != yi:
            continue
        inside = smooth_pgd(model, xi, yi, 0.95 * cert.radius, 0.25, steps=20, generator=gen)
        assert (inside - xi).norm() <= 0.95 * cert.radius + 1e-5
        got = predict(model, inside, params, gen).prediction
        inside_flips += got is not None and got != yi
        outside = smooth_pgd(model, xi, yi, 4.0, 0.25, steps=40, generator=gen)
        got = predict(model, outside, params, gen).prediction
        outside_flips += got is not None and got != yi
    assert inside_flips == 0
    assert outside_flips > 0


def test_experiment_card_keeps_what_recomputes_its_curve():
    """The certified accuracies of the card's rows follow from its per-image counts alone, recomputed here
    with scipy (Clopper-Pearson, then sigma * Phi^-1), and the published numbers come from paper.py."""
    from core.experiments import paper
    from core.experiments.smoothing import radius_key, run

    report = run(n=2, samples=300, sigmas=(0.5,), progress=False)
    card, (row,) = report.card, report.rows
    images, params = card["images"]["0.5"], card["params"]["0.5"]
    assert card["n"] == card["n_requested"] == len(images) == 2
    radii = []
    for img in images:
        pa = beta.ppf(params["alpha"], img["count"], params["n"] - img["count"] + 1)
        radii.append(0.5 * norm.ppf(pa) if pa >= 0.5 and img["prediction"] == img["label"] else -1.0)
        assert img["radius"] == pytest.approx(max(0.5 * norm.ppf(pa), 0.0) if pa >= 0.5 else 0.0)
    for r, published in zip(card["radii"], paper.SMOOTHING_MNIST[0.5]["certified"], strict=True):
        assert row[radius_key(r)] == sum(rad >= r for rad in radii) / 2
        assert row[f"paper {radius_key(r)}"] == published


def test_experiment_budget_stops_every_sigma_at_the_same_image():
    from core.experiments.smoothing import run

    report = run(n=5, samples=100, sigmas=(0.25, 1.0), minutes=0, progress=False)
    assert report.card["n"] == 1 and report.card["n_requested"] == 5
    assert [len(v) for v in report.card["images"].values()] == [1, 1]
    assert any("1 of the 5" in note for note in report.notes)


def test_reproduce_records_its_certified_accuracy_on_the_leaderboard():
    """`reproduce smoothing` leaves on the leaderboard what `smooth` leaves there: per sigma, one L2
    certificate per radius, certified / n equal to the card's row, under the first-n-test-images protocol."""
    from core.evaluation import leaderboard
    from core.evaluation.protocol import Protocol
    from core.experiments.smoothing import radius_key, run

    report = run(n=3, samples=100, sigmas=(1.0,), progress=False)
    (row,) = report.rows
    protocol = Protocol(n=3, correct_only=False)
    rows = [c for c in leaderboard.certificates(model="smooth-1.00") if c.protocol_id == protocol.fingerprint]
    assert sorted(c.budget for c in rows) == sorted(report.card["radii"])
    for c in rows:
        assert (c.method, c.norm, c.source, c.n) == ("smoothing", "l2", "reproduce", 3)
        assert c.certified / c.n == row[radius_key(c.budget)]
        assert c.params["sigma"] == 1.0 and c.params["n"] == 100 and c.params["seed"] == 0


def test_gap_table_is_ours_minus_the_papers_in_points():
    from core.experiments.smoothing import gap_table

    row = {"sigma": "0.25", "r0": 0.98, "paper r0": 0.992, "r0.5": 0.97, "paper r0.5": 0.968}
    assert "| 0.25 | -1.2 | +0.2 | 1.2 |" in gap_table({"radii": [0.0, 0.5], "rows": [row]})
