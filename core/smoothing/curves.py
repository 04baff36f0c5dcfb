"""Certified accuracy against L2 radius (Cohen et al.'s Figure/Table 1 measure) from per-image certificates."""

from __future__ import annotations

from collections.abc import Sequence

from core.smoothing.certify import SmoothResult

DEFAULT_RADII = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)  # the radii of the published MNIST table


def certified_accuracy(
    results: Sequence[SmoothResult], labels: Sequence[int], radii: Sequence[float] = DEFAULT_RADII
) -> dict[float, float]:
    """Share of images whose smoothed prediction is correct AND certified at radius >= r, per r
    (an abstention counts as wrong)."""
    n = max(len(results), 1)
    return {
        float(r): sum(
            res.prediction == int(y) and res.radius >= r for res, y in zip(results, labels, strict=True)
        )
        / n
        for r in radii
    }


def average_certified_radius(results: Sequence[SmoothResult], labels: Sequence[int]) -> float:
    """Mean certified radius, counting 0 for a wrong or abstained prediction (Zhai et al.'s ACR)."""
    pairs = list(zip(results, labels, strict=True))
    return sum(res.radius for res, y in pairs if res.prediction == int(y)) / max(len(pairs), 1)
