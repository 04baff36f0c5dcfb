"""Smoke tests: every benchmark script runs with --quick and returns a well-formed result, so none of them
rots. Timings are never asserted (they belong in docs/performance.md); only the shape and sanity of what the
scripts report (finite positive times, rates in [0, 1], the contenders that must be there)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def benchmarks_on_path() -> None:
    """benchmarks/ importable (harness, peers), appended last: `dashboard` stays the app package."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))


def run_in_process(script: str, *args: str) -> dict:
    """A script's main() in this process (no interpreter start-up: keeps the default tests short). Scripts
    that change process-wide state (torch threads, the peer venv) are run with run_script instead."""
    benchmarks_on_path()
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.loads(json.dumps(module.main(["--quick", "--json", *args]), default=float))


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_gradient_section(section: dict, expected: set[str]) -> None:
    for model in section["models"].values():
        contenders = model["contenders"]
        assert expected <= set(contenders)
        assert contenders["limit"]["ratio"] == pytest.approx(1.0)
        for name, row in contenders.items():
            assert positive(row["time_s"]) and positive(row["ratio"])
            if not name.startswith("limit"):
                assert 0.0 <= row["success_rate"] <= 1.0


@pytest.mark.slow
def test_attacks_quick_ours_and_limit():
    result = run_script("attacks.py", "--no-peers")
    assert result["quick"] and result["machine"]["cores"] >= 1
    for kind in ("pgd", "fgsm"):
        check_gradient_section(result[kind], {"limit", "ours", "ours, images only"})
    assert all("limit at x_adv" in m["contenders"] for m in result["pgd"]["models"].values())
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
    assert result["python"] == "peer venv"
    peers = {"torchattacks", "foolbox", "art"}
    for kind in ("pgd", "fgsm"):
        check_gradient_section(result[kind], {"limit", "ours"} | peers)
    first_setting = result["cw"]["settings"][0]["contenders"]
    assert {"ours", "torchattacks", "foolbox"} <= set(first_setting)


@pytest.mark.slow
def test_autoattack_quick():
    result = run_script("autoattack.py", "--model", "fc100-100-10-pgdtrain", "--eps", "0.1")
    assert positive(result["median_s"]["ours"]) and 0.0 <= result["robust_accuracy"]["ours"] <= 1.0
    assert result["robust_accuracy"]["ours"] <= result["clean_accuracy"]
    if importlib.util.find_spec("torchattacks"):
        assert (
            positive(result["theirs_over_ours"]) and 0.0 <= result["robust_accuracy"]["torchattacks"] <= 1.0
        )
    members = [m["member"] for m in result["members"]]
    assert members[0] == "APGD-CE" and "FAB-T (1)" in members and members[-1] == "Square"
    assert all(
        positive(m["limit_s"]) and m["over_limit"] == m["time_s"] / m["limit_s"] for m in result["members"]
    )


def test_units_quick():
    result = run_in_process("units.py", "--models", "fc100-100-10")
    layers = result["layers"]
    assert set(layers) == {"fc100-100-10:hidden1", "fc100-100-10:hidden2"}
    for row in layers.values():
        assert row["images"] == 500 and row["units"] == 100
        assert positive(row["cache_cold_s"]) and positive(row["cache_disk_s"])
        assert all(positive(t["median_ms"]) for t in row["top_k"].values())


@pytest.mark.slow
def test_certify_quick():
    result = run_script("certify.py")
    rows = result["rows"]
    assert {r["model"] for r in rows} == {"fc100-100-10", "fc100-100-10-relu", "fc100-100-10-ibp"}
    assert {r["method"] for r in rows} == {"ibp", "crown", "alpha-crown", "crown, 14-step bisection"}
    assert all(positive(r["ms_per_image"]) and 0 <= r["mean_radius"] <= 1 for r in rows)
    milp = result["milp"]
    assert 0 <= milp["proven"] <= milp["images"] == 1 and positive(milp["median_s"])


@pytest.mark.slow
def test_figures_quick():
    result = run_in_process("figures.py")
    assert result["quick"] and len(result["figures"]) == 3
    for row in result["figures"].values():
        assert positive(row["build_s"]) and all(v > 100 for v in row["size_px"])
        assert set(row["formats"]) == {"png", "pdf", "svg"}
        assert all(positive(f["export_s"]) and positive(f["kb"]) for f in row["formats"].values())
    assert positive(result["peer"]["export_s"]) and positive(result["peer"]["ratio_png"])


def test_live_stream_quick():
    result = run_in_process("live.py", "--models", "fc100-100-10", "--no-browser")
    assert set(result["stream"]) == {
        f"fc100-100-10:{a}:{m}" for a in ("lbfgs", "pgd") for m in ("every step", "real time")
    }
    for row in result["stream"].values():
        assert row["steps"] >= 1 and row["frames"] >= 1 and positive(row["steps_per_s"])
        assert row["frames"] <= row["steps"] and row["first_frame_s"] is not None
    assert "forward_backward" not in result  # MNIST only: no 224-px pass to time


@pytest.mark.slow
def test_live_stream_quick_on_both_imagenet_networks():
    result = run_in_process("live.py", "--models", "mobilenet_v2,efficientnet_lite0", "--no-browser")
    passes = result["forward_backward"]
    assert set(passes) == {"mobilenet_v2", "efficientnet_lite0"}
    assert passes["mobilenet_v2"]["ratio_to_mobilenet_v2"] == pytest.approx(1.0)
    assert all(positive(r["median_s"]) and r["rounds"] == 2 for r in passes.values())
    for attack in ("lbfgs", "pgd"):
        row = result["stream"][f"efficientnet_lite0:{attack}:every step"]
        assert row["steps"] >= 1 and positive(row["steps_per_s"])


@pytest.mark.slow
@pytest.mark.browser
def test_live_browser_quick():
    """Run click to first frame on the real Attack Lab page (L-BFGS on fc100-100-10, stopped after 5 s)."""
    result = run_script("live.py", "--no-stream", "--threads", "1", timeout=600)
    browser = result["browser"]
    if "skipped" in browser:
        pytest.skip(browser["skipped"])
    run = browser["fc100-100-10:lbfgs"]
    assert positive(run["run_click_to_first_frame_s"]) and run["frames_seen"] >= 1
    assert positive(browser["server_memory"]["peak_rss_mb"])


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_quick():
    result = run_script("dashboard.py", timeout=600)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    start = result["starts"][0]
    assert start["healthy_s"] <= start["heading_s"] <= start["interactive_s"]
    assert positive(result["peak_rss_mb"])


@pytest.mark.slow
def test_sweep_quick(tmp_path):
    """One process against Ray with 1 and 2 local workers, the writer, and the rendered scaling page."""
    doc = tmp_path / "scaling.md"
    result = run_script("sweep.py", "--doc", str(doc), timeout=600)
    assert [r["workers"] for r in result["ray"]] == [1, 2]
    grid = result["grid"]
    every = grid["n"] * len(grid["models"]) * len(grid["attacks"])  # each contender did the whole grid
    for row in (result["one_process"], result["tasks_in_process"], *result["ray"]):
        assert row["examples"] == every and positive(row["examples_per_s"])
    assert len(result["rows_per_example"]) == 6  # the six attacks
    assert all(positive(v) for v in result["rows_per_example"].values())
    assert positive(result["writer_rows_per_s"]) and positive(result["imagenet"]["core_s"])
    assert "--quick: the numbers mean nothing" in doc.read_text()


def test_a_result_card_goes_to_a_run_folder_unless_docs_are_asked_for(tmp_path, monkeypatch):
    """Without --update-docs the card lands in a fresh run folder and nothing under docs/ changes; with it,
    the card is stored in docs/results/performance/ (command, machine, load before and after, versions,
    the printed tables) and docs/performance.md is rendered from it; --quick numbers are refused there."""
    benchmarks_on_path()
    import harness

    monkeypatch.setattr(harness, "ROOT", tmp_path)
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    result = {"machine": harness.machine(), "figures": {"panel": {"build_s": 0.25}}}
    tables = "Figure export\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    in_run = harness.emit(result, as_json=False, text=tables, card="figures")
    assert not (tmp_path / "docs").exists()
    assert (
        in_run.parent.parent == tmp_path / "cache" / "runs"
        and json.loads(in_run.read_text())["tables"] == tables
    )
    stored = harness.emit(result, as_json=False, text=tables, card="figures", update_docs=True)
    assert stored == tmp_path / harness.CARDS / "figures.json"
    card = json.loads(stored.read_text())
    assert card["benchmark"] == "figures" and card["command"].startswith("python benchmarks/")
    assert card["machine"]["load_average_1_5_15"] and card["machine_after"]["load_average_1_5_15"]
    assert "commit" in card["machine"] and "torch" in card["versions"]
    doc = (tmp_path / "docs" / "performance.md").read_text()
    assert tables in doc and f"load average {card['machine']['load_average_1_5_15'][0]:g} at the start" in doc
    assert "Not measured yet: `python benchmarks/live.py --update-docs`" in doc  # no live card stored
    with pytest.raises(SystemExit):
        harness.emit({**result, "quick": True}, as_json=False, text=tables, card="figures", update_docs=True)


def test_a_card_reports_the_load_at_the_start_wherever_the_script_builds_its_machine(monkeypatch):
    """The scripts build `machine()` after their work: its load must still be the reading taken when the
    benchmark started, and `machine_after` a reading taken when the card is made."""
    benchmarks_on_path()
    import harness

    monkeypatch.setattr(harness.os, "getloadavg", lambda: (99.0, 98.0, 97.0))  # the load "after the work"
    card = harness.card_of({"machine": harness.machine()}, "figures", "")
    assert card["machine"]["load_average_1_5_15"] == harness.STARTED["load_average_1_5_15"] != [99, 98, 97]
    assert card["machine_after"]["load_average_1_5_15"] == [99.0, 98.0, 97.0]


def test_an_unavailable_device_is_one_clear_message():
    benchmarks_on_path()
    import harness

    with pytest.raises(SystemExit, match="not a torch device"):
        harness.use_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            harness.use_device("cuda:0")


@pytest.mark.slow
def test_smoothing_quick():
    result = run_script("smoothing.py")  # its own process: it sets torch's threads
    rows = result["rows"]
    expected = {(m, c) for m in ("smooth-0.25", "cnn") for c in ("before", "pixel noise", "projected")}
    assert {(r["model"], r["contender"]) for r in rows} == expected
    assert all(positive(r["cpu_s_per_image"]) and positive(r["s_per_image"]) for r in rows)
    assert all(r["cpu_vs_before"] == pytest.approx(1.0) for r in rows if r["contender"] == "before")
    assert positive(result["imagenet_500_images_cpu_s"])
