"""What a zoo entry is (`ModelSpec`) and how a trainable one is fitted (`TrainConfig`): plain records that
the zoo (core.models.zoo), the ImageNet classifiers (core.models.imagenet) and training share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """How `intriguing train` fits a model; recorded verbatim in its card."""

    subset: str = "train"  # train | p1 | p2
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 penalty: loss += weight_decay / 2 * sum(W**2) over weight matrices
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    pretrain_epochs: int = 0  # autoencoder pre-training (AE400-10 only)
    noise_sigma: float = 0.0  # Gaussian data augmentation in [0, 1] pixels, unclipped (randomized smoothing)
    certified_eps: float = (
        0.0  # > 0: IBP training at this Linf budget (core.certify.training supplies the loss)
    )
    # Adversarial training (cnn-fgsm-rs, cnn-robust): every batch is replaced by its adversarial examples, Linf.
    adversary: str = ""  # "" (clean) | "fgsm-rs" (Wong, Rice, Kolter 2020) | "pgd" (Madry et al. 2018)
    eps: float = 0.0  # the adversary's Linf budget
    adv_step: float = 0.0  # its absolute step size (FGSM-RS: 1.25 * eps)
    adv_steps: int = 1  # its gradient steps (FGSM-RS: 1)
    eps_warmup_epochs: int = 0  # eps grows linearly from 0 over these epochs
    init: str = ""  # fine-tuning: start from this zoo model's checkpoint instead of a fresh initialisation


TRAIN_COMMAND = "intriguing train"


@dataclass(frozen=True)
class ModelSpec:
    """What a zoo entry is: how to build it, which layers to look inside, what the paper reported."""

    name: str
    dataset: str  # "mnist" or "imagenet"
    architecture: str
    build: Callable[[], nn.Module]
    layers: dict[str, str]  # readable name -> dotted module path whose output is that layer's activation
    train: TrainConfig | None = None
    paper: dict[str, float] = field(default_factory=dict)  # the paper's reported numbers
    description: str = ""
    trained_by: str = TRAIN_COMMAND  # the command that makes its checkpoint
    origin: str = "zoo"  # "zoo" or "registered" (the user's own model, core/models/registry.py)
    shape: tuple[int, int, int] | None = None  # a registered model's input, from its card
    classes: tuple[str, ...] = ()  # a registered model's class names, from its card

    @property
    def trainable(self) -> bool:
        """Made by `intriguing train` (the adversarially trained twins come from `reproduce advtrain`)."""
        return self.trained_by == TRAIN_COMMAND and self.origin == "zoo"

    @property
    def make_command(self) -> str:
        """The full command line that writes this model's checkpoint."""
        return f"{TRAIN_COMMAND} {self.name}" if self.trainable else self.trained_by

    @property
    def preset_domain(self) -> str:
        """Which attack presets fit it (core/attacks/spec.py knows mnist and imagenet): a registered
        model's by its input size (small images: MNIST's; photos: ImageNet's lighter ones)."""
        if self.dataset in ("mnist", "imagenet"):
            return self.dataset
        c, h, w = self.input_shape
        return "mnist" if c * h * w <= 3 * 64 * 64 else "imagenet"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.shape is not None:
            return self.shape
        return (1, 28, 28) if self.dataset == "mnist" else (3, 224, 224)
