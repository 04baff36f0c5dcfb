"""MNIST as the paper uses it: the 10,000 test images held out, the 60,000 training images cut into
two disjoint halves P1 and P2 (Section 4.3, cross-training)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
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
    root = config.data_dir(data_dir)
    if not _files_present(root):
        if not config.network_available():
            raise DatasetMissingError(_missing_message(root, "(No network to download it.)"))
        import torchvision  # only to download: a process that finds the files never imports it (read_idx)

        try:
            torchvision.datasets.MNIST(root=str(root), train=True, download=True)
            torchvision.datasets.MNIST(root=str(root), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes the same clear message
            raise DatasetMissingError(_missing_message(root, f"(Download failed: {exc})")) from exc
    return root


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (MNIST's format: 0x0000, 0x08, the number of dimensions, each as a
    big-endian uint32, then the bytes), plain or gzipped, as a uint8 tensor. Read here, not through
    torchvision.datasets: importing torchvision costs a process ~170 MB and ~1000 modules (issue 25)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetMissingError(f"{path} is not a readable gzip file ({exc}).") from exc
    ndim = raw[3] if len(raw) > 3 else 0
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if raw[:3] != b"\x00\x00\x08" or not dims or len(raw) != header + math.prod(dims):
        raise DatasetMissingError(
            f"{path} is not an IDX file of unsigned bytes of the size its header states (damaged or "
            "truncated?). Replace it with the original MNIST file."
        )
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


def _idx_file(root: Path, name: str) -> Path:
    raw = _raw_folder(root)
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    raise DatasetMissingError(_missing_message(root))


@functools.lru_cache(maxsize=4)
def _load_source(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if train else "t10k"
    images = read_idx(_idx_file(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(Path(root), f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or tuple(images.shape[1:]) != INPUT_SHAPE[1:] or labels.shape != images.shape[:1]:
        raise DatasetMissingError(
            f"MNIST's {prefix} files in {_raw_folder(Path(root))} hold {tuple(images.shape)} images and "
            f"{tuple(labels.shape)} labels: not 28x28 digits with one label each."
        )
    return images.unsqueeze(1).to(torch.float32).div_(255.0), labels.to(torch.int64)


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
