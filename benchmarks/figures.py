"""Slide-ready figures: time to compose each figure and to export it as PNG (300 dpi), PDF and SVG.

    python benchmarks/figures.py [--quick] [--json] [--rounds 5] [--threads 1]

Figures (core/visual/figures.py): the Figure 5 panel of 8 FGSM examples on fc100-100-10, the Unit Explorer grid
(4 units and 4 random directions of fc100-100-10 hidden2, k = 8) and the stored Table 2 heatmap. The peer,
timed side by side in alternating rounds: the same panel's pixels as one numpy mosaic
(`core.pictures.triple_picture`) saved by PIL as a PNG, with no text, layout or vector output: the floor any
PNG export of those pixels pays. Export times are medians over the rounds; sizes are of the files written.
"""

from __future__ import annotations

import argparse
import io

import harness  # first: puts the project root on sys.path  # isort: skip
import numpy as np
from PIL import Image

from core import units
from core.attacks import make_attack
from core.evaluation.protocol import Protocol
from core.experiments import read_card
from core.models import class_names
from core.runtime import torch_threads
from core.visual import figures
from core.visual.pictures import triple_picture

MODEL = "fc100-100-10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per export (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (for the attack only)")
    return p.parse_args(argv)


def builders(quick: bool):
    """Each figure's composer (a function of nothing), and the panel's examples for the peer."""
    model, _ = harness.load_model(MODEL)
    n, rows, k = (2, 1, 3) if quick else (8, 4, 8)
    chosen = Protocol(n=n).select(model, harness.DEVICE)
    result = make_attack("fgsm", model, eps=0.15).run(chosen.images, chosen.labels)
    examples = figures.examples(model, result, class_names(MODEL))
    images = units.held_out_images(MODEL)
    acts = units.layer_activations(MODEL, "hidden2", images, model=model)
    natural, random = figures.unit_rows(acts, list(range(rows)), 0, k)
    card = read_card("table2")
    built = {
        f"Figure 5 panel, {n} examples": lambda: figures.adversarial_figure(examples, "FGSM"),
        f"unit grid, {rows}+{rows} rows, k = {k}": lambda: figures.units_figure(images, natural, random),
    }
    if card is not None:
        built["Table 2 heatmap"] = lambda: figures.transfer_figure(card)
    return built, result


def pil_mosaic_png(result) -> bytes:
    """The peer: the panel's pixels as one picture (triples stacked), saved by PIL."""
    scale = figures.pixel_scale(result.x.shape[-1], figures.PICTURE_INCHES)
    rows = [triple_picture(result.x[i], result.x_adv[i], scale)[0] for i in range(len(result))]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buffer, format="PNG", dpi=(figures.DPI, figures.DPI))
    return buffer.getvalue()


def bench_figure(build, rounds: int) -> dict:
    build_s = harness.median(harness.alternate({"build": build}, rounds)["build"])
    fig = build()
    contenders = {fmt: (lambda fmt=fmt: figures.export(fig, fmt)) for fmt in figures.FORMATS}
    times = harness.alternate(contenders, rounds)
    return {
        "build_s": build_s,
        "formats": {
            fmt: {"export_s": harness.median(times[fmt]), "kb": len(figures.export(fig, fmt)) / 1024}
            for fmt in figures.FORMATS
        },
        "size_px": [round(v * figures.DPI) for v in fig.get_size_inches()],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    harness.use_device(args.device)
    rounds = 1 if args.quick else args.rounds
    with torch_threads(args.threads), harness.private_cache("bench-figures-"):
        built, result = builders(args.quick)
        out = {"machine": harness.machine(), "quick": args.quick, "rounds": rounds, "figures": {}}
        for name, build in built.items():
            out["figures"][name] = bench_figure(build, rounds)
        panel = next(iter(out["figures"].values()))
        peer = harness.alternate({"peer": lambda: pil_mosaic_png(result)}, rounds)["peer"]
        out["peer"] = {"name": "PIL PNG of the panel's pixels", "export_s": harness.median(peer)}
        out["peer"]["ratio_png"] = panel["formats"]["png"]["export_s"] / out["peer"]["export_s"]
    rows = [
        [name, "x".join(map(str, r["size_px"])), r["build_s"] * 1000]
        + [r["formats"][f]["export_s"] * 1000 for f in figures.FORMATS]
        + [r["formats"][f]["kb"] for f in figures.FORMATS]
        for name, r in out["figures"].items()
    ]
    headers = ["figure", "pixels at 300 dpi", "compose ms"]
    headers += [f"{f.upper()} ms" for f in figures.FORMATS] + [f"{f.upper()} kB" for f in figures.FORMATS]
    peer = out["peer"]
    text = (
        f"Figure export, median of {rounds} rounds\n\n"
        + harness.table(headers, rows)
        + f"\n\npeer: {peer['name']}: {peer['export_s'] * 1000:.0f} ms; the panel's PNG export takes "
        f"{peer['ratio_png']:.1f}x that"
    )
    harness.emit(out, args.json, text, args.save, "figures", args.update_docs)
    return out


if __name__ == "__main__":
    main()
