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
    """Under pytest-xdist (`-n`), the workers share the cores: each gets its share of the threads (torch's
    and the BLAS pools', read from the environment the workers and their subprocesses inherit), or every
    worker's pools spin against the others' and two workers run slower than one."""
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1 and "PYTEST_XDIST_WORKER" not in os.environ:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(pool, share)


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
