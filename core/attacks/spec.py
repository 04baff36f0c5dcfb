"""One parameter spec per attack: every fact about a parameter (type, default, bounds, readable label, help
text, ImageNet preset, whether it is the budget or the seed) written once, in the attack's `PARAMS`.

Validation (`Attack.__init__`), `make_attack`, the CLI's flags, the dashboard's widgets, the report's and the
leaderboard's settings all read it; adding a parameter touches one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.checks import SEED_MAX, check_choice, check_float, check_int
from core.errors import InvalidParameterError

DATASETS = ("mnist", "imagenet")


@dataclass(frozen=True)
class Param:
    """One attack parameter.

    `low`/`high` bound it (`strict_low`: low itself is refused); `high_l2` replaces `high` when the attack's
    `norm` is 'l2' (an L2 radius is not bounded by 1). `optional`: None is allowed and means "the attack
    derives it" (PGD's step size). `imagenet` is the lighter preset on 224-px ImageNet models, so that a run
    stays interactive on a CPU (None: the default holds there too). `light` is the lighter value where an
    attack is repeated many times over (the prediction report's minimal-eps search, the defences'
    evaluation; None: the default). `models` holds per-model presets, (model name, value) pairs, for
    networks on which the default does not do its job (see `MODEL_PRESET_REASONS`). `budget` marks the
    perturbation budget of budgeted attacks (eps), `seed` the seed of their random start. `step` is a
    widget's increment (None: free, shown in %g)."""

    name: str
    kind: type
    default: Any
    label: str
    help: str
    low: float | None = None
    high: float | None = None
    strict_low: bool = False
    high_l2: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    imagenet: Any = None
    light: Any = None
    models: tuple[tuple[str, Any], ...] = ()
    budget: bool = False
    seed: bool = False
    step: float | None = None

    def upper(self, norm: str | None) -> float | None:
        return self.high_l2 if norm == "l2" and self.high_l2 is not None else self.high

    def check(self, value: Any, norm: str | None = None) -> Any:
        """The value in canonical form; InvalidParameterError naming the parameter otherwise."""
        if value is None and self.optional:
            return None
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise InvalidParameterError(f"{self.name} must be true or false, got {value!r}.")
        if self.kind is str:
            return check_choice(self.name, value, self.choices)
        high = self.upper(norm)
        if self.kind is int:
            return check_int(
                self.name, value, low=int(self.low or 0), high=None if high is None else int(high)
            )
        return check_float(self.name, value, low=self.low, high=high, strict_low=self.strict_low)

    def default_for(self, dataset: str, model: str | None = None) -> Any:
        """The default on this input domain, or this model's own preset when it has one."""
        for name, value in self.models:
            if name == model:
                return value
        return self.imagenet if dataset == "imagenet" and self.imagenet is not None else self.default

    def light_default(self) -> Any:
        """The value where the attack is repeated many times over (the default when there is no lighter one)."""
        return self.default if self.light is None else self.light


# Why a model has presets of its own. cnn (conv, ReLU, max-pool) is far more robust than the MLPs: at the
# common MNIST radius 0.1 no budgeted attack flips its first test image, at 0.2 every one does
# (tests/test_attacks_spec.py checks it), so the pages and the CLI open on a budget that shows an attack.
MODEL_PRESET_REASONS = {"cnn": "a convolutional net needs a larger budget than the MLPs (eps 0.2)"}
CNN_EPS = 0.2


def eps_param(*, high_l2: float | None = None) -> Param:
    """The budget of the budgeted attacks: 0.1 on MNIST (the common benchmark radius), 2/255 on ImageNet."""
    return Param(
        "eps",
        float,
        0.1,
        "Budget eps",
        "Largest allowed change: per pixel for Linf, of the whole image for L2 (pixel scale [0, 1]).",
        low=0.0,
        high=1.0,
        high_l2=high_l2,
        imagenet=2 / 255,
        models=(("cnn", CNN_EPS),),
        budget=True,
        step=0.005,
    )


def steps_param(default: int, *, imagenet: int | None = None, light: int | None = None) -> Param:
    """The number of gradient steps of an iterative attack."""
    return Param(
        "steps",
        int,
        default,
        "Steps",
        "Number of gradient steps.",
        low=1,
        high=100_000,
        imagenet=imagenet,
        light=light,
    )


def norm_param() -> Param:
    """The norm of the attacks that work in Linf or L2."""
    return Param(
        "norm",
        str,
        "linf",
        "Norm",
        "Linf bounds every pixel's change; L2 the change of the whole image.",
        choices=("linf", "l2"),
    )


def seed_param(what: str) -> Param:
    return Param(
        "seed",
        int,
        0,
        "Seed",
        f"Seed of the {what}; the same seed gives the same result.",
        high=SEED_MAX,
        seed=True,
    )


def check_params(
    attack: str, spec: Sequence[Param], params: Mapping[str, Any], *, fill: bool = True
) -> dict[str, Any]:
    """Validate `params` against a spec: unknown names are refused with the list of accepted ones; with
    `fill`, missing parameters take their defaults. Returns the parameters in the spec's order."""
    names = [p.name for p in spec]
    unknown = sorted(set(params) - set(names))
    if unknown:
        accepted = ", ".join(names) or "none"
        raise InvalidParameterError(
            f"{attack} does not take {', '.join(unknown)}; its parameters are {accepted}."
        )
    norm = params.get("norm", next((p.default for p in spec if p.name == "norm"), None))
    checked: dict[str, Any] = {}
    for p in spec:
        if p.name in params:
            checked[p.name] = p.check(params[p.name], norm)
        elif fill:
            checked[p.name] = p.default
    return checked


def param(spec: Sequence[Param], name: str) -> Param:
    """The parameter called `name` of a spec (KeyError: a programming error, not a user's)."""
    return next(p for p in spec if p.name == name)


def presets(spec: Sequence[Param], dataset: str, model: str | None = None) -> dict[str, Any]:
    """Every parameter's default on this input domain (ImageNet presets applied), or for this model when
    it has presets of its own."""
    check_choice("dataset", dataset, DATASETS)
    return {p.name: p.default_for(dataset, model) for p in spec}


def overrides(spec: Sequence[Param], dataset: str, model: str | None = None) -> dict[str, Any]:
    """Only the parameters whose preset for this domain (or model) differs from the default."""
    return {p.name: value for p in spec if (value := p.default_for(dataset, model)) != p.default}


def format_eps(eps: float, norm: str = "linf") -> str:
    """A budget the way papers write it: an Linf radius that is a whole number of 8-bit levels and not a
    short decimal as k/255 (2/255, not 0.00784314), everything else as %g (0.1, 0.2, 1.5)."""
    short = f"{eps:g}"
    levels = round(eps * 255)
    if norm == "linf" and levels > 0 and abs(levels / 255 - eps) < 1e-9 and len(short) > 5:
        return f"{levels}/255"
    return short
