"""The practical questions of docs/validate.md, measured in one run: an example report on one MNIST test
image (how fragile is this prediction, and how long the report takes), input-transformation defences under
plain and adaptive (BPDA) PGD at two budgets, and the adversarially trained models beside their plain twin.
`intriguing reproduce validate --update-docs` stores the card that docs/validate.md and the README quote."""

from __future__ import annotations

import time
from collections.abc import Callable

from core.defences.transforms import adversarial_twins, parse_transform
from core.evaluation import defences
from core.evaluation.protocol import Protocol
from core.evaluation.validate import mnist_image, reference_path, robustness_report
from core.experiments.adversarial import notify
from core.experiments.writer import Column, Report, bars, base_card
from core.models import load

MODEL = "fc100-100-10"
DEFENCES = ("bits:1", "bits:2", "median:3", "jpeg:75")
BUDGETS = (0.1, 0.2)
ATTACK = {"attack": "pgd", "norm": "linf", "steps": 20}
TWIN_EPS = 0.1
REPORT_IMAGE = 1
REFERENCE_N = 100
COLUMNS = [
    Column("eps", "eps", "num"),
    Column("defence", "defence", "text"),
    Column("clean_accuracy", "clean", "pct"),
    Column("robust_transfer", "transfer", "pct"),
    Column("robust_plain", "plain", "pct"),
    Column("robust_adaptive", "BPDA", "pct"),
    Column("verdict", "verdict", "text"),
]


def _draw(path, rows: list[dict]) -> None:
    labels = [f"{r['defence']} @ {r['eps']:g}" for r in rows]
    series = {"plain": [r["robust_plain"] for r in rows], "BPDA": [r["robust_adaptive"] for r in rows]}
    bars(path, labels, series, f"Defences in front of {MODEL}: accuracy under PGD", "accuracy")


def run(
    n: int = 100,
    seed: int = 0,
    device=None,
    progress: bool | Callable[[float, str], None] = True,
    reference_n: int = REFERENCE_N,
) -> Report:
    """The example report, the defence table at each budget and the twins, on the first n test images."""
    start = time.perf_counter()
    protocol = Protocol(split="test", n=n, correct_only=False)
    model = load(MODEL, device)
    chosen = protocol.select(model, device)
    notify(progress, 0.0, f"report on MNIST test image {REPORT_IMAGE}")
    x, true_label = mnist_image(REPORT_IMAGE)
    reference_cached = reference_path(MODEL, reference_n).is_file()
    report = robustness_report(
        MODEL, x, true_label=true_label, reference_n=reference_n, seed=seed, device=device, source="reproduce"
    )
    rows = []
    transforms = [parse_transform(spec) for spec in DEFENCES]
    for i, eps in enumerate(BUDGETS):
        notify(progress, (1 + i) / (len(BUDGETS) + 2), f"defences at eps {eps:g}")
        for row in defences.evaluate_transforms(
            model, chosen.images, chosen.labels, transforms, eps=eps, seed=seed, device=device, **ATTACK
        ):
            rows.append({"eps": eps, **defences.as_dicts([row])[0]})
    notify(progress, (1 + len(BUDGETS)) / (len(BUDGETS) + 2), "adversarially trained twins")
    twins = defences.compare_twins(
        adversarial_twins(),
        chosen.images,
        chosen.labels,
        eps=TWIN_EPS,
        seed=seed,
        device=device,
        **ATTACK,
    )
    notify(progress, 1.0, "done")
    lbfgs = report.finding("lbfgs")
    card = base_card(
        "validate",
        n,
        seed,
        model=MODEL,
        protocol=protocol.to_dict(),
        protocol_id=protocol.fingerprint,
        protocol_description=protocol.describe(),
        attack=ATTACK,
        budgets=list(BUDGETS),
        defences=list(DEFENCES),
        twins={"eps": TWIN_EPS, "rows": defences.as_dicts(twins)},
        example_report={
            "image": REPORT_IMAGE,
            "verdict": report.verdict,
            "time_s": report.time_s,
            "reference_was_cached": reference_cached,
            "easiest": report.easiest,
            "lbfgs_rms": lbfgs.rms,
            "reference_n": report.reference.n if report.reference else None,
            "reference_median_rms": report.reference.median if report.reference else None,
        },
        time_s=time.perf_counter() - start,
    )
    notes = [
        f"{protocol.describe()}; PGD Linf, {ATTACK['steps']} steps, seed {seed}. Accuracy: clean; under "
        "attack: transfer from the bare model, plain PGD on the defended model, BPDA."
    ]
    title = f"Input-transformation defences in front of {MODEL}"
    return Report("validate", title, COLUMNS, rows, card, lambda path: _draw(path, rows), notes)
