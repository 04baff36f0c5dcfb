"""Table 4: cross-training generalisation: examples made for the P1 / P2 models fed to each other, the
same examples with their perturbation amplified to RMS 0.1, and Gaussian noise at stddev 0.06 and 0.1."""

from __future__ import annotations

from core.experiments import paper
from core.experiments.adversarial import transfer_report
from core.experiments.writer import Report


def run(n: int = 1000, seed: int = 0, full_search: bool = False, device=None, progress=True) -> Report:
    return transfer_report(
        "table4",
        "Table 4: cross-training generalisation on disjoint halves P1 / P2 (error induced)",
        paper.TABLE3_MODELS,
        (0.06, 0.1),
        paper.TABLE4,
        None,
        n,
        seed,
        amplify_rms=0.1,
        full_search=full_search,
        device=device,
        progress=progress,
    )
