"""The evaluation protocol: which images an attack evaluation runs on, written down once.

Every number that compares attacks or models (the CLI's `attack`, the leaderboard's cells, the report's
reference distribution, the reproduction tables, the sweeps) comes from images chosen by a `Protocol`, and
carries its fingerprint, so that two numbers are only ever compared when they were measured the same way.

The rule: walk the split in its own order (or in a seeded random order), and take the first `n` images that
pass the filter. With `correct_only` (the default, and the paper's), an image the model already gets wrong
is never attacked: it would count as an adversarial success at distortion 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from core.checks import check_choice, check_int
from core.data import datasets
from core.errors import InvalidParameterError

ORDERS = ("dataset", "random")
MAX_N = 60_000
PREDICT_BATCH = 2000


@dataclass(frozen=True)
class Protocol:
    """Which images of a dataset (MNIST, or a registered one: core/data/datasets.py) an evaluation attacks.

    `indices`, when given, are the candidates themselves (dataset positions in the split); otherwise the
    split is walked in `order` ('dataset', or 'random' drawn with `seed`). The first `n` candidates that pass
    the filter are attacked (`n=None`: all of them)."""

    split: str = "test"
    n: int | None = 100
    correct_only: bool = True
    order: str = "dataset"
    seed: int = 0
    indices: tuple[int, ...] | None = None
    dataset: str = "mnist"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, tuple(datasets.names()))
        check_choice("split", self.split, datasets.splits(self.dataset))
        check_choice("order", self.order, ORDERS)
        check_int("seed", self.seed)
        if self.n is not None:
            check_int("n", self.n, low=1, high=MAX_N)
        if not isinstance(self.correct_only, bool):
            raise InvalidParameterError(f"correct_only must be true or false, got {self.correct_only!r}.")
        if self.indices is not None:
            if not self.indices:
                raise InvalidParameterError("indices must name at least one image.")
            object.__setattr__(
                self, "indices", tuple(check_int("index", i, high=MAX_N - 1) for i in self.indices)
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["indices"] = None if self.indices is None else list(self.indices)
        return data

    @classmethod
    def for_dataset(cls, dataset: str | None) -> Protocol:
        """The images a domain's cells are filled on before any run chose others: the first 100 correctly
        classified test images; every one of them in a registered dataset too small for 100. MNIST's for a
        domain with no labelled dataset (ImageNet), as before."""
        found = datasets.entry(dataset) if dataset and dataset != "mnist" else None
        if found is None:
            return cls()
        return cls(dataset=dataset, n=cls.n if found.n >= cls.n else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("indices") is not None:
            known["indices"] = tuple(known["indices"])
        return cls(**known)

    @property
    def fingerprint(self) -> str:
        """A short hash of the protocol's fields: equal fingerprints, same rule for choosing images. A user
        dataset's own fingerprint (its files' bytes) is part of it; MNIST's fingerprints are unchanged."""
        data = self.to_dict()
        if self.dataset != "mnist":
            data["data_fingerprint"] = datasets.fingerprint(self.dataset)
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """One line for tables and captions, e.g. 'first 100 correctly classified MNIST test images'."""
        count = "all" if self.n is None else f"{'first ' if self.order == 'dataset' else ''}{self.n}"
        which = "correctly classified " if self.correct_only else ""
        order = f" (random order, seed {self.seed})" if self.order == "random" else ""
        pool = f" among {len(self.indices)} chosen" if self.indices is not None else ""
        data = "MNIST" if self.dataset == "mnist" else self.dataset
        return f"{count} {which}{data} {self.split} images{pool}{order}"

    def candidates(self, split_size: int) -> torch.Tensor:
        """Positions in the split, in the order the filter walks them."""
        if self.indices is not None:
            ids = torch.tensor(self.indices, dtype=torch.long)
            if int(ids.max()) >= split_size:
                raise InvalidParameterError(
                    f"index {int(ids.max())} is beyond the {split_size} {self.split} images."
                )
            return ids
        if self.order == "random":
            return torch.randperm(split_size, generator=torch.Generator().manual_seed(self.seed))
        return torch.arange(split_size)

    def select(self, model: nn.Module, device: torch.device | str | None = None) -> Selection:
        """The images this protocol attacks on `model`; InvalidParameterError if fewer than n qualify. A model
        that declares its `input_shape` (a registered one) gets the dataset's images resized to it."""
        data = datasets.load_split(self.dataset, self.split, getattr(model, "input_shape", None))
        order = self.candidates(len(data))
        want = len(order) if self.n is None else self.n
        chosen: list[torch.Tensor] = []
        preds: list[torch.Tensor] = []
        found = scanned = 0
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        for start in range(0, len(order), PREDICT_BATCH):
            ids = order[start : start + PREDICT_BATCH]
            with torch.no_grad():
                pred = model(data.images[ids].to(dev)).argmax(1).cpu()
            ok = pred == data.labels[ids] if self.correct_only else torch.ones_like(ids, dtype=torch.bool)
            positions = ok.nonzero().squeeze(1)[: want - found]
            chosen.append(ids[positions])
            preds.append(pred[positions])
            found += len(positions)
            if found >= want:
                scanned = start + int(positions[-1]) + 1
                break
            scanned = start + len(ids)
        ids = torch.cat(chosen)
        if self.n is not None and len(ids) < self.n:
            raise InvalidParameterError(
                f"only {len(ids)} of the candidate images qualify ({self.describe()}); lower n."
            )
        return Selection(self, ids, data.images[ids], data.labels[ids], torch.cat(preds), scanned)


@dataclass(frozen=True)
class Selection:
    """The images a protocol chose on one model: `ids` are positions in the split; `scanned` is how many
    candidates were looked at to find them (scanned - len(ids) were skipped as misclassified)."""

    protocol: Protocol
    ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    clean_pred: torch.Tensor
    scanned: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def skipped(self) -> int:
        return self.scanned - len(self.ids)

    def record(self) -> dict[str, Any]:
        """What a result card or a leaderboard row keeps about the images."""
        return {
            "protocol": self.protocol.to_dict(),
            "protocol_id": self.protocol.fingerprint,
            "description": self.protocol.describe(),
            "n": len(self),
            "skipped_misclassified": self.skipped,
        }
