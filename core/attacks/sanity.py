"""What about a model makes an attack's number untrustworthy, tested and worded once for both readers:
AutoAttack's warnings (core.attacks.autoattack) and the indicators of attack failure
(core.evaluation.indicators). Outputs that are probabilities, a randomised model, a zero or non-finite
gradient, and (read from a run) a gradient-free attack beating the gradient ones."""

from __future__ import annotations

import torch
from torch import nn

from core.attacks.square import margin

MEANINGS = {
    "masked_gradient": "The loss gradient at the clean image is zero or not finite: gradient attacks get no "
    "direction (masked or shattered gradients).",
    "softmax_output": "The model's outputs sum to 1: it returns probabilities, not logits, so the "
    "cross-entropy saturates and its gradient vanishes.",
    "randomised_model": "Two forward passes of the same image differ: the model is randomised, and one run's "
    "number does not hold for it.",
    "black_box_beats_white_box": "A gradient-free attack (Square) or examples made on an undefended twin fool "
    "images the gradient attack failed on, at the same budget: the gradient misled the attack.",
}
REMEDIES = {
    "softmax_output": "Attack the logits: remove the model's final softmax.",
    "randomised_model": "Attack it with EOT (expectation over transformation): average each gradient over "
    "many forward passes, as AutoAttack's `rand` version does (20).",
}


def _margin_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor):
    """The model's output at x and the gradient of each image's margin (None: the output ignores x)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.enable_grad():
        z = x.detach().to(device).requires_grad_(True)
        out = model(z)
        (grad,) = torch.autograd.grad(margin(out, labels.to(device), False).sum(), z, allow_unused=True)
    return z.detach(), out.detach(), grad


def gradient_norms(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L2 norm of each image's margin gradient at x (NaN where it is not finite); one backward pass."""
    return _norms(_margin_gradient(model, x, labels)[2], len(x))


def _norms(grad: torch.Tensor | None, n: int) -> torch.Tensor:
    if grad is None:  # the output does not depend on the input at all
        return torch.zeros(n)
    norms = grad.flatten(1).norm(dim=1).cpu()
    return torch.where(
        torch.isfinite(grad.flatten(1)).all(1).cpu(), norms, torch.full_like(norms, float("nan"))
    )


def model_flags(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image (CPU bools): a zero or non-finite gradient, probability outputs, a randomised model. One
    forward+backward pass and one more forward pass."""
    z, out, grad = _margin_gradient(model, x, labels)
    with torch.no_grad():
        again = model(z)
    sums = out.sum(1)
    return {
        "masked_gradient": ~(_norms(grad, len(x)) > 0),
        "softmax_output": ((sums - 1).abs() <= 1e-4).cpu() & (out >= 0).all(1).cpu(),
        "randomised_model": ~torch.isclose(out, again, rtol=0, atol=1e-5).all(1).cpu(),
    }


def warning(name: str, flags: torch.Tensor) -> str:
    """One check's message for a warning: what it means, on how many images, and what to do."""
    remedy = f" {REMEDIES[name]}" if name in REMEDIES else ""
    return f"{MEANINGS[name]} ({int(flags.sum())} of {len(flags)} images){remedy}"
