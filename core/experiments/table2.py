"""Table 2: the examples made for each Table 1 model fed to every other model, with two Gaussian-noise
rows (stddev 0.1 and 0.3) as the same-size random control."""

from __future__ import annotations

from core.experiments import paper
from core.experiments.adversarial import transfer_report
from core.experiments.writer import Report


def run(
    n: int = 1000, seed: int = 0, full_search: bool = False, device=None, progress=True, on_ray=None
) -> Report:
    """`on_ray`: a `core.sweep.Cluster` to compute the L-BFGS examples on (None: in this process)."""
    return transfer_report(
        "table2",
        "Table 2: cross-model generalisation of adversarial examples (error induced)",
        paper.TABLE1_MODELS,
        (0.1, 0.3),
        paper.TABLE2,
        paper.TABLE2_DISTORTION,
        n,
        seed,
        amplify_rms=None,
        full_search=full_search,
        device=device,
        progress=progress,
        on_ray=on_ray,
    )
