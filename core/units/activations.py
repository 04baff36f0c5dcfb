"""phi(x) for every held-out image: a layer's activations, captured by forward hooks and cached. One pass
over the set captures every readable layer of the model, so only the first layer a user opens costs a pass.

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
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from core import config
from core.errors import InvalidParameterError
from core.models import get_spec, layer_modules, load
from core.runtime import bar_disabled
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
    layers = list(get_spec(model_name).layers)
    return layers[-2] if len(layers) > 1 else layers[-1]


def check_layer(model_name: str, layer: str) -> None:
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


def this_thread_only(capture: Callable) -> Callable:
    """A forward hook that acts only in the thread that registered it. The dashboard shares one model
    instance between its sessions: another session's forward pass (an attack, with gradients) must neither
    be captured by this hook nor stopped by it."""
    owner = threading.get_ident()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if threading.get_ident() == owner:
            capture(module, inputs, output)

    return hook


def units_at(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """phi(x) of one layer for a batch, as rows of unit activations, with gradients when x needs them.
    The forward pass stops once `module` has fired: the layers after it are not needed."""
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output):
        captured.append(to_units(output))
        raise _StopForward

    handle = module.register_forward_hook(this_thread_only(capture))
    try:
        with contextlib.suppress(_StopForward):
            model(x)
    finally:
        handle.remove()
    return captured[0]


def _pixels(batch: torch.Tensor) -> torch.Tensor:
    side = min(PIXEL_SIDE, batch.shape[-1])
    return nn.functional.adaptive_avg_pool2d(batch, side).flatten(1)


def compute(
    model: nn.Module | None,
    modules: dict[str, nn.Module],
    images: ImageSet,
    device: torch.device,
    batch_size: int,
    progress: Progress | None = None,
    desc: str = "activations",
) -> dict[str, np.ndarray]:
    """Run the held-out set through `model` once and capture every module in `modules` per image
    (float32, N x units each): the conv stack is the cost, so all layers share one pass. The pass stops
    as soon as the last of them has fired. With no modules, the downsampled input pixels (no model).

    Each layer's rows go straight into one array made at its first batch: small per-batch pieces kept
    between the large feature maps fragmented the heap (+230 MB peak memory on the Unit Explorer)."""
    out: dict[str, np.ndarray] = {}
    waiting: set[str] = set()
    start = 0

    def keep(name: str, values: torch.Tensor) -> None:
        if name not in out:
            out[name] = np.empty((len(images), values.shape[1]), dtype=np.float32)
        out[name][start : start + len(values)] = values.float().cpu().numpy()

    def hook(name: str):
        def capture(_module, _inputs, output):
            keep(name, to_units(output))
            waiting.discard(name)
            if not waiting:
                raise _StopForward

        return capture

    hooks = [module.register_forward_hook(this_thread_only(hook(name))) for name, module in modules.items()]
    total = -(-len(images) // batch_size)
    try:
        with torch.no_grad():
            for step, batch in enumerate(
                tqdm(
                    images.batches(batch_size),
                    total=total,
                    desc=desc,
                    leave=False,
                    disable=bar_disabled(),
                )
            ):
                if not modules:
                    keep(PIXELS, _pixels(batch))
                else:
                    waiting.update(modules)
                    with contextlib.suppress(_StopForward):  # the last hook stops the pass
                        model(batch.to(device))
                start += len(batch)
                if progress is not None:
                    progress((step + 1) / total)
    finally:
        for handle in hooks:
            handle.remove()
    if start != len(images):
        raise RuntimeError(f"The image set yielded {start} images, not {len(images)}.")
    return out


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

    if layer == PIXELS:
        model_name, model_fingerprint, modules = PIXELS, "input", {}
    else:
        check_layer(model_name, layer)
        if model is None:
            model = load(model_name, device)
        model_fingerprint = fingerprint(model)
        modules = layer_modules(model, model_name)
    n = len(images)
    cached = _cached((model_name, layer, images.key, model_fingerprint), n)
    if cached is not None:
        return cached
    # Every readable layer not cached yet shares the pass: visiting another layer later is free.
    missing = {
        name: module
        for name, module in modules.items()
        if name == layer or not _is_cached((model_name, name, images.key, model_fingerprint))
    }
    device = (
        next(iter(model.parameters()), torch.empty(0)).device if model is not None else torch.device("cpu")
    )
    desc = f"{model_name}:{layer}" if len(missing) <= 1 else f"{model_name}: {', '.join(missing)}"
    computed = compute(model, missing, images, device, images.batch_size, progress, desc)
    for name, values in computed.items():
        key = (model_name, name, images.key, model_fingerprint)
        path = cache_file(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, values)
        os.replace(tmp, path)
    # Only the layer asked for stays in memory; the others are read from disk when first asked for
    # (a judge's pass kept its three unused layers resident in the dashboard, issue 25).
    return _remember((model_name, layer, images.key, model_fingerprint), computed.pop(layer))


def _is_cached(key: tuple[str, ...]) -> bool:
    return key in _memory or cache_file(*key).is_file()


def _cached(key: tuple[str, ...], n: int) -> np.ndarray | None:
    """The activations under `key` from memory or from a complete disk file, else None."""
    if key in _memory:
        _memory.move_to_end(key)
        return _memory[key]
    path = cache_file(*key)
    if path.is_file():
        try:
            values = np.load(path)
            if values.shape[0] == n:
                return _remember(key, values)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and overwritten
    return None


def clear_memory() -> None:
    """Forget the in-memory cache (the disk cache stays)."""
    _memory.clear()


def dead_units(activations: np.ndarray) -> np.ndarray:
    """Units whose activation is the same on every held-out image (e.g. ReLU units that never fire).

    Their "top-k" would be an arbitrary tie-break, so they are shown as dead and left out of the scores.
    """
    return np.flatnonzero(activations.max(axis=0) == activations.min(axis=0))
