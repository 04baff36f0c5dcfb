"""`intriguing featvis`: synthesise the input that maximises <phi(x), v> for one direction of a layer, and
compare the activation it reaches with the best held-out image's along the same direction."""

from __future__ import annotations


def run(args) -> int:
    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from core.cli import emit
    from core.errors import InvalidParameterError
    from core.models import get_spec, load
    from core.provenance import versions
    from core.units import default_layer, layer_activations, project
    from core.units.arms import resolve_direction
    from core.units.featvis import default_settings, start
    from core.units.images import held_out_images

    if args.threads < 1:
        raise InvalidParameterError("--threads must be at least 1.")
    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    layer = args.layer or default_layer(args.model)
    model = load(args.model, args.device)
    images = held_out_images(args.model, args.image_folder)
    acts = layer_activations(args.model, layer, images, model=model)
    direction = resolve_direction(args.direction, acts, args.seed)
    settings = default_settings(spec.dataset, steps=args.steps, seed=args.seed)
    run_ = start(args.model, layer, direction, settings, model=model, held_out=(images, acts))
    for _ in tqdm(run_, total=settings.steps, desc=f"featvis {args.direction}", disable=args.quiet):
        pass
    result = run_.result()
    held_out = project(acts, direction)
    best = int(np.argmax(held_out))
    summary = {
        "model": args.model,
        "layer": layer,
        "direction": args.direction,
        "activation": result.activation,
        "held_out_max": float(held_out[best]),
        "held_out_argmax": best,
        "ratio": result.activation / float(held_out[best]) if held_out[best] > 0 else None,
        "iterations": result.iterations,
        "time_s": result.time_s,
        "settings": result.settings,
        "data": images.key,
        "versions": versions(),
    }
    if args.out:
        Image.fromarray((np.clip(result.picture(), 0, 1) * 255 + 0.5).astype(np.uint8)).save(args.out)
        summary["out"] = args.out
    text = (
        f"{args.model} {layer} {args.direction}: <phi(x), v> = {result.activation:.4g} after "
        f"{result.iterations} steps ({result.time_s:.2f} s); best held-out image #{best}: {held_out[best]:.4g}"
    )
    emit(summary, args.json, text)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "featvis", parents=[common], help="feature visualisation: the input that maximises one direction"
    )
    p.add_argument("--model", required=True, help="zoo model (see `intriguing models`)")
    p.add_argument("--layer", help="readable layer (default: the layer before the output)")
    p.add_argument(
        "--direction",
        default="unit:0",
        help="unit:I, random:SEED, nmf:I, kmeans:I, dictionary:I or mix:3:1,7:-0.5 (default unit:0)",
    )
    p.add_argument("--steps", type=int, default=256, help="optimisation steps (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start image, transforms, learned fits")
    p.add_argument("--image-folder", help="held-out photos for ImageNet models")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--out", help="write the image to FILE.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
