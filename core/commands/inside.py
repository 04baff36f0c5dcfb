"""`intriguing inside --run run.npz`: what an attack moved inside the network, layer by layer."""

from __future__ import annotations


def _text(result: dict) -> str:
    lines = [f"{result['model']}: {result['n']} images, success {100 * result['success_rate']:.0f}%"]
    for layer in result["layers"]:
        lines.append(f"{layer['layer']} ({layer['units']} units): |delta|^2 = {layer['delta_norm2']:.4g}")
        for arm, info in layer["arms"].items():
            if "skipped" in info:
                lines.append(f"  {arm}: skipped ({info['skipped']})")
                continue
            pushed = ", ".join(f"{p['direction']} ({p['push']:+.3g})" for p in info["pushed"][:3])
            lines.append(f"  {arm}: top-5 share {info['top5_share']:.2f}; pushed most: {pushed}")
        if "neighbours" in layer:
            n = layer["neighbours"]
            lines.append(
                f"  nearest {n['k']} held-out images of phi(x_adv): {n['adv_share_of_adv_class']:.0%} of the "
                f"adversarial class, {n['adv_share_of_clean_class']:.0%} of the original "
                f"(phi(x): {n['clean_share_of_clean_class']:.0%} of the original)"
            )
    return "\n".join(lines)


def run(args) -> int:
    import torch

    from core.cli import emit
    from core.provenance import versions
    from core.units.images import held_out_images
    from core.units.inside import load_run, what_changed

    torch.set_num_threads(max(1, args.threads))
    record = load_run(args.run)
    images = held_out_images(record.model, args.image_folder)
    layers = args.layer.split(",") if args.layer else None
    result = what_changed(record, images, layers, seed=args.seed, device=args.device)
    result["run"] = str(args.run)
    result["versions"] = versions()
    emit(result, args.json, _text(result))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("inside", parents=[common], help="what an attack run moved inside the network")
    p.add_argument("--run", required=True, help="run.npz from `intriguing attack --out` or the Attack Lab")
    p.add_argument("--layer", help="readable layer(s), comma-separated (default: every readable layer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random basis and the learned fits")
    p.add_argument("--image-folder", help="held-out photos for ImageNet models")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
