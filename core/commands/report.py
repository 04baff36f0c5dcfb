"""`intriguing report`: validate one prediction; how far must the image move before the model changes its mind?"""

from __future__ import annotations

from core.config import DEFAULT_MODEL  # base module: no cost at start-up


def _text(report) -> str:
    lines = [
        report.verdict,
        "",
        f"{'attack':<10} {'method':<20} {'RMS':>7} {'L2':>6} {'Linf':>6} {'noise':>6}  new class",
    ]
    for f in report.findings:
        if f.success:
            new = report.class_names[f.pred_after] if report.class_names else str(f.pred_after)
            lines.append(
                f"{f.attack:<10} {f.method:<20} {f.rms:>7.4f} {f.l2:>6.3f} {f.linf:>6.3f} {f.noise_flip_rate:>6.0%}  {new}"
            )
        else:
            lines.append(f"{f.attack:<10} {f.method:<20} {'failed':>7}")
    lip = report.lipschitz
    lines += [
        "",
        f"local Lipschitz estimate: margin {lip.margin:.3f}, max gradient norm {lip.max_grad_norm:.3f} in an L2 ball "
        f"of radius {lip.ball_radius_l2:.3f} -> boundary at ~L2 {lip.boundary_distance_l2:.3f} "
        f"(RMS {lip.boundary_distance_rms:.4f})",
        f"({report.time_s:.1f} s)",
    ]
    return "\n".join(lines)


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from core.checks import check_int
    from core.cli import emit
    from core.data.images import open_image
    from core.errors import InvalidParameterError
    from core.evaluation.validate import dataset_image, robustness_report
    from core.models.inputs import model_input
    from core.runtime import bar_disabled

    check_int("seed", args.seed)  # every flag is checked before any work starts
    check_int("reference size", args.reference_n, low=1, high=10_000)
    if args.image is not None:
        x = model_input(open_image(args.image), args.model)
        true_label, source = None, Path(args.image).name
    else:
        from core.models import get_spec

        spec = get_spec(args.model)
        dataset = args.dataset or spec.dataset
        index = args.mnist_index if args.mnist_index is not None else args.index
        if args.mnist_index is not None and dataset != "mnist":
            raise InvalidParameterError("--mnist-index names an MNIST image; use --dataset NAME --index I.")
        if dataset != spec.dataset:
            raise InvalidParameterError(
                f"{args.model} belongs to {spec.dataset}, not to the dataset {dataset}."
            )
        if dataset == "imagenet":
            raise InvalidParameterError(f"{args.model} is an ImageNet model; give it a photo with --image.")
        x, true_label = dataset_image(
            dataset, index, spec.input_shape if spec.origin == "registered" else None
        )
        source = f"{'MNIST' if dataset == 'mnist' else dataset} test #{index}"
    html_path = Path(args.html) if args.html else None
    if html_path is not None and not html_path.parent.is_dir():
        raise InvalidParameterError(f"cannot write {html_path}: folder {html_path.parent} does not exist.")
    with tqdm(total=100, desc="report", unit="%", disable=bar_disabled(not args.json)) as bar:

        def progress(fraction: float, text: str) -> None:
            bar.set_postfix_str(text[:60])
            bar.update(round(100 * fraction) - bar.n)

        report = robustness_report(
            args.model,
            x,
            true_label=true_label,
            image_source=source,
            reference_n=args.reference_n,
            seed=args.seed,
            device=args.device,
            record=args.record,
            progress=progress,
        )
    if html_path is not None:
        try:
            html_path.write_text(report.to_html(), encoding="utf-8")
        except OSError as exc:
            raise InvalidParameterError(f"cannot write {html_path}: {exc.strerror}.") from exc
    text = _text(report) + (f"\nHTML report: {html_path}" if html_path else "")
    emit(report.to_dict(), args.json, text)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="robustness report for one image: the smallest perturbation each attack needs to flip it",
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="FILE", help="a photo or a digit picture (PNG, JPEG, ...)")
    source.add_argument("--mnist-index", type=int, metavar="I", help="MNIST test image number I")
    source.add_argument(
        "--index", type=int, metavar="I", help="image number I of --dataset (default: the model's)"
    )
    p.add_argument(
        "--dataset", default=None, help="a registered dataset (`intriguing datasets`), with --index"
    )
    p.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report")
    p.add_argument(
        "--reference-n", type=int, default=100, help="test images in the model's reference (default 100)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-record", dest="record", action="store_false", help="do not store runs in the leaderboard"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
