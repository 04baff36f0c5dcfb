"""Data: MNIST with the paper's P1/P2 split, ImageNet sample photos, user images, and datasets by name
(`core.data.datasets`: MNIST and the user's registered class folders)."""

from core.data.mnist import (
    MNIST_FILES,
    SPLITS,
    DataSplit,
    ensure_mnist,
    load_mnist,
    paper_split,
    split_fingerprint,
)

__all__ = [
    "MNIST_FILES",
    "SPLITS",
    "DataSplit",
    "ensure_mnist",
    "load_mnist",
    "paper_split",
    "split_fingerprint",
]
