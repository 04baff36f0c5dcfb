"""The installed program, as a user meets it: a wheel installed into a fresh venv finds the committed models and
results from any folder, and `intriguing dashboard` is the server itself, so SIGTERM frees its port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from browser_support import free_port

from core import config


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sigterm_to_intriguing_dashboard_stops_the_server_and_frees_its_port(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "dashboard", "--server.port", str(port)]
        + ["--server.address", "127.0.0.1"],
        cwd=config.PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not _port_open(port):
            assert proc.poll() is None, "the dashboard exited before serving"
            assert time.monotonic() < deadline, "the dashboard never opened its port"
            time.sleep(0.5)
        # the PID we started is the server (the command replaced itself), not a parent of it
        assert "streamlit" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # raises if anything still holds the port


@pytest.mark.slow
def test_a_wheel_installed_into_a_fresh_venv_finds_the_committed_models_and_results(tmp_path):
    wheels = tmp_path / "wheels"
    # offline, the interpreter's own build backend builds the wheel; a venv's old bundled setuptools (65 on
    # Python 3.11, no bdist_wheel) cannot, and then pip fetches the pyproject's build requirements
    isolation = ["--no-build-isolation"] if build_backend_installed() else []
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(wheels)]
    subprocess.run([*build, str(config.PROJECT_ROOT)], check=True, capture_output=True)
    env_dir = tmp_path / "venv"
    python = venv_seeing_this_interpreter(env_dir)  # torch & co. come from the interpreter running the tests
    wheel = next(wheels.glob("intriguing_lab-*.whl"))
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv: str) -> str:
        proc = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    probe = (
        "import json, core, core.config as c; from core.experiments import read_card; "
        "print(json.dumps([core.__file__, str(c.ASSETS_DIR), bool(read_card('table1')), "
        "(c.DATA_ROOT / c.STREAMLIT_CONFIG).is_file()]))"
    )
    core_file, assets, has_card, has_streamlit_config = json.loads(run(str(python), "-c", probe))
    assert Path(core_file).is_relative_to(env_dir) and Path(assets).is_relative_to(env_dir)
    assert has_card and has_streamlit_config
    models = {m["name"]: m for m in json.loads(run(str(env_dir / "bin" / "intriguing"), "models", "--json"))}
    for name in ("fc100-100-10", "cnn", "fc10-1"):
        card = json.loads((config.ASSETS_DIR / "models" / f"{name}.json").read_text())
        assert models[name]["status"] == "committed", models[name]
        assert models[name]["recorded"]["test_error"] == card["test_error"]


def build_backend_installed() -> bool:
    """Whether this interpreter has the pyproject's build requirements (setuptools>=68, wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    text = (config.PROJECT_ROOT / "pyproject.toml").read_text()
    requires = re.search(r"requires = \[(.*?)\]", text).group(1)
    try:
        return all(
            r.specifier.contains(version(r.name), prereleases=True)
            for r in map(Requirement, re.findall(r'"([^"]+)"', requires))
        )
    except PackageNotFoundError:
        return False


def venv_seeing_this_interpreter(env_dir: Path) -> Path:
    """A fresh venv that sees the packages of the interpreter running the tests, whether that is a system
    Python or itself a venv (`system_site_packages=True` would see a venv's base interpreter, which lacks
    torch: the suite failed in a venv). Returns the venv's python."""
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    seen = [
        path for path in sys.path if path.endswith(("site-packages", "dist-packages"))
    ]  # a venv's, its base's
    lines = [f"import site; site.addsitedir({path!r})" for path in seen]
    Path(purelib, "_tests_parent_site.pth").write_text("\n".join(lines) + "\n")  # after the venv's own
    return python


@pytest.mark.slow
def test_installing_the_project_keeps_an_installed_torch_that_meets_the_requirement(tmp_path):
    """The README's CPU-only line installs e.g. torch 2.13.0+cpu; the install command that follows must keep
    it (a `!=2.13.0` exclusion made pip swap it for the default CUDA build, gigabytes): pip's own resolver,
    asked what `pip install -e ".[test]"` would install here, installs no torch."""
    from packaging.requirements import Requirement

    text = (config.PROJECT_ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    (requirement,) = [r for r in map(Requirement, re.findall(r'"(torch[^"]*)"', text)) if r.name == "torch"]
    for build in ("2.13.0+cpu", "2.14.1+cpu", "2.14.1+cu130", torch_version()):  # CPU-only and CUDA builds
        assert requirement.specifier.contains(build, prereleases=True), (requirement, build)
    isolation = ["--no-build-isolation"] if build_backend_installed() else []
    report = tmp_path / "install-report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", *isolation, "-q", "--report",
         str(report), "-e", f"{config.PROJECT_ROOT}[test]"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"pip cannot resolve the project here (offline, no index): {proc.stderr[-300:]}")
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "torch" not in planned and "torchvision" not in planned, planned


def torch_version() -> str:
    import torch

    return torch.__version__


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *argv], cwd=config.PROJECT_ROOT, capture_output=True, text=True
    )


@pytest.mark.slow
def test_models_columns_line_up_whatever_the_name_length():
    proc = _cli("models")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    start = header.index("dataset")
    assert max(len(r.split()[0]) for r in rows) >= len("fc100-100-10-pgdtrain")
    for row in rows:
        assert row[start - 2 : start] == "  " and row[start:].split()[0] in ("mnist", "imagenet"), row


@pytest.mark.slow
def test_progress_bars_do_not_write_carriage_returns_into_a_pipe():
    proc = _cli("attack", "--model", "fc10-1", "--attack", "pgd", "--n", "5")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "step/s" not in proc.stderr
