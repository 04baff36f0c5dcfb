"""Load: eight browser sessions run live attacks in the Attack Lab at the same time, against one server.

The app is started as a user would (`streamlit run dashboard/app.py`, from the project root, on loopback),
under an audit hook that logs every checkpoint file the server opens: a model must be read from disk once,
however many sessions use it. Every session keeps reloading the page and running PGD until the time budget
is spent. We check: no session sees an error, every result equals the one computed here, alone, in this
process (so sharing one model between threads changed nothing), the server's memory stays bounded (what eight
sessions add to a server that has served one run; what one run costs is benchmarks/dashboard.py's measure), no
checkpoint was loaded twice, and every run landed in the leaderboard database.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = 8
BUDGET_S = 60  # sessions start new runs until then; a run already started is allowed to finish
MODEL = "fc100-100-10"  # the lab's default model and image (the first '0' of the MNIST test set)
EPS = 0.2  # PGD's Linf budget: enough to flip that image
# What eight sessions may add to a server that has served one: their session state and the threads' allocator
# arenas. A second copy of the model, the data or an import per session would show far above this.
GROWTH_MB = 400

LAUNCHER = """
import runpy, sys
log = sys.argv.pop(1)

def audit(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".pt"):
        with open(log, "a") as f:
            f.write(args[0] + "\\n")

sys.addaudithook(audit)
sys.argv = ["streamlit", *sys.argv[1:]]
runpy.run_module("streamlit", run_name="__main__")
"""


def _memory_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}


def _expected() -> dict[str, str]:
    """The lab's default PGD run on its default image, computed alone in this process."""
    from core.data import load_mnist
    from core.lab import make_lab_attack
    from core.models import load

    model = load(MODEL, "cpu")
    data = load_mnist("test")
    x = data.images[:1]  # the lab's default image: test image 0
    label = model(x).argmax(1)
    result = make_lab_attack("pgd", model, 0, eps=EPS).run(x, label)
    return {
        "Success": "yes" if bool(result.success[0]) else "no",
        "Prediction": str(int(result.pred_after[0])),
        "RMS distortion": f"{float(result.rms[0]):.4f}",
    }


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright")
    port = free_port()
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    opened = tmp_path / "opened.log"
    env = {**os.environ, "INTRIGUING_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, str(launcher), str(opened), "run", "dashboard/app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Streamlit server did not come up within 60 s")
        yield url, proc, opened, tmp_path / "cache" / "leaderboard.sqlite"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _one_run(page, url: str) -> dict[str, str]:
    """Open the Attack Lab in a fresh session, choose PGD, run it, and read the result's metrics."""
    await page.goto(f"{url}/attack_lab", wait_until="domcontentloaded")
    go = page.locator(".st-key-lab_go button")
    await go.wait_for(timeout=90_000)  # the page has rendered
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import expect

    attack = page.locator(".st-key-lab_attack [role='combobox']")
    # in the sidebar: a click that first has to scroll it closes the list again, so scroll, then click
    # (the sidebar is taller since it holds the model picker: a list that closed at once is opened again)
    option = page.locator("[role='option']", has_text=re.compile(r"^PGD$"))
    for _ in range(3):
        await attack.scroll_into_view_if_needed()
        await page.wait_for_timeout(300)
        await attack.click()
        try:
            await option.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            continue
    await option.click()
    await expect(attack).to_have_value("PGD")
    await page.get_by_text("Parameters", exact=True).click()
    eps = page.locator(".st-key-lab_mnist_pgd_eps input")
    await eps.fill(str(EPS))
    await eps.press("Enter")
    await expect(eps).to_have_value(re.compile(rf"^{EPS}0*$"))
    await go.click()
    done = page.locator(".st-key-lab_dl_json")  # shown once the outcome is complete
    failed = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    await done.or_(failed).first.wait_for(timeout=180_000)
    metrics = {}
    for metric in await page.locator('[data-testid="stMetric"]').all():
        label = (await metric.locator('[data-testid="stMetricLabel"]').inner_text()).strip()
        metrics[label] = (await metric.locator('[data-testid="stMetricValue"]').inner_text()).strip()
    if await page.locator('[data-testid="stException"]').count():
        metrics["exception"] = await page.locator('[data-testid="stException"]').first.inner_text()
    errors = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    if errors:
        metrics["error"] = " | ".join(errors)
    return metrics


async def _drive(
    url: str, deadline: float, pid: int
) -> tuple[dict[str, str], int, list[list[dict[str, str]]]]:
    """One run alone first (the server imports, loads the model and the data once) and the server's memory
    after it (kB); then SESSIONS sessions at once, each running until the deadline."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        async def session(until: float) -> list[dict[str, str]]:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            runs = []
            while not runs or time.monotonic() < until:
                runs.append(await _one_run(page, url))
                if page_errors:
                    runs[-1]["pageerror"] = "; ".join(page_errors)
            await context.close()
            return runs

        try:
            (warm_run,) = await session(until=0.0)  # exactly one run
            warm_kb = _memory_kb(pid)["VmRSS"]
            sessions = await asyncio.gather(*(session(deadline) for _ in range(SESSIONS)))
            return warm_run, warm_kb, sessions
        finally:
            await browser.close()


def test_eight_sessions_attack_at_once(server):
    url, proc, opened, database = server
    expected = _expected()
    baseline = _memory_kb(proc.pid)["VmRSS"]
    samples: list[int] = []

    async def watch_memory(stop: asyncio.Event) -> None:
        while not stop.is_set():
            samples.append(_memory_kb(proc.pid)["VmRSS"])
            await asyncio.sleep(1.0)

    async def main() -> tuple[dict[str, str], int, list[list[dict[str, str]]]]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_memory(stop))
        try:
            return await _drive(url, time.monotonic() + BUDGET_S, proc.pid)
        finally:
            stop.set()
            await watcher

    started = time.monotonic()
    warm_run, warm_kb, sessions = asyncio.run(main())
    elapsed = time.monotonic() - started
    memory = _memory_kb(proc.pid)
    runs = [run for session in sessions for run in session]
    runs.append(warm_run)
    print(
        f"\n{len(runs)} runs in {elapsed:.0f} s over {SESSIONS} sessions; server RSS {baseline // 1024} MB at start, "
        f"{warm_kb // 1024} MB after one run, peak sampled {max(samples) // 1024} MB, "
        f"VmHWM {memory['VmHWM'] // 1024} MB, end {memory['VmRSS'] // 1024} MB"
    )
    assert proc.poll() is None, "the server died"
    assert len(sessions) == SESSIONS and all(sessions)
    for run in runs:
        assert not {"exception", "error", "pageerror"} & set(run), run
        assert {k: run.get(k) for k in expected} == expected  # same numbers as a solo run here
    assert memory["VmHWM"] < 3 * 1024 * 1024, "server memory above 3 GB"
    grown_mb = (memory["VmRSS"] - warm_kb) // 1024
    assert grown_mb < GROWTH_MB, f"{SESSIONS} sessions added {grown_mb} MB to a server that had served one"
    from core.evaluation import leaderboard

    recorded = leaderboard.runs(source="dashboard", path=database)  # written by 8 server threads at once
    assert len(recorded) == len(runs) and leaderboard.integrity_ok(database)
    loads = Counter(opened.read_text().split()) if opened.exists() else Counter()
    assert loads, "the server never read a checkpoint (is the audit log working?)"
    assert max(loads.values()) == 1, f"checkpoints read more than once: {loads}"
