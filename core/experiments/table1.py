"""Table 1: train and test error and the average minimum L-BFGS distortion of the six MNIST models."""

from __future__ import annotations

from core.experiments import paper
from core.experiments.adversarial import error_distortion_report
from core.experiments.writer import Report


def run(
    n: int = 1000, seed: int = 0, full_search: bool = False, device=None, progress=True, on_ray=None
) -> Report:
    """`on_ray`: a `core.sweep.Cluster` to compute the L-BFGS examples on (None: in this process)."""
    return error_distortion_report(
        "table1",
        "Table 1: MNIST models, errors and average minimum distortion",
        paper.TABLE1_MODELS,
        ("train", "test"),
        paper.TABLE1,
        n,
        seed,
        full_search,
        device,
        progress,
        on_ray,
    )
