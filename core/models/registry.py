"""The user's own models, registered in the cache folder (`<cache>/models/registry.json` and a copy of each
file beside it), so that a registered name works wherever a zoo name does.

Registering checks everything first (format, card, one forward pass, domain, class count) and writes the
copy and the registry last (the registry by an atomic rename), so a refused model leaves nothing behind. A
registry edited by hand into nonsense gives one message naming the file, never a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from core import config
from core.data import datasets
from core.errors import CheckpointError, InvalidParameterError
from core.models import sources
from core.models.card import ModelCard, PixelWrapper, check_against, parse_card
from core.models.spec import ModelSpec

BUILTIN_DOMAINS = ("mnist", "imagenet")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SUFFIX = {
    "onnx": ".onnx",
    "safetensors": ".safetensors",
    "state_dict": ".pt",
    "torchscript": ".pts",
    "factory": ".factory",
}


@dataclass(frozen=True)
class Entry:
    """One registered model: its stored file (in the registry's folder), checksum, card and origin."""

    name: str
    format: str
    file: str
    sha256: str
    card: ModelCard
    origin: str
    added: str

    @property
    def path(self) -> Path:
        return folder() / self.file

    @property
    def fingerprint(self) -> str:
        """A digest of everything the entry holds (file checksum, card, origin, time added): a model removed
        and added again under the same name has a new one, so a cache keyed on it loads the new model."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "file": self.file, "sha256": self.sha256, "card": self.card.to_dict(),
            "origin": self.origin, "added": self.added,
        }  # fmt: skip


def folder() -> Path:
    return config.cache_dir() / "models"


def registry_file() -> Path:
    return folder() / "registry.json"


def _entry(name: str, raw: Any) -> Entry:
    if not isinstance(raw, dict) or raw.get("format") not in sources.FORMATS or not NAME.match(name):
        raise ValueError(f"entry {name!r}")
    for key in ("file", "sha256", "origin", "added"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"entry {name!r}: {key}")
    if Path(raw["file"]).name != raw["file"]:
        raise ValueError(f"entry {name!r}: file outside the registry folder")
    card = parse_card(raw.get("card") if isinstance(raw.get("card"), dict) else {})
    return Entry(name, raw["format"], raw["file"], raw["sha256"], card, raw["origin"], raw["added"])


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> dict[str, Entry]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        models = raw["models"]
        if not isinstance(models, dict):
            raise ValueError("models is not a table")
        return {name: _entry(name, value) for name, value in models.items()}
    except (OSError, ValueError, KeyError, TypeError, InvalidParameterError) as exc:
        raise CheckpointError(
            f"the model registry {path} is not valid ({exc}); fix it or delete it to start afresh."
        ) from exc


def entries() -> dict[str, Entry]:
    """Every registered model (empty when nothing was registered)."""
    path = registry_file()
    if not path.is_file():
        return {}
    return _read(str(path), path.stat().st_mtime_ns)


def entry(name: str) -> Entry | None:
    return entries().get(name)


def _write(models: dict[str, Entry]) -> None:
    folder().mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "models": {n: e.to_dict() for n, e in sorted(models.items())}}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=folder(), suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, registry_file())


def network(kind: str, data: bytes, name: str, card: ModelCard) -> nn.Module:
    """The user's network from its bytes, wrapped so that it takes [0, 1] pixels, in eval mode."""
    if kind == "factory":
        net = sources.factory_module(data.decode())
    else:
        net = sources.build(kind, data, name, card.architecture, len(card.classes))
    return PixelWrapper(net, card).eval()


def build_module(name: str) -> nn.Module:
    """A registered model, read from its stored copy after checking the copy's checksum."""
    found = entry(name)
    if found is None:
        raise InvalidParameterError(f"{name!r} is not a registered model.")
    if not found.path.is_file():
        raise CheckpointError(f"the registered file of {name} ({found.path}) is gone; add the model again.")
    data = found.path.read_bytes()
    if sources.checksum(data) != found.sha256:
        raise CheckpointError(f"the registered file of {name} changed since it was added; add it again.")
    return network(found.format, data, name, found.card)


def check_domain(card: ModelCard) -> None:
    """The card's domain is mnist, imagenet or a registered dataset, with as many classes as the dataset."""
    if card.domain in BUILTIN_DOMAINS:
        if card.domain == "mnist" and len(card.classes) != 10:
            raise InvalidParameterError(
                f"model card: domain mnist has 10 classes, the card names {len(card.classes)}."
            )
        return
    known = datasets.entry(card.domain)
    if known is None:
        names = ", ".join([*BUILTIN_DOMAINS, *datasets.entries()])
        raise InvalidParameterError(f"model card: unknown domain {card.domain!r}; the domains are {names}.")
    if len(known.classes) != len(card.classes):
        raise InvalidParameterError(
            f"model card: dataset {card.domain} has {len(known.classes)} classes, the card names {len(card.classes)}."
        )


def add(
    name: str,
    source: str | Path,
    card: ModelCard,
    *,
    taken: Callable[[str], bool],
    allow_code: bool = False,
    data: bytes | None = None,
) -> Entry:
    """Check a model fully, then copy it into the registry. `source` is a path (or, with `data`, an upload's
    file name) or a `package.module:function` factory; `allow_code` admits TorchScript and factories (the
    CLI), never an upload. `taken(name)` says whether a zoo model already has the name."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidParameterError(
            f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    if taken(name):
        raise InvalidParameterError(f"{name} is a zoo model; choose another name.")
    if entry(name) is not None:
        raise InvalidParameterError(f"{name} is already registered; `intriguing models remove {name}` first.")
    check_domain(card)
    label = Path(str(source)).name
    if data is None and sources.FACTORY.match(str(source)) and not Path(source).exists():
        kind, data = "factory", str(source).encode()
    else:
        if data is None:
            path = Path(source)
            if not path.is_file():
                raise InvalidParameterError(f"{label}: no such file.")
            sources.check_size(label, path.stat().st_size)
            data = path.read_bytes()
        sources.check_size(label, len(data))
        kind = sources.detect_format(label, data)
    if kind not in sources.SAFE_FORMATS and not allow_code:
        raise InvalidParameterError(
            f"{label} is a {kind}: it runs code when loaded, so it is accepted from the CLI only "
            "(upload ONNX, safetensors or a state_dict)."
        )
    model = network(kind, data, label, card)
    check_against(model, card, label)
    stored = f"{name}{SUFFIX[kind]}"
    new = Entry(
        name, kind, stored, sources.checksum(data), card, str(source), time.strftime("%Y-%m-%dT%H:%M:%S")
    )
    folder().mkdir(parents=True, exist_ok=True)
    (folder() / stored).write_bytes(data)
    try:
        _write({**entries(), name: new})
    except OSError:
        (folder() / stored).unlink(missing_ok=True)
        raise
    return new


def remove(name: str) -> Entry:
    found = entry(name)
    if found is None:
        raise InvalidParameterError(f"{name!r} is not a registered model (see `intriguing models`).")
    _write({n: e for n, e in entries().items() if n != name})
    found.path.unlink(missing_ok=True)
    return found


def spec(name: str) -> ModelSpec | None:
    """The ModelSpec of a registered model (its domain is its dataset), or None."""
    found = entry(name)
    if found is None:
        return None
    card = found.card
    return ModelSpec(
        name=name,
        dataset=card.domain,
        architecture=card.architecture or f"{found.format} ({Path(found.origin).name})",
        build=functools.partial(build_module, name),
        layers={"logits": ""},  # the pixel wrapper itself (a TorchScript network takes no hooks)
        description=card.source or f"registered from {found.origin}",
        trained_by=f"intriguing models add {name}",
        origin="registered",
        shape=card.input,
        classes=card.classes,
    )
