"""What every benchmark shares: thread setting, alternating timed rounds with medians, the machine, the table.

Ratios are the robust quantity on a shared machine: contenders run in the same process, one after another,
in an order that rotates each round, so that a burst of load from elsewhere hits all of them alike.
"""

from __future__ import annotations

import argparse
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
if sys.path[0] != str(ROOT):  # the project first: `dashboard` is the app package, not benchmarks/dashboard.py
    sys.path.insert(0, str(ROOT))

PEER_VENV_ENV = "INTRIGUING_BENCH_VENV"


def _now() -> dict:
    """The date and the 1, 5 and 15-minute load averages at this moment."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


# Taken when the benchmark starts (every script imports the harness first), before any of its work: a card's
# `machine` reports this, wherever the script builds it, and `machine_after` the reading when the card is stored.
STARTED = _now()


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


DEVICE = "cpu"  # where load_model puts models and what `sync` waits for; set by use_device (--device)


def use_device(name: str) -> None:
    """Run this benchmark's models on `name` (cpu, cuda, cuda:1): the --device every benchmark takes; one
    clear message for a device this machine lacks."""
    from core import config
    from core.errors import InvalidParameterError

    global DEVICE
    try:
        DEVICE = str(config.resolve_device(name))
    except InvalidParameterError as exc:
        raise SystemExit(f"error: {exc}") from None


def sync() -> None:
    """Wait for queued GPU work, so that a timing ends when the work does (nothing to wait for on CPU)."""
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize(DEVICE)


def load_model(name: str):
    """A zoo model on DEVICE, with "trained"; its architecture with random weights if the checkpoint is
    missing, with a note saying so (timings hold; success rates and rankings then mean nothing)."""
    import torch

    from core import models
    from core.errors import CheckpointError

    try:
        return models.load(name, torch.device(DEVICE)), "trained"
    except CheckpointError:
        model = models.get_spec(name).build().eval().to(DEVICE)
        for p in model.parameters():
            p.requires_grad_(False)
        return model, "untrained (checkpoint missing)"


@contextlib.contextmanager
def private_cache(prefix: str):
    """An empty INTRIGUING_CACHE_DIR for the duration (caches really cold; the user's left alone)."""
    import tempfile

    previous = os.environ.get("INTRIGUING_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.environ["INTRIGUING_CACHE_DIR"] = tmp
        try:
            yield tmp
        finally:
            if previous is None:
                os.environ.pop("INTRIGUING_CACHE_DIR", None)
            else:
                os.environ["INTRIGUING_CACHE_DIR"] = previous


def time_once(fn: Callable[[], object]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
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
    """The conditions of a run: what a reader needs to judge its numbers; the date and the load are those at
    the start (STARTED), whenever this is called."""
    import torch

    from core.provenance import gpu

    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split(" ")[0]
    return {
        "date": STARTED["date"],
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem_kb or 0) / 2**20, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": DEVICE,
        "gpu": gpu(),
        "python": platform.python_version(),
        "load_average_1_5_15": STARTED["load_average_1_5_15"],
        "commit": _git_commit(),
    }


COMMIT_ENV = "INTRIGUING_COMMIT"  # the commit a copied tree was made from, where its .git is not that tree's


def _git_commit() -> str:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
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


def parser(
    doc: str, quick_help: str = "tiny sizes (smoke test): numbers are not meaningful", device: bool = True
) -> argparse.ArgumentParser:
    """A script's argument parser with the flags every benchmark takes: --quick, --json, --save, --device
    (unless the script measures a server that picks its own), --update-docs."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="print a machine-readable result instead of tables")
    p.add_argument("--save", metavar="PATH", help="also write the machine-readable result to PATH")
    if device:
        p.add_argument("--device", default="cpu", help="where the models run: cpu, cuda, cuda:1")
    p.add_argument(
        "--update-docs",
        action="store_true",
        help=f"store the result card in {CARDS}/ (not a run folder) and re-render docs/performance.md",
    )
    return p


CARDS = "docs/results/performance"  # the stored result cards (machine, load, versions, commit, figures)


def card_of(result: dict, name: str, tables: str) -> dict:
    """The result as a card: what ran (the command), the machine and its load before and after, the
    versions, the figures, and the tables the script printed (docs/performance.md shows them as they are)."""
    from core.provenance import versions

    return {
        "benchmark": name,
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        **result,
        "machine": result.get("machine") or machine(),
        "machine_after": _now(),
        "versions": versions(),
        "tables": tables,
    }


def emit(
    result: dict,
    as_json: bool,
    text: str,
    save: str | None = None,
    card: str | None = None,
    update_docs: bool = False,
    printed: bool = False,
) -> Path | None:
    """Print the tables (unless `printed` already) or the JSON, and store the result card `card`: in a
    fresh run folder, or, with --update-docs, as docs/results/performance/<card>.json, re-rendering the
    documents that quote it. With `save`, the JSON also goes to that path. Returns where the card went."""
    as_text = json.dumps(result, indent=2, default=float)
    if as_json or not printed:
        print(as_text if as_json else text, flush=True)
    if save:
        Path(save).write_text(as_text + "\n")
    if card is None:
        return None
    if update_docs and result.get("quick"):
        raise SystemExit("--update-docs stores a card of record; --quick numbers mean nothing")
    from core.commands.reproduce import run_folder
    from core.experiments.docs import render_docs

    folder = ROOT / CARDS if update_docs else run_folder(f"benchmark-{card}")
    path = folder / f"{card}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card_of(result, card, text), indent=2, default=float) + "\n")
    print(f"card: {path}", file=sys.stderr)
    if update_docs:
        render_docs(ROOT / "docs" / "results", ROOT)
    return path


# ---------------------------------------------------------------- a real server and a real browser

CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright cannot download its own browsers here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """`streamlit run dashboard/app.py` (or another `script`) on a free local port, as a child process of ours (its pid is the
    Python process itself, so /proc/<pid>/status tells its memory). Stopped on exit, by its own pid."""

    def __init__(self, threads: int = 0, script: str = "dashboard/app.py") -> None:
        self.script = script
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def __enter__(self) -> StreamlitServer:
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        cmd = [sys.executable, "-m", "streamlit", "run", self.script, "--server.headless", "true"]
        cmd += ["--server.port", str(self.port), "--server.address", "127.0.0.1"]
        cmd += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Seconds from process start until /_stcore/health answers."""
        import urllib.request

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started_at
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("streamlit did not become healthy")

    def memory_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory of the server process, in MB."""
        out = {}
        for key, name in (("VmRSS", "rss_mb"), ("VmHWM", "peak_rss_mb")):
            value = _proc_field(f"/proc/{self.proc.pid}/status", key)
            out[name] = int(value.split()[0]) / 1024 if value else float("nan")
        return out

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def browser():
    """A headless Debian Chromium driven by Playwright, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def browser_available() -> str | None:
    """None when a browser benchmark can run, else why not."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[test])"
    return None


def wait_idle(page, timeout_ms: float = 120_000) -> None:
    """Until Streamlit has finished running the script for the current page (no 'Running...' widget)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')""", timeout=timeout_ms
    )
