"""Lipschitz bounds (Table 5): the power-iteration operator norm against independent computations (the
explicit dense matrix, the kernel's FFT), and bounds that are never below the empirical local stretch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.certify.lipschitz import (
    conv_fft_norm,
    dense_matrix,
    network_bounds,
    nonlinear_constant,
    operator_norm,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small operators: one torch thread is several times faster on the shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dense_norm(fn, shape) -> float:
    return float(torch.linalg.matrix_norm(dense_matrix(fn, shape), ord=2))


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1), (3, 9, 9)),
        (dict(in_channels=2, out_channels=5, kernel_size=5, stride=1, padding=2), (2, 8, 8)),
        (
            dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, groups=4),
            (4, 7, 7),
        ),  # depthwise
        (dict(in_channels=3, out_channels=2, kernel_size=4, stride=3, padding=0), (3, 10, 10)),
    ],
)
def test_power_iteration_matches_the_dense_operator_norm_of_a_strided_padded_conv(conv, shape):
    torch.manual_seed(0)  # the weights are drawn here, so they do not depend on which tests ran before
    conv = nn.Conv2d(**conv).double()
    exact = _dense_norm(conv, shape)
    assert operator_norm(conv, shape, iters=400, tol=1e-9) == pytest.approx(exact, rel=1e-3)


def test_conv_with_batchnorm_is_folded_into_one_operator():
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(-2, 2)
    block = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), bn).double().eval()
    exact = _dense_norm(block, (3, 8, 8))
    assert operator_norm(block, (3, 8, 8), iters=400, tol=1e-9) == pytest.approx(exact, rel=1e-3)


def test_power_iteration_matches_the_fft_of_the_kernel_for_circular_convolution():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="circular", bias=False).double()
    fft = conv_fft_norm(conv.weight, (8, 8))
    assert operator_norm(conv, (3, 8, 8), iters=400, tol=1e-9) == pytest.approx(fft, rel=1e-3)
    assert _dense_norm(conv, (3, 8, 8)) == pytest.approx(fft, rel=1e-9)


def test_fft_on_the_padded_grid_bounds_the_zero_padded_strided_convolution():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    power = operator_norm(conv, (3, 10, 10), iters=200, tol=1e-9)
    assert power <= conv_fft_norm(conv.weight, (12, 12)) * (1 + 1e-9)


def test_fully_connected_norm_is_the_largest_singular_value():
    torch.manual_seed(4)
    lin = nn.Linear(50, 30).double()
    largest = float(torch.linalg.svdvals(lin.weight.detach())[0])
    assert operator_norm(lin, (50,), iters=400, tol=1e-12) == pytest.approx(largest, rel=1e-4)


def test_nonlinear_constants():
    assert nonlinear_constant(nn.Sigmoid())[0] == 0.25
    assert nonlinear_constant(nn.ReLU())[0] == 1
    assert nonlinear_constant(nn.MaxPool2d(2))[0] == 1  # no overlap
    assert nonlinear_constant(nn.MaxPool2d(3, 2))[0] == 2  # a pixel can be the max of 4 windows


def test_overlapping_max_pool_really_stretches_by_two():
    """The constant 2 is attained: one pixel that is the maximum of the four windows covering it."""
    pool = nn.MaxPool2d(3, 2)
    x = torch.zeros(1, 1, 7, 7)
    d = torch.zeros_like(x)
    d[0, 0, 2, 2] = 1.0  # covered by the windows starting at (0,0), (0,2), (2,0), (2,2)
    assert (pool(x + d) - pool(x)).norm() / d.norm() == pytest.approx(2.0)


def test_bounds_are_never_below_the_empirical_estimates_for_the_mnist_cnn(mnist_test):
    from core.models import load

    layers, summary = network_bounds(
        load("cnn", "cpu"), mnist_test.images[:4], iters=100, tol=1e-6, empirical_iters=20
    )
    assert [layer.label for layer in layers] == ["Conv1", "Conv2", "FC1", "FC2"]
    for layer in layers:
        assert 0 < layer.empirical <= layer.upper_bound * (1 + 1e-4), layer
    assert summary["network_bound"] == pytest.approx(
        torch.tensor([la.upper_bound for la in layers]).prod().item()
    )
    assert 0 < summary["network_empirical"] <= summary["network_bound"]


def test_sigmoid_mlp_bounds_include_the_quarter_and_are_tight_for_the_last_layer(mnist_test):
    from core.models import load

    model = load("fc100-100-10", "cpu")
    layers, summary = network_bounds(model, mnist_test.images[:4], iters=300, tol=1e-9, empirical_iters=300)
    assert [layer.label for layer in layers] == ["FC1", "FC2", "FC3"]
    w1 = model.hidden[0][0].weight.double()
    assert layers[0].upper_bound == pytest.approx(float(torch.linalg.svdvals(w1)[0]) / 4, rel=1e-5)
    assert layers[2].empirical == pytest.approx(layers[2].upper_bound, rel=1e-4)  # linear: bound is exact
    assert summary["network_empirical"] <= summary["network_bound"]


@pytest.mark.slow
def test_alexnet_and_mobilenet_bounds_hold_on_real_photos():
    import torchvision

    from core.data.photos import sample_photo
    from core.models import imagenet, load
    from core.models.nets import Normalized

    # a 96x96 photo keeps it quick: both nets pool adaptively, and the bounds hold on any input grid
    x = torch.nn.functional.interpolate(imagenet.preprocess(sample_photo("coffee")), size=96, mode="area")
    torch.manual_seed(0)
    alexnet = Normalized(torchvision.models.alexnet(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    for model in (alexnet, load("mobilenet_v2", "cpu")):
        layers, summary = network_bounds(model, x, iters=60, tol=1e-5, empirical_iters=15)
        for layer in layers:
            assert layer.empirical <= layer.upper_bound * 1.01, layer
        assert summary["network_empirical"] <= summary["network_bound"]
    assert [la.label for la in layers][:3] == ["Input", "Conv1", "Block1"]


@pytest.mark.slow
def test_efficientnet_lite0_bounds_hold_on_a_real_photo():
    from core.data.photos import sample_photo
    from core.models import imagenet, load

    x = torch.nn.functional.interpolate(
        imagenet.preprocess(sample_photo("chelsea"), "efficientnet_lite0"), size=64, mode="area"
    )
    layers, summary = network_bounds(
        load("efficientnet_lite0", "cpu"), x, iters=40, tol=1e-5, empirical_iters=10
    )
    for layer in layers:
        assert layer.empirical <= layer.upper_bound * 1.01, layer
    assert summary["network_empirical"] <= summary["network_bound"]
    labels = [la.label for la in layers]
    assert labels[:3] == ["Input", "Conv1", "Block1"] and labels[-2:] == ["Conv2", "FC1"]
    assert len([la for la in labels if la.startswith("Block")]) == 16
    assert layers[1].modules.startswith("conv 3->32 k3 s2 + batchnorm2d")  # timm's BatchNormAct2d, split


def test_table5_compares_only_trained_networks_with_the_paper():
    from core.experiments import table5
    from core.models import imagenet

    models = table5.default_models()
    assert models[:3] == ("cnn", "mobilenet_v2", "efficientnet_lite0")
    assert ("alexnet" in models) == (imagenet.pick_weights("alexnet") is not None)
