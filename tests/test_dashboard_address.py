"""Who can reach the lab (issue 25, item 10): `intriguing dashboard` listens on 127.0.0.1 only, unless the
user asks for another address with --server.address."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import free_port

ROOT = Path(__file__).resolve().parents[1]


def listening(extra: list[str]) -> set[str]:
    """The addresses the server started by `python -m core.cli dashboard` accepts connections on."""
    port = free_port()
    cmd = [sys.executable, "-m", "core.cli", "dashboard", "--server.port", str(port), *extra]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _accepts("127.0.0.1", port):
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
        assert _accepts("127.0.0.1", port), "the server never started"
        return {host for host in ("127.0.0.1", _outward_address()) if _accepts(host, port)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _outward_address() -> str:
    """This machine's address on its network (no packet is sent: a UDP socket only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            pytest.skip("no network interface besides loopback")


@pytest.mark.slow
def test_the_dashboard_listens_on_this_machine_only_by_default():
    outward = _outward_address()
    if outward.startswith("127."):
        pytest.skip("no network interface besides loopback")
    assert listening([]) == {"127.0.0.1"}


@pytest.mark.slow
def test_the_user_can_share_it_on_purpose():
    outward = _outward_address()
    if outward.startswith("127."):
        pytest.skip("no network interface besides loopback")
    assert listening(["--server.address", "0.0.0.0"]) == {"127.0.0.1", outward}
