"""Feature visualisation: synthesise the input that maximises <phi(x), v> for any direction v of a layer,
streamed step by step like an attack (a run yields one event per iteration, keeps the best image so far,
and `result()` at any time, e.g. after Stop, returns that best image).

Two parameterisations, as in Lucid (Olah et al., 2017) and its successors:
- pixels (MNIST): x = sigmoid(p), so x stays in [0, 1]; random jitter of a few pixels and a total-variation
  penalty keep the digit-sized picture smooth instead of salt-and-pepper;
- Fourier (ImageNet): a decorrelated spectrum scaled by 1/f (natural-image statistics), ImageNet's colour
  decorrelation, then a sigmoid; every step sees a random jitter, scale and rotation of the image, so the
  optimum is robust to them and is not high-frequency noise.

Our own compact implementation, not a library: horama's Fourier loop is a closed loop (no per-step events,
no Stop), RGB only (no MNIST), unseeded and CUDA by default; torch-lucent pins kornia <= 0.4.1, sets a
global CUDA device at import and is unmaintained since 2021.

Each step evaluates the clean image and one transformed view in one batch: the gradient comes from the
view, the best-so-far bookkeeping from the clean image, so the reported activation is that of the image
returned, never of a jittered copy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.attacks import Param
from core.errors import InvalidParameterError
from core.models import get_spec, layer_modules, load
from core.units.activations import check_layer, units_at
from core.units.directions import top_k
from core.units.images import ImageSet

# ImageNet's colour correlation, square root of its SVD (Lucid's constants), normalised by its largest column.
_COLOUR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
START_K = 9  # held-out images averaged into the start image
_COLOUR = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()


STEPS = Param("steps", int, 256, "Steps", "Optimisation steps of the synthesised input.", low=1, high=10_000,
              step=32)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """How one feature visualisation is optimised (JSON-able through `as_dict`)."""

    parameterisation: str  # "pixels" or "fourier"
    steps: int = STEPS.default
    lr: float = 0.05
    seed: int = 0
    smoothness: float = 0.0  # total-variation weight, relative to the activation (pixels only)
    jitter: float = 2.0  # largest random shift, in pixels
    scale: float = 0.0  # random scale in [1 - scale, 1 + scale]
    degrees: float = 0.0  # random rotation in [-degrees, degrees]
    decay: float = 1.0  # the Fourier spectrum's 1/f^decay scaling

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_settings(dataset: str, steps: int = STEPS.default, seed: int = 0) -> Settings:
    """The preset for a model's input domain: pixels for MNIST digits, Fourier for ImageNet photos."""
    if dataset == "mnist":
        return Settings("pixels", steps=steps, seed=seed, lr=0.05, smoothness=0.3, jitter=2.0)
    return Settings("fourier", steps=steps, seed=seed, lr=0.05, jitter=8.0, scale=0.05, degrees=5.0)


def _check(settings: Settings, shape: tuple[int, ...]) -> None:
    if settings.parameterisation not in ("pixels", "fourier"):
        raise InvalidParameterError(f"Unknown parameterisation {settings.parameterisation!r}.")
    STEPS.check(settings.steps)
    numbers = (settings.lr, settings.smoothness, settings.jitter, settings.scale, settings.degrees)
    if not all(math.isfinite(v) and v >= 0 for v in numbers) or settings.lr == 0:
        raise InvalidParameterError("lr must be positive and the penalties and transforms non-negative.")
    if settings.parameterisation == "fourier" and shape[0] != 3:
        raise InvalidParameterError("The Fourier parameterisation draws colour (3-channel) images.")


class _Pixels(nn.Module):
    def __init__(
        self, shape: tuple[int, int, int], generator: torch.Generator, init: torch.Tensor | None
    ) -> None:
        super().__init__()
        start = (
            torch.zeros((1, *shape))
            if init is None
            else torch.logit(init.reshape(1, *shape).clamp(0.02, 0.98))
        )
        self.logits = nn.Parameter(start + 0.1 * torch.randn((1, *shape), generator=generator))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


class _Fourier(nn.Module):
    def __init__(self, shape: tuple[int, int, int], generator: torch.Generator, decay: float) -> None:
        super().__init__()
        channels, height, width = shape
        self.size = (height, width)
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        self.register_buffer(
            "scale", 1.0 / torch.clamp((fx**2 + fy**2).sqrt(), min=1.0 / max(shape)) ** decay
        )
        spectrum = 0.1 * torch.randn((channels, *self.scale.shape, 2), generator=generator)
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0
        image = torch.einsum("chw,dc->dhw", image, _COLOUR.to(image.device))
        return torch.sigmoid(image)[None]


def _transform(x: torch.Tensor, settings: Settings, generator: torch.Generator) -> torch.Tensor:
    """One random jitter / scale / rotation of x (one affine resampling; reflected borders for photos)."""
    u = torch.rand(4, generator=generator) * 2 - 1  # shift x, shift y, scale, angle, each in [-1, 1]
    height, width = x.shape[-2:]
    angle = math.radians(settings.degrees) * float(u[3])
    zoom = 1.0 + settings.scale * float(u[2])
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    shift_x, shift_y = 2 * settings.jitter * float(u[0]) / width, 2 * settings.jitter * float(u[1]) / height
    theta = torch.tensor([[[cos, -sin, shift_x], [sin, cos, shift_y]]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    padding = "reflection" if settings.parameterisation == "fourier" else "zeros"
    return F.grid_sample(x, grid, padding_mode=padding, align_corners=False)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (0 for a flat image)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(eq=False)
class FeatureVisEvent:
    """One iteration: the image evaluated in it and its <phi(x), v>, and the best image so far. Tensors are
    (1, C, H, W) in [0, 1], references to the run's own: read them, never modify them."""

    iteration: int
    x: torch.Tensor
    activation: float
    best_x: torch.Tensor
    best_activation: float
    loss: float  # what the step minimised: minus the view's activation plus the penalty


@dataclass(frozen=True)
class FeatureVisResult:
    """The best image found (CPU, (1, C, H, W) in [0, 1]) and what it took."""

    x: torch.Tensor
    activation: float
    iterations: int
    time_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    curve: tuple[float, ...] = ()  # the clean image's activation at every iteration

    def picture(self) -> np.ndarray:
        """(H, W) grey or (H, W, 3) colour float image for display."""
        arr = self.x[0].numpy()
        return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


class FeatureVisRun:
    """One feature visualisation, iterated step by step: `for event in run: ...`, and `run.result()` at any
    time (also after breaking out of the loop) for the best image so far."""

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        direction: np.ndarray | torch.Tensor,
        shape: tuple[int, int, int],
        settings: Settings,
        init: torch.Tensor | None = None,
    ) -> None:
        """`init`: a start image (C, H, W) in [0, 1] for the pixel parameterisation (default: grey + noise)."""
        _check(settings, shape)
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.model, self.module, self.settings = model, module, settings
        self.direction = torch.tensor(np.asarray(direction, dtype=np.float32), device=self.device)
        if not torch.isfinite(self.direction).all() or float(self.direction.norm()) == 0:
            raise InvalidParameterError("The direction must be finite and non-zero.")
        self.generator = torch.Generator().manual_seed(settings.seed)
        if settings.parameterisation == "pixels":
            self.image: nn.Module = _Pixels(
                shape, self.generator, None if init is None else init.cpu().float()
            )
        else:
            self.image = _Fourier(shape, self.generator, settings.decay)
        self.image.to(self.device)
        self.optimiser = torch.optim.Adam(self.image.parameters(), lr=settings.lr)
        self.best_x: torch.Tensor | None = None
        self.best_activation = -math.inf
        self.curve: list[float] = []
        self.iterations = 0
        self.time_s = 0.0
        self.stopped = False

    def _step(self) -> FeatureVisEvent:
        x = self.image()
        view = _transform(x, self.settings, self.generator)
        acts = units_at(self.model, self.module, torch.cat([x.detach(), view])) @ self.direction
        activation, gain = float(acts[0].detach()), acts[1]
        loss = -gain
        if self.settings.smoothness > 0:
            loss = loss + self.settings.smoothness * gain.detach().abs() * total_variation(x)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if activation > self.best_activation:
            self.best_x, self.best_activation = x.detach(), activation
        self.curve.append(activation)
        return FeatureVisEvent(
            self.iterations, x.detach(), activation, self.best_x, self.best_activation, float(loss.detach())
        )

    @property
    def finished(self) -> bool:
        return self.stopped or self.iterations >= self.settings.steps

    def stop(self) -> None:
        """End the run early; `result()` keeps the best image found so far."""
        self.stopped = True

    def __iter__(self) -> Iterator[FeatureVisEvent]:
        """Steps until the run is finished or stopped; iterating again after a break resumes it."""
        while not self.finished:
            start = time.perf_counter()
            with torch.enable_grad():
                event = self._step()
            self.time_s += time.perf_counter() - start
            self.iterations += 1
            yield event

    def result(self) -> FeatureVisResult:
        """The best image so far (before the first step: the initial image, evaluated now)."""
        if self.best_x is None:
            with torch.no_grad():
                x = self.image().detach()
                self.best_x = x
                self.best_activation = float(units_at(self.model, self.module, x)[0] @ self.direction)
        return FeatureVisResult(
            x=self.best_x.cpu(),
            activation=self.best_activation,
            iterations=self.iterations,
            time_s=self.time_s,
            settings=self.settings.as_dict(),
            curve=tuple(self.curve),
        )


def start(
    model_name: str,
    layer: str,
    direction: np.ndarray,
    settings: Settings | None = None,
    model: nn.Module | None = None,
    device: torch.device | str | None = None,
    held_out: tuple[ImageSet, np.ndarray] | None = None,
) -> FeatureVisRun:
    """A feature visualisation of `direction` in `layer` of a zoo model, ready to iterate.

    With `held_out` (the held-out images and their activations in `layer`), the pixel parameterisation starts
    from the mean of the direction's top-9 held-out images plus seeded noise: from grey noise, ReLU units
    that are silent on it get no gradient and never move (7 of the 74 live units of cnn fc1)."""

    check_layer(model_name, layer)
    spec = get_spec(model_name)
    model = model if model is not None else load(model_name, device)
    settings = settings or default_settings(spec.dataset)
    init = None
    if held_out is not None and settings.parameterisation == "pixels":
        images, acts = held_out
        init = images.pixels(top_k(acts, direction, min(START_K, len(acts))).indices).mean(dim=0)
    module = layer_modules(model, model_name)[layer]
    return FeatureVisRun(model, module, direction, spec.input_shape, settings, init)
