"""The paper's control: random Gaussian noise of the same RMS distortion as an adversarial example, and
what it does to the model (Table 1 'distortion' vs. 'Gaussian noise' columns)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from core.attacks.base import Attack, AttackEvent, AttackResult, AttackRun
from core.attacks.spec import Param, seed_param
from core.checks import check_float
from core.errors import InvalidParameterError


class GaussianNoise(Attack):
    """Gaussian noise, clipped to [0, 1]. `rms` is one number or one per image. With `exact=True` (default)
    the noise is scaled per image so that the clipped perturbation has exactly that RMS: on MNIST, where most
    pixels sit at 0, clipping otherwise removes about half of it and the control would be unfairly weak.
    With `exact=False`, `rms` is the standard deviation before clipping (the paper's 'stddev' rows).
    Success = the prediction changed.

    Args:
        model: a classifier returning logits, on its device.
        rms, exact, seed: as above (see PARAMS).

    Shape:
        - x: (N, C, H, W) in [0, 1]; labels: (N,) ints; target: None, an int or (N,) ints.
        - result.x_adv: (N, C, H, W) in [0, 1], re-verified by a fresh forward pass.

    Example:
        >>> result = gaussian_noise_baseline(model, x, labels, rms=0.1, seed=0)
    """

    name = "gaussian_noise"
    supports_targeted = False

    PARAMS = (
        seed_param("noise"),
        Param("exact", bool, True, "Exact RMS", "Scale so the clipped noise has the RMS."),
    )
    seed: int
    exact: bool

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        *,
        rms: float | torch.Tensor = 0.1,
        **params: Any,
    ) -> None:
        """`rms` is one number or a tensor with one per image, so it is checked here, not by the spec."""
        super().__init__(model, device, **params)
        if isinstance(rms, torch.Tensor) and rms.dim() > 0:
            if not torch.isfinite(rms).all() or (rms < 0).any() or (rms > 1).any():
                raise InvalidParameterError("rms values must be finite and lie in [0, 1].")
            self.rms = rms.detach().float().reshape(-1)
            rms_param: float | list[float] = self.rms.tolist()
        else:
            self.rms = check_float("rms", float(rms), low=0.0, high=1.0)
            rms_param = self.rms
        self.params = {"rms": rms_param, **self.params}

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        x = run.x
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        scale = self.rms
        if isinstance(scale, torch.Tensor):
            if scale.shape[0] != x.shape[0]:
                raise InvalidParameterError(f"{scale.shape[0]} rms values for {x.shape[0]} images.")
            scale = scale.to(x.device).view(-1, *[1] * (x.dim() - 1))
        if self.exact:
            scale = clipped_scale(
                x, noise, torch.as_tensor(scale, device=x.device).expand(len(x), *[1] * (x.dim() - 1))
            )
        run.best = (x + scale * noise).clamp(0.0, 1.0)
        yield self._event(run, x, run.clean_logits, torch.zeros(len(x), device=x.device))


def clipped_scale(
    x: torch.Tensor, noise: torch.Tensor, target: torch.Tensor, iters: int = 40
) -> torch.Tensor:
    """Per image, the factor s with rms(clip(x + s * noise) - x) = target, by bisection (the clipped RMS
    grows monotonically with s). Where even a huge s cannot reach the target, the largest reachable."""

    def realised(s: torch.Tensor) -> torch.Tensor:
        r = (x + s * noise).clamp(0.0, 1.0) - x
        return r.flatten(1).pow(2).mean(1).view_as(s)

    goal = target.pow(2)
    lo, hi = torch.zeros_like(target), target.clone()
    for _ in range(30):  # grow hi until it overshoots (clipping only ever shrinks the RMS)
        short = realised(hi) < goal
        if not short.any():
            break
        hi = torch.where(short, hi * 2, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = realised(mid) < goal
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return hi


def gaussian_noise_baseline(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    rms: float | torch.Tensor,
    seed: int = 0,
    device: torch.device | str | None = None,
    exact: bool = True,
) -> AttackResult:
    """Gaussian noise of RMS `rms` after clipping (a number or one per image, e.g. `result.rms` of an attack;
    `exact=False`: `rms` is the standard deviation before clipping); returns an AttackResult whose `success`
    marks images whose prediction the noise changed away from `labels`."""
    return GaussianNoise(model, device, rms=rms, seed=seed, exact=exact).run(x, labels)
