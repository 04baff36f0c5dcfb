"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019): the smoothed classifier g(x) = argmax_c P(f(x + d) = c),
d ~ N(0, sigma^2 I), wraps any network of the zoo or the registry. `certify` runs the paper's CERTIFY (n0
selection votes, n estimation votes, a one-sided Clopper-Pearson bound pA at level alpha, L2 radius
sigma * Phi^-1(pA), abstaining when pA <= 1/2) and `predict` its PREDICT; both keep the vote counts so the
radius can be recomputed. Noise is added in the zoo's [0, 1] pixel space and the noised images are NOT clipped
to [0, 1], as in Cohen et al. (clipping would change the noise distribution the guarantee is proved for).
`attack` is the adaptive check of a certificate (PGD through the expectation over noise, SmoothAdv-style);
`curves` turns per-image certificates into certified accuracy against radius. The noise-trained base models
`smooth-0.25/0.50/1.00` live in the zoo (core.models)."""

from core.smoothing.certify import (
    SmoothingParams,
    SmoothResult,
    certify,
    certify_batch,
    estimate_seconds,
    lower_confidence_bound,
    predict,
    radius_from_counts,
    sample_counts,
)
from core.smoothing.curves import DEFAULT_RADII, average_certified_radius, certified_accuracy

__all__ = [
    "DEFAULT_RADII",
    "SmoothResult",
    "SmoothingParams",
    "average_certified_radius",
    "certified_accuracy",
    "certify",
    "certify_batch",
    "estimate_seconds",
    "lower_confidence_bound",
    "predict",
    "radius_from_counts",
    "sample_counts",
]
