"""phi(x) for every held-out image: one layer's activations, computed once with a forward hook and cached.

What a "unit" is: for a fully connected layer, one output neuron; for a convolutional layer, one channel,
its feature map averaged over all spatial positions (so a conv layer with C channels has C units, and the
cache holds N x C numbers, not N x C x H x W). The same reduction is used everywhere (natural units,
random directions, the judge's features), so units and random directions are always compared in one space.

The cache lives in memory and under `<cache_dir>/units/`, keyed by model, layer, data and a fingerprint of
the model's weights: retraining a checkpoint invalidates it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from core import config
from core.errors import InvalidParameterError
from core.units.images import ImageSet

MEMORY_ENTRIES = 16
PIXELS = "pixels"  # a pseudo-layer: the (downsampled) input pixels themselves
PIXEL_SIDE = 32

Progress = Callable[[float], None]
_memory: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()


class _StopForward(Exception):
    """Raised by the hook once the layer has fired: the layers after it are not needed."""


def fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights and buffers; it changes whenever the checkpoint does."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def default_layer(model_name: str) -> str:
    """The layer before the output (the output itself for a model that has no other readable layer)."""
    from core.models import get_spec

    layers = list(get_spec(model_name).layers)
    return layers[-2] if len(layers) > 1 else layers[-1]


def check_layer(model_name: str, layer: str) -> None:
    from core.models import get_spec

    layers = list(get_spec(model_name).layers)
    if layer not in layers:
        raise InvalidParameterError(
            f"{model_name} has no readable layer {layer!r}; choose one of {', '.join(layers)}."
        )


def to_units(output: torch.Tensor) -> torch.Tensor:
    """A layer's output as one row of unit activations per image: conv maps are averaged over space."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    return output.flatten(1)


def _pixels(batch: torch.Tensor) -> torch.Tensor:
    side = min(PIXEL_SIDE, batch.shape[-1])
    return nn.functional.adaptive_avg_pool2d(batch, side).flatten(1)


def compute(
    model: nn.Module | None,
    module: nn.Module | None,
    images: ImageSet,
    device: torch.device,
    batch_size: int,
    progress: Progress | None = None,
    desc: str = "activations",
) -> np.ndarray:
    """Run the held-out set through `model` and capture `module`'s output per image (float32, N x units).
    `module=None` captures the downsampled input pixels instead (no model needed)."""
    rows: list[torch.Tensor] = []

    def capture(_module, _inputs, output):
        rows.append(to_units(output).float().cpu())
        raise _StopForward

    hook = module.register_forward_hook(capture) if module is not None else None
    total = -(-len(images) // batch_size)
    try:
        with torch.no_grad():
            for step, batch in enumerate(
                tqdm(images.batches(batch_size), total=total, desc=desc, leave=False)
            ):
                if module is None:
                    rows.append(_pixels(batch))
                else:
                    with contextlib.suppress(_StopForward):  # the hook stops the pass at the layer
                        model(batch.to(device))
                if progress is not None:
                    progress((step + 1) / total)
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(rows).numpy()


def cache_file(model_name: str, layer: str, data_key: str, model_fingerprint: str) -> Path:
    return config.cache_dir() / "units" / model_name / f"{layer}__{data_key}__{model_fingerprint}.npy"


def _remember(key: tuple[str, ...], values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)  # shared by every caller: nobody may change it in place
    _memory[key] = values
    _memory.move_to_end(key)
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return values


def layer_activations(
    model_name: str,
    layer: str,
    images: ImageSet,
    model: nn.Module | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """phi(x) of `layer` for every image of `images`, float32 (N, units); computed once, then cached.

    `layer` may be `"pixels"` (the downsampled input, model-free). Pass an already loaded `model` to
    skip loading it; it must be the zoo model `model_name`.
    """
    from core.models import layer_modules, load

    if layer == PIXELS:
        model_name, model_fingerprint, module = PIXELS, "input", None
    else:
        check_layer(model_name, layer)
        if model is None:
            model = load(model_name, device)
        model_fingerprint = fingerprint(model)
        module = layer_modules(model, model_name)[layer]
    key = (model_name, layer, images.key, model_fingerprint)
    if key in _memory:
        _memory.move_to_end(key)
        return _memory[key]
    path = cache_file(*key)
    if path.is_file():
        try:
            values = np.load(path)
            if values.shape[0] == len(images):
                return _remember(key, values)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and overwritten
    device = (
        next(iter(model.parameters()), torch.empty(0)).device if model is not None else torch.device("cpu")
    )
    values = compute(model, module, images, device, images.batch_size, progress, desc=f"{model_name}:{layer}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, values)
    os.replace(tmp, path)
    return _remember(key, values)


def clear_memory() -> None:
    """Forget the in-memory cache (the disk cache stays)."""
    _memory.clear()
