"""The adaptive check of a certificate: PGD on the smoothed classifier itself (SmoothAdv, Salman et al. 2019).

The loss is the cross-entropy of the noise-averaged softmax, -log mean_j softmax(f(x' + d_j))[y], so each
step climbs the gradient of the expectation over noise, not of the bare network; steps are L2-normalised and
x' stays in the L2 ball of radius eps around x and in [0, 1]. Whether x' fools the smoothed classifier is
then decided by PREDICT with fresh noise, not by the attack's own samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.checks import check_float, check_int
from core.smoothing.certify import model_device


def smooth_pgd(
    model: nn.Module,
    x: torch.Tensor,
    label: int,
    eps: float,
    sigma: float,
    steps: int = 20,
    noise_samples: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """An image within L2 distance eps of x (C, H, W) that lowers the smoothed probability of `label`."""
    eps = check_float("eps", eps, low=0.0)
    steps = check_int("steps", steps, low=1)
    device = model_device(model)
    x = x.to(device)
    step_size = 2.5 * eps / steps  # Madry et al.'s rule: the ball's diameter is reachable in `steps`
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        noise = torch.randn((noise_samples, *x.shape), generator=generator, device=device)
        probs = F.softmax(model(adv.unsqueeze(0) + sigma * noise), dim=1).mean(0, keepdim=True)
        loss = -probs[0, int(label)].clamp_min(1e-12).log()
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step_size * grad / grad.norm().clamp_min(1e-12)
            delta = adv - x
            delta = delta * (eps / delta.norm().clamp_min(1e-12)).clamp(max=1.0)
            adv = (x + delta).clamp(0.0, 1.0)
    return adv.detach()
