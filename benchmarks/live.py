"""The Attack Lab's live view: steps per second its streaming loop delivers, and Run-to-first-frame in a browser.

    python benchmarks/live.py [--quick] [--json] [--no-browser] [--seconds 15]

Stream: `core.lab.LiveRun.frames()`, the generator the page iterates, on one image with the parameters the
page offers by default (lighter ones on 224-px ImageNet models), each frame turned into the two pictures the
page draws (`to_uint8`, `perturbation_picture`). Steps per second = attack iterations delivered / wall time
from creating the run (the Run click) to its last frame; runs are capped at --seconds. Both live modes:
every step, and real time (a frame at most every 0.1 s). Goals: 10 steps/s on fc100-100-10, 2 steps/s on
the 224-px ImageNet networks (mobilenet_v2, efficientnet_lite0).

Forward+backward: one 224-px image through each ImageNet network and back to the input (the floor of one
live step), alternated round by round, and each network's time as a multiple of mobilenet_v2's.

Browser: the real page in headless Chromium against `streamlit run dashboard/app.py`, reached as a newcomer
does, through the sidebar: time from the Run click to the first frame on screen (goal under 1 s) and to all
four charts and all four images drawn (goal under 1 s), the share of 200-ms
samples in which every chart shows data (goal 100%), and the frames and steps per second the browser
actually shows, from a MutationObserver on the current frame's caption.

--charts: the chart mechanisms compared (benchmarks/chart_probe_app.py), which chose Vega-Lite.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import harness  # first: puts the project root on sys.path  # isort: skip
import torch
import torch.nn.functional as F

from core.attacks import attack_presets
from core.data import load_mnist
from core.data.photos import sample_photo
from core.lab import LiveRun, make_lab_attack
from core.models import get_spec
from core.models.imagenet import preprocess
from core.visual.pictures import perturbation_picture, to_uint8

from chart_probe_app import MECHANISMS, PACES_S  # isort: skip

MODELS = ("fc100-100-10", "mobilenet_v2", "efficientnet_lite0")
ATTACKS = ("lbfgs", "pgd")
GOALS = {"fc100-100-10": 10.0, "mobilenet_v2": 2.0, "efficientnet_lite0": 2.0}
PEER = "mobilenet_v2"  # the forward+backward times are given as a multiple of this network's
MODES = {"every step": 0.0, "real time": 0.1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__, "tiny runs (smoke test): numbers are not meaningful")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seconds", type=float, default=15.0, help="cap on each streamed run")
    p.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, as in the app)"
    )
    p.add_argument("--no-browser", action="store_true", help="skip the browser measurement")
    p.add_argument("--no-stream", action="store_true", help="only the browser measurement")
    p.add_argument(
        "--charts", action="store_true", help="only compare chart mechanisms (benchmarks/chart_probe_app.py)"
    )
    return p.parse_args(argv)


def page_defaults(model_name: str, attack: str) -> dict:
    """The parameters the Attack Lab starts with: the attack's defaults, its presets on ImageNet (the seed
    is the lab's own)."""
    params = attack_presets(attack, get_spec(model_name).dataset)
    params.pop("seed", None)
    return params


def one_image(model_name: str) -> torch.Tensor:
    if get_spec(model_name).dataset == "imagenet":
        return preprocess(sample_photo("chelsea"), model_name)
    return load_mnist("test").images[:1]


def stream(
    model, model_name: str, attack_name: str, x: torch.Tensor, min_interval: float, cap_s: float, quick: bool
) -> dict:
    """One live run consumed like the page consumes it; the attack's own compute time is also reported."""
    params = page_defaults(model_name, attack_name)
    if quick:
        params.update(
            {"lbfgs": {"rounds": 1, "max_iter": 3, "n_targets": 2}, "pgd": {"steps": 3}}[attack_name]
        )
    with torch.no_grad():
        label = int(model(x).argmax(1))
    scale = max(1, 168 // x.shape[-1])
    start = time.perf_counter()
    live = LiveRun(make_lab_attack(attack_name, model, **params), x, label)
    frames = 0
    for frame in live.frames(min_interval):
        to_uint8(frame.x_adv, scale)
        perturbation_picture(frame.perturbation, scale)
        frames += 1
        if time.perf_counter() - start > cap_s:
            live.stop()
    wall = time.perf_counter() - start
    steps = len(live.series["iteration"])
    return {
        "params": live.run.attack.params,
        "steps": steps,
        "frames": frames,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "frames_per_s": frames / wall,
        "engine_steps_per_s": steps / live.run.time_s if live.run.time_s else None,
        "first_frame_s": live.first_frame_s,
        "finished": live.run.finished,
    }


def forward_backward(models: dict, rounds: int) -> dict:
    """Seconds for one forward+backward pass (gradient with respect to the input) of one 224-px photo through
    each ImageNet network, alternated; medians, spreads and the ratio to mobilenet_v2's median."""

    def pass_of(model, x: torch.Tensor):
        with torch.no_grad():
            label = model(x).argmax(1)

        def run() -> None:
            z = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(z), label), z)

        return run

    times = harness.alternate(
        {name: pass_of(model, one_image(name)) for name, model in models.items()}, rounds
    )
    peer = harness.median(times[PEER]) if PEER in times else None
    return {
        name: {
            "median_s": harness.median(t),
            "spread_s": max(t) - min(t),
            "rounds": len(t),
            "ratio_to_mobilenet_v2": harness.median(t) / peer if peer else None,
        }
        for name, t in times.items()
    }


# ---------------------------------------------------------------- the real page in a browser

OBSERVER = """() => {
  const caption = () => [...document.querySelectorAll('.st-key-lab_images figcaption')]
    .map(c => c.innerText).find(t => /current, step \\d+/.test(t));
  window.__frames = [];
  let seen = caption() || null;  // a previous run's last frame is not a new frame
  new MutationObserver(() => {
    const text = caption();
    if (text && text !== seen) {
      seen = text;
      window.__frames.push([performance.now(), parseInt(text.match(/step (\\d+)/)[1])]);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def choose(page, label: str, option: str) -> None:
    """Pick an option in a Streamlit selectbox by typing it."""
    box = page.locator(f'input[aria-label="{label}"]')
    box.click()
    box.fill(option)
    page.keyboard.press("Enter")


PROBE_JS = (Path(__file__).parent / "chart_probe.js").read_text()
SAMPLE_S = 0.2
FRAME_COUNTER = """() => {
  window.__frames = [];
  let seen = null;
  new MutationObserver(() => {
    const t = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(c => c.innerText)
      .find(t => /probe frame \\d+/.test(t));
    if (t && t !== seen) { seen = t; window.__frames.push(performance.now()); }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def sample_charts(page, selector: str, until: Callable[[], int], cap_s: float) -> list[list[dict]]:
    """Every SAMPLE_S seconds until `until()` (or cap_s): for each chart, is it in view and drawn?"""
    samples = []
    deadline = time.perf_counter() + cap_s
    while time.perf_counter() < deadline and not until():
        samples.append(page.evaluate(PROBE_JS, selector))
        page.wait_for_timeout(SAMPLE_S * 1000)
    return samples


def share_all_drawn(samples: list[list[dict]]) -> float | None:
    """Share of samples in which every chart (at least one present) shows data."""
    if not samples:
        return None
    return sum(bool(s) and all(c["data"] for c in s) for s in samples) / len(samples)


LAB_CHARTS = '.st-key-lab_charts [data-testid="stColumn"]'  # the live panel's four charts
LAB_IMAGES_DRAWN = "() => [...document.querySelectorAll('.st-key-lab_images img')].filter(i => i.complete && i.naturalWidth > 0).length == 4"


def wait_panel_drawn(page, timeout_ms: float = 120_000) -> None:
    """Until the live panel is on screen (its four images loaded, its four charts there, all but the search
    over c, empty before Run, showing data) and the script is done: Run clicked mid-render would wait for
    the page's own script, and the benchmark would time that."""
    drawn = f"() => {{ const c = ({PROBE_JS})({LAB_CHARTS!r}); return c.length == 4 && c.filter(x => x.data).length >= 3; }}"
    page.wait_for_function(drawn, timeout=timeout_ms)
    page.wait_for_function(LAB_IMAGES_DRAWN, timeout=timeout_ms)
    harness.wait_idle(page, timeout_ms)


def browser_run(page, attack_title: str | None, cap_s: float) -> dict:
    """On the Attack Lab page (already open): pick the attack, click Run, watch frames until done or cap."""
    if attack_title:
        choose(page, "Attack", attack_title)
        page.wait_for_timeout(300)
        harness.wait_idle(page)
    wait_panel_drawn(page)  # as a person would: Run pressed on a page that is all there, not mid-render
    page.evaluate(OBSERVER)
    run = page.locator('[data-testid="stBaseButton-primary"]', has_text="Run")
    run.wait_for()
    clicked = page.evaluate("() => performance.now()")
    run.click()
    page.wait_for_function("() => window.__frames.length > 0", timeout=120_000)
    page.wait_for_function(
        f"() => ({PROBE_JS})({LAB_CHARTS!r}).filter(c => c.data).length == 4", timeout=120_000
    )
    drawn = page.evaluate("() => performance.now()")
    page.wait_for_function(LAB_IMAGES_DRAWN, timeout=120_000)
    images = page.evaluate("() => performance.now()")
    running = page.locator('[data-testid="stMain"] button', has_text="Stop")
    # every 200 ms until the run's Stop button goes (the attack is over) or the cap
    samples = sample_charts(page, LAB_CHARTS, lambda: running.count() == 0, cap_s)
    if running.count():  # the run is longer than the cap: stop it
        running.click()
    frames = page.evaluate("() => window.__frames")
    harness.wait_idle(page, timeout_ms=300_000)
    first_t, first_it = frames[0]
    last_t, last_it = frames[-1]
    span = (last_t - first_t) / 1000
    return {
        "run_click_to_first_frame_s": (first_t - clicked) / 1000,
        "run_click_to_charts_drawn_s": (drawn - clicked) / 1000,
        "run_click_to_four_images_drawn_s": (images - clicked) / 1000,  # sidebar path (browser_section)
        "samples": len(samples),
        "share_all_charts_drawn": share_all_drawn(samples),
        "frames_seen": len(frames),
        "frames_per_s": (len(frames) - 1) / span if span > 0 else None,
        "steps_per_s_on_screen": (last_it - first_it) / span if span > 0 else None,
        "last_iteration_seen": last_it,
    }


def chart_mechanisms(args) -> dict:
    """The same two charts redrawn 60 times, 25 or 5 a second, one way each (benchmarks/chart_probe_app.py):
    share of 200-ms samples with every chart drawn, frames per second the browser shows."""
    reason = harness.browser_available()
    if reason:
        return {"skipped": reason}
    out = {}
    with (
        harness.StreamlitServer(script="benchmarks/chart_probe_app.py") as server,
        harness.browser() as chromium,
    ):
        server.wait_healthy()
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        for mechanism, pace in itertools.product(MECHANISMS, PACES_S):
            page.goto(f"{server.url}/?mechanism={mechanism}&pace={pace}")
            page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            harness.wait_idle(page)
            page.evaluate(FRAME_COUNTER)
            start = time.perf_counter()
            page.get_by_role("button", name="Run").click()
            page.get_by_text("probe frame").wait_for(timeout=60_000)  # the charts exist from here on
            done = page.get_by_text("probe done")
            samples = sample_charts(page, '[class*="st-key-probe_chart_"]', done.count, 60)
            wall = time.perf_counter() - start
            frames = page.evaluate("() => window.__frames")
            span = (frames[-1] - frames[0]) / 1000 if len(frames) > 1 else 0
            out[f"{mechanism} every {pace} s"] = {
                "samples": len(samples),
                "share_all_drawn": share_all_drawn(samples),
                "frames_per_s": (len(frames) - 1) / span if span else None,
                "wall_s": wall,
            }
    return out


def browser_section(args) -> dict:
    reason = harness.browser_available()
    if reason:
        return {"skipped": reason}
    out = {}
    with harness.StreamlitServer(threads=args.threads) as server, harness.browser() as chromium:
        server.wait_healthy()
        page = chromium.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(server.url)
        page.wait_for_selector("h1", timeout=60_000)
        harness.wait_idle(page)
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Attack Lab").click()
        page.wait_for_selector("h1:has-text('Attack Lab')", timeout=60_000)
        harness.wait_idle(page)
        cap = 5.0 if args.quick else args.seconds
        attacks = [("lbfgs", None)] if args.quick else [("lbfgs", None), ("pgd", "PGD")]
        for attack, title in attacks:
            out[f"fc100-100-10:{attack}"] = browser_run(page, title, cap)
        out["server_memory"] = server.memory_mb()
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    harness.use_device(args.device)
    if args.threads:
        harness.set_threads(args.threads)
    if args.charts:
        charts = chart_mechanisms(args)
        rows = [
            [k, r["samples"], r["share_all_drawn"], r["frames_per_s"]]
            for k, r in charts.items()
            if k != "skipped"
        ]
        text = "Chart mechanisms (two charts redrawn 60 times, sampled every 200 ms)\n" + harness.table(
            ["mechanism", "samples", "share with every chart drawn", "frames/s shown"], rows
        )
        result = {"charts": charts, "machine": harness.machine()}
        harness.emit(result, args.json, text, args.save, "live-charts", args.update_docs)
        return charts
    result = {"machine": harness.machine(), "quick": args.quick, "stream": {}}
    cap = 3.0 if args.quick else args.seconds
    loaded = {name: harness.load_model(name) for name in ([] if args.no_stream else args.models.split(","))}
    imagenet = {name: model for name, (model, _) in loaded.items() if get_spec(name).dataset == "imagenet"}
    if imagenet:
        result["forward_backward"] = forward_backward(imagenet, rounds=2 if args.quick else 20)
    for model_name, (model, weights) in loaded.items():
        x = one_image(model_name).to(harness.DEVICE)
        for attack in ATTACKS:
            for mode, interval in MODES.items():
                row = stream(model, model_name, attack, x, interval, cap, args.quick)
                row.update(weights=weights, goal_steps_per_s=GOALS.get(model_name))
                result["stream"][f"{model_name}:{attack}:{mode}"] = row
    if not args.no_browser:
        result["browser"] = browser_section(args)
    rows = [
        [
            key,
            r["steps"],
            r["wall_s"],
            r["steps_per_s"],
            r["engine_steps_per_s"],
            r["frames_per_s"],
            r["first_frame_s"],
            r["goal_steps_per_s"],
        ]
        for key, r in result["stream"].items()
    ]
    headers = [
        "model:attack:live mode",
        "steps",
        "wall s",
        "steps/s",
        "engine steps/s",
        "frames/s",
        "first frame s",
        "goal steps/s",
    ]
    text = "Live stream (core.lab.LiveRun.frames, as the page consumes it)\n\n" + harness.table(headers, rows)
    if "forward_backward" in result:
        text += "\n\nOne forward+backward pass, one 224-px photo (alternated)\n\n" + harness.table(
            ["model", "median s", "spread s", "rounds", f"x {PEER}"],
            [
                [k, r["median_s"], r["spread_s"], r["rounds"], r["ratio_to_mobilenet_v2"]]
                for k, r in result["forward_backward"].items()
            ],
        )
    browser = result.get("browser", {"skipped": "--no-browser"})
    if "skipped" in browser:
        text += f"\n\nbrowser: skipped: {browser['skipped']}"
    else:
        brows = [
            [
                k,
                r["run_click_to_first_frame_s"],
                r["run_click_to_charts_drawn_s"],
                r["run_click_to_four_images_drawn_s"],
                r["share_all_charts_drawn"],
                r["frames_seen"],
                r["frames_per_s"],
                r["steps_per_s_on_screen"],
            ]
            for k, r in browser.items()
            if k != "server_memory"
        ]
        text += "\n\nIn the browser (Attack Lab page, headless Chromium)\n\n" + harness.table(
            [
                "model:attack",
                "Run click to first frame s",
                "to all charts drawn s",
                "to all four images drawn s",
                "share of 200-ms samples with every chart drawn",
                "frames seen",
                "frames/s",
                "steps/s on screen",
            ],
            brows,
        )
    harness.emit(result, args.json, text, args.save, "live", args.update_docs)
    return result


if __name__ == "__main__":
    main()
