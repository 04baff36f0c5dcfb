"""Whether the guards of core.defences hold: clean, transfer, plain-attack and adaptive (BPDA) accuracy of
each input transformation with a verdict in words and its category, and adversarially trained models beside
their plain twin under the same attack. Here and not in core.defences because the verdict reads the
indicators of attack failure (core.evaluation.indicators): defences come before evaluation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from core.attacks import PGD, Param, make_attack, with_seed
from core.attacks.spec import param, seed_param
from core.checks import check_choice
from core.defences.transforms import GRADIENTS, DefendedModel, InputTransform
from core.errors import InvalidParameterError
from core.evaluation.indicators import INDICATORS, extra_checks, fired, run_checked
from core.evaluation.protocol import Protocol, Selection
from core.models import load as zoo_load


@dataclass
class DefenceRow:
    """One defence against one attack, accuracies on the same images (fractions in [0, 1]):
    `robust_transfer`, adversarial examples made on the bare model then passed through the defence;
    `robust_plain`, the attack run on the defended pipeline with the gradients autograd gives;
    `robust_adaptive`, the BPDA attack. Robust accuracy of the undefended model is the first row's.
    `indicators_plain` / `indicators_adaptive`: the indicators of attack failure (core.evaluation.indicators) that
    fired on the plain and on the BPDA attack."""

    defence: str
    clean_accuracy: float
    robust_transfer: float
    robust_plain: float
    robust_adaptive: float
    verdict: str
    indicators_plain: list[str] = field(default_factory=list)
    indicators_adaptive: list[str] = field(default_factory=list)
    category: str = ""  # one of CATEGORIES, the verdict's kind (pages colour by it, never by its wording)


def _accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    device = next(model.parameters()).device
    with torch.no_grad():
        preds = torch.cat(
            [model(x[i : i + batch].to(device)).argmax(1).cpu() for i in range(0, len(x), batch)]
        )
    return float((preds == labels.cpu()).float().mean())


HOLD_MARGIN = 0.1  # a defence 'holds' when robust accuracy stays this far above the undefended model's


def _titles(names: list[str]) -> str:
    return ", ".join(INDICATORS[n].title.lower() for n in names)


CATEGORIES = ("holds", "unverified", "seems", "fails")


def category(undefended: float, row: DefenceRow, margin: float = HOLD_MARGIN) -> str:
    """The verdict's kind from the numbers, by the same rule as `_verdict`'s words."""
    if min(row.robust_plain, row.robust_transfer, row.robust_adaptive) >= undefended + margin:
        return "unverified" if row.indicators_adaptive else "holds"
    return "seems" if row.robust_plain >= undefended + margin else "fails"


def _verdict(undefended: float, row: DefenceRow, clean_bare: float, margin: float = HOLD_MARGIN) -> str:
    """Plain words from the numbers: a defence 'holds' only if the strongest attack we ran (adaptive or
    transfer) still leaves it clearly above the undefended model, and no indicator of attack failure fired
    on that attack; otherwise a 'hold' is downgraded with the indicators as the reason."""
    worst = min(row.robust_plain, row.robust_transfer, row.robust_adaptive)
    cost = clean_bare - row.clean_accuracy
    note = f" It costs {100 * cost:.0f} points of clean accuracy." if cost > 0.02 else ""
    if worst >= undefended + margin:
        if row.indicators_adaptive:
            return (
                "Unverified: even the adaptive (BPDA) attack fails, but indicators of attack failure fired on "
                f"it ({_titles(row.indicators_adaptive)}), so the defence may only seem to hold." + note
            )
        return "Holds: even the adaptive (BPDA) attack leaves it robust." + note
    if row.robust_plain >= undefended + margin:
        also = " (so do examples made on the bare model)" if row.robust_transfer < undefended + margin else ""
        why = (
            f" Indicators on the plain attack: {_titles(row.indicators_plain)}."
            if row.indicators_plain
            else ""
        )
        return (
            "Only seems to hold: a standard attack on the defended model fails (masked gradients), "
            f"the adaptive (BPDA) attack breaks it{also}.{why}" + note
        )
    return "Does not help: a standard attack already breaks it." + note


NORM = "linf"  # the interactive evaluation's norm: SETTINGS' budget is per pixel


def images(
    model: nn.Module, n: int, device: torch.device | str | None = None, dataset: str = "mnist"
) -> Selection:
    """The images every defence is judged on: the first n test images of the model's dataset (MNIST, or a
    registered one), misclassified ones included (clean accuracy is one of the columns)."""
    return Protocol(n=n, correct_only=False, dataset=dataset).select(model, device)


PGD_EPS, PGD_STEPS = param(PGD.PARAMS, "eps"), param(PGD.PARAMS, "steps")
# What an interactive evaluation may ask (the dashboard's inputs), narrowed from PGD's spec: MNIST, a budget
# up to the paper-scale 0.5 (0.2 by default: input squeezes are judged where the bare model is broken), PGD's
# lighter step count, and at most 2000 images so that an evaluation stays within minutes on a CPU.
SETTINGS: tuple[Param, ...] = (
    Param("attack", str, "pgd", "Attack", "PGD iterates; FGSM takes one signed gradient step.",
          choices=("pgd", "fgsm")),
    replace(PGD_EPS, default=0.2, label="Linf budget (eps)", help="Largest change of any pixel (pixel scale "
            "[0, 1]).", low=0.01, high=0.5, high_l2=None, imagenet=None, models=(), step=0.01),
    replace(PGD_STEPS, default=PGD_STEPS.light_default(), label="PGD steps",
            help="Iterations of PGD (FGSM takes one).", high=200, imagenet=None, light=None),
    Param("n", int, 100, "Test images", "The first n test images of the model's dataset, the same for every defence.",
          low=10, high=2000, step=10),
    seed_param("PGD's random start"),
)  # fmt: skip


def check_attack_params(attack: str, eps: float, steps: int, norm: str) -> dict[str, Any]:
    """Validated parameters of the budgeted attack used against the defences."""
    check_choice("attack", attack, SETTINGS[0].choices)
    norm = param(PGD.PARAMS, "norm").check(norm)
    eps = replace(PGD_EPS, strict_low=True).check(eps, norm)  # a zero budget evaluates nothing
    if attack == "fgsm":
        if norm != "linf":
            raise InvalidParameterError("fgsm is an Linf attack; use --norm linf.")
        return {"eps": eps}
    return {"eps": eps, "norm": norm, "steps": PGD_STEPS.check(steps)}


def evaluate_transforms(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    transforms: list[InputTransform],
    *,
    attack: str = "pgd",
    eps: float = PGD_EPS.default,
    steps: int = PGD_STEPS.default,
    norm: str = "linf",
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[DefenceRow]:
    """Clean, transfer, plain-attack and BPDA-attack accuracy of each input transformation on (x, labels),
    after a first row for the undefended model. Same images, same attack parameters everywhere."""

    params = check_attack_params(attack, eps, steps, norm)
    params = with_seed(attack, params, seed)
    total = 1 + 2 * len(transforms)
    report = progress or (lambda fraction, text: None)
    report(0.0, "attacking the bare model")
    bare = make_attack(attack, model, device, **params).run(x, labels)
    clean_bare = _accuracy(model, x, labels)
    undefended = _accuracy(model, bare.x_adv, labels)
    rows = [DefenceRow("none", clean_bare, undefended, undefended, undefended, "baseline")]
    for i, transform in enumerate(transforms):
        robust, flags = {}, {}
        for j, gradient in enumerate(GRADIENTS):
            report((1 + 2 * i + j) / total, f"{gradient} attack through {transform.describe()}")
            defended = DefendedModel(model, transform, gradient)
            result, checks = run_checked(defended, attack, params, x, labels, extra=False, device=device)
            robust[gradient], flags[gradient] = _accuracy(defended, result.x_adv, labels), fired(checks)
        if min(robust.values()) >= undefended + HOLD_MARGIN:  # it may hold: check the BPDA run harder
            checks = extra_checks(defended, attack, params, result, twin_x_adv=bare.x_adv, device=device)
            flags["bpda"] = sorted({*flags["bpda"], *fired(checks)})
        defended = DefendedModel(model, transform)
        row = DefenceRow(
            transform.describe(),
            clean_accuracy=_accuracy(defended, x, labels),
            robust_transfer=_accuracy(defended, bare.x_adv, labels),
            robust_plain=robust["naive"],
            robust_adaptive=robust["bpda"],
            verdict="",
            indicators_plain=flags["naive"],
            indicators_adaptive=flags["bpda"],
        )
        row.verdict = _verdict(undefended, row, clean_bare)
        row.category = category(undefended, row)
        rows.append(row)
    report(1.0, "done")
    return rows


@dataclass
class TwinRow:
    """An adversarially trained model beside the plainly trained model of the same architecture."""

    model: str
    twin: str
    clean_accuracy: float
    twin_clean_accuracy: float
    robust_accuracy: float
    twin_robust_accuracy: float


def compare_twins(
    pairs: list[tuple[str, str]],
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    attack: str = "pgd",
    eps: float = PGD_EPS.default,
    steps: int = PGD_STEPS.default,
    norm: str = "linf",
    seed: int = 0,
    device: torch.device | str | None = None,
    load: Callable[[str], nn.Module] | None = None,
) -> list[TwinRow]:
    """Clean and robust accuracy of each adversarially trained model and its twin under the same attack
    (`load(name)` gives a model; the dashboard passes its shared cache)."""

    load = load or (lambda name: zoo_load(name, device))

    params = check_attack_params(attack, eps, steps, norm)
    params = with_seed(attack, params, seed)

    @functools.cache  # a plain twin shared by several adversarially trained models is attacked once
    def accuracies(name: str) -> tuple[float, float]:
        model = load(name)
        result = make_attack(attack, model, device, **params).run(x, labels)
        return _accuracy(model, x, labels), float((result.pred_after == labels).float().mean())

    rows = []
    for name, twin in pairs:
        clean, robust = accuracies(name)
        twin_clean, twin_robust = accuracies(twin)
        rows.append(TwinRow(name, twin, clean, twin_clean, robust, twin_robust))
    return rows


def as_dicts(rows: list[DefenceRow] | list[TwinRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
