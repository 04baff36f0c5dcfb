"""Certified training: the IBP loss of Gowal et al. (2019), handed to `core.models.train.train` for zoo
models whose spec sets `certified_eps` (the models layer cannot import this one).

loss = kappa * CE(clean logits) + (1 - kappa) * CE(worst-case logits), the worst case taken from IBP's lower
bounds on the margins over the Linf ball. After a clean warm-up, eps ramps linearly from 0 to the target
and kappa from 1 to 1/2 (their schedule, shortened to the zoo's CPU budget)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.certify.bounds import Ball, Network, ibp_margins
from core.models.zoo import MNIST_MODELS

WARMUP = 0.05  # share of training steps on clean data only
RAMP_END = 0.5  # eps and kappa reach their final values here


class IBPLoss:
    """The loss for one target budget `eps` (a `core.models.train.TrainingLoss`)."""

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.record = {
            "method": "IBP (Gowal et al. 2019)",
            "eps": eps,
            "norm": "linf",
            "warmup_share": WARMUP,
            "ramp_end_share": RAMP_END,
            "kappa": "1 -> 0.5",
        }

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        ramp = min(max((progress - WARMUP) / (RAMP_END - WARMUP), 0.0), 1.0)
        clean = F.cross_entropy(model(x), y)
        if ramp == 0.0:
            return clean
        kappa = 1.0 - 0.5 * ramp
        margins = ibp_margins(Network.from_module(model), Ball(x, self.eps * ramp, "linf"), y)
        robust = F.cross_entropy(-margins, y)  # worst-case logits: z_j - z_y bounded above by -margin_j
        return kappa * clean + (1 - kappa) * robust


def loss_for(name: str) -> IBPLoss | None:
    """The certified-training loss a zoo model is trained with, or None for plain cross-entropy."""
    spec = MNIST_MODELS.get(name)
    eps = spec.train.certified_eps if spec is not None and spec.train is not None else 0.0
    return IBPLoss(eps) if eps else None
