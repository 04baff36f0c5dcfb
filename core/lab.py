"""The Attack Lab without Streamlit: drive one attack step by step for a live view, then judge the result
(Gaussian-noise baseline, transfer to the other models of the same input domain) and export it.

The dashboard page only draws what `LiveRun.frames()` yields; benchmarks time the same generator.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.attacks import (
    Attack,
    AttackEvent,
    AttackResult,
    AttackRun,
    gaussian_noise_baseline,
    is_seeded,
    make_attack,
)
from core.errors import InvalidParameterError
from core.pictures import png_bytes
from core.provenance import versions
from core.runtime import LIVE_THREADS, torch_threads

SERIES = ("iteration", "loss", "l2", "linf", "rms", "p_label", "p_target", "c", "search_round")


@dataclass(frozen=True)
class Frame:
    """What a live view shows after one iteration (numpy copies, first image of the batch only)."""

    iteration: int
    x_adv: np.ndarray  # (C, H, W) in [0, 1]
    perturbation: np.ndarray  # (C, H, W), x_adv - x
    probs: np.ndarray  # (classes,)
    pred: int
    loss: float
    l2: float
    linf: float
    rms: float
    c: float | None
    search_round: int | None
    elapsed_s: float  # wall-clock time since the run started, consumer time included
    steps_since_last_frame: int


def make_lab_attack(name: str, model: nn.Module, seed: int = 0, **params: Any) -> Attack:
    """An attack from the registry, handed the lab's seed when it takes one (random starts)."""
    if is_seeded(name):
        params["seed"] = seed
    return make_attack(name, model, **params)


class LiveRun:
    """One attack on one image, iterated by a live view. Every iteration lands in `series` (so curves
    miss no step); a `Frame` is yielded at most every `min_interval` seconds, always for the first and
    last iteration. `stop()` ends it early; `result()` is the best-so-far result, verified afresh.

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
        self.stopped = False
        self.first_frame_s: float | None = None
        self.frames_shown = 0
        self.ended_at: float | None = None
        self._result: AttackResult | None = None

    @property
    def finished(self) -> bool:
        return self.run.finished or self.stopped

    def stop(self) -> None:
        self.stopped = True

    def _record(self, event: AttackEvent) -> None:
        probs = event.probs[0]
        values = {
            "iteration": event.iteration,
            "loss": float(event.loss[0]),
            "l2": float(event.l2[0]),
            "linf": float(event.linf[0]),
            "rms": float(event.rms[0]),
            "p_label": float(probs[self.label]),
            "p_target": None if self.target is None else float(probs[self.target]),
            "c": None if event.c is None else float(event.c[0]),
            "search_round": None if event.search_round is None else int(event.search_round[0]),
        }
        for name, value in values.items():
            self.series[name].append(value)

    def _frame(self, event: AttackEvent, steps: int) -> Frame:
        self.frames_shown += 1
        s = {name: values[-1] for name, values in self.series.items()}
        return Frame(
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
            elapsed_s=time.perf_counter() - self.started_at,
            steps_since_last_frame=steps,
        )

    def frames(self, min_interval: float = 0.0, pace: float = 0.0) -> Iterator[Frame]:
        """Advance the attack, yielding frames; iterate again after an interruption to resume.
        min_interval > 0 skips frames (the attack runs at full speed); pace > 0 draws every step but waits
        until `pace` seconds have passed since the previous frame, so that a browser can keep up."""
        last_shown = -float("inf")
        pending: AttackEvent | None = None
        steps = 0
        with torch_threads(self.threads):
            for event in self.run:
                self._record(event)
                steps += 1
                now = time.perf_counter()
                if now - last_shown < pace:
                    time.sleep(pace - (now - last_shown))
                    now = time.perf_counter()
                if now - last_shown >= min_interval:
                    if self.first_frame_s is None:
                        self.first_frame_s = now - self.started_at
                    last_shown, frame, pending, steps = now, self._frame(event, steps), None, 0
                    yield frame  # the intervals run from frame to frame, the consumer's drawing included
                else:
                    pending = event
                if self.stopped:
                    break
            if pending is not None:  # the last iteration is always shown
                yield self._frame(pending, steps)
        self.ended_at = time.perf_counter()

    def pace(self) -> dict[str, float | int | None]:
        """How live the run was: steps, frames drawn, wall-clock seconds (the consumer's drawing
        included), frames and steps per second, seconds from start to the first frame."""
        wall = (self.ended_at or time.perf_counter()) - self.started_at
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
        """The verified result drawn like a live frame (what the view shows once the run is over)."""
        result = self.result()
        r = result.perturbation[0]
        losses = [v for v in self.series["loss"] if v is not None]
        return Frame(
            iteration=result.iterations,
            x_adv=result.x_adv[0].numpy(),
            perturbation=r.numpy(),
            probs=result.probs_after[0].numpy(),
            pred=int(result.pred_after[0]),
            loss=losses[-1] if losses else float("nan"),
            l2=float(result.l2[0]),
            linf=float(result.linf[0]),
            rms=float(result.rms[0]),
            c=self.series["c"][-1] if self.series["c"] else None,
            search_round=self.series["search_round"][-1] if self.series["search_round"] else None,
            elapsed_s=time.perf_counter() - self.started_at,
            steps_since_last_frame=0,
        )


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
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)


@dataclass(frozen=True)
class Outcome:
    """Everything the lab shows once a run is over."""

    result: AttackResult
    baseline: AttackResult  # Gaussian noise of the same RMS distortion
    transfer: list[TransferRow]
    card: RunCard
    png: bytes
    npz: bytes


def conclude(
    live: LiveRun,
    model: nn.Module,
    model_name: str,
    image_source: str,
    true_label: int | None = None,
    others: Sequence[str] = (),
    load: Callable[[str], nn.Module] | None = None,
) -> Outcome:
    """Judge a finished (or stopped) run: noise baseline at the same RMS, transfer to `others`, exports."""
    result = live.result()
    reference = live.label if true_label is None else true_label
    with torch_threads(live.threads):
        baseline = gaussian_noise_baseline(model, result.x, result.labels, rms=result.rms, seed=live.seed)
        rows = transfer(result.x, result.x_adv, reference, list(others), load) if others else []
    card = run_card(live, model_name, image_source, true_label)
    card.baseline = {
        "rms": float(baseline.rms[0]),
        "pred_after": int(baseline.pred_after[0]),
        "changed_prediction": bool(baseline.success[0]),
    }
    card.transfer = [row.__dict__ for row in rows]
    return Outcome(result, baseline, rows, card, png_bytes(result.x_adv[0]), npz_bytes(result, card))


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
