"""What every benchmark shares: thread setting, alternating timed rounds with medians, the machine, the table.

Ratios are the robust quantity on a shared machine: contenders run in the same process, one after another,
in an order that rotates each round, so that a burst of load from elsewhere hits all of them alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/<script>.py` from a plain checkout
    sys.path.insert(0, str(ROOT))

PEER_VENV_ENV = "INTRIGUING_BENCH_VENV"


def peer_venv() -> Path:
    """The peers' environment made by benchmarks/setup_peers.sh (never the project's own)."""
    env = os.environ.get(PEER_VENV_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "intriguing" / "bench-venv"


def set_threads(threads: int) -> None:
    """One intra-op thread count for every contender (ours and peers share the process, so this covers all)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # allowed only once per process, before any parallel work
        torch.set_num_interop_threads(1)


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    contenders: dict[str, Callable[[], object]], rounds: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Time each contender once per round, rotating the order each round; returns every timing per contender.

    One untimed warm-up call each first (allocator, lazy imports, first-call dispatch)."""
    names = list(contenders)
    if warmup:
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(contenders[name]))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _proc_field(path: str, key: str) -> str:
    """The value of `key: value` in a /proc file ('' when absent)."""
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return ""


def machine() -> dict:
    """The conditions of a run: what a reader needs to judge its numbers."""
    import torch

    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split(" ")[0]
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem_kb or 0) / 2**20, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (it reads in a terminal and pastes into docs/performance.md as it is)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def emit(result: dict, as_json: bool, text: str) -> None:
    print(json.dumps(result, indent=2, default=float) if as_json else text, flush=True)
