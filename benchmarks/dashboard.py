"""Dashboard cold start in a real browser, and the server's peak memory.

    python benchmarks/dashboard.py [--quick] [--json] [--starts 3]

Cold start: from launching `streamlit run dashboard/app.py` (a new process, an empty cache folder) until the
home page is interactive in headless Chromium: its heading drawn and its script run finished. Then a tour
of every page in the sidebar, each until its script run has finished, with the server's resident memory
after each; the peak (VmHWM of the server process) is the figure to hold against the 800 MB goal (issue 25).
Goals: cold start under 5 s, peak memory under 800 MB.
"""

from __future__ import annotations

import argparse
import statistics
import time

import harness  # first: puts the project root on sys.path  # isort: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No --device: the server picks its own (config.default_device), as it does for a user.
    p = harness.parser(__doc__, "one start, home page only (smoke test)", device=False)
    p.add_argument("--starts", type=int, default=3, help="cold starts (median reported)")
    return p.parse_args(argv)


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
                pages.append({"page": title, "seconds": time.perf_counter() - start, **server.memory_mb()})
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
    start_rows = [[i + 1, r["healthy_s"], r["heading_s"], r["interactive_s"]] for i, r in enumerate(runs)]
    text = "Cold start (s from launching the server)\n\n" + harness.table(
        ["start", "server healthy", "heading drawn", "interactive"], start_rows
    )
    tour = runs[-1]["pages"]
    if tour:
        rows = [[p["page"], p["seconds"], p["rss_mb"], p["peak_rss_mb"]] for p in tour]
        text += "\n\nTour of every page (last start)\n\n" + harness.table(
            ["page", "s until idle", "RSS MB", "peak RSS MB"], rows
        )
    text += f"\n\npeak RSS of the server: {result['peak_rss_mb']:.0f} MB"
    harness.emit(result, args.json, text, args.save, "dashboard", args.update_docs)
    return result


if __name__ == "__main__":
    main()
