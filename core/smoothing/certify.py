"""PREDICT and CERTIFY of Cohen, Rosenfeld, Kolter (2019), Section 3.2, on any module taking [0, 1] pixels.

Votes are counted in batches of noisy copies of one image, drawn from a seeded torch.Generator on the
model's device; the noisy copies are not clipped (see the package docstring)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from core import stats
from core.checks import check_float, check_int
from core.errors import InvalidParameterError
from core.runtime import bar_disabled
from core.smoothing.noise import NoisePath, noise_path

SIGMA_MAX = 4.0  # in [0, 1] pixels: at 4 the signal is a quarter of the noise's std; Cohen et al. go to 1.0
SAMPLES_MAX = 100_000_000


@dataclass(frozen=True)
class SmoothingParams:
    """The paper's knobs (its defaults): noise level, selection and estimation votes, failure probability;
    `batch` noisy copies go through the network at once."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000

    def __post_init__(self) -> None:
        check_float("sigma", self.sigma, low=0.0, high=SIGMA_MAX, strict_low=True)
        check_int("n0", self.n0, low=1, high=SAMPLES_MAX)
        check_int("samples (n)", self.n, low=1, high=SAMPLES_MAX)
        check_int("batch", self.batch, low=1, high=1_000_000)
        if not 0.0 < check_float("alpha", self.alpha) < 1.0:
            raise InvalidParameterError(f"alpha must lie strictly between 0 and 1, got {self.alpha}.")
        if self.n0 > self.n:
            raise InvalidParameterError(
                f"n0 ({self.n0}) must not exceed the number of samples n ({self.n}): the selection votes "
                "only pick the class, the estimation votes certify it."
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SmoothResult:
    """One image's smoothed prediction: `prediction` None means the smoothed classifier abstains;
    `count` of `samples` estimation votes went to it, `counts` holds every class's votes."""

    prediction: int | None
    count: int
    samples: int
    pa_lower: float
    radius: float
    counts: list[int] = field(repr=False)
    selection_counts: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


GPU_BATCH = 100_000  # passes of 100,000 vs 1000 on an H200: docs/results/performance/gpu-smoothing.json


def batch_for(device: torch.device) -> int:
    """Noisy copies per pass: cache-sized on a CPU; on a GPU, where a pass costs its launches more than its
    arithmetic, a whole estimation in one pass (benchmarks/smoothing.py --device cuda measures both)."""
    return GPU_BATCH if device.type == "cuda" else SmoothingParams.batch


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; CPU for a parameterless module."""
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def make_generator(model: nn.Module, seed: int) -> torch.Generator:
    """The noise generator, on the model's device so noise is drawn where the network runs."""
    return torch.Generator(device=model_device(model)).manual_seed(check_int("seed", seed))


@torch.inference_mode()
def sample_counts(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    num: int,
    batch: int,
    generator: torch.Generator,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Votes of the base classifier on `num` copies of image x (C, H, W) plus N(0, sigma^2) noise, on the
    host; `on_batch(done)` after each batch lets a page show progress."""
    path = noise_path(model, x.to(model_device(model)), sigma)
    return vote(path, num, batch, generator, progress, on_batch).cpu()


@torch.inference_mode()
def vote(
    path: NoisePath,
    num: int,
    batch: int,
    generator: torch.Generator,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The votes of `num` noisy copies drawn along `path`, left on its device.

    The noise is drawn in place into reused buffers (in the first layer's width where core.smoothing.noise
    allows): per batch one draw, one fused shift, one forward pass and one scatter of the votes, with no
    allocation and no host sync (torch.bincount would wait for the GPU each batch to size its output)."""
    device = path.mean.device
    noise = torch.empty((min(batch, num), *path.shape), device=device)
    out = torch.empty_like(noise) if path.factor is not None else noise
    ones = torch.ones(len(noise), dtype=torch.long, device=device)
    counts: torch.Tensor | None = None
    steps = range(0, num, batch)
    for start in tqdm(steps, desc="noise samples", leave=False, disable=bar_disabled(progress)):
        size = min(batch, num - start)
        noisy = path.draw(noise[:size].normal_(generator=generator), out[:size])
        logits = path.rest(noisy)
        if counts is None:
            counts = torch.zeros(logits.shape[1], dtype=torch.long, device=device)
        counts.index_add_(0, logits.argmax(1), ones[:size])
        if on_batch is not None:
            on_batch(start + size)
    return counts


def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with `count` of `n`."""
    return 0.0 if count == 0 else stats.beta_quantile(alpha, count, n - count + 1)


def radius_from_counts(count: int, n: int, alpha: float, sigma: float) -> tuple[float, float | None]:
    """(pA lower bound, certified L2 radius sigma * Phi^-1(pA)); the radius is None when CERTIFY abstains."""
    pa = lower_confidence_bound(count, n, alpha)
    return pa, (None if pa < 0.5 else sigma * stats.normal_quantile(pa))


def certify(
    model: nn.Module,
    x: torch.Tensor,
    params: SmoothingParams,
    generator: torch.Generator,
    progress: bool = False,
    on_batch: Callable[[float], None] | None = None,
) -> SmoothResult:
    """CERTIFY: guess the top class from n0 votes, bound its probability from n fresh votes;
    `on_batch(fraction done)` after each batch."""

    def share(offset: int) -> Callable[[int], None] | None:
        """One round's votes done, as a fraction of both rounds."""
        total = params.n0 + params.n
        return None if on_batch is None else lambda done: on_batch((offset + done) / total)

    selection = sample_counts(model, x, params.sigma, params.n0, params.batch, generator, on_batch=share(0))
    top = int(selection.argmax())
    counts = sample_counts(
        model, x, params.sigma, params.n, params.batch, generator, progress, share(params.n0)
    )
    pa, radius = radius_from_counts(int(counts[top]), params.n, params.alpha, params.sigma)
    return SmoothResult(
        prediction=None if radius is None else top,
        count=int(counts[top]),
        samples=params.n,
        pa_lower=pa,
        radius=0.0 if radius is None else radius,
        counts=counts.tolist(),
        selection_counts=selection.tolist(),
    )


def predict(
    model: nn.Module, x: torch.Tensor, params: SmoothingParams, generator: torch.Generator
) -> SmoothResult:
    """PREDICT: the top class of n votes unless a two-sided binomial test cannot tell it from the runner-up
    at level alpha (then abstain); wrong with probability at most alpha."""
    counts = sample_counts(model, x, params.sigma, params.n, params.batch, generator)
    votes, classes = counts.topk(min(2, len(counts)))
    na, nb = int(votes[0]), int(votes[1]) if len(votes) > 1 else 0
    abstain = stats.binomial_test(na, na + nb, 0.5) > params.alpha
    pa, radius = radius_from_counts(na, params.n, params.alpha, params.sigma)
    return SmoothResult(
        prediction=None if abstain else int(classes[0]),
        count=na,
        samples=params.n,
        pa_lower=pa,
        radius=0.0 if radius is None or abstain else radius,
        counts=counts.tolist(),
    )


def certify_batch(
    model: nn.Module, images: torch.Tensor, params: SmoothingParams, seed: int = 0, progress: bool = True
) -> list[SmoothResult]:
    """CERTIFY every image in turn from one generator seeded with `seed` (same seed, same counts)."""
    generator = make_generator(model, seed)
    bar = tqdm(images, desc=f"certify (sigma {params.sigma:g})", disable=bar_disabled(progress))
    return [certify(model, x, params, generator) for x in bar]


def estimate_seconds(model: nn.Module, shape: tuple[int, ...], params: SmoothingParams, images: int) -> float:
    """Seconds CERTIFY would take on `images` images, from timing one batch of votes the way CERTIFY
    draws them (so the estimate follows the noise path the network gets)."""
    x, generator = torch.zeros(shape), make_generator(model, 0)
    size = min(params.batch, params.n0 + params.n)
    sample_counts(model, x, params.sigma, 1, 1, generator)  # first-call dispatch, outside the timing
    start = time.perf_counter()
    sample_counts(model, x, params.sigma, size, params.batch, generator)
    per_sample = (time.perf_counter() - start) / size
    return per_sample * images * (params.n0 + params.n)
