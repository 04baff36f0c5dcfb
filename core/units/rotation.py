"""The rotation sweep (after Network Dissection, Bau et al., 2017): rotate the unit basis gradually towards a
seeded random rotation R and score every direction on the way. The directions at alpha are the rows of
R^alpha, a fractional power of R through its real Schur form R = Z T Z^T (T: 2x2 rotation blocks by
angles theta and +-1 entries): R^alpha = I + Z (T^alpha - I) Z^T with T^alpha rotating by alpha * theta.
Written as I plus a correction, alpha = 0 gives exactly the identity (cos 0 = 1, sin 0 = 0), so the sweep
starts from exactly the units' scores; alpha = 1 gives R up to rounding.

Only live units are rotated (dead ones, constant on every held-out image, have no top-k set), so alpha = 0
is the units' side of `coherence.study` and every rotated direction lives in the same live subspace.
"""

from __future__ import annotations

import math

import numpy as np

from core.errors import InvalidParameterError
from core.provenance import versions
from core.units.activations import dead_units
from core.units.coherence import (
    SCORES,
    score_sets,
    study_inputs,
    summarize,
)
from core.units.directions import top_k_sets
from core.units.images import ImageSet

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def random_rotation(dim: int, seed: int) -> np.ndarray:
    """A seeded random rotation (Haar-distributed orthogonal matrix with determinant +1), float64."""
    if dim < 1:
        raise InvalidParameterError("A rotation needs at least one dimension.")
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # the sign fix that makes QR's Q Haar-distributed
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]  # into SO(d): a rotation has a real logarithm, a reflection does not
    return q


class FractionalRotation:
    """R^alpha for any real alpha, from one real Schur decomposition of the rotation R."""

    def __init__(self, rotation: np.ndarray) -> None:
        import scipy.linalg  # the sweep only (a toggle): keeps ~6 MB off every dashboard page (issue 25)

        t, z = scipy.linalg.schur(rotation, output="real")
        dim = len(t)
        self.z = z
        self.blocks: list[tuple[int, float]] = []  # (first index, angle) of each 2x2 block
        self.flips: list[int] = []  # indices of -1 entries (paired into angle-pi rotations)
        i = 0
        while i < dim:
            if i + 1 < dim and abs(t[i + 1, i]) > 1e-12:
                self.blocks.append((i, math.atan2(t[i + 1, i], t[i, i])))
                i += 2
            else:
                if t[i, i] < 0:
                    self.flips.append(i)
                i += 1
        if len(self.flips) % 2:
            raise InvalidParameterError("The matrix is a reflection, not a rotation: it has no real power.")
        self.dim = dim

    def power(self, alpha: float) -> np.ndarray:
        """R^alpha (rows: the rotated unit directions)."""
        correction = np.zeros((self.dim, self.dim))
        pairs = [(self.flips[j], self.flips[j + 1], math.pi) for j in range(0, len(self.flips), 2)]
        for i, j, angle in [(i, i + 1, a) for i, a in self.blocks] + pairs:
            c, s = math.cos(alpha * angle), math.sin(alpha * angle)
            correction[np.ix_([i, j], [i, j])] = [[c - 1.0, -s], [s, c - 1.0]]
        return np.eye(self.dim) + self.z @ correction @ self.z.T


def sweep(
    model_name: str,
    layer: str | None = None,
    k: int = 9,
    seed: int = 0,
    alphas: tuple[float, ...] = ALPHAS,
    images: ImageSet | None = None,
    judge: str | None = None,
    device=None,
) -> dict:
    """Every live direction of R^alpha scored at each alpha: a JSON-able record with means and 95% intervals."""

    layer, images, judge, acts, features = study_inputs(model_name, layer, k, images, judge, device)
    live = np.setdiff1d(np.arange(acts.shape[1]), dead_units(acts))
    if len(live) < 2:
        raise InvalidParameterError("The rotation sweep needs at least two live units.")
    if not all(math.isfinite(a) for a in alphas):
        raise InvalidParameterError("Every alpha must be a finite number.")
    rotation = FractionalRotation(random_rotation(len(live), seed))
    live_acts = np.ascontiguousarray(acts[:, live])
    points = []
    for alpha in alphas:
        directions = rotation.power(alpha).astype(np.float32)
        scores = score_sets(top_k_sets(live_acts, directions, k), images.labels, features)
        points.append(
            {
                "alpha": float(alpha),
                **{s: None if scores[s] is None else summarize(scores[s]) for s in SCORES},
            }
        )
    return {
        "model": model_name,
        "layer": layer,
        "k": k,
        "seed": seed,
        "judge": judge,
        "data": images.key,
        "n_images": len(images),
        "n_directions": len(live),
        "dead_units": dead_units(acts).tolist(),
        "points": points,
        "rotation": "rows of R^alpha, R a seeded Haar rotation of the live units, via its real Schur form",
        "versions": versions(),
    }
