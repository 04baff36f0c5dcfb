"""MNIST as the paper uses it: the 10,000 test images held out, the 60,000 training images cut into
two disjoint halves P1 and P2 (Section 4.3, cross-training)."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import config
from core.errors import DatasetMissingError, InvalidParameterError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "test", "p1", "p2")
SPLIT_SEED = 0
INPUT_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class DataSplit:
    """One split of a dataset (MNIST or a user's): images float32 (N, C, H, W) in [0, 1], labels int64,
    `indices` = positions in the dataset's order."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _raw_folder(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _files_present(root: Path) -> bool:
    raw = _raw_folder(root)
    return all((raw / f).is_file() or (raw / f"{f}.gz").is_file() for f in MNIST_FILES)


def _missing_message(root: Path, reason: str = "") -> str:
    files = ", ".join(MNIST_FILES)
    msg = (
        f"MNIST was not found in {_raw_folder(root)}. Put the four files {files} (or their .gz) there, "
        f"or point --data-dir / ${config.DATA_DIR_ENV} at a folder that holds MNIST/raw/."
    )
    return f"{msg} {reason}".strip()


def ensure_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data root holding MNIST, downloading it when missing and the network allows."""
    import torchvision

    root = config.data_dir(data_dir)
    if not _files_present(root):
        if not config.network_available():
            raise DatasetMissingError(_missing_message(root, "(No network to download it.)"))
        try:
            torchvision.datasets.MNIST(root=str(root), train=True, download=True)
            torchvision.datasets.MNIST(root=str(root), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes the same clear message
            raise DatasetMissingError(_missing_message(root, f"(Download failed: {exc})")) from exc
    return root


@functools.lru_cache(maxsize=4)
def _load_source(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    try:
        ds = torchvision.datasets.MNIST(root=root, train=train, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found", or gz present but not extracted
        if any((_raw_folder(Path(root)) / f"{f}.gz").is_file() for f in MNIST_FILES):
            ds = torchvision.datasets.MNIST(root=root, train=train, download=True)  # only extracts
        else:
            raise DatasetMissingError(_missing_message(Path(root))) from exc
    images = ds.data.unsqueeze(1).to(torch.float32).div_(255.0)
    return images, ds.targets.to(torch.int64)


@functools.lru_cache(maxsize=8)
def paper_split(seed: int = SPLIT_SEED, n: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """Indices of P1 and P2: the training set ordered by sha256(seed:index), first half P1.

    A hash rather than an RNG, so the split is identical on every machine and every library version.
    """
    keys = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n)]
    order = np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half:])


def split_fingerprint(indices: torch.Tensor | np.ndarray) -> str:
    """A short hash of a subset's indices, recorded in model cards to tie a model to its data."""
    arr = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def load_mnist(split: str = "test", data_dir: str | os.PathLike | None = None) -> DataSplit:
    """One of the paper's sets: 'train' (60k), 'test' (10k, held out), 'p1' or 'p2' (30k each)."""
    if split not in SPLITS:
        raise InvalidParameterError(f"Unknown MNIST split {split!r}; choose one of {', '.join(SPLITS)}.")
    root = str(ensure_mnist(data_dir))
    images, labels = _load_source(root, split != "test")
    if split in ("train", "test"):
        idx = torch.arange(len(labels))
    else:
        p1, p2 = paper_split()
        idx = torch.from_numpy(p1 if split == "p1" else p2)
        images, labels = images[idx], labels[idx]
    return DataSplit(split, images, labels, idx)
