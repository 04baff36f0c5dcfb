"""Every attack with model and data on CUDA: the events live on the GPU, the result comes back to the host
(AttackResult's contract), the images stay in the box and success is what a fresh pass of the model says.
Skipped on a CPU-only machine; runs wherever a GPU is present."""

from __future__ import annotations

import copy

import pytest
import torch

from core.attacks import ATTACKS, attack_class, make_attack
from core.attacks.base import to_host

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
    # AttackResult's contract: host tensors, copied once after the loop (pages and the leaderboard read them).
    assert result.x_adv.device.type == "cpu" and result.success.device.type == "cpu"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        pred = model(result.x_adv.to(cuda)).argmax(1)
    assert torch.equal(result.success, (pred != y).cpu())


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


def test_results_come_to_the_host_intact_through_pinned_memory():
    """to_host copies without waiting between copies: every value must still arrive (a missing wait would
    hand back pinned buffers the copies have not filled yet)."""
    cuda = torch.device("cuda")
    tensors = [
        torch.randn(10_000, 784, device=cuda),
        torch.randint(0, 10, (10_000,), device=cuda),
        torch.ones(3),
    ]
    host = to_host(*tensors)
    assert all(h.device.type == "cpu" for h in host)
    assert all(torch.equal(h, t.cpu()) for h, t in zip(host, tensors, strict=True))
