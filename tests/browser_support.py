"""What the browser tests share: Debian's chromium, the flags it needs here and a free local port (all three
from benchmarks/harness.py, which the browser benchmarks use too) and a dashboard server started on it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:  # appended last: `dashboard` stays the app package
    sys.path.append(str(ROOT / "benchmarks"))
from harness import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402  one home for the browser's flags

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "free_port", "streamlit_server"]


@contextlib.contextmanager
def streamlit_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """The dashboard on a free local port (its URL), with `env` added to this process's environment
    (INTRIGUING_* and TORCH_HOME from conftest); stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true"]
        + ["--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
