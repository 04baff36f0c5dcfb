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


def noise_gaps(card: dict, factor: float = 3.0) -> list[str]:
    """One sentence per noise row whose error is `factor` times the paper's or more on some model, worded
    from the card's own numbers, so a page can say that this control differs from the paper's and why."""
    notes = []
    for row in card["rows"]:
        if not row["key"].startswith("gaussian"):
            continue
        far = [
            f"{col} {100 * row[col]:.1f}% vs {100 * row[f'paper {col}']:.1f}%"
            for col in card["columns"]
            if row[f"paper {col}"] and row[col] >= factor * row[f"paper {col}"]
        ]
        if far:
            notes.append(
                f"{row['source']}: ours is {factor:g}x the paper's or more on {', '.join(far)}. Our networks "
                "are trained by this project's recipe (the paper does not publish its own), and how well a "
                "network tolerates random noise depends on how it was trained; the noise rows are the "
                "control, the claim rests on the adversarial rows."
            )
    return notes
