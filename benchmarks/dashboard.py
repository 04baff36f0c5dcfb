"""Dashboard cold start in a real browser, and the server's peak memory.

    python benchmarks/dashboard.py [--quick] [--json] [--starts 3]

Cold start: from launching `streamlit run dashboard/app.py` (a new process, an empty cache folder) until the
home page is interactive in headless Chromium: its heading drawn and its script run finished. Then a tour
of every page in the sidebar, each until its script run has finished and the server has gone quiet (the
browser's "running" widget alone let the Direction Lab's scoring, ~140 MB, start after the figure was
taken), with the server's resident memory after each; the peak (VmHWM of the server process) is the
figure to hold against the 800 MB goal (issue 25).
Goals: cold start under 5 s, peak memory under PEAK_GOAL_MB (stored in the card, quoted by the docs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import harness  # first: puts the project root on sys.path  # isort: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No --device: the server picks its own (config.default_device), as it does for a user.
    p = harness.parser(__doc__, "one start, home page only (smoke test)", device=False)
    p.add_argument("--starts", type=int, default=3, help="cold starts (median reported)")
    return p.parse_args(argv)


PEAK_GOAL_MB = 800
# The server counts as done when it used under QUIET_CPU_SHARE of one core over the last QUIET_WINDOW_S.
QUIET_WINDOW_S = 2.0
QUIET_CPU_SHARE = 0.02


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(server, timeout_s: float = 300.0) -> float:
    """Until the server has done (almost) nothing for QUIET_WINDOW_S: the page's work has ended, whatever the
    browser shows (a cached function may still be computing after the script run's widget went away).
    Returns perf_counter() when that quiet window began."""
    step = 0.25
    samples = [cpu_seconds(server.proc.pid)]
    deadline = time.perf_counter() + timeout_s
    window = round(QUIET_WINDOW_S / step)
    while time.perf_counter() < deadline:
        time.sleep(step)
        samples.append(cpu_seconds(server.proc.pid))
        if len(samples) > window and samples[-1] - samples[-1 - window] < QUIET_CPU_SHARE * QUIET_WINDOW_S:
            return time.perf_counter() - QUIET_WINDOW_S
    raise TimeoutError(f"the server was still busy after {timeout_s:.0f} s")


def cold_start(chromium, tour: bool) -> dict:
    """One server from scratch: health, first heading, interactive; then optionally every page."""
    # An empty cache folder for the server (read by the child at start): a truly cold start.
    with harness.private_cache("bench-dashboard-"), harness.StreamlitServer() as server:
        healthy_s = server.wait_healthy()
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.wait_for_selector("h1", timeout=60_000)
        heading_s = time.perf_counter() - server.started_at
        harness.wait_idle(page)
        interactive_s = time.perf_counter() - server.started_at
        out = {"healthy_s": healthy_s, "heading_s": heading_s, "interactive_s": interactive_s}
        out["memory_home"] = server.memory_mb()
        pages = []
        if tour:
            links = page.locator('[data-testid="stSidebarNavLink"]')
            for i in range(links.count()):
                title = links.nth(i).inner_text().strip().split("\n")[-1]  # the text after the icon's name
                previous = page.locator("h1").first.inner_text()
                start = time.perf_counter()
                links.nth(i).click()
                if i > 0:  # the tour starts on the first page; any other page changes the heading
                    # (waiting for an h1 alone returned at once: the old page's heading still matched)
                    page.wait_for_function(
                        "prev => { const h = document.querySelector('h1'); return h && h.innerText !== prev; }",
                        arg=previous,
                        timeout=120_000,
                    )
                harness.wait_idle(page, timeout_ms=300_000)
                idle_s = time.perf_counter() - start
                quiet_s = wait_quiet(server) - start
                pages.append({"page": title, "seconds": idle_s, "quiet_s": quiet_s, **server.memory_mb()})
        out["pages"] = pages
        out["memory_end"] = server.memory_mb()
        page.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    reason = harness.browser_available()
    result = {"machine": harness.machine(), "quick": args.quick}
    if reason:
        result["skipped"] = reason
        harness.emit(result, args.json, f"dashboard benchmark skipped: {reason}", args.save)
        return result
    starts = 1 if args.quick else args.starts
    with harness.browser() as chromium:
        runs = [cold_start(chromium, tour=not args.quick and i == starts - 1) for i in range(starts)]
    result["starts"] = runs
    for key in ("healthy_s", "heading_s", "interactive_s"):
        result[f"median_{key}"] = statistics.median(r[key] for r in runs)
    result["peak_rss_mb"] = max(r["memory_end"]["peak_rss_mb"] for r in runs)
    result["peak_goal_mb"] = PEAK_GOAL_MB
    start_rows = [[i + 1, r["healthy_s"], r["heading_s"], r["interactive_s"]] for i, r in enumerate(runs)]
    text = "Cold start (s from launching the server)\n\n" + harness.table(
        ["start", "server healthy", "heading drawn", "interactive"], start_rows
    )
    tour = runs[-1]["pages"]
    if tour:
        rows = [[p["page"], p["seconds"], p["quiet_s"], p["rss_mb"], p["peak_rss_mb"]] for p in tour]
        text += "\n\nTour of every page (last start)\n\n" + harness.table(
            ["page", "s until idle", "s until the server is quiet", "RSS MB", "peak RSS MB"], rows
        )
    text += f"\n\npeak RSS of the server: {result['peak_rss_mb']:.0f} MB (goal: under {PEAK_GOAL_MB} MB)"
    harness.emit(result, args.json, text, args.save, "dashboard", args.update_docs)
    return result


if __name__ == "__main__":
    main()
