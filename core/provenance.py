"""What every result records about the software that made it, so that it can be reproduced."""

from __future__ import annotations

import platform

import numpy
import torch
import torchvision

import core


def versions() -> dict[str, str]:
    """Library versions, recorded next to every result card and leaderboard row."""
    return {
        "intriguing_lab": core.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
