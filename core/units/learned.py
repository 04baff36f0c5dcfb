"""Directions learned from a layer's activations: the field's third arm beside units and random directions.

- nmf: non-negative matrix factorisation (only for layers whose activations are never negative);
- kmeans: MiniBatchKMeans centroids of the centred activations (uncentred centroids all point roughly along
  the mean activation, so their top-k sets would coincide);
- dictionary: a sparse dictionary (MiniBatchDictionaryLearning) of the centred activations, each atom's
  sign chosen so that its largest projections are positive (an atom and its negative are the same atom).

Every direction has unit length. Fits are seeded (scikit-learn's random_state) and cached in memory and under
`<cache_dir>/units/learned/`, keyed by the method, m, the seed and a hash of the activations they were fitted
on, so a changed checkpoint or held-out set refits. Fit on one half of the held-out set (`halves`) and score
on the other, so that no direction is judged on the very images it was fitted to.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict

import numpy as np

from core import config
from core.errors import InvalidParameterError

METHODS = ("nmf", "kmeans", "dictionary")
MAX_DIRECTIONS = 256
_memory: OrderedDict[str, np.ndarray] = OrderedDict()
MEMORY_ENTRIES = 16


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of n held-out images into a fitting half and a scoring half (sorted indices)."""
    if n < 4:
        raise InvalidParameterError(f"Learned directions need at least 4 held-out images, got {n}.")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _normalised(directions: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidParameterError("A learned direction came out as zero; fit fewer directions.")
    return (directions / norms).astype(np.float32)


def _fit(method: str, acts: np.ndarray, m: int, seed: int) -> np.ndarray:
    # scikit-learn takes about a second to import: only when a fit is needed, not with every page.
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import NMF, MiniBatchDictionaryLearning

    data = acts.astype(np.float64)
    centred = data - data.mean(axis=0, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the fit is used as it stands, seeded
        if method == "nmf":
            if data.min() < 0:
                raise InvalidParameterError(
                    f"NMF needs non-negative activations; this layer reaches {data.min():.3g}. "
                    "Use kmeans or dictionary here."
                )
            model = NMF(n_components=m, init="nndsvda", random_state=seed, max_iter=200, tol=1e-3)
            return model.fit(data).components_
        if method == "kmeans":
            model = MiniBatchKMeans(n_clusters=m, random_state=seed, n_init=3, batch_size=1024)
            return model.fit(centred).cluster_centers_
        scale = float(np.sqrt((centred**2).sum(axis=1).mean()))  # sparsity relative to the typical norm
        model = MiniBatchDictionaryLearning(
            n_components=m, alpha=0.1 * scale, batch_size=256, max_iter=10, random_state=seed
        )
        atoms = model.fit(centred).components_
    projections = centred @ atoms.T
    signs = np.where(projections.max(axis=0) >= -projections.min(axis=0), 1.0, -1.0)
    return atoms * signs[:, None]


def fit_directions(method: str, acts: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """m unit-length directions (rows, float32) learned from `acts` (N, units) by `method`; cached."""
    if method not in METHODS:
        raise InvalidParameterError(
            f"Unknown learned direction {method!r}; choose one of {', '.join(METHODS)}."
        )
    if not 1 <= m <= min(MAX_DIRECTIONS, len(acts)):
        raise InvalidParameterError(
            f"The number of learned directions must lie in 1..{min(MAX_DIRECTIONS, len(acts))}, got {m}."
        )
    if not np.isfinite(acts).all():
        raise InvalidParameterError("The activations hold NaN or infinite values.")
    digest = hashlib.sha256(np.ascontiguousarray(acts, dtype=np.float32).tobytes())
    digest.update(f"{acts.shape}:{method}:{m}:{seed}".encode())
    key = digest.hexdigest()[:24]
    if key in _memory:
        _memory.move_to_end(key)
        return _memory[key]
    path = config.cache_dir() / "units" / "learned" / f"{method}__{key}.npy"
    directions = None
    if path.is_file():
        try:
            directions = np.load(path)
        except (OSError, ValueError):
            directions = None  # a damaged cache file is refitted and overwritten
    if directions is None or directions.shape != (m, acts.shape[1]):
        directions = _normalised(_fit(method, acts, m, seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, directions)
        os.replace(tmp, path)
    directions.setflags(write=False)
    _memory[key] = directions
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return directions
