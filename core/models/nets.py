"""The paper's MNIST architectures (Section 4.1) and a small CNN, all taking [0, 1] pixels (N, 1, 28, 28)."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """FC10(lambda): a linear softmax classifier; lambda is the weight decay it is trained with."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x.flatten(1))


class SigmoidMLP(nn.Module):
    """FC<h1>-<h2>-10: fully connected sigmoid hidden layers (the paper's; `activation=nn.ReLU` gives the
    ReLU twins that exact verification can solve), then a linear softmax layer."""

    def __init__(
        self, hidden: tuple[int, ...] = (100, 100), activation: type[nn.Module] = nn.Sigmoid
    ) -> None:
        super().__init__()
        sizes = (28 * 28, *hidden)
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), activation()) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = nn.Linear(sizes[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)


class AutoencoderClassifier(nn.Module):
    """AE400-10: the sigmoid code of a 400-unit autoencoder, then softmax. The decoder is only
    needed for pre-training and lives in the training code, not in the checkpoint."""

    def __init__(self, code: int = 400) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(28 * 28, code), nn.Sigmoid())
        self.out = nn.Linear(code, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(x.flatten(1)))


class SmallCNN(nn.Module):
    """A small convolutional net (two 3x3 conv + pool blocks, one hidden FC layer) for unit analysis."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.fc1 = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc1(self.conv2(self.conv1(x))))


class StridedCNN(nn.Module):
    """Two 4x4 stride-2 convolutions and one hidden FC layer (the MNIST net of Wong, Rice, Kolter 2020,
    twice as wide): cheap enough to train adversarially, and to attack with AutoAttack, on a CPU."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, channels[0], 4, 2, 1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(channels[0], channels[1], 4, 2, 1), nn.ReLU())
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(channels[1] * 7 * 7, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc1(self.conv2(self.conv1(x))))


class Normalized(nn.Module):
    """Folds a classifier's input normalisation into the model, so that it takes [0, 1] pixels."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
