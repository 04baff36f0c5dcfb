"""How the engine uses the machine: intra-op threads for small interactive work, progress bars."""

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


def bar_disabled(show: bool = True) -> bool | None:
    """tqdm's `disable` argument: True when no bar is wanted, else None, which makes tqdm show the bar only
    when its stream is a terminal (a log file or a pipe would get one endless line of carriage returns)."""
    return None if show else True
