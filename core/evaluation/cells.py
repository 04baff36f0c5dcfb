"""Filling one leaderboard cell: run an attack on a model over the images a protocol chooses and record the
run (core.evaluation.leaderboard keeps it). Apart from the storage so that the SQLite layer runs no attack."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from core.attacks import attack_class, is_budgeted, make_attack, with_seed
from core.errors import IntriguingError, InvalidParameterError
from core.evaluation.indicators import fired, run_checked
from core.evaluation.leaderboard import optional_float, record_result
from core.evaluation.protocol import Protocol
from core.models import get_spec, load


def fill_cell(
    attack: str,
    model: str,
    *,
    protocol: Protocol | None = None,
    norm: str | None = None,
    budget: float | None = None,
    seed: int = 0,
    device: Any = None,
    source: str = "dashboard",
    check: bool = False,
    path: str | os.PathLike | None = None,
) -> int | None:
    """Run `attack` on `model` over the images `protocol` chooses (default: the first 100 correctly
    classified MNIST test images) and record it; returns the row id. A budgeted attack needs `norm` and
    `budget`; a minimal-distortion attack takes neither. With `check`, the indicators of attack failure are
    computed too (a few extra runs) and the fired ones recorded with the row."""
    protocol = protocol or Protocol()
    budgeted = is_budgeted(attack)
    domain = get_spec(model).dataset
    if domain == "imagenet":
        raise InvalidParameterError(
            f"{model} is an ImageNet model; cells are filled on labelled test images only."
        )
    if domain != protocol.dataset:
        raise InvalidParameterError(
            f"{model} belongs to {domain}; this protocol attacks {protocol.dataset} images."
        )
    accepted = {p.name for p in attack_class(attack).PARAMS}
    params: dict[str, Any] = with_seed(attack, {}, seed)
    if budgeted:
        if budget is None or norm is None:
            raise InvalidParameterError(f"{attack} is a budgeted attack: give norm and budget (eps).")
        params["eps"] = optional_float("budget", budget)
        if "norm" in accepted:
            params["norm"] = norm
        elif norm != "linf":
            raise InvalidParameterError(f"{attack} is an Linf attack; norm must be 'linf'.")
    elif budget is not None:
        raise InvalidParameterError(f"{attack} searches the minimal distortion; it takes no budget.")
    net = load(model, device)
    chosen = protocol.select(net, device)
    if check:
        result, checks = run_checked(net, attack, params, chosen.images, chosen.labels, device=device)
    else:
        result, checks = make_attack(attack, net, device, **params).run(chosen.images, chosen.labels), None
    flags = None if checks is None else fired(checks)
    return record_result(
        result, model, source=source, dataset=protocol.dataset, selection=chosen, indicators=flags, path=path
    )


def fill_cells(
    missing: Sequence[tuple[str, str]],
    *,
    protocol: Protocol,
    norm: str,
    budget: float,
    seed: int = 0,
    device: Any = None,
    source: str = "dashboard",
    check: bool = False,
    progress: Callable[[float, str], object] | None = None,
    path: str | os.PathLike | None = None,
) -> list[IntriguingError]:
    """Fill every (attack, model) cell on the images `protocol` chooses: a budgeted attack at `norm` and
    `budget`, a minimal-distortion one without (`fill_cell` for the rest). A cell that cannot be filled (too
    few images qualify, a model of another domain) does not stop the others; its error is returned."""
    errors = []
    for i, (attack, model) in enumerate(missing):
        if progress is not None:
            progress(i / len(missing), f"{attack} on {model} ({protocol.describe()})")
        budgeted = is_budgeted(attack)
        try:
            fill_cell(
                attack, model, protocol=protocol, norm=norm if budgeted else None,
                budget=budget if budgeted else None, seed=seed, device=device, source=source, check=check,
                path=path,
            )  # fmt: skip
        except IntriguingError as exc:
            errors.append(exc)
    return errors
