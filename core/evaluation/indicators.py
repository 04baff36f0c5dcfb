"""Indicators of attack failure: when a robustness number cannot be trusted.

The commonest way to fool oneself about robustness is a weak evaluation: an attack that silently failed
(too few steps, a too-small C&W constant, a masked gradient, a non-differentiable defence) makes a model look
robust. Following Pintor et al., "Indicators of Attack Failure" (NeurIPS 2022), and the AutoAttack practice
of running diverse attacks, each indicator flags examples where the attack, not the model, is the likely
reason an image was not fooled (those AutoAttack warns about are tested and worded once, in
core.attacks.sanity), and suggests a fix as parameter changes or another attack (`Fix`), which a
page applies with one click and the CLI with the flags `Fix.cli` prints.

Most checks read what a run streams anyway: `LossRecorder` is a callback for `Attack.run` that keeps each
image's margin (logit of the label minus the best other logit, whatever the attack's own loss) per event.
The rest cost extra runs (`extra_checks`): Square Attack at the same budget (it needs no gradient), a
transfer from an undefended twin, another random start, and the budget grown to the whole pixel range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import nn

from core.attacks import (
    AttackEvent,
    AttackResult,
    attack_class,
    attack_presets,
    is_budgeted,
    is_seeded,
    make_attack,
    with_seed,
)
from core.attacks.sanity import MEANINGS, REMEDIES, gradient_norms, model_flags
from core.attacks.square import margin


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    meaning: str


INDICATORS: dict[str, Indicator] = {
    i.name: i
    for i in (
        Indicator(
            "loss_flat",
            "Loss did not improve",
            "On images the attack failed to fool, its loss never got better than at its first step.",
        ),
        Indicator(
            "loss_still_falling",
            "Loss still falling at the last step",
            "On images the attack failed to fool, the loss was still falling at the end: more steps would help.",
        ),
        Indicator("masked_gradient", "Zero or non-finite gradient", MEANINGS["masked_gradient"]),
        Indicator("softmax_output", "Outputs are probabilities", MEANINGS["softmax_output"]),
        Indicator("randomised_model", "Randomised model", MEANINGS["randomised_model"]),
        Indicator(
            "non_differentiable_input",
            "Non-differentiable preprocessing",
            "A non-differentiable preprocessing (rounding, JPEG) sits in front of the model and the attack "
            "differentiates through it; attack it with BPDA or EOT.",
        ),
        Indicator(
            "black_box_beats_white_box",
            "Black-box or transfer attack succeeds",
            MEANINGS["black_box_beats_white_box"],
        ),
        Indicator(
            "restarts_change_outcome",
            "Another random start changes the outcome",
            "A second random start fools images the first run failed on: one run under-reports success.",
        ),
        Indicator(
            "unbounded_fails",
            "Unbounded attack below 100%",
            "With the budget grown to the whole pixel range the attack still fails on some images, though "
            "any image can then be turned into any other: the attack, not the model, failed.",
        ),
    )
}


@dataclass(frozen=True)
class Fix:
    """A suggested remedy: run `attack` instead (None: the same), with `params` changed, and through a
    preprocessing with `gradient` ('bpda': straight through). `cli` is the same as command-line flags."""

    text: str
    attack: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    gradient: str | None = None

    @property
    def cli(self) -> str:
        flags = [f"--attack {self.attack}"] if self.attack else []
        flags += [f"--{k.replace('_', '-')} {v:g}" for k, v in self.params.items()]
        flags += [f"--gradient {self.gradient}"] if self.gradient else []
        return " ".join(flags)


@dataclass
class IndicatorResult:
    """One indicator on one attack result: a flag per example (over the examples checked) and its fix.
    It fires when any example is flagged."""

    name: str
    flags: torch.Tensor
    fix: Fix

    @property
    def fired(self) -> bool:
        return bool(self.flags.any())

    @property
    def rate(self) -> float:
        return float(self.flags.float().mean()) if self.flags.numel() else 0.0

    @property
    def meaning(self) -> str:
        return INDICATORS[self.name].meaning

    @property
    def title(self) -> str:
        return INDICATORS[self.name].title

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fired": self.fired,
            "rate": round(self.rate, 4),
            "meaning": self.meaning,
            "fix": self.fix.cli,
        }


def fired(results: Sequence[IndicatorResult]) -> list[str]:
    """Names of the indicators that fired (what a leaderboard row stores)."""
    return [r.name for r in results if r.fired]


# ---------------------------------------------------------------- what the run streams


class LossRecorder:
    """A callback for `Attack.run`: each image's margin at every event (the attack's objective varies from
    attack to attack; the margin means the same everywhere: > 0 while the image is not fooled)."""

    def __init__(self, labels: torch.Tensor, target: torch.Tensor | None = None) -> None:
        self.goal = labels if target is None else target
        self.targeted = target is not None
        self.margins: list[torch.Tensor] = []

    def __call__(self, event: AttackEvent) -> None:
        self.margins.append(
            margin(event.logits.detach(), self.goal.to(event.logits.device), self.targeted).cpu()
        )

    def series(self, result: AttackResult) -> torch.Tensor:
        """(events + 1, N): the margins per event, then at the returned images (log-probabilities differ
        by the same amounts as logits, so the final row needs no extra model call)."""
        final = margin(result.probs_after.clamp_min(1e-30).log(), self.goal.cpu(), self.targeted)
        return torch.stack([*self.margins, final])


def _full(attack: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of the attack's spec: the given ones (recorded extras such as APGD's fixed norm
    dropped), the defaults for the rest."""
    spec = {p.name: p.default for p in attack_class(attack).PARAMS}
    return {**spec, **{k: v for k, v in params.items() if k in spec}}


def _iteration_param(attack: str) -> str | None:
    names = [p.name for p in attack_class(attack).PARAMS]
    return next((n for n in ("steps", "queries", "max_iter") if n in names), None)


def _more_steps(attack: str, params: Mapping[str, Any], factor: int = 4) -> Fix:
    name = _iteration_param(attack)
    if name is None:
        return Fix("Use an iterative attack instead.", attack="pgd")
    default = next(p.default for p in attack_class(attack).PARAMS if p.name == name)
    value = int(params.get(name) or default) * factor
    return Fix(f"Run {factor}x more iterations.", params={name: value})


def _flat_fix(model: nn.Module, attack: str, params: Mapping[str, Any]) -> Fix:
    if attack == "cw":
        const = min(1e10, float(params.get("initial_const", 1e-3)) * 1000)
        steps = max(9, int(params.get("binary_search_steps", 1)))
        return Fix(
            "Start C&W's search from a larger constant and search longer.",
            params={"initial_const": const, "binary_search_steps": steps},
        )
    if is_budgeted(attack):
        return _gradient_fix(model)
    return _more_steps(attack, params)


def _gradient_fix(model: nn.Module) -> Fix:
    if masking_preprocessing(model):
        return Fix("Attack through the preprocessing with BPDA (straight-through gradient).", gradient="bpda")
    return Fix("Run the gradient-free Square Attack at the same budget.", attack="square")


def masking_preprocessing(model: nn.Module) -> list[str]:
    """Preprocessings in `model` that a gradient attack differentiates through although they have no useful
    gradient (a module says so with a true `masks_gradient`, see core.defences.DefendedModel)."""
    return [m.describe() for m in model.modules() if getattr(m, "masks_gradient", False)]


def stream_checks(
    model: nn.Module,
    attack: str,
    params: Mapping[str, Any],
    result: AttackResult,
    recorder: LossRecorder | None = None,
) -> list[IndicatorResult]:
    """The indicators that cost nothing beyond the run (and one gradient and one forward pass at the clean
    images): flat or still falling loss (from `recorder`, when the run was recorded), masked gradient,
    probability outputs, a randomised model (the checks AutoAttack warns about), masking preprocessing."""
    params = _full(attack, params)
    attacked = result.pred_before == result.labels
    failed = attacked & ~result.fooled
    checks = []
    if recorder is not None and recorder.margins:
        series = recorder.series(result)
        window = max(1, (len(series) - 1) // 10)
        drop = series[0] - series.amin(0)
        late = series[:-window].amin(0) - series[-window:].amin(0)
        checks += [
            IndicatorResult(
                "loss_flat",
                failed & (series[1:].amin(0) >= series[0] - 1e-6),
                _flat_fix(model, attack, params),
            ),
            IndicatorResult(
                "loss_still_falling",
                failed & (drop > 1e-6) & (late > 0.1 * drop),
                _more_steps(attack, params),
            ),
        ]
    flags = model_flags(model, result.x, result.labels)
    checks += [
        IndicatorResult("masked_gradient", attacked & flags["masked_gradient"], _gradient_fix(model)),
        *(IndicatorResult(name, attacked & flags[name], Fix(REMEDIES[name])) for name in REMEDIES),
    ]
    blocked = bool(masking_preprocessing(model))
    checks.append(
        IndicatorResult(
            "non_differentiable_input",
            torch.full((len(result),), blocked) & attacked,
            Fix("Attack through the preprocessing with BPDA (straight-through gradient).", gradient="bpda"),
        )
    )
    return checks


# ---------------------------------------------------------------- checks that cost extra runs


def extra_checks(
    model: nn.Module,
    attack: str,
    params: Mapping[str, Any],
    result: AttackResult,
    *,
    twin_x_adv: torch.Tensor | None = None,
    square_queries: int = 1000,
    device: torch.device | str | None = None,
) -> list[IndicatorResult]:
    """Square at the same budget and a transfer from `twin_x_adv` (adversarial images made on an undefended
    twin), another random start (seeded attacks), and the budget grown to the whole range (budgeted
    attacks: eps 1 in Linf, the image diagonal in L2) or the attack's own unbounded failures."""
    params = _full(attack, params)
    x, labels = result.x, result.labels
    attacked = result.pred_before == labels
    failed = attacked & ~result.fooled

    def again(name: str, **changes: Any) -> AttackResult:
        return make_attack(name, model, device, **{**params, **changes}).run(x, labels)

    checks = []
    if is_budgeted(attack):
        norm = params.get("norm", "linf")
        square = make_attack(
            "square",
            model,
            device,
            norm=norm,
            eps=params["eps"],
            queries=square_queries,
            seed=int(params.get("seed", 0)),
        ).run(x, labels)
        beaten = square.fooled
        if twin_x_adv is not None:
            with torch.no_grad():
                pred = model(twin_x_adv.to(next(model.parameters()).device)).argmax(1).cpu()
            beaten = beaten | (attacked & (pred != labels))
        checks.append(IndicatorResult("black_box_beats_white_box", failed & beaten, _gradient_fix(model)))
        whole = 1.0 if norm == "linf" else float(x[0].numel()) ** 0.5
        unbounded = again(attack, eps=whole).fooled
        fix = _gradient_fix(model) if masking_preprocessing(model) else _more_steps(attack, params)
        checks.append(IndicatorResult("unbounded_fails", attacked & ~unbounded, fix))
    else:
        checks.append(IndicatorResult("unbounded_fails", failed, _flat_fix(model, attack, params)))
    if is_seeded(attack):
        other = again(attack, seed=int(params.get("seed", 0)) + 1).fooled
        fix = (
            Fix("Run more restarts.", params={"restarts": 4 * int(params.get("restarts", 1))})
            if attack == "square"
            else Fix("Run APGD, whose step-size schedule depends far less on the start.", attack="apgd")
        )
        checks.append(IndicatorResult("restarts_change_outcome", failed & other, fix))
    return checks


def run_checked(
    model: nn.Module,
    attack: str,
    params: Mapping[str, Any],
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    extra: bool = True,
    device: torch.device | str | None = None,
    **extra_kw: Any,
) -> tuple[AttackResult, list[IndicatorResult]]:
    """Run an attack with its stream recorded and return the result with every indicator (`extra`: also
    the checks that cost extra runs; `extra_kw` goes to `extra_checks`)."""
    recorder = LossRecorder(labels)
    result = make_attack(attack, model, device, **params).run(x, labels, callback=recorder)
    checks = stream_checks(model, attack, params, result, recorder)
    if extra:
        checks += extra_checks(model, attack, params, result, device=device, **extra_kw)
    return result, sorted(checks, key=lambda c: list(INDICATORS).index(c.name))


class Finding(Protocol):
    """What `report_checks` reads of one attack of a Validate report (core.report.Finding)."""

    attack: str
    success: bool
    eps: float | None


def report_checks(
    model: nn.Module,
    x: torch.Tensor,
    label: torch.Tensor,
    findings: Sequence[Finding],
    *,
    dataset: str = "mnist",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[IndicatorResult]:
    """The indicators for the one image of a Validate report, from its per-attack results: the gradient at
    the image, a masking preprocessing, unbounded failures (a minimal-distortion attack that failed, or a
    minimal-eps search that failed even at eps 1), and Square at half the smallest eps the gradient
    searches needed (at eps 1 when they all failed): if it flips the image there, they were misled."""
    failed = [f for f in findings if not f.success]
    unbounded = Fix(
        "Run the gradient-free Square Attack at the largest budget.", attack="square", params={"eps": 1.0}
    )
    if failed and failed[0].eps is None:
        own = _flat_fix(model, failed[0].attack, {})
        unbounded = replace(own, attack=own.attack or failed[0].attack)
    searched = [f for f in findings if f.eps is not None or (not f.success and is_budgeted(f.attack))]
    checks = [
        IndicatorResult("masked_gradient", ~(gradient_norms(model, x, label) > 0), _gradient_fix(model)),
        IndicatorResult(
            "non_differentiable_input",
            torch.tensor([bool(masking_preprocessing(model))]),
            Fix("Attack through the preprocessing with BPDA (straight-through gradient).", gradient="bpda"),
        ),
        IndicatorResult("unbounded_fails", torch.tensor([bool(failed)]), unbounded),
    ]
    if searched:
        found = [f.eps for f in searched if f.success]
        eps = min(found) / 2 if found else 1.0
        params = {**attack_presets("square", dataset), "eps": eps, "seed": seed}
        square = make_attack("square", model, device, **params).run(x, label)
        checks.append(IndicatorResult("black_box_beats_white_box", square.fooled, _gradient_fix(model)))
    return checks


def try_fix(
    model: nn.Module,
    x: torch.Tensor,
    label: int,
    fix: Fix,
    *,
    dataset: str = "mnist",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AttackResult | None:
    """Run the attack a fix names on one image (x: 1 x C x H x W), its parameters at their defaults for the
    domain with the fix's changes; None when the fix names no attack (BPDA needs a defended model)."""
    if fix.attack is None:
        return None
    params = {**attack_presets(fix.attack, dataset), **fix.params}
    return make_attack(fix.attack, model, device, **with_seed(fix.attack, params, seed)).run(
        x, torch.tensor([label])
    )


def merge(batches: Sequence[Sequence[IndicatorResult]]) -> list[IndicatorResult]:
    """The indicators of consecutive batches of one run as one list (flags concatenated in order)."""
    return [
        IndicatorResult(first.name, torch.cat([b[i].flags for b in batches]), first.fix)
        for i, first in enumerate(batches[0])
    ]


def table(checks: Sequence[IndicatorResult]) -> list[str]:
    """One line per indicator for command output: fired or not, its rate, and for a fired one its fix
    with the command-line flags that apply it."""
    lines = []
    for c in checks:
        fix = f"  fix: {c.fix.text} ({c.fix.cli})" if c.fired else ""
        lines.append(f"  {'FIRED' if c.fired else 'ok':<5} {c.title:<42} {c.rate:>6.1%}{fix}")
    return lines


def passed(checks: Sequence[IndicatorResult]) -> str | None:
    """'N checks passed' when indicators were computed and none fired (silence must read as checked, not
    as never looked at); None when one fired or none were computed."""
    if not checks or fired(checks):
        return None
    return f"{len(checks)} check{'s' if len(checks) > 1 else ''} passed"


def verdict(checks: Sequence[IndicatorResult]) -> str:
    """'reliable' when no indicator fired, else 'unreliable'."""
    return "unreliable" if fired(checks) else "reliable"


def explain(checks: Sequence[IndicatorResult]) -> str:
    """The fired indicators with their rates and fixes in one sentence, for verdicts."""
    return "; ".join(f"{r.title.lower()} ({r.rate:.0%}): {r.fix.text}" for r in checks if r.fired) + "."
