"""AutoAttack (Croce & Hein, 2020): a parameter-free ensemble whose per-example worst case is the robust
accuracy robustness papers report. `standard`: APGD-CE, then APGD-T (targeted DLR) against each of the 9
most likely other classes, then FAB-T against the same 9, then Square with 5000 queries; each member
attacks only the images the earlier ones left standing. `plus`: APGD-CE, APGD-DLR and FAB with 5 restarts,
Square, then APGD-T and FAB-T, as in the reference.

AutoAttack's own sanity checks are raised as warnings before the run (`sanity_warnings`): outputs that
sum to one (softmax instead of logits), a randomised model (attack it with EOT), zero gradients; after it,
a black-box member breaking images the white-box members could not. They are the indicators of attack
failure of the same names, tested and worded once in core.attacks.sanity.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from core.attacks import sanity
from core.attacks.apgd import APGD
from core.attacks.base import Attack, AttackEvent, AttackRun
from core.attacks.fab import FAB
from core.attacks.spec import Param, eps_param, norm_param, seed_param
from core.attacks.square import Square

VERSIONS = ("standard", "plus")


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble: its readable name, class, parameters, and target rank (APGD-T)."""

    title: str
    cls: type[Attack]
    params: dict
    target_rank: int | None = None  # 1: the most likely other class of the clean image


def members(version: str, norm: str, eps: float, steps: int, queries: int, seed: int) -> list[Member]:
    """The ensemble of `version`, in the order the reference runs it (FAB takes APGD's number of steps)."""
    restarts = 1 if version == "standard" else 5
    base = {"norm": norm, "eps": eps, "steps": steps, "seed": seed}
    square = Member(
        "Square", Square, {"norm": norm, "eps": eps, "queries": queries, "p_init": 0.8, "seed": seed}
    )
    targeted = [Member(f"APGD-T ({k})", APGD, {**base, "loss": "dlr"}, target_rank=k) for k in range(1, 10)]
    targeted += [Member(f"FAB-T ({k})", FAB, base, target_rank=k) for k in range(1, 10)]
    if version == "standard":
        return [Member("APGD-CE", APGD, {**base, "loss": "ce"}), *targeted, square]
    return [
        Member("APGD-CE", APGD, {**base, "loss": "ce", "restarts": restarts}),
        Member("APGD-DLR", APGD, {**base, "loss": "dlr", "restarts": restarts}),
        Member("FAB", FAB, {**base, "restarts": restarts}),
        square,
        *targeted,
    ]


def sanity_warnings(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """AutoAttack's checks of the model, worded as the indicators of attack failure word them
    (core.attacks.sanity): probability outputs, randomness, zero or non-finite gradients."""
    return [
        sanity.warning(name, flags)
        for name, flags in sanity.model_flags(model, x, labels).items()
        if flags.any()
    ]


class AutoAttack(Attack):
    """AutoAttack's ensemble: the per-example worst case of its members at one budget.

    Each member runs on the images still standing; an image counts as broken once it is misclassified
    (re-verified by a fresh forward pass). Events: every member's own events, widened to the whole
    batch, with `extra` = {"member": its name, "standing": images still unbroken}.

    Args:
        model: classifier taking [0, 1] images, returning logits.
        norm: "linf" | "l2". eps: the budget (MNIST's benchmark: Linf 0.3).
        version: "standard" | "plus". steps: APGD steps (100). queries: Square's queries (5000).
        seed: seeds every member.

    Shape:
        x: (N, C, H, W) in [0, 1]; labels: (N,). Result x_adv: (N, C, H, W).

    Example:
        >>> attack = AutoAttack(model, norm="linf", eps=0.3)
        >>> robust_accuracy = 1 - attack.run(x, labels).success.float().mean()
    """

    name = "autoattack"
    title, quick, cases = (  # see Attack
        "AutoAttack (ensemble)",
        {"eps": 0.1, "steps": 5, "queries": 20},
        (
            {"eps": 0.08, "steps": 5, "queries": 20},
            {"norm": "l2", "eps": 0.5, "steps": 5, "queries": 20},
        ),
    )
    supports_targeted = False
    iterates_in_ball = False  # its FAB-T members' are not

    PARAMS = (
        norm_param(),
        eps_param(high_l2=1000.0),
        Param("version", str, "standard", "Version", "AutoAttack's member set.", choices=VERSIONS),
        Param(
            "steps",
            int,
            100,
            "APGD steps",
            "Gradient steps of each APGD member.",
            low=1,
            high=100_000,
            imagenet=10,
        ),
        Param(
            "queries",
            int,
            5000,
            "Square queries",
            "Queries of the Square member.",
            low=1,
            high=100_000,
            imagenet=100,
        ),
        seed_param("members' random draws"),
    )
    norm: str
    eps: float
    version: str
    steps: int
    queries: int
    seed: int

    def _steps(self, run: AttackRun) -> Iterator[AttackEvent]:
        for message in sanity_warnings(self.model, run.x, run.labels):
            warnings.warn(f"AutoAttack: {message}", stacklevel=2)
        x, labels = run.x, run.labels
        logits_now = run.clean_logits.clone()
        standing = logits_now.argmax(1) == labels
        ranked = run.clean_logits.sort(dim=1, descending=True).indices
        run.best, self.broken_by = x, {}
        for member in members(self.version, self.norm, self.eps, self.steps, self.queries, self.seed):
            idx = standing.nonzero().flatten()
            if not len(idx):
                break
            target = None
            if member.target_rank is not None:
                if member.target_rank >= run.num_classes:
                    continue
                target = ranked[idx, member.target_rank]  # standing images' top class is their label
            attack = member.cls(self.model, **member.params)
            sub = attack.start(x[idx], labels[idx], target)
            for event in sub:
                z, shown = (
                    run.best.index_copy(0, idx, event.x_adv),
                    logits_now.index_copy(0, idx, event.logits),
                )
                extra = {"member": member.title, "standing": int(standing.sum())}
                yield self._event(run, z, shown, standing.float(), extra=extra)
            result = sub.result()
            run.model_calls += result.model_calls + 1
            broken = (result.pred_after != result.labels).to(x.device)
            hit = idx[broken]
            run.best = run.best.index_copy(0, hit, result.x_adv.to(x.device)[broken])
            logits_now[hit] = self.model(run.best[hit]).detach() if len(hit) else logits_now[hit]
            standing[hit] = False
            self.broken_by[member.title] = int(broken.sum())
        self._black_box_warning()

    def _black_box_warning(self) -> None:
        """AutoAttack's check: Square (no gradients) breaking images after the gradient members."""
        broken = self.broken_by.get("Square", 0)
        if broken:
            warnings.warn(
                f"AutoAttack: {sanity.MEANINGS['black_box_beats_white_box']} (Square broke {broken} images "
                "the gradient members left standing; the ensemble's number counts them.)",
                stacklevel=2,
            )
