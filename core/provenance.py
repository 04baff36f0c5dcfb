"""What every result records about the software that made it, so that it can be reproduced."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import platform
from pathlib import Path

import numpy
import torch

import core


@functools.lru_cache(maxsize=1)
def torchvision_version() -> str:
    """torchvision's own `__version__` (with its build tag, e.g. +cu130, which the package metadata lacks),
    read from its version.py without importing torchvision: the import costs ~170 MB and ~1000 modules,
    which a session that never touches an ImageNet network should not pay (issue 25)."""
    spec = importlib.util.find_spec("torchvision")  # finds the package; runs none of its code
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    source = Path(next(iter(spec.submodule_search_locations)), "version.py")
    if source.is_file():
        for node in ast.parse(source.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                return str(ast.literal_eval(node.value))
    return importlib.metadata.version("torchvision")


def gpu() -> str | None:
    """The machine's first CUDA GPU by name (None without one): absolute times on a card hold only there."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def versions() -> dict[str, str]:
    """Library versions, recorded next to every result card and leaderboard row."""
    return {
        "intriguing_lab": core.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
