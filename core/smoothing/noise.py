"""Noisy copies of one image for the vote counts, drawn as cheaply as the network allows.

When the network opens with Flatten then Linear (W, b) into fewer units than pixels, the first layer sees
W (x + sigma d) + b = (W x + b) + sigma W d with d ~ N(0, I): a Gaussian with covariance sigma^2 W W^T. Drawing
it as (W x + b) + sigma L e with L L^T = W W^T (Cholesky) and e ~ N(0, I) in the layer's width has exactly that
distribution, so the votes, and the certificate, are those of the full network under pixel noise, while the
draw and the first product shrink from pixels to units (784 to 256 on the smoothing MLP: about half the time).
Any other network gets the pixel noise itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NoisePath:
    """Noisy input = mean + noise @ factor.T with noise ~ N(0, I) of `shape` (factor None: sigma * noise),
    fed to `rest`, the part of the network after where the noise is drawn."""

    mean: torch.Tensor
    factor: torch.Tensor | None
    sigma: float
    rest: nn.Module

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def draw(self, noise: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Fill `noise` from N(0, I) beforehand; returns the noisy inputs (in `out`, or in `noise` itself)."""
        if self.factor is None:
            return noise.mul_(self.sigma).add_(self.mean)
        return torch.addmm(self.mean, noise, self.factor.T, out=out)


def opening_affine(model: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """(first Linear, the rest) when `model` is Sequential(Flatten, Linear narrower than its input, ...)."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    flatten, linear = model[0], model[1]
    if not (isinstance(flatten, nn.Flatten) and flatten.start_dim == 1 and flatten.end_dim == -1):
        return None
    if not isinstance(linear, nn.Linear) or linear.out_features >= linear.in_features:
        return None
    return linear, model[2:]


@torch.inference_mode()
def noise_path(model: nn.Module, x: torch.Tensor, sigma: float) -> NoisePath:
    """Where and how to draw the noise for image x on this model (see the module docstring)."""
    opening = opening_affine(model)
    if opening is not None:
        linear, rest = opening
        weight = linear.weight.double()
        chol, info = torch.linalg.cholesky_ex(weight @ weight.T)
        if int(info) == 0:  # W of full row rank: W W^T is positive definite
            mean = linear(x.reshape(1, -1).to(linear.weight.dtype))[0]
            return NoisePath(mean, (sigma * chol).to(mean.dtype), sigma, rest)
    return NoisePath(x, None, sigma, model)
