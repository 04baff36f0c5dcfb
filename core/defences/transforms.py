"""How users of off-the-shelf nets guard themselves, and which guards actually hold.

Input-transformation defences (JPEG re-compression, bit-depth reduction, median filtering; Guo et al. 2018,
Xu et al. 2018) put a non-differentiable (or gradient-masking) squeeze in front of a model. Against an attacker
who ignores them ("plain": adversarial examples made on the bare model, then fed through the defence) they look
strong. Against an adaptive attacker using BPDA (Athalye et al. 2018: the transform in the forward pass, the
identity in the backward pass) they mostly fall. Adversarially trained models (Madry et al. 2018) are compared
with their plain twin under the same attack: a defence that changes the model rather than its input.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.checks import check_choice, check_int
from core.errors import InvalidParameterError
from core.models import list_models, model_status

# ---------------------------------------------------------------- input transformations


class InputTransform(nn.Module):
    """A squeeze applied to [0, 1] images before the model; `forward` needs no gradient (BPDA goes around it)."""

    name = "transform"
    differentiable = True  # False: its gradient is zero or absent, so attacks must go around it (BPDA)

    def describe(self) -> str:
        raise NotImplementedError


class BitDepthReduction(InputTransform):
    """Quantise every pixel to 2**bits levels (Xu et al.'s feature squeezing); its gradient is zero almost
    everywhere, which is exactly what makes naive gradient attacks fail and BPDA succeed."""

    name = "bits"
    differentiable = False

    def __init__(self, bits: int = 2) -> None:
        super().__init__()
        self.bits = check_int("bits", bits, low=1, high=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels

    def describe(self) -> str:
        return f"bit depth {self.bits}"


class MedianFilter(InputTransform):
    """A size x size median filter per channel (reflect padding)."""

    name = "median"

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = check_int("size", size, low=2, high=9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.size
        padded = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect")
        patches = F.unfold(padded.reshape(n * c, 1, *padded.shape[2:]), k)  # (N*C, k*k, H*W)
        return patches.median(dim=1).values.reshape(n, c, h, w)

    def describe(self) -> str:
        return f"median {self.size}x{self.size}"


class JPEGCompression(InputTransform):
    """Encode and decode each image as JPEG at `quality` (through 8-bit pixels, as a real pipeline would)."""

    name = "jpeg"
    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = check_int("quality", quality, low=1, high=95)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        for i, img in enumerate(pixels):
            mode = "L" if img.shape[0] == 1 else "RGB"
            arr = img[0] if mode == "L" else img.transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(arr, mode=mode).save(buf, format="JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(buf).convert(mode), dtype=np.float32) / 255.0
            decoded = decoded[None] if mode == "L" else decoded.transpose(2, 0, 1)
            out[i] = torch.from_numpy(np.ascontiguousarray(decoded)).to(x.device)
        return out

    def describe(self) -> str:
        return f"JPEG quality {self.quality}"


TRANSFORMS: dict[str, tuple[type[InputTransform], str]] = {
    "bits": (BitDepthReduction, "bits"),
    "median": (MedianFilter, "size"),
    "jpeg": (JPEGCompression, "quality"),
}


def parse_transform(spec: str) -> InputTransform:
    """'bits:2', 'median:3', 'jpeg:75' (or just the name, for the default strength) -> a transform."""
    name, _, value = spec.strip().partition(":")
    if name not in TRANSFORMS:
        raise InvalidParameterError(
            f"unknown defence {name!r}; choose from {', '.join(TRANSFORMS)} (e.g. bits:2)."
        )
    cls, param = TRANSFORMS[name]
    if not value:
        return cls()
    try:
        number = float(value)
    except ValueError:
        raise InvalidParameterError(f"{spec!r}: {param} must be a number.") from None
    return cls(**{param: number})


GRADIENTS = ("naive", "bpda")


class DefendedModel(nn.Module):
    """model(transform(x)), with one of two backward passes for gradient attacks:
    'naive', the gradient autograd gives through the transform (zero for rounding, none at all for JPEG,
    taken as zero), which is what a standard attack run on the defended pipeline sees; 'bpda', the
    identity (straight-through), so the attack sees the model's gradient at the transformed point."""

    def __init__(self, model: nn.Module, transform: InputTransform, gradient: str = "naive") -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.gradient = check_choice("gradient", gradient, GRADIENTS)

    @property
    def masks_gradient(self) -> bool:
        """True when attacks differentiate through a transform without a useful gradient (read by
        core.evaluation.indicators: the non-differentiable-preprocessing indicator)."""
        return self.gradient == "naive" and not self.transform.differentiable

    def describe(self) -> str:
        return self.transform.describe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "bpda":
            with torch.no_grad():
                squeezed = self.transform(x)
            squeezed = x + (squeezed - x).detach()
        else:
            squeezed = self.transform(x)
            if x.requires_grad and not squeezed.requires_grad:  # a transform outside autograd (JPEG)
                squeezed = squeezed + 0.0 * x
        return self.model(squeezed)


PRESETS = ("bits:1", "bits:2", "bits:3", "median:2", "median:3", "jpeg:50", "jpeg:75", "jpeg:90")
DEFAULT_PRESETS = ("bits:1", "bits:2", "median:3", "jpeg:75")  # one of each kind, and the strongest squeeze
ADVERSARIAL_SUFFIXES = ("-advpool", "-pgdtrain")


def adversarial_twins() -> list[tuple[str, str]]:
    """(adversarially trained model, its plain twin) pairs whose checkpoints are present."""
    names = list_models(include_unavailable=False)
    pairs = []
    for name in names:
        for suffix in ADVERSARIAL_SUFFIXES:
            twin = name.removesuffix(suffix)
            if (
                name.endswith(suffix)
                and twin in names
                and "missing" not in (model_status(name), model_status(twin))
            ):
                pairs.append((name, twin))
    return pairs
