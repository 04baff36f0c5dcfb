"""The Attack Lab without Streamlit: drive one attack step by step for a live view, then judge the result
(Gaussian-noise baseline, transfer to the other models of the same input domain) and export it.

The dashboard page only draws what `LiveRun.frames()` yields; benchmarks time the same generator.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.attacks.base import Attack, AttackEvent, AttackResult, AttackRun
from core.errors import InvalidParameterError

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


LIVE_THREADS = 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with n intra-op threads (None: unchanged), then restore the previous number."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_lab_attack(name: str, model: nn.Module, seed: int = 0, **params: Any) -> Attack:
    """An attack from the registry, handed the lab's seed when it takes one (random starts)."""
    from core.attacks import ATTACKS, make_attack

    if name in ATTACKS and "seed" in inspect.signature(ATTACKS[name].__init__).parameters:
        params["seed"] = seed
    return make_attack(name, model, **params)


class LiveRun:
    """One attack on one image, iterated by a live view. Every iteration lands in `series` (so curves
    miss no step); a `Frame` is yielded at most every `min_interval` seconds, always for the first and
    last iteration. `stop()` ends it early; `result()` is the best-so-far result, verified afresh.

    The attack runs on `threads` intra-op threads (default LIVE_THREADS = 1): beside a browser and
    Streamlit's own threads on a 2-core machine, two OpenMP threads spin against each other (one step of
    mobilenet_v2 took 2-5 s with two threads and 0.15 s with one on the busy shared development box)."""

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
        torch.manual_seed(seed)  # random starts (PGD, APGD) are reproducible
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


def usable_models(names: Sequence[str]) -> list[str]:
    """The named models that can be loaded now (MNIST checkpoints present, ImageNet weights on disk)."""
    from core.models import model_status

    return [name for name in names if model_status(name) != "missing"]


def same_domain_models(model_name: str, available: Sequence[str]) -> list[str]:
    """The other available models that take the same kind of input (MNIST digits or ImageNet photos)."""
    from core.models import get_spec

    domain = get_spec(model_name).dataset
    return [m for m in available if m != model_name and get_spec(m).dataset == domain]


# ---------------------------------------------------------------- pictures and exports


def to_uint8(image: np.ndarray | torch.Tensor, scale: int = 1) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H*scale, W*scale[, 3]) uint8, enlarged by pixel repetition (crisp digits)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.clip(arr, 0.0, 1.0)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    return (arr * 255.0 + 0.5).astype(np.uint8)


def perturbation_picture(r: np.ndarray | torch.Tensor, scale: int = 1) -> tuple[np.ndarray, float]:
    """A perturbation (C, H, W) drawn with a diverging colour map (blue: darker, white: unchanged, red:
    brighter), channels averaged, amplified so that its largest change fills the map.
    Returns the RGB uint8 picture and the amplification factor."""
    from matplotlib import colormaps

    arr = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
    signed = arr.mean(axis=0)
    peak = float(np.abs(signed).max())
    amplification = 1.0 / peak if peak > 0 else 1.0
    rgb = colormaps["RdBu_r"](0.5 + 0.5 * signed * amplification)[..., :3]
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return (rgb * 255.0 + 0.5).astype(np.uint8), amplification


def triple_picture(
    x: torch.Tensor, x_adv: torch.Tensor, scale: int = 1, gap: int = 8
) -> tuple[np.ndarray, float]:
    """original | perturbation (diverging colours) | adversarial side by side, as one RGB uint8 picture;
    also returns the perturbation's amplification factor."""

    def rgb(arr: np.ndarray) -> np.ndarray:
        return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr

    original, adversarial = rgb(to_uint8(x, scale)), rgb(to_uint8(x_adv, scale))
    r, amplification = perturbation_picture(x_adv - x, scale)
    space = np.full((original.shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([original, space, r, space, adversarial], axis=1), amplification


def png_bytes(image: np.ndarray | torch.Tensor) -> bytes:
    """An image (C, H, W) in [0, 1] as lossless 8-bit PNG bytes, at its own resolution."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


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
    from core.attacks import gaussian_noise_baseline

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
    from core.models.train import versions

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


def digit_picture(x: torch.Tensor) -> Image.Image:
    """An MNIST digit (1, 1, 28, 28) or (1, 28, 28) as an RGB picture, e.g. to show it to an ImageNet model."""
    return Image.fromarray(to_uint8(x.reshape(1, 28, 28))).convert("RGB")


def source_id(data: bytes) -> str:
    """A short content hash naming an uploaded or drawn image in the run card."""
    return hashlib.sha256(data).hexdigest()[:16]
