"""AutoAttack and its APGD members: the DLR loss against its formula, bad input, and torchattacks as oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core.attacks import make_attack
from core.attacks.apgd import dlr_loss
from core.errors import InvalidParameterError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dlr_reference(z: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    """Croce & Hein (2020), eqs. 5 and 7, written out per image with numpy."""
    out = []
    for i, row in enumerate(z):
        s = np.sort(row)[::-1]
        if t is None:
            other = max(v for j, v in enumerate(row) if j != y[i])
            out.append(-(row[y[i]] - other) / (s[0] - s[2] + 1e-12))
        else:
            out.append(-(row[y[i]] - row[t[i]]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12))
    return np.array(out)


def test_dlr_loss_matches_its_formula():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(50, 10, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(10, (50,), generator=gen)
    t = (y + 1 + torch.randint(9, (50,), generator=gen)) % 10
    np.testing.assert_allclose(dlr_loss(z, y).numpy(), _dlr_reference(z.numpy(), y.numpy(), None), rtol=1e-9)
    np.testing.assert_allclose(
        dlr_loss(z, y, t).numpy(), _dlr_reference(z.numpy(), y.numpy(), t.numpy()), rtol=1e-9
    )
    # Invariant to shifting and positive scaling of the logits, as the name promises.
    assert torch.allclose(dlr_loss(2 * z + 5, y, t), dlr_loss(z, y, t))


@pytest.mark.parametrize("params", [{"version": "rand"}, {"eps": 1.5}, {"norm": "l3"}])
def test_bad_parameters_are_refused(fc100, params):
    with pytest.raises(InvalidParameterError):
        make_attack("autoattack", fc100, **params)


def test_targeted_autoattack_is_refused(fc100, mnist_test):
    with pytest.raises(InvalidParameterError):
        make_attack("autoattack", fc100).run(mnist_test.images[:2], mnist_test.labels[:2], target=3)


class _Noisy(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn_like(x))


@pytest.mark.parametrize(
    ("wrap", "words"), [(lambda m: nn.Sequential(m, nn.Softmax(1)), "sum to 1"), (_Noisy, "EOT")]
)
def test_softmax_and_randomised_models_are_warned_about(fc100, mnist_test, wrap, words):
    attack = make_attack("autoattack", wrap(fc100), eps=0.05, steps=2, queries=2)
    with pytest.warns(UserWarning, match=words):
        attack.run(mnist_test.images[:4], mnist_test.labels[:4])


@pytest.mark.slow
def test_apgd_robust_accuracy_within_half_a_point_of_torchattacks(mnist_test):
    torchattacks = pytest.importorskip("torchattacks")
    from core.models import load

    model = load("fc100-100-10-pgdtrain", "cpu")
    x, y = mnist_test.images[:500], mnist_test.labels[:500]
    for loss in ("ce", "dlr"):
        mine = make_attack("apgd", model, eps=0.1, steps=50, loss=loss, seed=0).run(x, y)
        theirs = torchattacks.APGD(model, eps=0.1, steps=50, loss=loss, seed=0)(x, y)
        with torch.no_grad():
            their_acc = (model(theirs).argmax(1) == y).float().mean().item()
        assert abs((1 - mine.success.float().mean().item()) - their_acc) <= 0.005


def _their_autoattack(model: nn.Module, eps: float, steps: int, queries: int):
    """torchattacks' AutoAttack(version="standard") with its members' steps and queries set to ours (it
    fixes 10 steps and 5000 queries; the reference runs 100 steps)."""
    torchattacks = pytest.importorskip("torchattacks")
    theirs = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    for member in theirs._autoattack.attacks:
        if hasattr(member, "steps"):
            member.steps = steps
        if hasattr(member, "n_queries"):
            member.n_queries = queries
    return theirs


@pytest.mark.slow
def test_ensemble_robust_accuracy_within_half_a_point_of_torchattacks(mnist_test):
    """Same members in the same order on the same images; random starts are drawn differently, so the
    issue's 0.5 points (2 images of 500) is the allowance."""
    from core.models import load

    model = load("fc100-100-10-pgdtrain", "cpu")
    x, y = mnist_test.images[:500], mnist_test.labels[:500]
    theirs = _their_autoattack(model, 0.1, steps=10, queries=500)(x, y)
    mine = make_attack("autoattack", model, eps=0.1, steps=10, queries=500).run(x, y)
    with torch.no_grad():
        their_acc = (model(theirs).argmax(1) == y).float().mean().item()
    my_acc = 1 - mine.success.float().mean().item()
    assert their_acc < 0.95  # the budget breaks images, so the comparison says something
    assert abs(my_acc - their_acc) <= 0.005


@pytest.mark.parametrize(("k", "n"), [(0, 10), (7, 10), (88, 100), (100, 100)])
def test_wilson_interval_holds_the_proportion_and_mirrors(k, n):
    from core.experiments.autoattack import wilson

    low, high = wilson(k, n)
    assert 0 <= low <= k / n <= high <= 1
    mirror = wilson(n - k, n)
    assert (low, high) == pytest.approx((1 - mirror[1], 1 - mirror[0]))
    assert high - low > wilson(10 * k, 10 * n)[1] - wilson(10 * k, 10 * n)[0]  # more points, a tighter one


def test_the_page_places_the_lab_model_in_the_leaderboard_by_robust_accuracy(tmp_path):
    from core.experiments import autoattack, paper
    from core.experiments.writer import Report, base_card, write

    assert "Not run yet" in autoattack.doc(tmp_path)
    published = sorted(paper.AUTOATTACK_MNIST.items(), key=lambda kv: kv[1]["robust"])
    between = (published[0][1]["robust"] + published[1][1]["robust"]) / 2  # above the weakest entry only
    row = {"model": "cnn-robust", "eps": paper.AUTOATTACK_MNIST_LINF, "n": 200, "clean_accuracy": 0.99}
    row |= {"robust_accuracy": between, "robust_interval": list(autoattack.wilson(round(200 * between), 200))}
    row |= {"broken_by": {"APGD-CE": 10, "Square": 2}}
    card = base_card("autoattack", 200, 0)
    write(Report("autoattack", "t", autoattack.COLUMNS, [row], card, lambda path: path.touch()), tmp_path)
    page = autoattack.doc(tmp_path).splitlines()
    at = {name: next(i for i, line in enumerate(page) if name in line) for name, _ in published}
    ours = next(i for i, line in enumerate(page) if "cnn-robust (this lab)" in line)
    assert at[published[1][0]] < ours < at[published[0][0]]
    assert "benchmarks/autoattack.py --update-docs" in "\n".join(page)  # no benchmark card stored here
    assert any("Square" in line and "broke 2 images" in line for line in page)  # the black box's share


def test_the_page_quotes_each_member_kinds_time_against_its_limit(tmp_path):
    from core.experiments import autoattack

    bench = {
        "n": 100,
        "model": "cnn-robust",
        "eps": 0.3,
        "steps": 100,
        "queries": 5000,
        "theirs_over_ours": 1.1,
    }
    bench |= {
        "machine": {"load_average_1_5_15": [1.0, 1.0, 1.0]},
        "machine_after": {"load_average_1_5_15": [1.0, 1.0, 1.0]},
        "median_s": {"ours": 10, "torchattacks": 11},
    }
    bench |= {"robust_accuracy": {"ours": 0.9, "torchattacks": 0.9}}
    limits = {"APGD-CE": 1.5, "APGD-T (1)": 1.25, "APGD-T (2)": 2.0, "Square": 0.5}
    bench["members"] = [{"member": k, "over_limit": v} for k, v in limits.items()]
    (tmp_path / autoattack.BENCHMARK_CARD).parent.mkdir(parents=True)
    (tmp_path / autoattack.BENCHMARK_CARD).write_text(json.dumps(bench))
    text = "\n".join(autoattack._benchmark(tmp_path))
    assert "APGD-CE 1.50x, APGD-T 1.25-2.00x, Square 0.50x." in text
    bench["members"] = [{"member": k} for k in limits]  # a card from before the limits were measured
    (tmp_path / autoattack.BENCHMARK_CARD).write_text(json.dumps(bench))
    assert "limit" not in "\n".join(autoattack._benchmark(tmp_path))


@pytest.mark.parametrize(("robust", "words"), [(0.95, "at or above"), (0.80, "below")])
def test_the_readme_says_which_side_of_madry_the_model_stands(robust, words):
    from core.experiments import paper, quotes

    row = {"model": "cnn-robust", "eps": paper.AUTOATTACK_MNIST_LINF, "n": 200, "robust_accuracy": robust}
    row["robust_interval"] = [robust - 0.05, robust + 0.03]
    other = {
        "model": "fc100-100-10",
        "eps": 0.1,
        "n": 200,
        "robust_accuracy": 0.1,
        "robust_interval": [0, 0.2],
    }
    found = quotes.autoattack({"rows": [row, other]})
    assert found["aa_cnn_robust_vs_madry"] == words
    assert "aa_fc100_100_10_vs_madry" not in found  # another budget: no place in that table
