"""How the engine uses the machine: intra-op threads for small interactive work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Live runs and single predictions use one thread: beside a browser and Streamlit's own threads on a 2-core
# machine, two OpenMP threads spin against each other (one step of mobilenet_v2 took 2-5 s with two threads
# and 0.15 s with one on the busy shared development box).
LIVE_THREADS = 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with n intra-op threads (None: unchanged), then restore the previous number."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
