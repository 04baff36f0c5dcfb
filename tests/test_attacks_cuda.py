"""Every attack with model and data on CUDA: the result lives on the GPU, the images stay in the box and
success is what a fresh pass of the model says.
Skipped on a CPU-only machine; runs wherever a GPU is present."""

from __future__ import annotations

import copy

import pytest
import torch

from core.attacks import ATTACKS, attack_class, make_attack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_runs_on_cuda_and_agrees_with_a_cpu_check(name, fc100, mnist_test):
    cuda = torch.device("cuda")
    model = copy.deepcopy(fc100).to(cuda)
    x, y = mnist_test.images[:16], mnist_test.labels[:16]
    keep = fc100(x).argmax(1) == y
    x, y = x[keep][:8].to(cuda), y[keep][:8].to(cuda)
    attack = make_attack(name, model, **attack_class(name).quick)  # each attack's own quick settings
    events = 0
    for event in attack.start(x, y):
        assert event.x_adv.device.type == "cuda"
        events += 1
    result = attack.run(x, y)
    assert events > 0
    assert result.x_adv.device.type == "cuda"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        pred = model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred != y)


def test_deepfools_step_loop_never_waits_for_the_gpu(fc100, mnist_test):
    """Every step queued without a host sync (torch raises on one in this mode): no `.item()`,
    no `bool(t.any())`, no host tensor copied over (the result's verification, after the loop, may sync)."""
    cuda = torch.device("cuda")
    model = copy.deepcopy(fc100).to(cuda)
    x, y = mnist_test.images[:32].to(cuda), mnist_test.labels[:32].to(cuda)
    run = make_attack("deepfool", model, steps=20).start(x, y)
    torch.cuda.set_sync_debug_mode("error")
    try:
        events = sum(1 for _ in run)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert events > 1
