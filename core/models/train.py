"""Plain training loops for the MNIST zoo (torchvision-references style), writing a checkpoint and a card."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core import config
from core.attacks import norms
from core.data import load_mnist, split_fingerprint
from core.errors import InvalidParameterError
from core.models.sources import checksum
from core.models.spec import ModelSpec, TrainConfig
from core.models.zoo import MNIST_MODELS, checkpoint_path, load_checkpoint
from core.provenance import versions
from core.runtime import bar_disabled


@torch.no_grad()
def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Share of misclassified images, computed in batches on the model's device."""
    device = next(model.parameters()).device
    wrong = 0
    for i in range(0, len(labels), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        wrong += (logits.argmax(1).cpu() != labels[i : i + batch_size]).sum().item()
    return wrong / max(len(labels), 1)


class TrainingLoss(Protocol):
    """A loss other than cross-entropy: called with (model, images, labels, progress in [0, 1]);
    `record` says what it is, for the card."""

    record: dict

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> torch.Tensor: ...


WEIGHT_DECAY_FORM = "loss = mean cross-entropy + weight_decay / 2 * sum of squared weights (no biases)"


def weight_decay_loss(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """weight_decay / 2 * sum of squared weights (matrices and kernels, not biases): the paper's weight
    decay, as every training here adds it to the mean cross-entropy (WEIGHT_DECAY_FORM)."""
    return 0.5 * weight_decay * _l2_penalty(model)


def _l2_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of squared weights (matrices and kernels, not biases)."""
    return sum((p**2).sum() for name, p in model.named_parameters() if p.dim() > 1)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def _pretrain_autoencoder(
    model: nn.Module, x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator, device, progress: bool
) -> None:
    """Greedy pre-training of AE400-10's encoder: reconstruct the input through a tied-size decoder."""
    decoder = nn.Sequential(nn.Linear(model.out.in_features, 28 * 28), nn.Sigmoid()).to(device)
    params = [*model.encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in tqdm(
        range(cfg.pretrain_epochs),
        desc="autoencoder pre-training",
        leave=False,
        disable=bar_disabled(progress),
    ):
        for idx in _batches(len(x), cfg.batch_size, gen):
            xb = x[idx].flatten(1)
            code = model.encoder(xb)
            loss = F.binary_cross_entropy(decoder(code), xb) + 1e-3 * code.mean()  # light sparsity
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float, gen: torch.Generator
) -> torch.Tensor:
    """The batch the adversary of `cfg` makes: a uniform start in the Linf eps-ball, then `adv_steps`
    signed steps of `adv_step` on the cross-entropy, each projected back (FGSM-RS is the one-step case)."""
    step = cfg.adv_step * eps / cfg.eps  # the step keeps its ratio to eps while eps warms up
    z = norms.random_start(x, eps, "linf", gen)
    for _ in range(cfg.adv_steps):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(z), y), z)
        z = norms.project(z.detach() + step * grad.sign(), x, eps, "linf")
    return z.detach()


MONITOR = {"images": 1000, "steps": 10}  # PGD-10 on the first training images, after every epoch


def _monitor_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> float:
    """Robust accuracy under PGD-10 at the full eps on a fixed slice of the training set: the best epoch
    is kept, so catastrophic overfitting (FGSM training's collapse to ~0 robust accuracy) cannot stick."""
    pgd = dataclasses.replace(cfg, adv_steps=MONITOR["steps"], adv_step=2.5 * cfg.eps / MONITOR["steps"])
    model.eval()
    xb, yb = x[: MONITOR["images"]], y[: MONITOR["images"]]
    z = adversarial_batch(model, xb, yb, pgd, cfg.eps, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(z).argmax(1) == yb).float().mean().item()


def _epoch_eps(cfg: TrainConfig, epoch: int, batch: int, batches: int) -> float:
    if not cfg.eps_warmup_epochs:
        return cfg.eps
    return cfg.eps * min((epoch + batch / batches) / cfg.eps_warmup_epochs, 1.0)


def _initial_model(spec: ModelSpec, cfg: TrainConfig, device) -> tuple[nn.Module, dict]:
    """A fresh model, or (cfg.init) the checkpoint of the zoo model it fine-tunes, with that checkpoint's
    identity for the card, so a fine-tuned card names exactly what it started from."""
    model = spec.build()
    if not cfg.init:
        return model.to(device), {}
    path = checkpoint_path(cfg.init)
    load_checkpoint(model, path, MNIST_MODELS[cfg.init].make_command)
    return model.to(device), {
        "model": cfg.init,
        "checkpoint_sha256": checksum(path.read_bytes()),
    }


def train(
    name: str,
    epochs: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: torch.device | str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    loss_fn: TrainingLoss | None = None,
) -> dict:
    """Train zoo model `name` (from scratch, or from the checkpoint its spec names as `init`); write
    <out>/<name>.pt and <name>.json; return the card. `loss_fn` replaces the cross-entropy (certified
    training: models cannot import core.certify, so `intriguing train` passes core.certify.training's loss
    for a spec with `certified_eps`)."""
    if name not in MNIST_MODELS:
        raise InvalidParameterError(f"`train` knows the MNIST zoo only: {', '.join(MNIST_MODELS)}.")
    spec: ModelSpec = MNIST_MODELS[name]
    if not spec.trainable:
        raise InvalidParameterError(
            f"{name} is not trained by `intriguing train`; make it with `{spec.make_command}`."
        )
    cfg = spec.train if epochs is None else dataclasses.replace(spec.train, epochs=epochs)
    if cfg.certified_eps and loss_fn is None:
        raise InvalidParameterError(f"{name} is certifiably trained: train it with `{spec.make_command}`.")
    if cfg.epochs < 0 or cfg.pretrain_epochs < 0:
        raise InvalidParameterError("epochs must be >= 0.")
    device = torch.device(device) if device is not None else config.default_device()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    data = load_mnist(cfg.subset, data_dir)
    x, y = data.images.to(device), data.labels.to(device)
    model, init = _initial_model(spec, cfg, device)
    start = time.perf_counter()
    if cfg.pretrain_epochs:
        _pretrain_autoencoder(model, x, cfg, gen, device, progress)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches_per_epoch = math.ceil(len(y) / cfg.batch_size)
    total = max(cfg.epochs * batches_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))
    )
    bar = tqdm(range(cfg.epochs), desc=f"training {name}", disable=bar_disabled(progress))
    step = 0
    monitor, best = [], None
    for epoch in bar:
        model.train()
        for b, idx in enumerate(_batches(len(y), cfg.batch_size, gen)):
            xb = x[idx]
            if cfg.noise_sigma:  # Cohen et al.'s Gaussian augmentation, unclipped like their noise
                xb = xb + cfg.noise_sigma * torch.randn(xb.shape, device=device)
            if cfg.adversary:
                xb = adversarial_batch(
                    model, xb, y[idx], cfg, _epoch_eps(cfg, epoch, b, batches_per_epoch), gen
                )
            if loss_fn is None:
                loss = F.cross_entropy(model(xb), y[idx])
            else:
                loss = loss_fn(model, xb, y[idx], step / total)
            step += 1
            if cfg.weight_decay:
                loss = loss + weight_decay_loss(model, cfg.weight_decay)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.adversary:
            monitor.append(round(_monitor_accuracy(model, x, y, cfg), 4))
            if best is None or monitor[-1] >= max(monitor[:-1], default=0.0):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.4f}", robust=monitor[-1])
    if best is not None:
        model.load_state_dict(best)
    train_time = time.perf_counter() - start

    model.eval()
    errors = {f"{cfg.subset}_error" if cfg.subset != "train" else "train_error": error_rate(model, x, y)}
    for split in ("train", "test", "p1", "p2"):
        key = f"{split}_error"
        if key not in errors:
            other = load_mnist(split, data_dir)
            errors[key] = error_rate(model, other.images, other.labels)

    out_dir = Path(out) if out else config.model_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt)
    card = {
        "name": name,
        "architecture": spec.architecture,
        "dataset": "mnist",
        "subset": cfg.subset,
        "subset_fingerprint": split_fingerprint(data.indices),
        "n_train": len(y),
        "hyperparameters": dataclasses.asdict(cfg),
        "weight_decay_form": WEIGHT_DECAY_FORM,
        **({"training_loss": loss_fn.record} if loss_fn is not None else {}),
        **({"init": init} if init else {}),
        **(
            {
                "adversarial_monitor": {
                    **MONITOR,
                    "attack": "pgd, linf, full eps, random start",
                    "robust_accuracy_per_epoch": monitor,
                    "kept_epoch": max(range(len(monitor)), key=lambda i: (monitor[i], i)) + 1,
                }
            }
            if cfg.adversary
            else {}
        ),
        "seed": seed,
        **{k: round(v, 6) for k, v in errors.items()},
        "paper": spec.paper,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_time_s": round(train_time, 1),
        "device": str(device),
        "checkpoint_sha256": checksum(ckpt.read_bytes()),
        "versions": versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
