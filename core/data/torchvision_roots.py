"""A torchvision dataset root the user already has (CIFAR-10's `cifar-10-batches-py`, CIFAR-100's
`cifar-100-python`), train and test splits, read by torchvision.datasets with download=False: nothing is
fetched, ever.

The batches are Python pickles, and torchvision unpickles them with plain `pickle.load`, which would run
any code a crafted file names. So every file is first read by a restricted unpickler that admits only what
a numpy array needs (`numpy ... _reconstruct`, `ndarray`, `dtype`, `_frombuffer`); a file naming anything
else is refused before torchvision opens it. torchvision's own md5 list is replaced by the lab's sha256
fingerprint of the same files (core/data/datasets.py), so a subset re-pickled in the same format is read
too. Roots come from the CLI (`intriguing datasets add`), never from an upload.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import DatasetMissingError, InvalidParameterError

NUMPY_GLOBALS = {
    (module, name)
    for module in (
        "numpy.core.multiarray",
        "numpy._core.multiarray",
        "numpy.core.numeric",
        "numpy._core.numeric",
    )
    for name in ("_reconstruct", "_frombuffer", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


@dataclass(frozen=True)
class Root:
    """One torchvision layout: its folder name, its files, and the torchvision class that reads it."""

    kind: str
    folder: str
    files: tuple[str, ...]
    dataset: str  # the torchvision.datasets class name


KINDS = {
    "cifar10": Root(
        "cifar10",
        "cifar-10-batches-py",
        ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
        "CIFAR10",
    ),
    "cifar100": Root("cifar100", "cifar-100-python", ("meta", "train", "test"), "CIFAR100"),
}
SPLITS = ("train", "test")  # every layout above has both (torchvision's train=True / False)


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        return super().find_class(module, name)


def detect(root: Path) -> tuple[Root, Path] | None:
    """The layout of `root` (the folder holding `cifar-10-batches-py`, or that folder itself) and the
    parent torchvision wants, or None for anything else (e.g. a folder of class folders)."""
    for layout in KINDS.values():
        if (root / layout.folder).is_dir():
            return layout, root
        if root.name == layout.folder:
            return layout, root.parent
    return None


def files(layout: Root, parent: Path) -> list[Path]:
    """Every file the layout needs; one message naming the first that is missing."""
    paths = [parent / layout.folder / name for name in layout.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetMissingError(
            f"{layout.folder} has no file {missing[0]}: not a complete {layout.dataset} root (the lab never "
            "downloads it)."
        )
    return paths


def fingerprint(paths: list[Path]) -> str:
    """What identifies the data: every file's name and bytes."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode() + b":" + hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()[:16]


def listing(paths: list[Path]) -> str:
    """Names and sizes, checked on every load (cheap, unlike the fingerprint)."""
    return hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in paths).encode()).hexdigest()


def _check_pickles(layout: Root, paths: list[Path]) -> None:
    for path in paths:
        try:
            with path.open("rb") as handle:
                _NumpyOnly(handle, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            if "names" in str(exc):
                raise InvalidParameterError(
                    f"{layout.folder}/{path.name} refused: {exc}, not only numpy arrays (it could run code)."
                ) from exc
            raise DatasetMissingError(
                f"{layout.folder}/{path.name} is truncated or corrupt ({exc})."
            ) from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
            raise DatasetMissingError(
                f"{layout.folder}/{path.name} is truncated or corrupt ({type(exc).__name__})."
            ) from exc


def read(
    layout: Root, parent: Path, train: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(images (N, 3, H, W) in [0, 1], labels, class names) of the test (or train) split."""
    import torchvision.datasets  # here, not at the top: the import costs ~170 MB (issue 25), for CIFAR only

    paths = files(layout, parent)
    _check_pickles(layout, paths)
    base = getattr(torchvision.datasets, layout.dataset)

    class Checked(base):  # md5s off: the lab's own sha256 fingerprint stands for them
        train_list = [[name, None] for name, _ in base.train_list]
        test_list = [[name, None] for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    try:
        data = Checked(str(parent), train=train, download=False)
        images = np.ascontiguousarray(data.data)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images of shape {list(images.shape)}")
        labels = torch.tensor(data.targets, dtype=torch.int64)
        classes = tuple(str(c) for c in data.classes)
        if len(labels) != len(images) or labels.min() < 0 or labels.max() >= len(classes):
            raise ValueError("labels outside the class list")
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetMissingError(
            f"{layout.folder} is not a readable {layout.dataset} root ({exc})."
        ) from exc
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return x, labels, classes
