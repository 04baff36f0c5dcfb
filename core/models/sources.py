"""The formats a user's network arrives in, each turned into a plain torch module whose gradients flow.

| format | how it is read | runs the file's code? |
|---|---|---|
| ONNX (`.onnx`) | `onnx.load` without external data, converted by onnx2torch | no: a protobuf graph of known operators |
| safetensors | `safetensors.torch.load_file` into the card's `architecture` | no: tensors only |
| state_dict (`.pt`, `.pth`) | `torch.load(weights_only=True)` into the card's `architecture` | no: the restricted unpickler |
| TorchScript (`torch.jit.save`) | `torch.jit.load` | yes: its program runs on every forward |
| factory `package.module:function` | imported and called | yes: it is the user's own code |

TorchScript archives are accepted from the CLI only: `torch.jit.load` unpickles the archive with TorchScript's
own unpickler and then runs the archive's program, which may call any registered operator (file and
process operators included), so an archive is code, not data; the dashboard takes ONNX, safetensors and
weights_only state dicts, none of which can run anything when read. Why onnx2torch: it builds an ordinary
`torch.fx` module (autograd, devices and `torch.compile` work as on any module) and needs no runtime
beside torch; `onnx.reference.ReferenceEvaluator` checks its conversion (tests/test_user_models.py).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, InvalidParameterError

FORMATS = ("onnx", "safetensors", "state_dict", "torchscript", "factory")
SAFE_FORMATS = ("onnx", "safetensors", "state_dict")  # what an upload may be: reading them runs nothing
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MAX_MODEL_BYTES = 200 * 1024 * 1024  # uploads and registered files alike
EXTENSIONS = {".onnx": "onnx", ".safetensors": "safetensors", ".pt": "zip", ".pth": "zip", ".pts": "zip"}


def checksum(data: bytes) -> str:
    """sha256 hex digest: the one fingerprint of a weights file (registry, training cards, sweep tasks)."""
    return hashlib.sha256(data).hexdigest()


def detect_format(name: str, data: bytes) -> str:
    """The format from the bytes (a zip holding `code/` is TorchScript), the extension only to break ties."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{name} is a truncated or corrupt zip archive.") from exc
        return (
            "torchscript"
            if any("/code/" in n or n.endswith("constants.pkl") for n in names)
            else "state_dict"
        )
    if len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < len(data):
        return "safetensors"
    kind = EXTENSIONS.get(Path(name).suffix.lower())
    if kind == "onnx":
        return "onnx"
    if kind in ("zip", None) and data[:1] == b"\x80":  # a plain (non-zip) pickle
        return "state_dict"
    raise CheckpointError(
        f"{name} is not a model file the lab reads (ONNX .onnx, safetensors, a state_dict .pt or, from the "
        "CLI, a TorchScript archive)."
    )


def _onnx_module(data: bytes, name: str) -> nn.Module:
    import onnx
    from onnx2torch import convert
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    try:
        graph = onnx.load_from_string(data)  # never reads external data files (paths inside the file)
        onnx.checker.check_model(graph)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors both mean "not a usable ONNX file"
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{name} is not a valid ONNX model (truncated or corrupt?): {first}") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer):
        raise CheckpointError(f"{name} keeps its weights in external files; save it as one .onnx file.")
    known = {(d.domain, d.operation_type) for d in _CONVERTER_REGISTRY}
    missing = sorted({n.op_type for n in graph.graph.node if (n.domain, n.op_type) not in known})
    if missing:
        raise CheckpointError(
            f"{name}: the ONNX converter (onnx2torch) has no operator {', '.join(missing)}."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert(graph)
    except NotImplementedError as exc:
        op = re.search(r"operation_type='(\w+)'", str(exc))
        what = op.group(1) if op else str(exc)[:120]
        raise CheckpointError(
            f"{name}: the ONNX converter (onnx2torch) has no operator {what} at this opset."
        ) from exc


def architecture(spec: str | None, n_classes: int) -> nn.Module:
    """An untrained `torchvision:NAME` or `timm:NAME` network with `n_classes` outputs (no download)."""
    if not spec:
        raise InvalidParameterError(
            "weights without a graph need the card's `architecture` (torchvision:NAME or timm:NAME)."
        )
    lib, _, arch = spec.partition(":")
    try:
        if lib == "torchvision":
            import torchvision

            return torchvision.models.get_model(arch, weights=None, num_classes=n_classes)
        if lib == "timm":
            import timm

            return timm.create_model(arch, pretrained=False, num_classes=n_classes)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InvalidParameterError(f"model card: `architecture` {spec!r} is unknown to {lib}.") from exc
    raise InvalidParameterError(
        f"model card: `architecture` must be torchvision:NAME or timm:NAME, got {spec!r}."
    )


def _state(data: bytes, name: str, kind: str) -> dict[str, torch.Tensor]:
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError, OSError) as exc:
            raise CheckpointError(f"{name} is a truncated or corrupt safetensors file ({exc}).") from exc
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the restricted unpickler refuses any global: never runs it
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{name} refused: its pickle calls code on load (only tensors and plain containers are read)."
            ) from exc
        raise CheckpointError(f"{name} is truncated or not a PyTorch file ({type(exc).__name__}).") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name} does not hold a state_dict of tensors.")
    return state


def _weights_module(data: bytes, name: str, kind: str, arch: str | None, n_classes: int) -> nn.Module:
    state = _state(data, name, kind)
    net = architecture(arch, n_classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{name} does not match {arch}: {str(exc).splitlines()[0]}") from exc
    return net


def _torchscript_module(data: bytes, name: str) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch 2.9+: "torch.jit.load is deprecated" on every load
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any jit error means "not a readable archive"
        raise CheckpointError(
            f"{name} is not a readable TorchScript archive ({type(exc).__name__})."
        ) from exc


def factory_module(ref: str) -> nn.Module:
    """Import `package.module` and call `function()` (the user's own code: CLI only)."""
    if not FACTORY.match(ref):
        raise InvalidParameterError(f"a factory is package.module:function, got {ref!r}.")
    module_name, func_name = ref.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidParameterError(f"cannot import the factory {ref}: {exc}.") from exc
    net = func()
    if not isinstance(net, nn.Module):
        raise InvalidParameterError(f"the factory {ref} returned {type(net).__name__}, not an nn.Module.")
    return net


def build(kind: str, data: bytes, name: str, arch: str | None, n_classes: int) -> nn.Module:
    """The user's network (without the card's pixel mapping) from a file's bytes of a known format."""
    if kind == "onnx":
        return _onnx_module(data, name)
    if kind in ("safetensors", "state_dict"):
        return _weights_module(data, name, kind, arch, n_classes)
    if kind == "torchscript":
        return _torchscript_module(data, name)
    raise InvalidParameterError(f"unknown model format {kind!r}; the formats are {', '.join(FORMATS)}.")


def check_size(name: str, size: int) -> None:
    if size == 0:
        raise CheckpointError(f"{name} is empty (0 bytes).")
    if size > MAX_MODEL_BYTES:
        raise CheckpointError(
            f"{name} is {size / 2**20:.0f} MB, over the {MAX_MODEL_BYTES // 2**20} MB limit for a model file."
        )
