"""What every attack shares: the streaming run, the event it yields after each iteration, the one result
type and the distortion measures.

An attack subclass only writes `_steps(run)`, a generator that updates `run.best` (the best adversarial
images so far, one per input image) and yields one `AttackEvent` per iteration, and declares its
parameters in `PARAMS`. Everything else (parameter validation, clean predictions, the fresh verification
pass, distortions, timing, model-call counting) lives here, once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.attacks.spec import Param, check_params
from core.errors import InvalidParameterError

# ---------------------------------------------------------------- distortion measures (per image, [0,1] scale)


def l2_norm(r: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each image's perturbation, shape (N,)."""
    return r.flatten(1).norm(dim=1)


def linf_norm(r: torch.Tensor) -> torch.Tensor:
    """Largest absolute pixel change of each image, shape (N,)."""
    return r.flatten(1).abs().amax(dim=1)


def rms(r: torch.Tensor) -> torch.Tensor:
    """The paper's distortion measure sqrt(sum r^2 / n) per image, n = pixels x channels."""
    flat = r.flatten(1)
    return flat.norm(dim=1) / math.sqrt(flat.shape[1])


# ---------------------------------------------------------------- event and result


class _Distortion:
    """L2, Linf and the paper's RMS of `x_adv - x`, computed once and only when read."""

    x: torch.Tensor
    x_adv: torch.Tensor

    @cached_property
    def perturbation(self) -> torch.Tensor:
        return self.x_adv.detach() - self.x

    @cached_property
    def l2(self) -> torch.Tensor:
        return l2_norm(self.perturbation)

    @cached_property
    def linf(self) -> torch.Tensor:
        return linf_norm(self.perturbation)

    @cached_property
    def rms(self) -> torch.Tensor:
        return rms(self.perturbation)


@dataclass(eq=False)
class AttackEvent(_Distortion):
    """One iteration of an attack, as a live view would draw it. All tensors are per image (first dim N)
    and are references to the attack's own tensors: read them, never modify them.

    `x_adv` is the point the model was evaluated at in this iteration and `logits` its output (no extra
    forward pass is spent on events). `loss` is the attack's own objective per image (see each attack).
    For L-BFGS and C&W, `c` is each image's current trade-off constant and `search_round` its round of
    the search over c. Probabilities and distortions are computed lazily, only if someone reads them.
    """

    attack: str
    iteration: int
    x: torch.Tensor
    x_adv: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    c: torch.Tensor | None = None
    search_round: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits.detach().float(), dim=1)

    @cached_property
    def pred(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


def _mean(values: torch.Tensor) -> float | None:
    return float(values.mean()) if values.numel() else None


def _median(values: torch.Tensor) -> float | None:
    return float(values.median()) if values.numel() else None


@dataclass(eq=False)
class AttackResult(_Distortion):
    """The outcome of any attack (tensors on the CPU, first dim N).

    `x_adv` is clipped to [0, 1]; `x_adv_raw` is what the attack produced before clipping (our attacks
    stay inside the box, so the two normally coincide; `summary()['raw_box_violations']` says if not).
    `success` comes from a fresh forward pass on `x_adv` after the attack, never from inside its loop:
    untargeted, the prediction differs from `labels`; targeted, it equals `target`.
    `model_calls` counts the attack's batched forward passes, a forward+backward counting as one; the
    final verification pass is not included. `time_s` is the attack's own compute time (time spent by a
    consumer of the event stream is excluded).
    """

    attack: str
    x: torch.Tensor
    x_adv: torch.Tensor
    x_adv_raw: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor | None
    pred_before: torch.Tensor
    pred_after: torch.Tensor
    probs_after: torch.Tensor
    success: torch.Tensor
    iterations: int
    model_calls: int
    time_s: float
    params: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def concat(cls, results: list[AttackResult]) -> AttackResult:
        """One result from the results of consecutive batches of the same attack (sums counts and time)."""
        first = results[0]

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(r, name) for r in results])

        tensors = ("x", "x_adv", "x_adv_raw", "labels", "pred_before", "pred_after", "probs_after", "success")
        return cls(
            attack=first.attack,
            target=None if first.target is None else cat("target"),
            iterations=max(r.iterations for r in results),
            model_calls=sum(r.model_calls for r in results),
            time_s=sum(r.time_s for r in results),
            params=first.params,
            **{name: cat(name) for name in tensors},
        )

    @property
    def fooled(self) -> torch.Tensor:
        """Successes on images the model classified correctly before the attack: an image it already got
        wrong is no adversarial example, however small its 'distortion'."""
        return self.success & (self.pred_before == self.labels)

    def summary(self) -> dict[str, Any]:
        """JSON-able figures. `success_rate` is over the images classified correctly before the attack
        (`n_correct` of `n`); distortion statistics are over the fooled images only (the paper's 'average
        minimum distortion') and None when none was fooled. `raw_box_violations` counts pixels of the
        attack's raw output outside [0, 1], before the result is clipped."""
        ok = self.fooled
        n_correct = int((self.pred_before == self.labels).sum())
        return {
            "attack": self.attack,
            "n": len(self),
            "n_correct": n_correct,
            "success_rate": float(ok.sum()) / n_correct if n_correct else 0.0,
            "mean_rms_distortion": _mean(self.rms[ok]),
            "median_rms_distortion": _median(self.rms[ok]),
            "mean_l2": _mean(self.l2[ok]),
            "median_l2": _median(self.l2[ok]),
            "mean_linf": _mean(self.linf[ok]),
            "raw_box_violations": int(((self.x_adv_raw < 0) | (self.x_adv_raw > 1)).sum()),
            "iterations": self.iterations,
            "model_calls": self.model_calls,
            "time_s": self.time_s,
            "targeted": self.target is not None,
            "params": self.params,
        }


# ---------------------------------------------------------------- the run and the base class


class LaggedFlag:
    """A boolean computed on the device, read by the host one step later. Reading it at once (`bool(t.any())`)
    is a host sync that drains the GPU's queue every step; here the value is copied into pinned host memory
    behind the step's work, and by the time the next step asks, that copy is usually done. On CPU it is a
    plain read. A loop that stops on it stops after the same step: it checks, at the top of step t + 1, the
    value step t set (so step t's own update runs, which a stopping rule must make a no-op)."""

    def __init__(self, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self._host = torch.ones((), dtype=torch.bool, pin_memory=cuda)
        self._copied = torch.cuda.Event() if cuda else None

    def set(self, value: torch.Tensor) -> None:
        self._host.copy_(value, non_blocking=True)
        if self._copied is not None:
            self._copied.record()

    def __bool__(self) -> bool:
        if self._copied is not None:
            self._copied.synchronize()
        return bool(self._host)


class AttackRun:
    """One attack on one batch, iterated step by step: `for event in run: ...`, and `run.result()` at any
    time (also after stopping early) for the best adversarial images so far, verified afresh.

    Attributes an attack's `_steps` uses: `x`, `labels`, `target` (None if untargeted), `clean_logits`,
    `best` (N,C,H,W: the best adversarial images so far; start: x itself), `forward`, `loss_and_grad`.
    """

    def __init__(self, attack: Attack, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None):
        self.attack = attack
        self.model = attack.model
        self.x = x
        self.labels = labels
        self.target = target
        self.best = x
        self.iterations = 0
        self.model_calls = 0
        self.time_s = 0.0
        self.finished = False
        self._clean_logits: torch.Tensor | None = None
        start = time.perf_counter()
        if target is not None and ((target < 0) | (target >= self.num_classes)).any():
            raise InvalidParameterError(f"target labels must lie in 0..{self.num_classes - 1}.")
        self._steps = attack._steps(self)
        self.time_s += time.perf_counter() - start

    @property
    def clean_logits(self) -> torch.Tensor:
        """Logits of the clean images: taken from the attack's first gradient pass at x when there is one
        (FGSM's only pass), else one forward pass, made when first needed."""
        if self._clean_logits is None:
            with torch.no_grad():
                self._clean_logits = self.forward(self.x)
        return self._clean_logits

    @property
    def num_classes(self) -> int:
        return self.clean_logits.shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of a batch, counted as one model call."""
        self.model_calls += 1
        return self.model(z)

    def loss_and_grad(
        self, z: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image loss_fn(logits, z) (N,), its gradient with respect to z, and the logits; one model call.
        Images are independent, so the gradient of the sum is each image's own gradient."""
        at_clean = z is self.x
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logits = self.forward(z)
            loss = loss_fn(logits, z)
            (grad,) = torch.autograd.grad(loss.sum(), z)
        if at_clean and self._clean_logits is None:
            self._clean_logits = logits.detach()
        return loss.detach(), grad, logits.detach()

    def __iter__(self) -> Iterator[AttackEvent]:
        while not self.finished:
            start = time.perf_counter()
            try:
                event = next(self._steps)
            except StopIteration:
                self.finished = True
                return
            finally:
                self.time_s += time.perf_counter() - start
            self.iterations += 1
            yield event

    def result(self) -> AttackResult:
        """The best adversarial images so far, clipped to the box and re-verified by a fresh forward pass."""
        raw = self.best.detach()
        x_adv = raw.clamp(0.0, 1.0)
        with torch.no_grad():
            logits = self.model(x_adv)
        pred_after = logits.argmax(1)
        if self.target is None:
            success = pred_after != self.labels
        else:
            success = pred_after == self.target
        probs = F.softmax(logits.float(), dim=1)
        x, x_adv, raw, labels, target, pred_before, pred_after, probs, success = to_host(
            self.x,
            x_adv,
            raw,
            self.labels,
            self.target,
            self.clean_logits.argmax(1),
            pred_after,
            probs,
            success,
        )
        return AttackResult(
            attack=self.attack.name,
            x=x,
            x_adv=x_adv,
            x_adv_raw=raw,
            labels=labels,
            target=target,
            pred_before=pred_before,
            pred_after=pred_after,
            probs_after=probs,
            success=success,
            iterations=self.iterations,
            model_calls=self.model_calls,
            time_s=self.time_s,
            params=dict(self.attack.params),
        )


def to_host(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors on the host (None stays None). A GPU's are copied into pinned memory one after another
    without waiting, then waited for once: a copy into pageable memory waits for each and moves at a
    fraction of the bus's speed."""
    on_gpu = [t for t in tensors if t is not None and t.is_cuda]
    if not on_gpu:
        return [None if t is None else t.cpu() for t in tensors]
    out = [
        torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
        if t is not None and t.is_cuda
        else t
        for t in tensors
    ]
    torch.cuda.synchronize(on_gpu[0].device)
    return out


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


class Attack:
    """Base class: subclasses set `name`, `supports_targeted`, declare their parameters once in `PARAMS`
    (validated here into `self.params` and set as attributes) and implement `_steps(run)`. `RECORDED` holds
    fixed facts recorded beside the parameters (e.g. the norm an Linf-only attack works in)."""

    name: ClassVar[str] = "attack"
    supports_targeted: ClassVar[bool] = True
    supports_untargeted: ClassVar[bool] = True
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    RECORDED: ClassVar[dict[str, Any]] = {}
    # What the rest of the lab reads from the attack itself, so that an attack is one file plus one registry
    # line: `title`, its name in the Attack Lab; `quick`, settings that finish in a fraction of a second on
    # a few MNIST images (the contract tests); `cases`, the settings its invariants are checked at on small
    # random models (tests/test_attacks_properties.py).
    title: ClassVar[str] = ""
    quick: ClassVar[dict[str, Any]] = {}
    cases: ClassVar[tuple[dict[str, Any], ...]] = ()
    # False where a budgeted attack's iterates leave the eps-ball by design (FAB searches from outside in;
    # only what it keeps is held to eps): the property tests hold every other one's iterates to the ball.
    iterates_in_ball: ClassVar[bool] = True

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, **params: Any) -> None:
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model = model.to(self.device) if device is not None else model
        checked = check_params(self.name, self.PARAMS, params)
        for key, value in checked.items():
            setattr(self, key, value)
        self.params: dict[str, Any] = {**checked, **self.RECORDED}

    def start(
        self, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | int | None = None
    ) -> AttackRun:
        """Begin an attack on a batch; iterate the returned run for events, call `.result()` any time."""
        x, labels, target = self._check_inputs(x, labels, target)
        return AttackRun(self, x, labels, target)

    def run(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        target: torch.Tensor | int | None = None,
        callback: Callable[[AttackEvent], bool | None] | None = None,
    ) -> AttackResult:
        """Run to completion (or until `callback(event)` returns True) and return the result."""
        run = self.start(x, labels, target)
        for event in run:
            if callback is not None and callback(event):
                break
        return run.result()

    def perturb(
        self, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Only the adversarial images, clipped to [0, 1], on the attack's device: no verification pass and
        no result object. For loops that classify the images themselves next (adversarial training,
        defence checks); use `run` whenever success matters, since only it re-verifies."""
        run = self.start(x, labels, target)
        for _ in run:
            pass
        return run.best.detach().clamp(0.0, 1.0)

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        raise NotImplementedError

    def _event(self, run: AttackRun, x_adv: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor, **kw):
        return AttackEvent(self.name, run.iterations, run.x, x_adv, logits, loss, **kw)

    def _check_inputs(self, x, labels, target):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise InvalidParameterError("x must be a float tensor of shape (N, C, H, W).")
        if len(x) == 0:
            raise InvalidParameterError("x holds no images.")
        low, high = torch.aminmax(x.detach())  # one pass; NaN propagates and fails the test like inf
        if not (low >= 0 and high <= 1):
            raise InvalidParameterError("x must hold finite pixel values in [0, 1].")
        labels = torch.as_tensor(labels).reshape(-1).long()
        if labels.shape[0] != x.shape[0]:
            raise InvalidParameterError(f"{labels.shape[0]} labels for {x.shape[0]} images.")
        if target is not None:
            if not self.supports_targeted:
                raise InvalidParameterError(f"{self.name} has no targeted mode.")
            target = torch.as_tensor(target).long()
            target = target.expand(len(x)).clone() if target.dim() == 0 else target.reshape(-1)
            if target.shape[0] != x.shape[0]:
                raise InvalidParameterError(f"{target.shape[0]} target labels for {x.shape[0]} images.")
            if (target == labels).any():
                raise InvalidParameterError("a target label equals the true label; pick another class.")
            target = target.to(self.device)
        elif not self.supports_untargeted:
            raise InvalidParameterError(f"{self.name} needs a target label.")
        return x.to(self.device, torch.float32), labels.to(self.device), target
