"""Pictures of top-k sets: thumbnails side by side in one numpy mosaic (as in the paper's Figures 1 and 2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.units.images import ImageSet


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def image_row(images: ImageSet, indices: Sequence[int], pad: int = 2) -> np.ndarray:
    """The held-out images `indices` in one row, separated by white gaps: float (H, W, 3) in [0, 1]."""
    thumbs = [_rgb(np.asarray(images.thumbnail(int(i)), dtype=np.float32)) for i in indices]
    height = max(t.shape[0] for t in thumbs)
    gap = np.ones((height, pad, 3), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for t in thumbs:
        if t.shape[0] < height:  # thumbnails of one set share a size; pad defensively otherwise
            t = np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=1.0)
        pieces += [t, gap]
    return np.clip(np.concatenate(pieces[:-1], axis=1), 0.0, 1.0)
