"""Validate one prediction: how far must this image move before the model changes its mind?

For one image and one model the report runs every minimal-distortion attack (L-BFGS, C&W, DeepFool) and a
minimal-eps search for the budgeted ones (FGSM, PGD), re-verifies each adversarial image with a fresh forward
pass (the attack engine does), feeds them to the other models of the same domain, draws Gaussian noise of the
same RMS for comparison, estimates the local Lipschitz constant of the logit margin from gradients, and puts
the result next to the model's typical robustness: the L-BFGS minimal distortion of a fixed set of test images,
computed once per model and cached on disk.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from core import config, lab
from core.attacks import PGD, AttackResult, attack_class, gaussian_noise_baseline, make_attack, with_seed
from core.attacks.budget_search import minimal_eps
from core.attacks.spec import Param, overrides, param
from core.checks import check_float, check_int
from core.data import datasets
from core.errors import InvalidParameterError
from core.evaluation import indicators, leaderboard
from core.evaluation.protocol import Protocol
from core.models import class_names, get_spec, list_models, same_domain_models, usable_models
from core.models import load as zoo_load
from core.models.zoo import checkpoint_path
from core.provenance import versions
from core.runtime import torch_threads
from core.visual.pictures import to_uint8, triple_picture

# The report's lighter settings on MNIST. L-BFGS runs 6 rounds of its search over c (not the engine's 10)
# towards the 3 most likely other classes (not all 9): 6x cheaper, and on 30 test images of fc100-100-10 the
# minimal RMS differed from the full search on one image, by 2%. The reference distribution uses the same
# settings. On ImageNet the attacks' own ImageNet presets apply (core.attacks.spec), budgets excepted: the
# minimal-eps search sets eps itself.
MINIMAL_ATTACKS: dict[str, dict[str, Any]] = {
    "lbfgs": {"rounds": 6, "n_targets": 3},
    "cw": {},
    "deepfool": {},
}
# The minimal-eps search repeats an attack at every eps it tries: PGD runs its lighter step count.
EPS_SEARCH_ATTACKS: dict[str, dict[str, Any]] = {
    "fgsm": {},
    "pgd": {"steps": param(PGD.PARAMS, "steps").light_default()},
}


def attack_settings(attack: str, dataset: str) -> dict[str, Any]:
    """The report's parameters for one attack on one domain."""
    if dataset == "imagenet":
        spec = attack_class(attack).PARAMS
        return {k: v for k, v in overrides(spec, dataset).items() if not param(spec, k).budget}
    return dict({**MINIMAL_ATTACKS, **EPS_SEARCH_ATTACKS}[attack])


REFERENCE_ATTACK = "lbfgs"
# How many test images the model's reference distribution is measured on (the page's input reads it).
REFERENCE_N = Param(
    "reference size",
    int,
    100,
    "Test images in the reference",
    "The first correctly classified test images the model's typical minimal distortion is measured on.",
    low=1,
    high=10_000,
)
NOISE_DRAWS = 100
LIPSCHITZ_SAMPLES = 64
# Per-domain sample sizes: a 224-px forward pass costs ~1000x a 28-px one.
SAMPLES = {
    "mnist": {"noise_draws": NOISE_DRAWS, "lipschitz_samples": LIPSCHITZ_SAMPLES, "bisection_steps": 7},
    "imagenet": {"noise_draws": 20, "lipschitz_samples": 16, "bisection_steps": 5},
}

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------- minimal-eps search for budgeted attacks


# ---------------------------------------------------------------- local Lipschitz estimate


@dataclass
class LipschitzEstimate:
    """Gradient norms (L2) of the logit margin m(z) = logit_label(z) - max_other logit(z) at x and at random
    points of an L2 ball around it. margin / max_grad_norm is the first-order distance to the decision
    boundary: an estimate, not a certificate (the true local constant may be larger)."""

    margin: float
    grad_norm_at_x: float
    max_grad_norm: float
    mean_grad_norm: float
    ball_radius_l2: float
    samples: int
    boundary_distance_l2: float  # margin / max_grad_norm
    boundary_distance_rms: float


def _margin(logits: torch.Tensor, label: int) -> torch.Tensor:
    others = logits.clone()
    others[:, label] = -math.inf
    return logits[:, label] - others.amax(1)


def local_lipschitz(
    model: nn.Module,
    x: torch.Tensor,
    label: int,
    radius_l2: float,
    *,
    samples: int = LIPSCHITZ_SAMPLES,
    seed: int = 0,
) -> LipschitzEstimate:
    """Estimate the local Lipschitz constant of the margin around x from gradients at x and `samples`
    uniform points of the L2 ball of radius `radius_l2` (clipped to the box)."""
    radius_l2 = check_float("radius_l2", radius_l2, low=0.0)
    samples = check_int("samples", samples, low=1, high=10_000)
    device = next(iter(model.parameters())).device
    x = x.to(device)
    gen = torch.Generator().manual_seed(seed)
    d = x[0].numel()
    direction = torch.randn((samples, *x.shape[1:]), generator=gen)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    radii = torch.rand(samples, generator=gen) ** (1.0 / d) * radius_l2
    points = torch.cat([x, (x + direction.to(device) * radii.to(device).view(-1, *[1] * (x.dim() - 1)))])
    points = points.clamp(0, 1).detach().requires_grad_(True)
    with torch.enable_grad():
        margins = _margin(model(points), label)
        (grads,) = torch.autograd.grad(margins.sum(), points)
    margins = margins.detach()
    norms = grads.flatten(1).norm(dim=1)
    margin = float(margins[0])
    top = float(norms.max())
    distance = margin / top if top > 0 else math.inf
    return LipschitzEstimate(
        margin=margin,
        grad_norm_at_x=float(norms[0]),
        max_grad_norm=top,
        mean_grad_norm=float(norms.mean()),
        ball_radius_l2=radius_l2,
        samples=samples,
        boundary_distance_l2=distance,
        boundary_distance_rms=distance / math.sqrt(d),
    )


# ---------------------------------------------------------------- reference distribution (cached per model)


@dataclass
class Reference:
    """The model's typical minimal distortion: REFERENCE_ATTACK's RMS on the images of the protocol
    `reference_protocol(n)` (the first n MNIST test images the model classifies correctly) that it flips."""

    model: str
    attack: str
    params: dict[str, Any]
    n: int
    rms: list[float]
    checkpoint: str
    protocol_id: str = ""

    def fraction_above(self, value: float) -> float:
        """Share of reference images needing a larger distortion than `value`."""
        return float(np.mean(np.asarray(self.rms) > value)) if self.rms else math.nan

    @property
    def median(self) -> float:
        return float(np.median(self.rms)) if self.rms else math.nan


def _checkpoint_id(model_name: str) -> str:
    path = checkpoint_path(model_name)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"


def reference_protocol(n: int, dataset: str = "mnist") -> Protocol:
    """The images the reference distribution is measured on: the first n correctly classified test images
    (of MNIST, or of the registered dataset a user's model belongs to)."""
    return Protocol(split="test", n=n, correct_only=True, dataset=dataset)


def reference_path(model_name: str, n: int) -> Path:
    return config.cache_dir() / "report_reference" / f"{model_name}-{REFERENCE_ATTACK}-n{n}.json"


def reference_distribution(
    model_name: str,
    model: nn.Module,
    *,
    n: int = 100,
    device: torch.device | str | None = None,
    record: bool = True,
    source: str = "report",
    progress: Progress | None = None,
) -> Reference | None:
    """Load the cached reference of an MNIST model, or compute it (and record the run in the leaderboard).
    None for ImageNet models (no labelled test images here). The cache is keyed by the checkpoint's hash
    and the attack's parameters, so a retrained model gets a fresh reference."""

    n = REFERENCE_N.check(n)
    domain = get_spec(model_name).dataset
    if domain not in datasets.names():
        return None
    params = MINIMAL_ATTACKS[REFERENCE_ATTACK]
    protocol = reference_protocol(n, domain)
    checkpoint = _checkpoint_id(model_name)
    path = reference_path(model_name, n)
    if path.is_file():
        try:
            cached = Reference(**json.loads(path.read_text()))
            if (cached.checkpoint, cached.params, cached.protocol_id) == (
                checkpoint,
                params,
                protocol.fingerprint,
            ):
                return cached
        except (ValueError, TypeError):
            pass  # unreadable or from an older layout: recompute
    if progress:
        progress(0.0, f"computing {model_name}'s reference distribution ({n} test images, once)")
    chosen = protocol.select(model, device)
    result = make_attack(REFERENCE_ATTACK, model, device, **params).run(chosen.images, chosen.labels)
    if record:
        leaderboard.record_result(result, model_name, source=source, dataset=domain, selection=chosen)
    rms = result.rms[result.fooled].tolist()
    reference = Reference(model_name, REFERENCE_ATTACK, params, n, rms, checkpoint, protocol.fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(reference.__dict__))
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return reference


# ---------------------------------------------------------------- the report


@dataclass
class Finding:
    """One attack's smallest flipping perturbation of the image (numbers are None when it failed)."""

    attack: str
    method: str  # "minimal distortion" or "minimal-eps search"
    success: bool
    rms: float | None
    l2: float | None
    linf: float | None
    eps: float | None
    pred_after: int
    confidence_after: float
    time_s: float
    params: dict[str, Any]
    noise_flip_rate: float | None  # Gaussian noise of the same RMS: share of the draws that flip it
    noise_draws: int = 0
    transfer: list[dict[str, Any]] = field(default_factory=list)
    x_adv: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class Report:
    model: str
    dataset: str
    image_source: str
    label: int  # the prediction under test (the class the attacks try to leave)
    label_name: str
    true_label: int | None
    confidence: float
    findings: list[Finding]
    easiest: str | None
    lipschitz: LipschitzEstimate | None
    reference: Reference | None
    verdict: str
    seed: int
    time_s: float
    versions: dict[str, str]
    class_names: Sequence[str] = field(repr=False, default=())
    x: torch.Tensor | None = field(default=None, repr=False)
    indicators: list[indicators.IndicatorResult] = field(default_factory=list)

    def finding(self, attack: str) -> Finding:
        return next(f for f in self.findings if f.attack == attack)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: numbers, parameters and verdict (images are in the HTML export)."""
        out = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("findings", "class_names", "x", "reference", "indicators")
        }
        out["indicators"] = [c.to_dict() for c in self.indicators]
        out["findings"] = [{k: v for k, v in f.__dict__.items() if k != "x_adv"} for f in self.findings]
        out["lipschitz"] = self.lipschitz.__dict__ if self.lipschitz else None
        if self.reference:
            out["reference"] = {
                "attack": self.reference.attack,
                "n_images": len(self.reference.rms),
                "median_rms": self.reference.median,
                "fraction_needing_more": self.fraction_needing_more(),
            }
        else:
            out["reference"] = None
        return out

    def fraction_needing_more(self) -> float | None:
        """Share of reference test images that need more distortion than this image (like for like)."""
        if self.reference is None or not self.reference.rms:
            return None
        mine = self.finding(REFERENCE_ATTACK)
        return self.reference.fraction_above(mine.rms) if mine.success else 0.0

    def to_html(self) -> str:
        return render_html(self)


def _pred_name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def _small(value: float) -> str:
    """A distortion with enough digits to be read: 0.0213, or 1.7e-04 for ImageNet-scale changes."""
    return f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def _verdict(report: Report) -> str:
    name = report.label_name
    ok = [f for f in report.findings if f.success]
    head = f"{report.model} predicts '{name}' with {report.confidence:.0%} confidence."
    distrust = bool(indicators.fired(report.indicators))  # then no claim of robustness is made
    if not ok:
        if distrust:
            return head + " No attack flipped this prediction, which says nothing about its robustness here."
        return (
            head
            + " No attack flipped this prediction: it is unusually robust (or the attacks need more steps)."
        )
    easiest = min(ok, key=lambda f: f.rms)
    parts = [
        head,
        f"The prediction flips at RMS {_small(easiest.rms)} (L2 {_small(easiest.l2)}, largest pixel change "
        f"{_small(easiest.linf)}) with {easiest.attack}, to '{_pred_name(report.class_names, easiest.pred_after)}'.",
    ]
    fraction = report.fraction_needing_more()
    ref = report.reference
    if fraction is not None and ref is not None:
        mine = report.finding(REFERENCE_ATTACK)
        where = "lower" if fraction >= 0.5 else "higher"
        share = fraction if fraction >= 0.5 else 1 - fraction
        share_text = f"all {len(ref.rms)}" if share == 1 else f"{share:.0%} of {len(ref.rms)}"
        mood = (
            "This prediction is more fragile than most."
            if fraction >= 0.75
            else "This prediction is more robust than most."
            if fraction <= 0.25 and not distrust
            else "Whether it is more robust than most cannot be said while an indicator fires."
            if fraction <= 0.25
            else "This prediction is about as robust as a typical one."
        )
        lbfgs_rms = f"RMS {_small(mine.rms)}" if mine.success else "more than L-BFGS could find"
        parts.append(
            f"With {ref.attack} (the paper's attack) it flips at {lbfgs_rms}, {where} than {share_text} "
            f"test images (their median: RMS {_small(ref.median)}). {mood}"
        )
    elif report.dataset != "mnist":
        parts.append(
            "No labelled test images of this domain are available here, so there is no typical value."
        )
    if easiest.noise_flip_rate is not None:
        parts.append(
            f"Random Gaussian noise of the same size flips it in {easiest.noise_flip_rate:.0%} of "
            f"{easiest.noise_draws} draws: the weakness is in specific directions, not in noise."
            if easiest.noise_flip_rate < 0.5
            else f"Random Gaussian noise of the same size flips it in {easiest.noise_flip_rate:.0%} of draws."
        )
    if easiest.transfer:
        fooled = sum(r["fooled"] for r in easiest.transfer)
        parts.append(
            f"The same adversarial image also fools {fooled} of {len(easiest.transfer)} other models."
        )
    return " ".join(parts)


@dataclass(frozen=True)
class Subject:
    """What every step of a report looks at: one image, the model under test and its prediction."""

    model_name: str
    model: nn.Module
    dataset: str
    x: torch.Tensor  # (1, C, H, W) in [0, 1], on the CPU
    label: int  # the prediction under test
    probs: np.ndarray
    names: Sequence[str]
    seed: int
    device: torch.device | str | None

    @property
    def label_t(self) -> torch.Tensor:
        return torch.tensor([self.label])

    @property
    def samples(self) -> dict[str, int]:
        return SAMPLES[self.dataset]


@dataclass(frozen=True)
class PlannedAttack:
    attack: str
    method: str  # MINIMAL or EPS_SEARCH


@dataclass
class ReportAttack:
    """One planned attack's outcome: the report's finding and the engine's raw result (the leaderboard
    records it; checks of the attack itself can read it)."""

    planned: PlannedAttack
    finding: Finding
    result: AttackResult


MINIMAL, EPS_SEARCH = "minimal distortion", "minimal-eps search"


def attack_plan() -> list[PlannedAttack]:
    """The attacks a report runs, in order: the minimal-distortion ones, then the budgeted ones whose
    smallest flipping eps is searched."""
    return [PlannedAttack(a, MINIMAL) for a in MINIMAL_ATTACKS] + [
        PlannedAttack(a, EPS_SEARCH) for a in EPS_SEARCH_ATTACKS
    ]


def check_image(model_name: str, x: torch.Tensor, true_label: int | None) -> int | None:
    """Refuse an image the model cannot take (shape, values outside [0, 1]) or a label out of range."""
    spec = get_spec(model_name)
    if (
        not isinstance(x, torch.Tensor)
        or x.dim() != 4
        or len(x) != 1
        or tuple(x.shape[1:]) != spec.input_shape
    ):
        shape = "x".join(map(str, spec.input_shape))
        raise InvalidParameterError(f"{model_name} needs one image of shape 1x{shape}.")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InvalidParameterError("the image must hold finite pixel values in [0, 1].")
    if true_label is None:
        return None
    return check_int("true label", true_label, low=0, high=len(class_names(model_name)) - 1)


def subject(model_name: str, model: nn.Module, x: torch.Tensor, seed: int, device) -> Subject:
    """The model's prediction on x, packed for the steps."""
    x = x.detach().float().cpu()
    probs = lab.predict(model, x)
    names = class_names(model_name)
    dataset = get_spec(model_name).preset_domain
    return Subject(model_name, model, dataset, x, int(probs.argmax()), probs, names, seed, device)


def run_attack(target: Subject, planned: PlannedAttack) -> ReportAttack:
    """One attack of the plan on the image: its smallest flipping perturbation (or smallest eps)."""
    params = attack_settings(planned.attack, target.dataset)
    eps = None
    if planned.method == MINIMAL:
        attack = make_attack(planned.attack, target.model, target.device, **params)
        result = attack.run(target.x, target.label_t)
    else:
        params = with_seed(planned.attack, params, target.seed)
        result, eps = minimal_eps(
            planned.attack,
            target.model,
            target.x,
            target.label_t,
            params=params,
            bisection_steps=target.samples["bisection_steps"],
            device=target.device,
        )
        params["eps"] = eps
    ok = bool(result.success[0])
    finding = Finding(
        attack=planned.attack,
        method=planned.method,
        success=ok,
        rms=float(result.rms[0]) if ok else None,
        l2=float(result.l2[0]) if ok else None,
        linf=float(result.linf[0]) if ok else None,
        eps=eps,
        pred_after=int(result.pred_after[0]),
        confidence_after=float(result.probs_after[0].max()),
        time_s=result.time_s,
        params=params,
        noise_flip_rate=None,
        x_adv=result.x_adv if ok else None,
    )
    return ReportAttack(planned, finding, result)


def record_attack(run: ReportAttack, target: Subject, source: str) -> None:
    """Store one attack of a report in the leaderboard (one image, so n = 1)."""
    f = run.finding
    leaderboard.record_run(
        model=target.model_name,
        attack=f.attack if f.method == MINIMAL else f"{f.attack} (minimal eps)",  # a search, no attack
        params=f.params,
        n=1,
        success_rate=float(f.success),
        mean_rms=f.rms,
        median_rms=f.rms,
        mean_l2=f.l2,
        median_l2=f.l2,
        mean_linf=f.linf,
        time_s=f.time_s,
        dataset=target.dataset,
        seed=target.seed,
        source=source,
    )


def noise_flip_rate(target: Subject, rms: float) -> tuple[float, int]:
    """Share of Gaussian noise draws of the given RMS that flip the prediction, and the number of draws."""
    draws = target.samples["noise_draws"]
    noise = gaussian_noise_baseline(
        target.model,
        target.x.repeat(draws, 1, 1, 1),
        target.label_t.repeat(draws),
        rms=rms,
        seed=target.seed,
        device=target.device,
    )
    return float(noise.success.float().mean()), draws


def boundary_estimate(target: Subject, findings: Sequence[Finding]) -> LipschitzEstimate:
    """Local Lipschitz estimate in the ball whose radius is the smallest adversarial L2 found (5% of the
    image's norm scale when no attack succeeded)."""
    ok = [f.l2 for f in findings if f.success]
    radius = min(ok) if ok else math.sqrt(target.x[0].numel()) * 0.05
    return local_lipschitz(
        target.model,
        target.x,
        target.label,
        radius,
        samples=target.samples["lipschitz_samples"],
        seed=target.seed,
    )


def _distrust(report: Report) -> str:
    """While an indicator of attack failure fires, no robustness claim stands: say so, and why."""
    if not indicators.fired(report.indicators):
        return ""
    return " Do not read this as robust: indicators of attack failure fired: " + indicators.explain(
        report.indicators
    )


def assemble(
    target: Subject,
    findings: list[Finding],
    lipschitz: LipschitzEstimate,
    reference: Reference | None,
    *,
    image_source: str,
    true_label: int | None,
    time_s: float,
    checks: Sequence[indicators.IndicatorResult] = (),
) -> Report:
    """The Report with its verdict in words (no claim of robustness while one of `checks` fires)."""
    ok = [f for f in findings if f.success]
    report = Report(
        model=target.model_name,
        dataset=target.dataset,
        image_source=image_source,
        label=target.label,
        label_name=_pred_name(target.names, target.label),
        true_label=true_label,
        confidence=float(target.probs[target.label]),
        findings=findings,
        easiest=min(ok, key=lambda f: f.rms).attack if ok else None,
        lipschitz=lipschitz,
        reference=reference,
        verdict="",
        seed=target.seed,
        time_s=time_s,
        versions=versions(),
        class_names=target.names,
        x=target.x,
        indicators=list(checks),
    )
    report.verdict = _verdict(report) + _distrust(report)
    return report


def robustness_report(
    model_name: str,
    x: torch.Tensor,
    *,
    true_label: int | None = None,
    image_source: str = "image",
    load: Callable[[str], nn.Module] | None = None,
    others: Sequence[str] | None = None,
    reference_n: int = REFERENCE_N.default,
    seed: int = 0,
    device: torch.device | str | None = None,
    record: bool = True,
    source: str = "report",
    threads: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """The full report for one image x (1, C, H, W) in [0, 1]. `load(name)` returns a model (the dashboard
    passes its shared cache); `others` are the models to test transfer on (default: every available model
    of the same domain). With `record`, each attack run is stored in the leaderboard under `source`.
    `threads`: torch intra-op threads for the report (None: unchanged; the dashboard uses one, see core.lab)."""

    seed = check_int("seed", seed)
    reference_n = REFERENCE_N.check(reference_n)
    if record and source not in leaderboard.SOURCES:
        raise InvalidParameterError(
            f"source must be one of {', '.join(leaderboard.SOURCES)}, got {source!r}."
        )
    true_label = check_image(model_name, x, true_label)
    tell = progress or (lambda fraction, text: None)
    load = load or (lambda name: zoo_load(name, device))
    with torch_threads(threads):
        started = time.perf_counter()
        target = subject(model_name, load(model_name), x, seed, device)
        if others is None:
            others = same_domain_models(model_name, usable_models(list_models(include_unavailable=False)))
        plan = attack_plan()
        total = len(plan) + 3
        runs: list[ReportAttack] = []
        for step, planned in enumerate(plan):
            tell(
                step / total,
                f"{planned.attack}: smallest perturbation that flips '{_pred_name(target.names, target.label)}'",
            )
            runs.append(run_attack(target, planned))
            if record:
                record_attack(runs[-1], target, source)
        findings = [run.finding for run in runs]

        tell(len(plan) / total, "Gaussian noise of the same size, and transfer to the other models")
        for f in findings:
            if f.success:
                f.noise_flip_rate, f.noise_draws = noise_flip_rate(target, f.rms)
                rows = lab.transfer(target.x, f.x_adv, target.label, list(others), load)
                f.transfer = [row.__dict__ for row in rows]

        tell((len(plan) + 1) / total, "local Lipschitz estimate of the margin")
        lipschitz = boundary_estimate(target, findings)
        checks = indicators.report_checks(
            target.model, target.x, target.label_t, findings, dataset=target.dataset, seed=seed, device=device
        )

        tell((len(plan) + 2) / total, "the model's typical robustness (reference distribution)")
        reference = reference_distribution(
            model_name, target.model, n=reference_n, device=device, record=record, source=source
        )
        report = assemble(
            target,
            findings,
            lipschitz,
            reference,
            image_source=image_source,
            true_label=true_label,
            time_s=time.perf_counter() - started,
            checks=checks,
        )
        tell(1.0, "done")
        return report


def mnist_image(index: int) -> tuple[torch.Tensor, int]:
    """MNIST test image `index` as (1, 1, 28, 28) and its true label."""
    return dataset_image("mnist", index)


def dataset_image(
    dataset: str, index: int, shape: tuple[int, int, int] | None = None
) -> tuple[torch.Tensor, int]:
    """Test image `index` of a dataset (MNIST or a registered one, resized to `shape`) and its true label."""
    data = datasets.load_split(dataset, "test", shape)
    index = check_int(f"{'MNIST' if dataset == 'mnist' else dataset} index", index, low=0, high=len(data) - 1)
    return data.images[index : index + 1], int(data.labels[index])


# ---------------------------------------------------------------- HTML export (one self-contained file)


def _png_data_uri(picture: np.ndarray) -> str:
    """An 8-bit (H, W[, 3]) picture as an inline PNG for the self-contained HTML export."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def render_html(report: Report) -> str:
    """One HTML file, images embedded as base64 PNG: opens anywhere, offline, and can be mailed."""
    e = html.escape
    scale = 8 if report.dataset == "mnist" else 1
    names = report.class_names
    rows, pictures = [], []
    for f in report.findings:
        target = _pred_name(names, f.pred_after) if f.success else "–"
        rows.append(
            f"<tr><td>{e(f.attack)}</td><td>{e(f.method)}</td><td>{'yes' if f.success else 'no'}</td>"
            f"<td>{_fmt(f.rms)}</td><td>{_fmt(f.l2, '.3f')}</td><td>{_fmt(f.linf, '.3f')}</td>"
            f"<td>{_fmt(f.eps, '.4f')}</td><td>{e(target)}</td>"
            f"<td>{_fmt(f.noise_flip_rate, '.0%')}</td><td>{f.time_s:.2f}</td></tr>"
        )
        if f.success and f.x_adv is not None and report.x is not None:
            picture, amplification = triple_picture(report.x[0], f.x_adv[0], scale=scale)
            others = "; ".join(
                f"{r['model']} says '{_pred_name(names, r['adv_pred'])}'"
                + (" (fooled)" if r["fooled"] else "")
                for r in f.transfer
            )
            pictures.append(
                f"<figure><img alt='{e(f.attack)}' src='{_png_data_uri(picture)}'>"
                f"<figcaption><b>{e(f.attack)}</b>: original | perturbation (x{amplification:.0f}) | "
                f"adversarial, predicted '{e(target)}'. The other models: {e(others or 'none')}."
                "</figcaption></figure>"
            )
    original = (
        f"<img alt='image' src='{_png_data_uri(to_uint8(report.x[0], scale))}'>"
        if report.x is not None
        else ""
    )
    lip = report.lipschitz
    lip_html = (
        f"<p>Logit margin {lip.margin:.3f}; gradient norm at the image {lip.grad_norm_at_x:.3f}, largest in an "
        f"L2 ball of radius {lip.ball_radius_l2:.3f} ({lip.samples} samples) {lip.max_grad_norm:.3f}. "
        f"First-order distance to the boundary: L2 {lip.boundary_distance_l2:.3f} "
        f"(RMS {lip.boundary_distance_rms:.4f}); an estimate, not a certificate.</p>"
        if lip
        else ""
    )
    checks = "".join(
        f"<li>{'FIRED' if c.fired else 'ok'}: {e(c.title)} ({c.rate:.0%})</li>" for c in report.indicators
    )
    checked = indicators.passed(report.indicators) or f"{len(indicators.fired(report.indicators))} fired"
    checks_html = f"<p>{e(checked)}:</p><ul>{checks}</ul>" if report.indicators else "<p>Not checked.</p>"
    head = "<tr><th>attack</th><th>method</th><th>flipped</th><th>RMS</th><th>L2</th><th>Linf</th>"
    head += "<th>eps found</th><th>new class</th><th>noise flips</th><th>time (s)</th></tr>"
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Robustness report: {e(report.model)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{image-rendering:pixelated;max-width:100%}}
.verdict{{background:#f4f6fb;border-left:4px solid #4a6fd1;padding:.75rem 1rem}}</style></head><body>
<h1>Robustness report</h1>
<p>Model <b>{e(report.model)}</b>, image {e(report.image_source)}
{"" if report.true_label is None else f"(true label {e(_pred_name(names, report.true_label))})"}.</p>
{original}
<p class="verdict">{e(report.verdict)}</p>
<h2>Indicators of attack failure</h2>{checks_html}
<h2>Smallest flipping perturbation per attack</h2><table>{head}{"".join(rows)}</table>
<p>Distortions are on the [0, 1] pixel scale; RMS = sqrt(sum r&sup2; / pixels), the paper's measure. Every
adversarial image was re-verified by a fresh forward pass.</p>
<h2>Adversarial images</h2>{"".join(pictures) or "<p>None.</p>"}
<h2>Local Lipschitz estimate</h2>{lip_html}
<p><small>Seed {report.seed}; {report.time_s:.1f} s; {e(versions)}.</small></p>
</body></html>
"""
