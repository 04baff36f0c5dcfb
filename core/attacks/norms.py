"""Per-norm geometry shared by PGD, APGD, Square and adversarial training (Foolbox 3 style: one helper per
norm, explicit bounds): the norm of each image, a unit-norm step direction, projection onto the eps-ball
around x, and a uniform random start inside it. Images are (N, ...) batches; everything is per image."""

from __future__ import annotations

import torch

from core.attacks.base import l2_norm, linf_norm

NORMS = ("linf", "l2")


def per_image(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A length-N vector shaped to broadcast over (N, ...) images."""
    return v.view(-1, *[1] * (like.dim() - 1))


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Each image's Linf or L2 norm."""
    return linf_norm(delta) if norm == "linf" else l2_norm(delta)


def normalise(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(grad) for Linf, grad / ||grad||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / per_image(l2_norm(grad).clamp_min(1e-12), grad)


def project(z: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """z moved onto the eps-ball around x (Linf: clip; L2: rescale), then clipped to the box [0, 1]."""
    if norm == "linf":
        return torch.min(torch.max(z, x - eps), x + eps).clamp(0.0, 1.0)
    r = z - x
    r = r * per_image((eps / l2_norm(r).clamp_min(1e-12)).clamp(max=1.0), x)
    return (x + r).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A uniform random point of the eps-ball around x (drawn on the CPU with `gen`, so a seed gives the
    same start on any device), clipped to the box."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=gen)
        direction = direction / per_image(l2_norm(direction).clamp_min(1e-12), x)
        radius = torch.rand(len(x), generator=gen) ** (1.0 / x[0].numel()) * eps
        delta = direction * per_image(radius, x)
    return (x + delta.to(x.device)).clamp(0.0, 1.0)
