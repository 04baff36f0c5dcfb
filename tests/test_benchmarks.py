"""Smoke tests: every benchmark script runs with --quick and returns a well-formed result, so none of them
rots. Timings are never asserted (they belong in docs/performance.md); only the shape and sanity of what the
scripts report (finite positive times, rates in [0, 1], the contenders that must be there)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PEER_PYTHON = (
    Path(os.environ.get("INTRIGUING_BENCH_VENV", Path.home() / ".cache" / "intriguing" / "bench-venv"))
    / "bin"
    / "python"
)


def run_script(script: str, *args: str, timeout: float = 300) -> dict:
    """`python benchmarks/<script> --quick --json <args>` from the repository root; its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_gradient_section(section: dict, expected: set[str]) -> None:
    for model in section["models"].values():
        contenders = model["contenders"]
        assert expected <= set(contenders)
        assert contenders["limit"]["ratio"] == pytest.approx(1.0)
        for name, row in contenders.items():
            assert positive(row["time_s"]) and positive(row["ratio"])
            if name != "limit":
                assert 0.0 <= row["success_rate"] <= 1.0


def test_attacks_quick_ours_and_limit():
    result = run_script("attacks.py", "--no-peers")
    assert result["quick"] and result["machine"]["cores"] >= 1
    for kind in ("pgd", "fgsm"):
        check_gradient_section(result[kind], {"limit", "ours"})
    for setting in result["cw"]["settings"]:
        ours = setting["contenders"]["ours"]
        assert positive(ours["time_s"]) and 0.0 <= ours["success_rate"] <= 1.0
    lbfgs = result["lbfgs"]
    assert positive(lbfgs["speedup_per_image"]) and positive(lbfgs["batched"]["limit_ratio"])
    # Rows counted through the model: at least one forward+backward pass per (image, target) problem.
    assert lbfgs["batched"]["forward_backward_rows"] >= lbfgs["batched"]["n"] * 9
    assert lbfgs["reference"]["n"] >= 1 and "skipped" in lbfgs["advertorch"]


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.is_file(), reason="no peer venv (bash benchmarks/setup_peers.sh)")
def test_attacks_quick_with_peers():
    """The peers' path: the script re-runs itself in the peer venv and times every peer beside ours."""
    result = run_script("attacks.py", "--only", "pgd,fgsm,cw", "--models", "fc100-100-10")
    assert Path(result["python"]) == PEER_PYTHON
    peers = {"torchattacks", "foolbox", "art"}
    for kind in ("pgd", "fgsm"):
        check_gradient_section(result[kind], {"limit", "ours"} | peers)
    first_setting = result["cw"]["settings"][0]["contenders"]
    assert {"ours", "torchattacks", "foolbox"} <= set(first_setting)
