"""Point tests at the offline data laid beside the project (../shared), never at the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

if "INTRIGUING_DATA_DIR" not in os.environ and (SHARED / "data").is_dir():
    os.environ["INTRIGUING_DATA_DIR"] = str(SHARED / "data")
if "TORCH_HOME" not in os.environ and (SHARED / "torch").is_dir():
    os.environ["TORCH_HOME"] = str(SHARED / "torch")
os.environ.setdefault("INTRIGUING_OFFLINE", "1")


def pytest_configure(config):
    """Under pytest-xdist (`-n`), the workers share the cores: each torch takes its share of the threads,
    or every worker's thread pool spins against the others' (slower than running the tests one by one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test session writes caches and databases into its own temporary folder."""
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def mnist_test():
    from core.data import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny batches: a second torch thread only adds waiting (badly so on a busy shared machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fc100():
    from core.models import load

    return load("fc100-100-10", "cpu")
