"""The Attack Lab without Streamlit: drive one attack step by step for a live view, then judge the result
(Gaussian-noise baseline, transfer to the other models of the same input domain) and export it.

The dashboard page only draws what `LiveRun.frames()` yields; benchmarks time the same generator.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from core.attacks import (
    Attack,
    AttackEvent,
    AttackResult,
    AttackRun,
    format_eps,
    gaussian_noise_baseline,
    make_attack,
)
from core.attacks.budget_search import minimal_eps
from core.certify.bounds import UnsupportedLayerError
from core.certify.bracket import attack_certificate
from core.errors import InvalidParameterError
from core.models import get_spec
from core.provenance import versions
from core.runtime import LIVE_THREADS, torch_threads
from core.visual.pictures import png_bytes

SERIES = (
    "iteration",
    "loss",
    "l2",
    "linf",
    "rms",
    "p_label",
    "p_target",
    "c",
    "search_round",
    "best_rms",  # RMS distortion of the best so far; None until it reaches the goal
    "best_p_label",  # the best so far's probability of the class attacked
)


@dataclass(frozen=True)
class Frame:
    """What a live view shows after one iteration (numpy copies, first image of the batch only): the
    current iterate and the best adversarial image so far (what Stop keeps), each with its prediction."""

    iteration: int
    x_adv: np.ndarray  # (C, H, W) in [0, 1]: the current iterate
    perturbation: np.ndarray  # (C, H, W), x_adv - x
    probs: np.ndarray  # (classes,)
    pred: int
    loss: float
    l2: float
    linf: float
    rms: float
    c: float | None
    search_round: int | None
    best_x_adv: np.ndarray  # (C, H, W): the best so far (the clean image until the attack has one)
    best_probs: np.ndarray
    best_pred: int
    best_rms: float | None  # None while the best so far does not reach the goal
    elapsed_s: float  # wall-clock time since the run started, consumer time included
    steps_since_last_frame: int


@dataclass(frozen=True)
class SearchRound:
    """One minimisation at one value of c (L-BFGS, C&W): what the curves mark and the page lists. `reached`:
    the iterate's prediction reached the goal (the target, or any other class when untargeted); `rms`: the
    distortion of the round's minimiser (L-BFGS) or of its smallest reaching iterate (C&W)."""

    iteration: int  # the last step of the round seen so far
    target: int | None
    round: int
    c: float
    reached: bool
    rms: float | None


def make_lab_attack(name: str, model: nn.Module, seed: int = 0, **params: Any) -> Attack:
    """An attack from the registry, handed the lab's seed when it takes one (random starts)."""
    return make_attack(name, model, seed=seed, **params)


class SearchLog:
    """The rounds of a search over c (L-BFGS, C&W) one live run has seen, keyed by (target, round)."""

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.by_key: dict[tuple[int | None, int], SearchRound] = {}

    @property
    def rounds(self) -> list[SearchRound]:
        """In the order rounds ended."""
        return sorted(self.by_key.values(), key=lambda r: (r.iteration, r.round))

    def follow(self, event: AttackEvent, rms: float, reached: bool) -> None:
        """Record the rounds of a search over c: reported by the attack when it runs several target
        problems at once (L-BFGS: `extra['ended_rounds']`), else followed from each event's c and round."""
        if "ended_rounds" in event.extra:
            ended = event.extra["ended_rounds"]
            if ended is None:
                return
            for i in (ended["image"] == 0).nonzero().flatten().tolist():
                target, n = int(ended["target"][i]), int(ended["round"][i])
                self.by_key[(target, n)] = SearchRound(
                    event.iteration, target, n, float(ended["c"][i]), bool(ended["reached"][i]),
                    float(ended["rms"][i]),
                )  # fmt: skip
        elif event.c is not None and event.search_round is not None:
            n = int(event.search_round[0])
            before = self.by_key.get((self.target, n))
            smallest = before.rms if before is not None else None
            if reached and (smallest is None or rms < smallest):
                smallest = rms
            self.by_key[(self.target, n)] = SearchRound(
                event.iteration, self.target, n, float(event.c[0]),
                reached or (before is not None and before.reached), smallest,
            )  # fmt: skip


class LiveRun:
    """One attack on one image, iterated by a live view. Every iteration lands in `series` (so curves
    miss no step) and every finished round of a search over c in `rounds`; a `Frame` is yielded at most
    every `min_interval` seconds, always for the first and last iteration. `stop()` ends it early;
    `result()` is the best-so-far result, verified afresh. Pacing (waiting for a browser) is the view's.

    The attack runs on `threads` intra-op threads (default core.runtime.LIVE_THREADS = 1)."""

    def __init__(
        self,
        attack: Attack,
        x: torch.Tensor,
        label: int,
        target: int | None = None,
        seed: int = 0,
        started_at: float | None = None,
        threads: int | None = LIVE_THREADS,
    ) -> None:
        """`started_at` (a time.perf_counter() value, default now) is when the user asked for the run:
        the time to the first frame is counted from there."""
        self.started_at = time.perf_counter() if started_at is None else started_at
        if x.dim() != 4 or len(x) != 1:
            raise InvalidParameterError("The Attack Lab attacks one image at a time: x must be (1, C, H, W).")
        self.label = int(label)
        self.target = None if target is None else int(target)
        self.seed = seed
        self.threads = threads
        with torch_threads(threads):
            self.run: AttackRun = attack.start(x, torch.tensor([self.label]), target)
        self.series: dict[str, list[float | None]] = {name: [] for name in SERIES}
        self.search = SearchLog(self.target)
        self._best: tuple[torch.Tensor, np.ndarray] | None = None  # (image, its probabilities)
        self.stopped = False
        self.first_frame_s: float | None = None
        self.frames_shown = 0
        self.last_frame: Frame | None = None
        self.ended_at: float | None = None
        self._result: AttackResult | None = None

    @property
    def finished(self) -> bool:
        return self.run.finished or self.stopped

    @property
    def rounds(self) -> list[SearchRound]:
        """The search over c so far (L-BFGS, C&W; empty for other attacks), in the order rounds ended."""
        return self.search.rounds

    def stop(self) -> None:
        self.stopped = True

    def _best_so_far(self, event: AttackEvent) -> tuple[torch.Tensor, np.ndarray]:
        """The attack's best image so far and its class probabilities; a forward pass only when it changed
        and is not the iterate just evaluated."""
        best = self.run.best.detach()
        if self._best is not None and torch.equal(best, self._best[0]):
            return self._best
        if torch.equal(best, event.x_adv.detach()):
            probs = event.probs[0].cpu().numpy().copy()
        else:
            with torch.no_grad():
                probs = torch.softmax(self.run.model(best).float(), dim=1)[0].cpu().numpy()
        self._best = (best.clone(), probs)
        return self._best

    def _reached(self, pred: int) -> bool:
        return pred != self.label if self.target is None else pred == self.target

    def _record(self, event: AttackEvent) -> tuple[torch.Tensor, np.ndarray]:
        probs = event.probs[0]
        rms = float(event.rms[0])
        best, best_probs = self._best_so_far(event)
        values = {
            "iteration": event.iteration,
            "loss": float(event.loss[0]),
            "l2": float(event.l2[0]),
            "linf": float(event.linf[0]),
            "rms": rms,
            "p_label": float(probs[self.label]),
            "p_target": None if self.target is None else float(probs[self.target]),
            "c": None if event.c is None else float(event.c[0]),
            "search_round": None if event.search_round is None else int(event.search_round[0]),
            "best_rms": (
                float((best - self.run.x).flatten().norm() / math.sqrt(best.numel()))
                if self._reached(int(best_probs.argmax()))
                else None  # no adversarial image yet
            ),
            "best_p_label": float(best_probs[self.label]),
        }
        for name, value in values.items():
            self.series[name].append(value)
        self.search.follow(event, rms, self._reached(int(event.pred[0])))
        return best, best_probs

    def _frame(self, event: AttackEvent, best: tuple[torch.Tensor, np.ndarray], steps: int) -> Frame:
        self.frames_shown += 1
        s = {name: values[-1] for name, values in self.series.items()}
        self.last_frame = Frame(
            iteration=event.iteration,
            x_adv=event.x_adv[0].detach().cpu().numpy().copy(),
            perturbation=event.perturbation[0].cpu().numpy().copy(),
            probs=event.probs[0].cpu().numpy().copy(),
            pred=int(event.pred[0]),
            loss=s["loss"],
            l2=s["l2"],
            linf=s["linf"],
            rms=s["rms"],
            c=s["c"],
            search_round=s["search_round"],
            best_x_adv=best[0][0].cpu().numpy().copy(),
            best_probs=best[1],
            best_pred=int(best[1].argmax()),
            best_rms=s["best_rms"],
            elapsed_s=time.perf_counter() - self.started_at,
            steps_since_last_frame=steps,
        )
        return self.last_frame

    def frames(self, min_interval: float = 0.0) -> Iterator[Frame]:
        """Advance the attack, yielding frames; iterate again after an interruption to resume.
        min_interval > 0 skips frames (the attack runs at full speed, every step still lands in `series`);
        a view that wants every step drawn no faster than a browser can follow waits between frames."""
        last_shown = -float("inf")
        pending: tuple[AttackEvent, tuple[torch.Tensor, np.ndarray]] | None = None
        steps = 0
        with torch_threads(self.threads):
            for event in self.run:
                best = self._record(event)
                steps += 1
                now = time.perf_counter()
                if now - last_shown >= min_interval:
                    if self.first_frame_s is None:
                        self.first_frame_s = now - self.started_at
                    last_shown, frame, pending, steps = now, self._frame(event, best, steps), None, 0
                    yield frame  # the intervals run from frame to frame, the consumer's drawing included
                else:
                    pending = (event, best)
                if self.stopped:
                    break
            if pending is not None:  # the last iteration is always shown
                yield self._frame(*pending, steps)
        self.ended_at = time.perf_counter()

    def pace(self) -> dict[str, float | int | None]:
        """How live the run was: steps, frames drawn, wall-clock seconds (the consumer's drawing
        included), frames and steps per second, seconds from start to the first frame."""
        wall = self._elapsed()
        steps = len(self.series["iteration"])
        return {
            "steps": steps,
            "frames": self.frames_shown,
            "wall_s": wall,
            "frames_per_s": self.frames_shown / wall if wall > 0 else None,
            "steps_per_s": steps / wall if wall > 0 else None,
            "first_frame_s": self.first_frame_s,
        }

    def result(self) -> AttackResult:
        """The best result so far (cached once the run has ended or was stopped)."""
        if self._result is not None:
            return self._result
        with torch_threads(self.threads):
            result = self.run.result()
        if self.finished:
            self._result = result
        return result

    def final_frame(self) -> Frame:
        """What the view shows once the run is over: the last iterate drawn, beside the verified result as
        the best so far (before any step, the result stands for both)."""
        result = self.result()
        best = {
            "best_x_adv": result.x_adv[0].numpy(),
            "best_probs": result.probs_after[0].numpy(),
            "best_pred": int(result.pred_after[0]),
            "best_rms": float(result.rms[0]),
        }
        if self.last_frame is not None:
            return replace(self.last_frame, **best, elapsed_s=self._elapsed(), steps_since_last_frame=0)
        return Frame(
            iteration=result.iterations,
            x_adv=best["best_x_adv"],
            perturbation=result.perturbation[0].numpy(),
            probs=best["best_probs"],
            pred=best["best_pred"],
            loss=float("nan"),
            l2=float(result.l2[0]),
            linf=float(result.linf[0]),
            rms=float(result.rms[0]),
            c=None,
            search_round=None,
            **best,
            elapsed_s=self._elapsed(),
            steps_since_last_frame=0,
        )

    def _elapsed(self) -> float:
        return (self.ended_at or time.perf_counter()) - self.started_at


# ---------------------------------------------------------------- after the run


@dataclass(frozen=True)
class TransferRow:
    """How another model of the same input domain classifies the clean and the adversarial image."""

    model: str
    clean_pred: int
    adv_pred: int
    adv_confidence: float
    fooled: bool  # right on the clean image, wrong on the adversarial one


@torch.no_grad()
def transfer(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    label: int,
    model_names: list[str],
    load: Callable[[str], nn.Module],
) -> list[TransferRow]:
    """The paper's cross-model question on one example: feed x and x_adv to each named model."""
    rows = []
    for name in model_names:
        model = load(name)
        device = next(iter(model.parameters())).device
        probs = torch.softmax(model(torch.cat([x, x_adv]).to(device)).float(), dim=1).cpu()
        clean_pred, adv_pred = (int(p) for p in probs.argmax(1))
        rows.append(
            TransferRow(
                model=name,
                clean_pred=clean_pred,
                adv_pred=adv_pred,
                adv_confidence=float(probs[1, adv_pred]),
                fooled=clean_pred == label and adv_pred != label,
            )
        )
    return rows


# ---------------------------------------------------------------- pictures and exports


@dataclass
class RunCard:
    """What was run and what came of it, JSON-able: enough to redo it."""

    model: str
    attack: str
    params: dict[str, Any]
    seed: int
    label: int  # the class attacked: the model's prediction on the clean image
    true_label: int | None  # known for MNIST test images only
    target: int | None
    image_source: str
    summary: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    certificate: dict[str, Any] = field(default_factory=dict)  # core.certify's radius, or why there is none
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)


@dataclass(frozen=True)
class Outcome:
    """Everything the lab shows once a run is over."""

    result: AttackResult
    baseline: AttackResult  # Gaussian noise of the same RMS distortion
    transfer: list[TransferRow]  # empty for a failed attack: there is no adversarial image to transfer
    card: RunCard
    png: bytes
    npz: bytes
    hint: str | None = None  # for a failed attack, what to change (failure_hint)
    certificate: dict[str, Any] = field(default_factory=dict)  # lab_certificate: its line, or why none


def conclude(
    live: LiveRun,
    model: nn.Module,
    model_name: str,
    image_source: str,
    true_label: int | None = None,
    others: Sequence[str] = (),
    load: Callable[[str], nn.Module] | None = None,
) -> Outcome:
    """Judge a finished (or stopped) run: noise baseline at the same RMS, transfer to `others` (of a
    successful attack only), for a failed one the hint of what to change, exports."""
    result = live.result()
    reference = live.label if true_label is None else true_label
    ok = bool(result.success[0])
    with torch_threads(live.threads):
        baseline = gaussian_noise_baseline(model, result.x, result.labels, rms=result.rms, seed=live.seed)
        rows = transfer(result.x, result.x_adv, reference, list(others), load) if others and ok else []
        hint = None if ok or live.stopped else failure_hint(live, model)
        certificate = lab_certificate(model, model_name, result)
    card = run_card(live, model_name, image_source, true_label)
    card.certificate = certificate
    card.baseline = {
        "rms": float(baseline.rms[0]),
        "pred_after": int(baseline.pred_after[0]),
        "changed_prediction": bool(baseline.success[0]),
    }
    card.transfer = [row.__dict__ for row in rows]
    return Outcome(
        result, baseline, rows, card, png_bytes(result.x_adv[0]), npz_bytes(result, card), hint, certificate
    )


def lab_certificate(model: nn.Module, model_name: str, result: AttackResult) -> dict[str, Any]:
    """What bounds prove about the run's image (core.certify.bracket.attack_certificate: CROWN's full search
    on an MLP, a few ms; on the CNNs IBP's and a CROWN search cut to a cost budget, about 1-2 s at 1 thread,
    the line naming the bound that proved it), or {'why': ...} where they cannot (MNIST models only)."""
    if get_spec(model_name).dataset != "mnist":
        return {"why": "the bounds are computed for MNIST models only"}
    try:
        return attack_certificate(model, result)
    except UnsupportedLayerError as exc:
        return {"why": str(exc)}


HINT_BISECTION_STEPS = 4  # a few extra runs on one image: a budget within about 1/16 of the search's range


def failure_hint(live: LiveRun, model: nn.Module) -> str:
    """What to change after an attack failed, computed rather than guessed: for an untargeted Linf budgeted
    attack, the smallest eps at which the same attack (same parameters and seed) flips this image,
    searched upwards from the budget that failed; otherwise the advice that fits its kind."""
    result = live.result()
    params = dict(result.params)
    eps = params.pop("eps", None)
    if eps is None:
        return "The attack did not reach its goal: give it more iterations or steps (Parameters), or try another."
    if live.target is not None or params.get("norm", "linf") != "linf":
        return f"The attack did not reach its goal at eps {format_eps(eps, params.get('norm', 'linf'))}: raise eps."
    found, smallest = minimal_eps(
        result.attack, model, result.x, result.labels, params=params, start=min(1.0, 2 * eps), fails_at=eps,
        bisection_steps=HINT_BISECTION_STEPS, device=result.x.device,
    )  # fmt: skip
    if smallest is None:
        return (
            f"Even at eps 1 (the whole pixel range) {result.attack} does not flip this image: its gradient "
            "may be misleading; try the gradient-free Square Attack."
        )
    return (
        f"{result.attack} does not flip this image at eps {format_eps(eps)}: raise eps to "
        f"{format_eps(smallest)}, the smallest budget at which it does (searched on this image, same seed)."
    )


def run_card(live: LiveRun, model_name: str, image_source: str, true_label: int | None = None) -> RunCard:
    result = live.result()
    summary = result.summary()
    summary.update(
        success=bool(result.success[0]),
        pred_before=int(result.pred_before[0]),
        pred_after=int(result.pred_after[0]),
        rms=float(result.rms[0]),
        l2=float(result.l2[0]),
        linf=float(result.linf[0]),
        stopped_early=live.stopped and not live.run.finished,
    )
    return RunCard(
        model=model_name,
        attack=result.attack,
        params=dict(result.params),
        seed=live.seed,
        label=live.label,
        true_label=true_label,
        target=live.target,
        image_source=image_source,
        summary=summary,
        versions=versions(),
    )


def npz_bytes(result: AttackResult, card: RunCard) -> bytes:
    """x, x_adv and r = x_adv - x (float32, first image) plus the JSON card, as one .npz file."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x=result.x[0].numpy().astype(np.float32),
        x_adv=result.x_adv[0].numpy().astype(np.float32),
        r=result.perturbation[0].numpy().astype(np.float32),
        card=np.array(card.to_json()),
    )
    return buffer.getvalue()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class probabilities of one image (1, C, H, W)."""
    device = next(iter(model.parameters())).device
    with torch_threads(LIVE_THREADS):
        return torch.softmax(model(x.to(device)).float(), dim=1)[0].cpu().numpy()


def source_id(data: bytes) -> str:
    """A short content hash naming an uploaded or drawn image in the run card."""
    return hashlib.sha256(data).hexdigest()[:16]
