"""Reading user images safely and turning them into model inputs.

Every way an upload can go wrong (not an image, empty, truncated, a decompression bomb, too small, exotic modes,
animation, EXIF rotation, a wrong extension) ends here as either a sensible conversion or one ImageInputError.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageInputError

MAX_BYTES = 20 * 1024 * 1024  # also the dashboard's upload limit (.streamlit/config.toml: 20 MB)
MAX_PIXELS = 40_000_000  # larger images are refused before being decoded (decompression bombs)
MIN_SIDE = 8
WORK_SIDE = 1024  # big photos are shrunk to this before any further processing


def _decode_16bit(img: Image.Image) -> Image.Image:
    """PIL's convert('L') saturates 16-bit values; rescale the full range instead."""
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if arr.max() > 255 else 255.0
    return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _decode_16bit(img).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparency reads as paper
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(source: bytes | str | os.PathLike, name: str = "the image") -> Image.Image:
    """Decode an upload or a file into an upright RGB image, or raise one clear ImageInputError."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageInputError(f"{name}: no such file.")
        if path.stat().st_size > MAX_BYTES:
            raise ImageInputError(f"{name} is larger than {MAX_BYTES // 2**20} MB.")
        source = path.read_bytes()
    if not source:
        raise ImageInputError(f"{name} is empty (0 bytes).")
    if len(source) > MAX_BYTES:
        raise ImageInputError(f"{name} is larger than {MAX_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageInputError(
                    f"{name} is {w}x{h} pixels, over the {MAX_PIXELS // 1_000_000} megapixel limit; shrink it first."
                )
            img.seek(0)  # animated GIF/PNG/WebP: the first frame
            if img.format == "JPEG":
                img.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode big JPEGs at reduced size
            img.load()
    except ImageInputError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageInputError(
            f"{name} is not an image PIL can read (expected PNG, JPEG, GIF, BMP, WebP ...)."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name} decompresses to too many pixels (a decompression bomb?).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{name} is truncated or corrupt ({exc}).") from exc
    if min(img.size) < MIN_SIDE:
        raise ImageInputError(
            f"{name} is {img.width}x{img.height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed."
        )
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    if max(img.size) > WORK_SIDE:
        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS)
    return img


def mnist_input(img: Image.Image) -> torch.Tensor:
    """An image as MNIST sees digits: white ink on black, the ink's bounding box scaled to 20 px and centred
    by its centre of mass in a 28x28 frame (LeCun's preprocessing). Returns (1, 1, 28, 28) in [0, 1]."""
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0

    def border(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])

    if border(gray).mean() > 0.5:  # dark ink on light paper: invert to MNIST's convention
        gray = 1.0 - gray
    gray = np.clip((gray - np.median(border(gray))) / 0.75, 0.0, 1.0)  # the paper's level becomes 0
    ys, xs = np.nonzero(gray > 0.2)
    if len(ys) == 0:
        return torch.zeros(1, 1, 28, 28)
    crop = gray[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS))
    small = small.astype(np.float32) / 255.0
    frame = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    cy, cx = ((np.indices(small.shape) * small).sum(axis=(1, 2)) / total) if total > 0 else (h / 2, w / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(frame).view(1, 1, 28, 28).clamp_(0, 1)
