"""Input-transformation defences: the transforms themselves, and the adaptive attack beating a defence that
only masks gradients (Athalye et al. 2018)."""

import pytest
import torch

from core.defences.transforms import (
    BitDepthReduction,
    DefendedModel,
    JPEGCompression,
    MedianFilter,
    parse_transform,
)
from core.errors import InvalidParameterError
from core.evaluation import defences
from core.models import load


def test_bit_depth_reduction_keeps_exactly_2_to_the_bits_levels():
    x = torch.rand(2, 1, 28, 28)
    for bits in (1, 2, 3):
        assert len(torch.unique(BitDepthReduction(bits)(x))) <= 2**bits
    assert torch.equal(
        BitDepthReduction(8)(torch.tensor([0.0, 1.0, 128 / 255])), torch.tensor([0.0, 1.0, 128 / 255])
    )


def test_median_filter_removes_isolated_pixels_and_keeps_flat_regions():
    x = torch.zeros(1, 3, 9, 9)
    x[0, :, 4, 4] = 1.0  # salt
    assert MedianFilter(3)(x).abs().max() == 0
    flat = torch.full((1, 1, 6, 7), 0.3)
    assert torch.allclose(MedianFilter(3)(flat), flat)


def test_jpeg_round_trip_is_close_but_not_exact(mnist_test):
    x = mnist_test.images[:4]
    out = JPEGCompression(75)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert 0 < (out - x).abs().mean() < 0.05
    rgb = torch.rand(2, 3, 16, 16)
    assert JPEGCompression(50)(rgb).shape == rgb.shape


@pytest.mark.parametrize("spec", ["bits:0", "bits:2.5", "median:1", "jpeg:0", "jpeg:nan", "jpeg:x", "blur:3"])
def test_bad_defence_specs_are_refused(spec):
    with pytest.raises(InvalidParameterError):
        parse_transform(spec)


def test_bpda_forward_equals_the_defended_forward_and_passes_gradients(mnist_test):
    model = load("fc100-100-10", "cpu")
    x = mnist_test.images[:8].clone().requires_grad_(True)
    naive = DefendedModel(model, BitDepthReduction(2), "naive")
    bpda = DefendedModel(model, BitDepthReduction(2), "bpda")
    assert torch.allclose(naive(x), bpda(x))
    (g_naive,) = torch.autograd.grad(naive(x).logsumexp(1).sum(), x)
    (g_bpda,) = torch.autograd.grad(bpda(x).logsumexp(1).sum(), x)
    assert g_naive.abs().max() == 0  # rounding masks the gradient
    assert g_bpda.abs().max() > 0


def test_adaptive_attack_breaks_bit_depth_reduction_that_plain_pgd_cannot(mnist_test):
    """Bit-depth reduction to 2 bits at Linf 0.2: PGD on the defended model sees zero gradients and fails;
    BPDA (identity backward) breaks it. The verdict must say it only seems to hold."""
    model = load("fc100-100-10", "cpu")
    x, labels = mnist_test.images[:40], mnist_test.labels[:40]
    none, row = defences.evaluate_transforms(model, x, labels, [BitDepthReduction(2)], eps=0.2, steps=20)
    assert none.robust_plain < 0.2  # the bare model falls
    assert row.clean_accuracy >= 0.9
    assert row.robust_plain >= 0.8  # plain PGD success is low ...
    assert row.robust_adaptive <= 0.2  # ... BPDA success is high
    assert row.robust_adaptive < row.robust_plain - 0.5
    assert row.verdict.startswith("Only seems to hold")
    # the indicators of attack failure say why: flagged under plain PGD, silent under BPDA
    assert {"masked_gradient", "non_differentiable_input"} <= set(row.indicators_plain)
    assert row.indicators_adaptive == []
    assert "zero or non-finite gradient" in row.verdict


def test_a_hold_with_a_fired_indicator_is_downgraded():
    row = defences.DefenceRow("x", 0.98, 0.9, 0.9, 0.9, "", indicators_adaptive=["loss_still_falling"])
    assert defences._verdict(0.1, row, 0.99).startswith("Unverified")
    row.indicators_adaptive = []
    assert defences._verdict(0.1, row, 0.99).startswith("Holds")


def test_twin_comparison_measures_both_models_under_the_same_attack(mnist_test):
    x, labels = mnist_test.images[:30], mnist_test.labels[:30]
    (row,) = defences.compare_twins([("fc10-1e-2", "fc10-1")], x, labels, attack="fgsm", eps=0.1)
    for name, clean, robust in ((row.model, row.clean_accuracy, row.robust_accuracy),
                                (row.twin, row.twin_clean_accuracy, row.twin_robust_accuracy)):  # fmt: skip
        with torch.no_grad():
            assert clean == pytest.approx(float((load(name, "cpu")(x).argmax(1) == labels).float().mean()))
        assert robust <= clean


def test_defences_page_shows_an_honest_verdict():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "defences.py")
    at = AppTest.from_file(page, default_timeout=180).run()
    at.multiselect(key="def_transforms").set_value(["bits:2"]).run()
    at.number_input(key="def_n").set_value(30).run()
    at.button(key="def_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.warning) == 1 and "Only seems to hold" in at.warning[0].value
    assert "non-differentiable preprocessing" in at.warning[0].value  # the indicators give the reason
