"""Pictures of images and perturbations, as the pages, the report and the figures draw them: pixels
enlarged by repetition (never blurred), perturbations in a diverging colour map."""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image


def to_uint8(image: np.ndarray | torch.Tensor, scale: int = 1) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H*scale, W*scale[, 3]) uint8, enlarged by pixel repetition (crisp digits)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.clip(arr, 0.0, 1.0)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    return (arr * 255.0 + 0.5).astype(np.uint8)


def perturbation_picture(r: np.ndarray | torch.Tensor, scale: int = 1) -> tuple[np.ndarray, float]:
    """A perturbation (C, H, W) drawn with a diverging colour map (blue: darker, white: unchanged, red:
    brighter), channels averaged, amplified so that its largest change fills the map.
    Returns the RGB uint8 picture and the amplification factor."""

    arr = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
    signed = arr.mean(axis=0)
    peak = float(np.abs(signed).max())
    amplification = 1.0 / peak if peak > 0 else 1.0
    rgb = colormaps["RdBu_r"](0.5 + 0.5 * signed * amplification)[..., :3]
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return (rgb * 255.0 + 0.5).astype(np.uint8), amplification


def triple_picture(
    x: torch.Tensor, x_adv: torch.Tensor, scale: int = 1, gap: int = 8
) -> tuple[np.ndarray, float]:
    """original | perturbation (diverging colours) | adversarial side by side, as one RGB uint8 picture;
    also returns the perturbation's amplification factor."""

    def rgb(arr: np.ndarray) -> np.ndarray:
        return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr

    original, adversarial = rgb(to_uint8(x, scale)), rgb(to_uint8(x_adv, scale))
    r, amplification = perturbation_picture(x_adv - x, scale)
    space = np.full((original.shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([original, space, r, space, adversarial], axis=1), amplification


def png_bytes(image: np.ndarray | torch.Tensor) -> bytes:
    """An image (C, H, W) in [0, 1] as lossless 8-bit PNG bytes, at its own resolution."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_picture(x: torch.Tensor) -> Image.Image:
    """An MNIST digit (1, 1, 28, 28) or (1, 28, 28) as an RGB picture, e.g. to show it to an ImageNet model."""
    return Image.fromarray(to_uint8(x.reshape(1, 28, 28))).convert("RGB")
