"""Table 4: cross-training generalisation: examples made for the P1 / P2 models fed to each other, the
same examples with their perturbation amplified to RMS 0.1, and Gaussian noise at stddev 0.06 and 0.1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InvalidParameterError
from core.experiments import paper
from core.experiments.adversarial import transfer_report
from core.experiments.writer import Report

NAME = "table4"  # its card: docs/results/table4/table4.json


def run(
    n: int = 1000, seed: int = 0, full_search: bool = False, device=None, progress=True, on_ray=None
) -> Report:
    """`on_ray`: a `core.sweep.Cluster` to compute the L-BFGS examples on (None: in this process)."""
    return transfer_report(
        NAME,
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
        on_ray=on_ray,
    )


@dataclass(frozen=True)
class TransferRates:
    """What a stored Table 4 card says of transfer from one source model: over `n` test images, the share
    of its minimal examples (mean RMS `distortion`) each other model misclassifies, and of the same
    examples amplified to RMS `amplify_rms` (the tour's step 4 quotes these, never one example alone)."""

    source: str
    n: int
    distortion: float
    amplify_rms: float
    minimal: dict[str, float]
    amplified: dict[str, float]


def transfer_rates(card: dict[str, Any], source_key: str | None = None) -> TransferRates:
    """The rates of one source (default: the card's first model) read from a Table 4 card's rows."""
    key = source_key or card["models"][0]
    rows = {row["key"]: row for row in card["rows"]}
    if key not in rows or f"amplified {key}" not in rows:
        raise InvalidParameterError(f"the Table 4 card has no rows for {key!r}.")
    own, amplified = rows[key], rows[f"amplified {key}"]
    others = [c for c in card["columns"] if c != own["source"]]
    return TransferRates(
        source=own["source"],
        n=int(own["examples"]),
        distortion=float(own["distortion"]),
        amplify_rms=float(card["amplify_rms"]),
        minimal={c: float(own[c]) for c in others},
        amplified={c: float(amplified[c]) for c in others},
    )
