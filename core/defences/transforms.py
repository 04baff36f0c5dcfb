"""How users of off-the-shelf nets guard themselves, and which guards actually hold.

Input-transformation defences (JPEG re-compression, bit-depth reduction, median filtering; Guo et al. 2018,
Xu et al. 2018) put a non-differentiable (or gradient-masking) squeeze in front of a model. Against an attacker
who ignores them ("plain": adversarial examples made on the bare model, then fed through the defence) they look
strong. Against an adaptive attacker using BPDA (Athalye et al. 2018: the transform in the forward pass, the
identity in the backward pass) they mostly fall. Adversarially trained models (Madry et al. 2018) are compared
with their plain twin under the same attack: a defence that changes the model rather than its input.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.attacks import PGD, Param, make_attack, with_seed
from core.attacks.spec import param, seed_param
from core.checks import check_choice, check_int
from core.errors import InvalidParameterError
from core.evaluation.indicators import INDICATORS, extra_checks, fired, run_checked
from core.models import list_models, model_status
from core.models import load as zoo_load

# ---------------------------------------------------------------- input transformations


class InputTransform(nn.Module):
    """A squeeze applied to [0, 1] images before the model; `forward` needs no gradient (BPDA goes around it)."""

    name = "transform"
    differentiable = True  # False: its gradient is zero or absent, so attacks must go around it (BPDA)

    def describe(self) -> str:
        raise NotImplementedError


class BitDepthReduction(InputTransform):
    """Quantise every pixel to 2**bits levels (Xu et al.'s feature squeezing); its gradient is zero almost
    everywhere, which is exactly what makes naive gradient attacks fail and BPDA succeed."""

    name = "bits"
    differentiable = False

    def __init__(self, bits: int = 2) -> None:
        super().__init__()
        self.bits = check_int("bits", bits, low=1, high=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels

    def describe(self) -> str:
        return f"bit depth {self.bits}"


class MedianFilter(InputTransform):
    """A size x size median filter per channel (reflect padding)."""

    name = "median"

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = check_int("size", size, low=2, high=9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.size
        padded = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect")
        patches = F.unfold(padded.reshape(n * c, 1, *padded.shape[2:]), k)  # (N*C, k*k, H*W)
        return patches.median(dim=1).values.reshape(n, c, h, w)

    def describe(self) -> str:
        return f"median {self.size}x{self.size}"


class JPEGCompression(InputTransform):
    """Encode and decode each image as JPEG at `quality` (through 8-bit pixels, as a real pipeline would)."""

    name = "jpeg"
    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = check_int("quality", quality, low=1, high=95)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        for i, img in enumerate(pixels):
            mode = "L" if img.shape[0] == 1 else "RGB"
            arr = img[0] if mode == "L" else img.transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(arr, mode=mode).save(buf, format="JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(buf).convert(mode), dtype=np.float32) / 255.0
            decoded = decoded[None] if mode == "L" else decoded.transpose(2, 0, 1)
            out[i] = torch.from_numpy(np.ascontiguousarray(decoded)).to(x.device)
        return out

    def describe(self) -> str:
        return f"JPEG quality {self.quality}"


TRANSFORMS: dict[str, tuple[type[InputTransform], str]] = {
    "bits": (BitDepthReduction, "bits"),
    "median": (MedianFilter, "size"),
    "jpeg": (JPEGCompression, "quality"),
}


def parse_transform(spec: str) -> InputTransform:
    """'bits:2', 'median:3', 'jpeg:75' (or just the name, for the default strength) -> a transform."""
    name, _, value = spec.strip().partition(":")
    if name not in TRANSFORMS:
        raise InvalidParameterError(
            f"unknown defence {name!r}; choose from {', '.join(TRANSFORMS)} (e.g. bits:2)."
        )
    cls, param = TRANSFORMS[name]
    if not value:
        return cls()
    try:
        number = float(value)
    except ValueError:
        raise InvalidParameterError(f"{spec!r}: {param} must be a number.") from None
    return cls(**{param: number})


GRADIENTS = ("naive", "bpda")


class DefendedModel(nn.Module):
    """model(transform(x)), with one of two backward passes for gradient attacks:
    'naive', the gradient autograd gives through the transform (zero for rounding, none at all for JPEG,
    taken as zero), which is what a standard attack run on the defended pipeline sees; 'bpda', the
    identity (straight-through), so the attack sees the model's gradient at the transformed point."""

    def __init__(self, model: nn.Module, transform: InputTransform, gradient: str = "naive") -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.gradient = check_choice("gradient", gradient, GRADIENTS)

    @property
    def masks_gradient(self) -> bool:
        """True when attacks differentiate through a transform without a useful gradient (read by
        core.evaluation.indicators: the non-differentiable-preprocessing indicator)."""
        return self.gradient == "naive" and not self.transform.differentiable

    def describe(self) -> str:
        return self.transform.describe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "bpda":
            with torch.no_grad():
                squeezed = self.transform(x)
            squeezed = x + (squeezed - x).detach()
        else:
            squeezed = self.transform(x)
            if x.requires_grad and not squeezed.requires_grad:  # a transform outside autograd (JPEG)
                squeezed = squeezed + 0.0 * x
        return self.model(squeezed)


# ---------------------------------------------------------------- evaluation


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


PRESETS = ("bits:1", "bits:2", "bits:3", "median:2", "median:3", "jpeg:50", "jpeg:75", "jpeg:90")
DEFAULT_PRESETS = ("bits:1", "bits:2", "median:3", "jpeg:75")  # one of each kind, and the strongest squeeze
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
    Param("n", int, 100, "MNIST test images", "The first n test images, the same for every defence.",
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


ADVERSARIAL_SUFFIXES = ("-advpool", "-pgdtrain")


def adversarial_twins() -> list[tuple[str, str]]:
    """(adversarially trained model, its plain twin) pairs whose checkpoints are present."""
    names = list_models(include_unavailable=False)
    pairs = []
    for name in names:
        for suffix in ADVERSARIAL_SUFFIXES:
            twin = name.removesuffix(suffix)
            if (
                name.endswith(suffix)
                and twin in names
                and "missing" not in (model_status(name), model_status(twin))
            ):
                pairs.append((name, twin))
    return pairs


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
