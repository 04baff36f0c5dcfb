"""The paper's control: random Gaussian noise of the same RMS distortion as an adversarial example, and
what it does to the model (Table 1 'distortion' vs. 'Gaussian noise' columns)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from core.attacks.base import Attack, AttackEvent, AttackResult, AttackRun, check_float, check_int
from core.errors import InvalidParameterError


class GaussianNoise(Attack):
    """x + N(0, rms^2) per pixel, clipped to [0, 1] (clipping can lower the realised RMS; the result
    reports the realised one). `rms` is one number or one per image. Success = the prediction changed."""

    name = "gaussian_noise"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        *,
        rms: float | torch.Tensor = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(model, device)
        if isinstance(rms, torch.Tensor) and rms.dim() > 0:
            if not torch.isfinite(rms).all() or (rms < 0).any() or (rms > 1).any():
                raise InvalidParameterError("rms values must be finite and lie in [0, 1].")
            self.rms = rms.detach().float().reshape(-1)
            rms_param: float | list[float] = self.rms.tolist()
        else:
            self.rms = check_float("rms", float(rms), low=0.0, high=1.0)
            rms_param = self.rms
        self.seed = check_int("seed", seed)
        self.params = {"rms": rms_param, "seed": self.seed}

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        x = run.x
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        scale = self.rms
        if isinstance(scale, torch.Tensor):
            if scale.shape[0] != x.shape[0]:
                raise InvalidParameterError(f"{scale.shape[0]} rms values for {x.shape[0]} images.")
            scale = scale.to(x.device).view(-1, *[1] * (x.dim() - 1))
        run.best = (x + scale * noise).clamp(0.0, 1.0)
        yield self._event(run, x, run.clean_logits, torch.zeros(len(x), device=x.device))


def gaussian_noise_baseline(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    rms: float | torch.Tensor,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AttackResult:
    """Gaussian noise of RMS `rms` (a number or one per image, e.g. `result.rms` of an attack); returns an
    AttackResult whose `success` marks images whose prediction the noise changed away from `labels`."""
    return GaussianNoise(model, device, rms=rms, seed=seed).run(x, labels)
