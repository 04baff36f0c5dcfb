"""Bounds and smoothing with model and data on each device this machine has: the same numbers as on the
CPU, sound, and, on a GPU, vote loops that never wait for it. The CPU case runs everywhere (it checks the
tests themselves); the CUDA case skips on a CPU-only machine and runs wherever a GPU is present."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core.certify.bounds import Ball, Network, certified_radius, margin_bounds
from core.models import load
from core.smoothing import SmoothingParams, certify
from core.smoothing.certify import make_generator, vote
from core.smoothing.noise import noise_path

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ),
]


def small_conv_net() -> nn.Module:
    """Every layer kind the bounds take beyond the MLPs': Conv2d, ReLU, MaxPool2d, Flatten, Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("which", ["fc100-100-10-ibp", "conv"])
def test_margin_bounds_on_the_device_match_the_cpu_and_hold(device, method, which, mnist_test):
    model = load(which, "cpu") if which != "conv" else small_conv_net()
    x, y = mnist_test.images[:6], mnist_test.labels[:6]
    eps = 0.02
    reference = margin_bounds(Network.from_module(model), Ball(x, torch.tensor(eps), "linf"), y, method)
    there = copy.deepcopy(model).to(device)
    lower = margin_bounds(
        Network.from_module(there), Ball(x.to(device), torch.tensor(eps), "linf"), y.to(device), method
    )
    assert lower.device.type == device
    torch.testing.assert_close(lower.cpu(), reference, atol=1e-4, rtol=1e-4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):  # random corners and inner points of the ball: no margin below its bound
        delta = (
            eps
            * (2 * torch.rand(x.shape, generator=gen) - 1).sign()
            * torch.rand(len(x), 1, 1, 1, generator=gen)
        )
        with torch.no_grad():
            z = there((x + delta).clamp(0, 1).to(device)).cpu()
        margins = z.gather(1, y[:, None]) - z
        assert (margins >= lower.cpu() - 1e-4).all()


@pytest.mark.parametrize("device", DEVICES)
def test_certified_radius_on_the_device_matches_the_cpu(device, mnist_test):
    model = load("fc100-100-10-ibp", "cpu")
    x, y = mnist_test.images[:4], mnist_test.labels[:4]
    here = certified_radius(Network.from_module(model), x, y, "linf", steps=10)
    there = certified_radius(
        Network.from_module(copy.deepcopy(model).to(device)), x.to(device), y.to(device), "linf", steps=10
    )
    assert there.device.type == device
    assert (here > 0).all()  # these images are proved at some radius: the comparison means something
    torch.testing.assert_close(there.cpu(), here, atol=1e-3, rtol=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_smoothing_votes_on_the_device_count_every_sample_and_repeat_with_the_seed(device, mnist_test):
    model = load("smooth-0.25", device)
    x, label = mnist_test.images[0], int(mnist_test.labels[0])
    params = SmoothingParams(sigma=0.25, n0=100, n=4000, batch=1500)  # a last, partial batch too
    first = certify(model, x, params, make_generator(model, 3))
    again = certify(model, x, params, make_generator(model, 3))
    assert sum(first.counts) == params.n and sum(first.selection_counts) == params.n0
    assert first.counts == again.counts
    assert first.prediction == label and first.radius > 0  # a clear digit at a small sigma


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_vote_loop_never_waits_for_the_gpu(mnist_test):
    """Every batch queued without a host sync (torch raises on one in this mode): no `.item()`, no
    torch.bincount (it sizes its output on the host); the votes come back once, after the loop."""
    model = load("smooth-0.25", "cuda")
    path = noise_path(model, mnist_test.images[0].to("cuda"), 0.25)
    generator = make_generator(model, 0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        counts = vote(path, 5000, 1000, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(counts.sum()) == 5000


def test_tf32_stays_off_until_the_last_bound_in_flight_ends():
    """Two bounds overlapping (a page's in another thread): the first to end must not switch TF32 back on
    under the second; the last restores what was there before."""
    from core.certify.bounds import _NO_TF32

    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = True
        first, second = _NO_TF32, _NO_TF32
        first.__enter__()
        second.__enter__()
        assert not any(f.allow_tf32 for f in flags)
        first.__exit__(None, None, None)
        assert not any(f.allow_tf32 for f in flags)  # the second bound is still being computed
        second.__exit__(None, None, None)
        assert all(f.allow_tf32 for f in flags)
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value
