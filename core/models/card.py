"""The model card (TOML) beside a user's model: what it takes, what it returns, where it belongs.

Every field is checked when the card is read; a missing or wrong field gives one InvalidParameterError that
names it. The card's `range`, `mean` and `std` are applied inside the wrapper (`PixelWrapper`), so that every
attack, bound and figure of the lab works in [0, 1] pixel space whatever the model was trained on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from core.errors import InvalidParameterError

MAX_CLASSES = 100_000
MAX_SIDE = 4096
KNOWN_KEYS = {"input", "range", "mean", "std", "classes", "classes_file", "domain", "source", "architecture"}


@dataclass(frozen=True)
class ModelCard:
    """A checked card: `input` is (channels, height, width); `classes` is a tuple of names."""

    input: tuple[int, int, int]
    classes: tuple[str, ...]
    domain: str
    range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = ""
    architecture: str | None = None  # "torchvision:NAME" or "timm:NAME", for weights without a graph

    def to_dict(self) -> dict[str, Any]:
        """The card as TOML/JSON keys (absent optional fields left out), readable again by `parse_card`."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


def _numbers(key: str, value: Any, count: int | None = None) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or (count is not None and len(value) != count):
        want = f"a list of {count} numbers" if count else "a non-empty list of numbers"
        raise InvalidParameterError(f"model card: `{key}` must be {want}, got {value!r}.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidParameterError(f"model card: `{key}` holds {v!r}, not a finite number.")
        out.append(float(v))
    return tuple(out)


def _input(value: Any) -> tuple[int, int, int]:
    ok = isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value)
    if not ok or value[0] not in (1, 3) or not all(1 <= v <= MAX_SIDE for v in value[1:]):
        raise InvalidParameterError(
            f"model card: `input` must be [channels, height, width] with 1 or 3 channels and sides of "
            f"1..{MAX_SIDE} pixels, got {value!r}."
        )
    return tuple(value)


def _classes(data: dict[str, Any], base: Path | None) -> tuple[str, ...]:
    if "classes" in data and "classes_file" in data:
        raise InvalidParameterError("model card: give `classes` or `classes_file`, not both.")
    if "classes_file" in data:
        name = data["classes_file"]
        path = Path(name) if base is None else base / str(name)
        if not isinstance(name, str) or not path.is_file():
            raise InvalidParameterError(f"model card: `classes_file` {name!r} is not a readable file.")
        names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        names = [n for n in names if n]
    elif "classes" in data:
        names = data["classes"]
    else:
        raise InvalidParameterError("model card: `classes` (a list of names) or `classes_file` is missing.")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) < 2:
        raise InvalidParameterError("model card: `classes` must be a list of at least two names.")
    if len(names) > MAX_CLASSES:
        raise InvalidParameterError(f"model card: more than {MAX_CLASSES} classes.")
    return tuple(names)


def parse_card(data: dict[str, Any], base: Path | None = None) -> ModelCard:
    """A ModelCard from a TOML table (or the JSON the registry keeps); `base` resolves `classes_file`."""
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise InvalidParameterError(
            f"model card: unknown key `{unknown[0]}`; the keys are {', '.join(sorted(KNOWN_KEYS))}."
        )
    for key in ("input", "domain"):
        if key not in data:
            raise InvalidParameterError(f"model card: `{key}` is missing.")
    shape = _input(data["input"])
    lo, hi = _numbers("range", data.get("range", [0.0, 1.0]), 2)
    if not lo < hi:
        raise InvalidParameterError(
            f"model card: `range` must be [low, high] with low < high, got {[lo, hi]}."
        )
    mean = _numbers("mean", data["mean"], shape[0]) if "mean" in data else None
    std = _numbers("std", data["std"], shape[0]) if "std" in data else None
    if (mean is None) != (std is None):
        raise InvalidParameterError("model card: give both `mean` and `std`, or neither.")
    if std is not None and min(std) <= 0:
        raise InvalidParameterError(f"model card: every `std` must be > 0, got {list(std)}.")
    for key in ("domain", "source", "architecture"):
        if key in data and (not isinstance(data[key], str) or (key != "source" and not data[key].strip())):
            raise InvalidParameterError(f"model card: `{key}` must be a non-empty string, got {data[key]!r}.")
    return ModelCard(
        input=shape,
        classes=_classes(data, base),
        domain=data["domain"],
        range=(lo, hi),
        mean=mean,
        std=std,
        source=data.get("source", ""),
        architecture=data.get("architecture"),
    )


def read_card(path: str | Path) -> ModelCard:
    """Read and check a TOML card; one message for a missing file, bad TOML or a bad field."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(f"model card {path.name}: no such file.")
    return parse_card(load_toml(path.read_bytes(), path.name), path.parent)


def load_toml(raw: bytes, name: str = "the card") -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidParameterError(f"model card {name} is not valid TOML ({exc}).") from exc


class PixelWrapper(nn.Module):
    """The user's network seen from [0, 1] pixels: x -> low + (high - low) x -> (. - mean) / std -> net."""

    def __init__(self, net: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.net = net
        self.input_shape = card.input  # the protocol resizes dataset images to it
        c = card.input[0]
        mean = card.mean or (0.0,) * c
        std = card.std or (1.0,) * c
        lo, hi = card.range
        # one affine map: ((lo + (hi - lo) x) - mean) / std = x * scale + shift
        self.register_buffer("scale", torch.tensor([(hi - lo) / s for s in std]).view(1, c, 1, 1))
        self.register_buffer(
            "shift", torch.tensor([(lo - m) / s for m, s in zip(mean, std, strict=True)]).view(1, c, 1, 1)
        )
        # [0, 1] pixels and no normalisation: no map at all (on a small MLP its two elementwise ops and
        # their backward cost several percent of a PGD step; benchmarks/models.py)
        self.identity = card.mean is None and card.range == (0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.identity else x * self.scale + self.shift)


def check_against(model: nn.Module, card: ModelCard, what: str) -> None:
    """One forward pass on a zero image must give [1, n_classes] finite logits (the card's promise)."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *card.input))
    except Exception as exc:  # noqa: BLE001 - whatever the user's graph raises, it does not take this input
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidParameterError(
            f"{what} does not run on a zero image of the card's input {list(card.input)}: {first}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidParameterError(f"{what} returns {shape}, not logits of shape [N, classes].")
    if out.shape[1] != len(card.classes):
        raise InvalidParameterError(
            f"{what} returns {out.shape[1]} logits but its card names {len(card.classes)} classes."
        )
    if not torch.isfinite(out).all():
        raise InvalidParameterError(f"{what} returns NaN or infinite logits on a zero image.")
