"""`intriguing figure adversarial|units|transfer --out FILE.{png,pdf,svg}`: slide-ready figures (the paper's
Figure 5 panel, a Unit Explorer grid, the transfer heatmaps). The format comes from the suffix; a JSON card
of what was run (model, attack, parameters, protocol, seed, versions) is always written beside the figure
as FILE.json, and printed with --json."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from core.commands.attack import add_attack_flags


def _write(fig, card: dict, args: argparse.Namespace) -> int:
    """Save the figure and its card; print where they went (or the card with --json)."""
    from core.cli import emit
    from core.provenance import versions
    from core.visual import figures

    path = figures.save(fig, args.out)
    card_path = path.with_suffix(".json")
    card = {
        **card,
        "out": str(path),
        "format": figures.figure_format(path),
        "dpi": figures.DPI,
        "versions": versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "card": str(card_path),
    }
    card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    emit(card, args.json, f"wrote {path} and its card {card_path}")
    return 0


def adversarial(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from core.attacks import make_attack
    from core.commands.attack import attack_params
    from core.errors import InvalidParameterError
    from core.evaluation.protocol import Protocol
    from core.models import class_names, get_spec, load
    from core.visual import figures

    figures.output_path(args.out)
    if get_spec(args.model).dataset != "mnist":
        raise InvalidParameterError(f"{args.model} is an ImageNet model; `figure adversarial` uses MNIST.")
    if not 1 <= args.n <= 64:
        raise InvalidParameterError("--n must be between 1 and 64 (one figure row per image).")
    protocol = Protocol(n=args.n, order=args.order, seed=args.seed)
    params = attack_params(args.attack, args, args.seed)
    model = load(args.model, args.device)
    attack = make_attack(args.attack, model, args.device, **params)
    chosen = protocol.select(model, attack.device)
    with tqdm(desc=args.attack, unit="step", disable=args.quiet) as bar:
        result = attack.run(chosen.images, chosen.labels, callback=lambda _event: bar.update(1))
    title = args.title or f"{args.attack} on {args.model}"
    note = (
        f"{protocol.describe()}; seed {args.seed}. Perturbation: blue darker, red brighter, "
        "amplified to fill the colour scale."
    )
    fig = figures.adversarial_figure(
        figures.examples(model, result, class_names(args.model)), title, args.columns, note
    )
    card = {
        "figure": "adversarial",
        "model": args.model,
        "attack": args.attack,
        "params": dict(result.params),
        "protocol": chosen.record(),
        "seed": args.seed,
        "summary": result.summary(),
    }
    return _write(fig, card, args)


def units(args: argparse.Namespace) -> int:
    from core import units as unit_analysis
    from core.errors import InvalidParameterError
    from core.visual import figures

    figures.output_path(args.out)
    if not 1 <= args.rows <= 16:
        raise InvalidParameterError("--rows must be between 1 and 16.")
    if not 1 <= args.k <= 32:
        raise InvalidParameterError("--k must be between 1 and 32.")
    layer = args.layer or unit_analysis.default_layer(args.model)
    images = unit_analysis.held_out_images(args.model, args.image_folder)
    acts = unit_analysis.layer_activations(args.model, layer, images, device=args.device)
    n_units = acts.shape[1]
    if not 0 <= args.unit < n_units:
        raise InvalidParameterError(f"--unit must be between 0 and {n_units - 1} ({layer} has {n_units}).")
    shown = [(args.unit + j) % n_units for j in range(min(args.rows, n_units))]
    natural, random = figures.unit_rows(acts, shown, args.seed, args.k)
    title = args.title or f"{args.model} {layer}: top-{args.k} of {len(images)} held-out images"
    fig = figures.units_figure(images, natural, random, title)
    card = {
        "figure": "units",
        "model": args.model,
        "layer": layer,
        "units": shown,
        "random_directions": {"count": len(shown), "seed": args.seed},
        "k": args.k,
        "data": images.key,
        "n_images": len(images),
        "seed": args.seed,
    }
    return _write(fig, card, args)


def transfer(args: argparse.Namespace) -> int:
    from core.errors import IntriguingError
    from core.experiments import RESULTS_DIR, read_card
    from core.visual import figures

    figures.output_path(args.out)
    folder = Path(args.results).expanduser() if args.results else RESULTS_DIR
    try:
        stored = read_card(args.table, folder)
    except (OSError, ValueError) as exc:
        raise IntriguingError(f"Cannot read the stored {args.table} card in {folder}: {exc}") from exc
    if stored is None:
        raise IntriguingError(
            f"No stored {args.table} result in {folder}: run `intriguing reproduce {args.table}` first."
        )
    try:
        fig = figures.transfer_figure(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntriguingError(f"The stored {args.table} card in {folder} is incomplete: {exc!r}") from exc
    keys = ("experiment", "n", "seed", "models", "attack", "test_indices_fingerprint", "date", "versions")
    card = {"figure": "transfer", "table": args.table, "source": {k: stored.get(k) for k in keys}}
    return _write(fig, card, args)


def register(sub, common) -> None:
    from core.attacks import ATTACKS

    p = sub.add_parser(
        "figure",
        parents=[common],
        help="slide-ready figures: Figure 5 panel, unit grid, transfer heatmaps (PNG 300 dpi, PDF, SVG)",
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name: str, help_text: str, func) -> argparse.ArgumentParser:
        k = kinds.add_parser(name, parents=[common], help=help_text)
        k.add_argument("--out", required=True, help="FILE.png (300 dpi), FILE.pdf or FILE.svg")
        k.add_argument("--title", default=None, help="figure title (default: says what was run)")
        k.add_argument("--json", action="store_true", help="print the figure's card as JSON")
        k.set_defaults(func=func)
        return k

    a = kind("adversarial", "original | amplified perturbation | adversarial, per image", adversarial)
    a.add_argument("--model", required=True)
    a.add_argument("--attack", default="lbfgs", choices=list(ATTACKS), help="default lbfgs (the paper's)")
    a.add_argument("--n", type=int, default=8, help="images, chosen by the evaluation protocol (default 8)")
    a.add_argument("--order", choices=("dataset", "random"), default="dataset")
    a.add_argument("--seed", type=int, default=0, help="seed of random starts and of --order random")
    a.add_argument("--columns", type=int, default=None, help="triples side by side (default 1 or 2)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_attack_flags(a)

    u = kind("units", "top-k images of units beside random directions", units)
    u.add_argument("--model", required=True)
    u.add_argument("--layer", help="readable layer (default: the layer before the output)")
    u.add_argument("--unit", type=int, default=0, help="first unit shown (then the next ones)")
    u.add_argument("--rows", type=int, default=4, help="directions per side (default 4)")
    u.add_argument("--k", type=int, default=8, help="images per row (default 8)")
    u.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    u.add_argument("--image-folder", help="held-out photos for ImageNet models")

    t = kind("transfer", "the paper's Table 2 or 4 as a heatmap, from the stored result", transfer)
    t.add_argument("--table", choices=("table2", "table4"), default="table2")
    t.add_argument("--results", default=None, help="folder of stored results (default docs/results)")
