"""Datasets by name: MNIST (the paper's splits), the user's own folders of class-named subfolders
(torchvision's ImageFolder layout) and torchvision dataset roots the user has (CIFAR-10, CIFAR-100: their
train and test splits, core/data/torchvision_roots.py), registered in `<cache>/datasets.json`.

A user dataset is read in one fixed order (classes in the order of `--classes FILE`, else sorted folder
names; files sorted by name within a class), so a protocol's "first n images" is the same on every call.
Its fingerprint hashes every file's path and bytes; a listing checksum (paths and sizes) is checked on
each load, so a folder that changed since it was added is refused rather than silently measured anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from core import config
from core.data import torchvision_roots
from core.data.images import open_image
from core.data.mnist import SPLITS as MNIST_SPLITS
from core.data.mnist import DataSplit, load_mnist
from core.errors import DatasetMissingError, InvalidParameterError

BUILTIN = ("mnist",)
USER_SPLITS = ("test",)  # a class folder is one pool of images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_IMAGES = 100_000


@dataclass(frozen=True)
class DatasetEntry:
    """A registered folder: its classes (index = position), image count, native size and fingerprints."""

    name: str
    root: str
    classes: tuple[str, ...]
    n: int
    size: tuple[int, int]  # (height, width) of its first image: the default input size
    fingerprint: str  # sha256 of every path and byte
    listing: str  # sha256 of paths and sizes, checked on every load
    added: str
    kind: str = "folder"  # or a torchvision root's layout (core/data/torchvision_roots.py)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"], data["size"] = list(self.classes), list(self.size)
        return data


def registry_file() -> Path:
    return config.cache_dir() / "datasets.json"


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> dict[str, DatasetEntry]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))["datasets"]
        out = {}
        for name, e in raw.items():
            entry = DatasetEntry(**{**e, "classes": tuple(e["classes"]), "size": tuple(e["size"])})
            bad_kind = entry.kind != "folder" and entry.kind not in torchvision_roots.KINDS
            if (
                entry.name != name
                or not NAME.match(name)
                or len(entry.size) != 2
                or len(entry.classes) < 2
                or bad_kind
            ):
                raise ValueError(f"entry {name!r}")
            out[name] = entry
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetMissingError(
            f"the dataset registry {path} is not valid ({exc}); fix it or delete it to start afresh."
        ) from exc


def entries() -> dict[str, DatasetEntry]:
    path = registry_file()
    return _read(str(path), path.stat().st_mtime_ns) if path.is_file() else {}


def entry(name: str) -> DatasetEntry | None:
    return entries().get(name)


def names() -> list[str]:
    """Every dataset a protocol may name: MNIST, then the registered ones."""
    return [*BUILTIN, *entries()]


def splits(name: str) -> tuple[str, ...]:
    """The splits a protocol may name: MNIST's, a torchvision root's own, a class folder's one pool."""
    if name == "mnist":
        return MNIST_SPLITS
    found = entry(name)
    return torchvision_roots.SPLITS if found is not None and found.kind != "folder" else USER_SPLITS


def _scan(root: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = tuple(folders)
    else:
        missing = [c for c in classes if c not in folders]
        if missing:
            raise InvalidParameterError(
                f"the classes file names {missing[0]!r}, which is not a folder of {root}."
            )
    files = []
    for index, cls in enumerate(classes):
        files += [
            (p, index)
            for p in sorted((root / cls).iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ]
    return classes, files


def _listing(root: Path, files: list[tuple[Path, int]]) -> str:
    text = "\n".join(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}:{c}" for p, c in files)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_classes(path: str | Path) -> tuple[str, ...]:
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(f"classes file {path.name}: no such file.")
    names_ = tuple(
        n.strip() for n in path.read_text(encoding="utf-8", errors="replace").splitlines() if n.strip()
    )
    if len(set(names_)) != len(names_):
        raise InvalidParameterError(f"classes file {path.name} names a class twice.")
    return names_


def add(
    name: str,
    root: str | Path,
    classes_file: str | Path | None = None,
    *,
    shown: str | None = None,
    upload: bool = False,
) -> DatasetEntry:
    """Register a folder of class folders (or, unless it is an `upload`, a torchvision root) under `name`
    after checking it (two classes with images at least, every image readable); nothing is written when a
    check fails. `shown` names the folder in messages (an upload's file name, not its cache folder)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidParameterError(
            f"dataset name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    if name in BUILTIN or name == "imagenet" or entry(name) is not None:
        raise InvalidParameterError(f"a dataset named {name} exists already; choose another name.")
    root = Path(root).expanduser().resolve()
    shown = shown or root.name
    if not root.is_dir():
        raise InvalidParameterError(f"{shown}: no such folder.")
    layout = None if upload else torchvision_roots.detect(root)
    if layout is not None:
        if classes_file:
            raise InvalidParameterError(f"a {layout[0].dataset} root names its own classes; drop --classes.")
        return _add_root(name, *layout)
    classes, files = _scan(root, _read_classes(classes_file) if classes_file else None)
    if not files:
        raise InvalidParameterError(f"{shown} holds no images in class folders (one folder per class).")
    used = {c for _, c in files}
    if len(used) < 2:
        raise InvalidParameterError(f"{shown} has images of one class only; a classifier needs two at least.")
    if len(files) > MAX_IMAGES:
        raise InvalidParameterError(f"{shown} holds {len(files)} images; the limit is {MAX_IMAGES}.")
    digest = hashlib.sha256()
    for path, cls in files:
        data = path.read_bytes()
        open_image(data, f"{path.parent.name}/{path.name}")  # every image must decode
        digest.update(f"{path.relative_to(root).as_posix()}:{cls}:".encode() + hashlib.sha256(data).digest())
    first = open_image(files[0][0])
    new = DatasetEntry(
        name, str(root), classes, len(files), (first.height, first.width), digest.hexdigest()[:16],
        _listing(root, files), time.strftime("%Y-%m-%dT%H:%M:%S"),
    )  # fmt: skip
    _write({**entries(), name: new})
    return new


def _add_root(name: str, layout: torchvision_roots.Root, parent: Path) -> DatasetEntry:
    """Register a torchvision dataset root after reading its test split once (every check on the way;
    the safe unpickler reads every file, the train batches too). Its `n` is the test split's size."""
    paths = torchvision_roots.files(layout, parent)
    images, _, classes = torchvision_roots.read(layout, parent)
    new = DatasetEntry(
        name, str(parent), classes, len(images), tuple(images.shape[2:]), torchvision_roots.fingerprint(paths),
        torchvision_roots.listing(paths), time.strftime("%Y-%m-%dT%H:%M:%S"), layout.kind,
    )  # fmt: skip
    _write({**entries(), name: new})
    return new


def _write(data: dict[str, DatasetEntry]) -> None:
    registry_file().parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "datasets": {n: e.to_dict() for n, e in sorted(data.items())}}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=registry_file().parent, suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, registry_file())


def remove(name: str) -> DatasetEntry:
    found = entry(name)
    if found is None:
        raise InvalidParameterError(f"{name!r} is not a registered dataset (see `intriguing datasets`).")
    _write({n: e for n, e in entries().items() if n != name})
    return found


def fingerprint(name: str) -> str:
    """What identifies the data itself: MNIST's is fixed; a user dataset's hashes its files."""
    if name == "mnist":
        return "mnist"
    found = entry(name)
    if found is None:
        raise DatasetMissingError(f"unknown dataset {name!r}; the datasets are {', '.join(names())}.")
    return found.fingerprint


def resize(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) pixels in [0, 1] resized to `shape` (channels, height, width): colour to grey by
    ITU-R 601-2 luma (PIL's "L"), bilinear with antialiasing, as every user image is."""
    if shape[0] == 1 and x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif shape[0] == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return F.interpolate(x, size=shape[1:], mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def image_tensor(img: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """A decoded image as a (1, *shape) tensor in [0, 1], the way a user dataset's files are read."""
    img = img.convert("RGB")
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
    return resize(x.permute(2, 0, 1).float().div_(255.0).unsqueeze(0), shape)


@functools.lru_cache(maxsize=4)
def _load_user(name: str, fingerprint_: str, shape: tuple[int, int, int], split: str) -> DataSplit:
    found = entry(name)
    root = Path(found.root)
    if not root.is_dir():
        raise DatasetMissingError(f"the folder of dataset {name} ({root}) is gone; add it again.")
    if found.kind != "folder":
        layout = torchvision_roots.KINDS[found.kind]
        if torchvision_roots.listing(torchvision_roots.files(layout, root)) != found.listing:
            raise DatasetMissingError(
                f"the files of dataset {name} changed since it was added; add it again."
            )
        images, labels, _ = torchvision_roots.read(layout, root, train=split == "train")
        return DataSplit(split, resize(images, shape), labels, torch.arange(len(labels)))
    _, files = _scan(root, found.classes)
    if _listing(root, files) != found.listing:
        raise DatasetMissingError(f"the folder of dataset {name} changed since it was added; add it again.")
    images = torch.cat([image_tensor(open_image(p), shape) for p, _ in files])
    labels = torch.tensor([c for _, c in files], dtype=torch.int64)
    return DataSplit("test", images, labels, torch.arange(len(files)))


def load_split(name: str, split: str = "test", shape: tuple[int, ...] | None = None) -> DataSplit:
    """A dataset's split as tensors; user images are resized to `shape` (channels, height, width), by
    default their first image's size in colour. MNIST ignores `shape` unless it differs from 1x28x28."""
    if name == "mnist":
        data = load_mnist(split)
        if shape is not None and tuple(shape) != (1, 28, 28):
            raise InvalidParameterError(
                f"MNIST images are 1x28x28; the model takes {'x'.join(map(str, shape))}."
            )
        return data
    found = entry(name)
    if found is None:
        raise DatasetMissingError(f"unknown dataset {name!r}; the datasets are {', '.join(names())}.")
    if split not in splits(name):
        raise InvalidParameterError(
            f"dataset {name} has the split(s) {', '.join(splits(name))}; got {split!r}."
        )
    shape = tuple(shape) if shape is not None else (3, *found.size)
    if len(shape) != 3 or shape[0] not in (1, 3) or not all(1 <= s <= 4096 for s in shape[1:]):
        raise InvalidParameterError(
            f"the images of {name} cannot be resized to {'x'.join(map(str, shape))}: 1 or 3 channels, sides 1..4096."
        )
    return _load_user(name, found.fingerprint, shape, split)
