"""Table 3: the cross-training models (two trained on P1, one on P2): errors on P1, P2 and test, and the
average minimum L-BFGS distortion."""

from __future__ import annotations

from core.experiments import paper
from core.experiments.adversarial import error_distortion_report
from core.experiments.writer import Report


def run(
    n: int = 1000, seed: int = 0, full_search: bool = False, device=None, progress=True, on_ray=None
) -> Report:
    """`on_ray`: a `core.sweep.Cluster` to compute the L-BFGS examples on (None: in this process)."""
    return error_distortion_report(
        "table3",
        "Table 3: models trained on disjoint halves P1 / P2, errors and average minimum distortion",
        paper.TABLE3_MODELS,
        ("p1", "p2", "test"),
        paper.TABLE3,
        n,
        seed,
        full_search,
        device,
        progress,
        on_ray,
    )
