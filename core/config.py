"""Where things live: data root, TORCH_HOME, committed models, user cache.

Each location is resolved as: explicit argument (CLI flag) > environment variable > default.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "intriguing-lab"
SHARE = "share/intriguing-lab"  # where pyproject's data-files put the shipped data, under the install prefix
STREAMLIT_CONFIG = ".streamlit/config.toml"
# The model a command or a page opens on when none is chosen: the paper's FC100-100-10, fast on a CPU.
DEFAULT_MODEL = "fc100-100-10"


def installed_data_root(distribution: str = DISTRIBUTION) -> Path | None:
    """The folder `pip install .` filled with assets/, docs/results/ and .streamlit/ (found through the
    installed files' record, so a venv, --user or --prefix install all work), or None."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    marker = f"{SHARE}/{STREAMLIT_CONFIG}"
    for file in files:
        if file.as_posix().endswith(marker):
            return Path(file.locate()).resolve().parents[1]
    return None


def data_root() -> Path:
    """Where the shipped, read-only data lives: the checkout itself when the code runs from one (its
    assets/ is there), else the installed copy (pip install .)."""
    if (PROJECT_ROOT / "assets").is_dir():
        return PROJECT_ROOT
    return installed_data_root() or PROJECT_ROOT


DATA_ROOT = data_root()
ASSETS_DIR = DATA_ROOT / "assets"
RESULTS_DIR = DATA_ROOT / "docs" / "results"

DATA_DIR_ENV = "INTRIGUING_DATA_DIR"
MODEL_DIR_ENV = "INTRIGUING_MODEL_DIR"
CACHE_DIR_ENV = "INTRIGUING_CACHE_DIR"
OFFLINE_ENV = "INTRIGUING_OFFLINE"


def cache_dir() -> Path:
    """The user's writable cache folder (activations, downloads, results database)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "intriguing").expanduser()


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """torchvision-style data root: flag, else $INTRIGUING_DATA_DIR, else ~/.cache/intriguing/data."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else cache_dir() / "data"


def model_dir() -> Path:
    """Folder of trained MNIST checkpoints: $INTRIGUING_MODEL_DIR, else the committed assets/models."""
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env).expanduser() if env else ASSETS_DIR / "models"


def torch_home() -> Path:
    """TORCH_HOME as torch.hub resolves it (weights live in <TORCH_HOME>/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()).parent


def set_locations(data: str | None = None, torch_home: str | None = None) -> None:
    """Apply CLI flags by exporting them, so that every later lookup (and child processes) sees them."""
    if data:
        os.environ[DATA_DIR_ENV] = str(Path(data).expanduser().resolve())
    if torch_home:
        os.environ["TORCH_HOME"] = str(Path(torch_home).expanduser().resolve())
        import torch.hub

        torch.hub.set_dir(str(Path(os.environ["TORCH_HOME"]) / "hub"))


def offline() -> bool:
    """True when the user asked never to touch the network ($INTRIGUING_OFFLINE=1)."""
    return os.environ.get(OFFLINE_ENV, "").lower() in {"1", "true", "yes"}


def default_device():
    """CUDA when present, else CPU; every entry point takes an explicit device too."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None):
    """`--device` as a torch.device (None stays None: the caller's default), or one clear error when the
    name is not a device or this machine has no such device."""
    import torch

    from core.errors import InvalidParameterError

    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(
            f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, mps)."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"--device {name}: this machine has no CUDA device; use --device cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise InvalidParameterError(
            f"--device {name}: this machine has {count} CUDA device(s) (cuda:0-{count - 1})."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(f"--device {name}: MPS is not available here; use --device cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidParameterError(f"--device {name}: the lab runs on cpu, cuda or mps.")
    return device


def network_available(host: str = "ossci-datasets.s3.amazonaws.com", timeout: float = 1.5) -> bool:
    """A cheap reachability probe, so that offline machines fail fast instead of hanging."""
    if offline():
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
