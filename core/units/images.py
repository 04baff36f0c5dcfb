"""Held-out image sets for the unit analysis: the MNIST test set, or a folder of photos for ImageNet models.

Each set gives what the model sees (batches of [0, 1] pixels), what the user sees (thumbnails), the labels
when it has them, and a `key` that changes whenever its content changes (part of the activation cache key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from core.data import datasets, load_mnist, split_fingerprint
from core.data.datasets import load_split
from core.data.images import open_image
from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.errors import ImageInputError, InvalidParameterError
from core.models import get_spec
from core.models.imagenet import preprocess

THUMBNAIL_SIDE = 64
MAX_FOLDER_IMAGES = 20_000


class ImageSet:
    """The interface the unit analysis needs from a held-out set."""

    key: str
    labels: np.ndarray | None  # int64 class index per image, or None when the set has no labels
    label_names: tuple[str, ...]
    batch_size: int = 32  # images per forward pass when computing activations

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The images in order, as float32 (B, C, H, W) in [0, 1], ready for the model."""
        raise NotImplementedError

    def pixels(self, indices: np.ndarray) -> torch.Tensor:
        """Images `indices` as the model sees them: float32 (n, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def thumbnail(self, index: int) -> np.ndarray:
        """Image `index` for display: (H, W) grey or (H, W, 3) colour, float in [0, 1]."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A short caption: the label when known, else the file name."""
        if self.labels is None:
            return str(index)
        return self.label_names[int(self.labels[index])]


@dataclass
class MnistImages(ImageSet):
    """An MNIST split (by default the 10,000 held-out test images) with its digit labels."""

    split: str = "test"
    images: torch.Tensor = field(init=False, repr=False)
    # A study of 10,000 images (fc100-100-10 and its judge, the cnn; cold cache, one thread, load 2.7 on two
    # cores): +51 MB peak and 13.3 s at 50, +65 MB and 12.7 s at 100, +126 MB and 15.9 s at 250; with the
    # cnn's feature maps the transient (load 3.6): +42 MB and 13.7 s at 50, +32 MB and 13.4 s at 20 (issue 25).
    # Not 10: the default study's judge-cosine mean then moves in its 8th digit (tests/test_units.py holds 20 to 50's).
    batch_size: int = 20

    def __post_init__(self) -> None:
        data = load_mnist(self.split)
        self.images = data.images
        self.labels = data.labels.numpy()
        self.label_names = tuple(str(d) for d in range(10))
        self.key = f"mnist-{self.split}-{split_fingerprint(data.indices)}"

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self.images.split(batch_size)

    def pixels(self, indices: np.ndarray) -> torch.Tensor:
        return self.images[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def thumbnail(self, index: int) -> np.ndarray:
        return self.images[index, 0].numpy()


@dataclass
class DatasetImages(MnistImages):
    """A registered dataset's images (core.data.datasets), resized to the model's input, with its labels."""

    name: str = ""
    shape: tuple[int, int, int] = (1, 28, 28)

    def __post_init__(self) -> None:
        data = load_split(self.name, "test", self.shape)
        self.images = data.images
        self.labels = data.labels.numpy()
        self.label_names = datasets.entry(self.name).classes
        self.key = f"{self.name}-{datasets.fingerprint(self.name)}-{'x'.join(map(str, self.shape))}"

    def thumbnail(self, index: int) -> np.ndarray:
        image = self.images[index]
        return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _image_suffixes() -> set[str]:
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


@dataclass
class FolderImages(ImageSet):
    """Photos from a folder, preprocessed the way an ImageNet model expects (resize, centre crop).

    Two layouts, as torchvision's ImageFolder: sub-folders are classes (`root/<class>/<image>`, giving
    labels), or a flat folder of images (no labels: only the label-free score applies). Files that are
    not images, or whose header does not decode, are skipped and listed in `skipped`; a file that is
    found corrupt only when decoded in full raises one ImageInputError naming it.
    """

    root: Path
    model_name: str = "mobilenet_v2"
    paths: list[Path] = field(init=False, repr=False)
    skipped: list[str] = field(init=False, default_factory=list)
    _thumbnails: dict[int, np.ndarray] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        if not self.root.is_dir():
            raise ImageInputError(f"Image folder {self.root} does not exist or is not a folder.")
        suffixes = _image_suffixes()
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        candidates: list[tuple[Path, int]] = []
        if classes:
            self.skipped += [p.name for p in sorted(self.root.iterdir()) if p.is_file()]  # beside the classes
            for label, name in enumerate(classes):
                candidates += [(p, label) for p in sorted((self.root / name).iterdir()) if p.is_file()]
        else:
            candidates = [(p, -1) for p in sorted(self.root.iterdir()) if p.is_file()]
        paths, labels = [], []
        for path, label in candidates:
            if path.name.startswith(".") or path.suffix.lower() not in suffixes:
                self.skipped.append(str(path.relative_to(self.root)))
                continue
            try:
                with Image.open(path) as img:
                    img.verify()
            except Exception:  # noqa: BLE001 - any decoder failure means "not an image we can use"
                self.skipped.append(str(path.relative_to(self.root)))
                continue
            paths.append(path)
            labels.append(label)
        if not paths:
            raise ImageInputError(
                f"Image folder {self.root} holds no readable images "
                f"({len(self.skipped)} other files skipped). Use .jpg/.png files, optionally in one "
                "sub-folder per class."
            )
        if len(paths) > MAX_FOLDER_IMAGES:
            raise ImageInputError(
                f"Image folder {self.root} holds {len(paths)} images; the limit is {MAX_FOLDER_IMAGES}."
            )
        self.paths = paths
        self.labels = np.array(labels, dtype=np.int64) if classes else None
        self.label_names = tuple(classes)
        digest = hashlib.sha256(f"{self.model_name}\n".encode())
        for path in paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        self.key = f"folder-{self.root.name}-{digest.hexdigest()[:16]}"

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.paths), batch_size):
            chunk = self.paths[start : start + batch_size]
            yield torch.cat([preprocess(open_image(p), self.model_name) for p in chunk])

    def pixels(self, indices: np.ndarray) -> torch.Tensor:
        from core.models.imagenet import preprocess

        return torch.cat([preprocess(open_image(self.paths[int(i)]), self.model_name) for i in indices])

    def thumbnail(self, index: int) -> np.ndarray:
        if index not in self._thumbnails:  # decoding photos is slow; thumbnails are small
            img = ImageOps.fit(open_image(self.paths[index]), (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            self._thumbnails[index] = np.asarray(img, dtype=np.float32) / 255.0
        return self._thumbnails[index]

    def describe(self, index: int) -> str:
        return self.paths[index].name if self.labels is None else super().describe(index)


def held_out_images(model_name: str, image_folder: str | Path | None = None) -> ImageSet:
    """The held-out set for a model: MNIST test images for MNIST models, the given folder for ImageNet ones,
    a registered dataset's images for its models (unless a folder is given)."""
    dataset = get_spec(model_name).dataset
    if dataset == "mnist":
        if image_folder:
            raise InvalidParameterError(
                f"{model_name} is an MNIST model; it is analysed on the MNIST test set, not on an image folder."
            )
        return MnistImages()
    if dataset != "imagenet" and not image_folder:  # a registered dataset's model: that dataset
        return DatasetImages(name=dataset, shape=get_spec(model_name).input_shape)
    if not image_folder:
        raise InvalidParameterError(
            f"{model_name} is an ImageNet model and no ImageNet held-out set ships with the lab: "
            "point --image-folder at a folder of photos (optionally one sub-folder per class)."
        )
    return FolderImages(Path(image_folder), model_name)


def write_sample_folder(root: str | Path, crops_per_photo: int = 6) -> Path:
    """A tiny labelled photo folder for trying ImageNet models without ImageNet: crops of scikit-image's
    sample photos (chelsea, coffee, astronaut, rocket), one sub-folder per photo. Deterministic."""

    root = Path(root).expanduser()
    for name in SAMPLE_PHOTOS:
        photo = sample_photo(name)
        width, height = photo.size
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(crops_per_photo):
            scale = 0.5 + 0.5 * i / max(1, crops_per_photo - 1)  # from half the photo to all of it
            w, h = int(width * scale), int(height * scale)
            x, y = (width - w) * (i % 3) // 2, (height - h) * (i % 2)
            photo.crop((x, y, x + w, y + h)).save(root / name / f"{name}_{i}.jpg", quality=90)
    return root
