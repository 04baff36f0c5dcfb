"""The peer libraries, each set up to do exactly what ours does, as a zero-argument callable to time.

Peers live in the venv made by benchmarks/setup_peers.sh; `available()` says which ones import here. Every
builder returns `(run, summarize)`: `run()` performs the attack once (the timed part) and returns the
adversarial batch; `summarize(x_adv)` gives success and L2 per image from a fresh forward pass (untimed).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable

import torch
from torch import nn

PEERS = ("torchattacks", "foolbox", "art")


def _shim_advertorch() -> None:
    """advertorch 0.2.3 imports `zero_gradients`, removed from torch in 1.9, in a module we do not use
    (its FAB attack). Supplying a stand-in there lets the package import; LBFGSAttack does not call it."""
    gradcheck = importlib.import_module("torch.autograd.gradcheck")
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = lambda x: None  # type: ignore[attr-defined]


def available() -> dict[str, str]:
    """{peer: version or why it is unavailable} for torchattacks, foolbox, art and advertorch."""
    status = {}
    for peer, module, dist in (
        ("torchattacks", "torchattacks", "torchattacks"),
        ("foolbox", "foolbox", "foolbox"),
        ("art", "art", "adversarial-robustness-toolbox"),
        ("advertorch", "advertorch.attacks", "advertorch"),
    ):
        try:
            if peer == "advertorch":
                _shim_advertorch()
            importlib.import_module(module)
            status[peer] = importlib.metadata.version(dist)
        except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable", with the reason
            status[peer] = (
                f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"
            )
    return status


def usable(status: dict[str, str], peer: str) -> bool:
    """True when `available()` gave a version for this peer (not a reason it is missing or skipped)."""
    return status.get(peer, "")[:1].isdigit()


def verify(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, x_adv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Success (untargeted) by a fresh forward pass on the clipped batch, and each image's L2 distortion."""
    x_adv = x_adv.detach().to(x.device, torch.float32).clamp(0, 1)
    with torch.no_grad():
        success = model(x_adv).argmax(1) != labels
    return success, (x_adv - x).flatten(1).norm(dim=1)


# ---------------------------------------------------------------- Linf PGD and FGSM


def pgd(
    peer: str, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float, step: float, steps: int
) -> Callable[[], torch.Tensor]:
    """Untargeted Linf PGD on the cross-entropy loss, sign-gradient steps, no random start."""
    if peer == "torchattacks":
        import torchattacks

        attack = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=False)
        return lambda: attack(x, labels)
    if peer == "foolbox":
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        attack = fb.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=False)
        return lambda: attack(fmodel, x, labels, epsilons=eps)[1]
    if peer == "art":
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch

        attack = ProjectedGradientDescentPyTorch(
            _art_classifier(model, x), norm=np.inf, eps=eps, eps_step=step, max_iter=steps,
            num_random_init=0, batch_size=len(x), verbose=False,
        )  # fmt: skip
        x_np, y_np = x.cpu().numpy(), labels.cpu().numpy()
        return lambda: torch.from_numpy(attack.generate(x_np, y_np))
    raise ValueError(peer)


def fgsm(
    peer: str, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float
) -> Callable[[], torch.Tensor]:
    """Untargeted FGSM on the cross-entropy loss."""
    if peer == "torchattacks":
        import torchattacks

        attack = torchattacks.FGSM(model, eps=eps)
        return lambda: attack(x, labels)
    if peer == "foolbox":
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        attack = fb.attacks.FGSM(random_start=False)
        return lambda: attack(fmodel, x, labels, epsilons=eps)[1]
    if peer == "art":
        import numpy as np
        from art.attacks.evasion import FastGradientMethod

        attack = FastGradientMethod(_art_classifier(model, x), norm=np.inf, eps=eps, batch_size=len(x))
        x_np, y_np = x.cpu().numpy(), labels.cpu().numpy()
        return lambda: torch.from_numpy(attack.generate(x_np, y_np))
    raise ValueError(peer)


def _art_classifier(model: nn.Module, x: torch.Tensor):
    from art.estimators.classification import PyTorchClassifier

    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    return PyTorchClassifier(
        model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=classes,
        clip_values=(0.0, 1.0), device_type="cpu" if x.device.type == "cpu" else "gpu",
    )  # fmt: skip


# ---------------------------------------------------------------- C&W L2


def cw_l2(
    peer: str,
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    binary_search_steps: int,
    steps: int,
    lr: float,
    initial_const: float,
    confidence: float = 0.0,
) -> Callable[[], torch.Tensor]:
    """Untargeted Carlini-Wagner L2 (Adam in tanh space). torchattacks has no search over c: it runs one
    round at c = initial_const, so it is only offered when binary_search_steps == 1."""
    if peer == "torchattacks":
        import torchattacks

        if binary_search_steps != 1:
            raise ValueError("torchattacks' CW has no binary search over c")
        attack = torchattacks.CW(model, c=initial_const, kappa=confidence, steps=steps, lr=lr)
        return lambda: attack(x, labels)
    if peer == "foolbox":
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        attack = fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=binary_search_steps, steps=steps, stepsize=lr, confidence=confidence,
            initial_const=initial_const, abort_early=True,
        )  # fmt: skip
        return lambda: attack(fmodel, x, labels, epsilons=None)[1]
    raise ValueError(peer)


# ---------------------------------------------------------------- the paper's L-BFGS (advertorch)


def advertorch_lbfgs(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    binary_search_steps: int,
    max_iterations: int,
    initial_const: float,
) -> Callable[[], torch.Tensor]:
    """advertorch's LBFGSAttack is targeted and takes one target per image; the paper's attack is the
    minimum over all wrong targets, so this runs it once per target class and keeps the smallest success."""
    _shim_advertorch()
    from advertorch.attacks import LBFGSAttack

    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    attack = LBFGSAttack(
        model, num_classes=classes, batch_size=len(x), binary_search_steps=binary_search_steps,
        max_iterations=max_iterations, initial_const=initial_const, targeted=True,
    )  # fmt: skip

    def run() -> torch.Tensor:
        best = x.clone()
        best_l2 = torch.full((len(x),), float("inf"))
        for shift in range(1, classes):
            target = (labels + shift) % classes
            x_adv = attack.perturb(x, target)
            with torch.no_grad():
                hit = model(x_adv).argmax(1) == target
            l2 = (x_adv - x).flatten(1).norm(dim=1)
            better = hit & (l2 < best_l2)
            best[better], best_l2[better] = x_adv[better], l2[better]
        return best

    return run


if __name__ == "__main__":  # `python benchmarks/peers.py`: which peers import in this interpreter
    print(sys.executable)
    for name, version in available().items():
        print(f"{name:14s} {version}")
