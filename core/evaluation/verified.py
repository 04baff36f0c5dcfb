"""Verified beside attack robust accuracy, per (model, budget) of one protocol: the true robust accuracy
lies between them. From below, the best certificate core.certify's bounds recorded (`intriguing certify
--eps`); from above, the attacks: a sweep's per-image worst case where it exists, else the strongest
recorded cell (1 - its success rate). Where no certificate is recorded, or none can be, the row says why.

Apart from leaderboard.py so that the SQLite layer never builds a network."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.certify.bounds import Network
from core.certify.bracket import ALL_METHODS
from core.errors import IntriguingError
from core.evaluation import leaderboard
from core.evaluation.protocol import Protocol
from core.models import get_spec

Key = tuple[str, str, float]  # (model, norm, budget), the budget rounded as the leaderboard matches it


def _key(model: str, norm: str, budget: float) -> Key:
    return model, norm, round(budget, 9)


@dataclass(frozen=True)
class Bracket:
    """One (model, norm, budget): `verified` <= true robust accuracy <= `attack` (None where not recorded);
    `verified_by` names the bound and its n, `attack_from` the attacks; `note` says why `verified` is None."""

    model: str
    norm: str
    budget: float
    verified: float | None
    verified_by: str
    attack: float | None
    attack_from: str
    note: str


def _attack_side(protocol_id: str, path) -> dict[Key, tuple[float, str]]:
    """Attack robust accuracy per key: the cells' strongest attack, overridden by a sweep's worst case."""
    found: dict[Key, tuple[float, str]] = {}
    for norm, eps in leaderboard.budgets(protocol_id=protocol_id, path=path):
        matrix = leaderboard.success_matrix(norm, eps, protocol_id=protocol_id, path=path)
        for model in matrix.models:
            rates = {
                a: matrix.values[a][model] for a in matrix.attacks if matrix.values[a][model] is not None
            }
            strongest = max(rates, key=rates.get)
            run = matrix.cells[strongest][model]
            found[_key(model, norm, eps)] = (1 - rates[strongest], f"{strongest} (n={run.n})")
    for worst in leaderboard.robust_accuracy(protocol_id=protocol_id, path=path):
        names = ", ".join(worst.attacks)
        found[_key(worst.model, worst.norm, worst.budget)] = (
            worst.robust_accuracy,
            f"worst of {names} (n={worst.n})",
        )
    return found


def _verified_side(protocol_id: str, path) -> dict[Key, leaderboard.Certificate]:
    """The most images any bound method certified per key (every bound is sound: the most is the tightest)."""
    best: dict[Key, leaderboard.Certificate] = {}
    for cert in leaderboard.certificates(protocol_id=protocol_id, path=path):
        key = _key(cert.model, cert.norm, cert.budget)
        if cert.method in ALL_METHODS and (key not in best or cert.certified > best[key].certified):
            best[key] = cert
    return best


def why_unverified(model: str, norm: str, budget: float, protocol: Protocol) -> str:
    """Why a key has no certificate: the bounds cannot cover the model, `intriguing certify` cannot choose
    these images, or nobody ran it yet (then the command that would)."""
    try:
        spec = get_spec(model)
        if spec.dataset != "mnist":
            return "certify covers MNIST models only"
        Network.from_module(spec.build())
    except IntriguingError as exc:
        return f"no bounds: {exc}"
    if protocol.n is None or protocol != Protocol(n=protocol.n):
        return "certify takes the first n correctly classified test images; this protocol chooses others"
    return f"not certified yet: intriguing certify --model {model} --norm {norm} --eps {budget!r} --n {protocol.n}"


def brackets(protocol_id: str, protocol: Protocol, path: str | os.PathLike | None = None) -> list[Bracket]:
    """Every (model, norm, budget) with an attack or a certificate recorded under the protocol (which fixes
    the dataset too), by model and budget."""
    attacks = _attack_side(protocol_id, path)
    certs = _verified_side(protocol_id, path)
    rows = []
    for key in sorted(attacks.keys() | certs.keys()):
        model, norm, budget = key
        attack, attack_from = attacks.get(key, (None, ""))
        cert = certs.get(key)
        rows.append(
            Bracket(
                model, norm, budget,
                verified=None if cert is None else cert.verified_accuracy,
                verified_by="" if cert is None else f"{cert.method} (n={cert.n})",
                attack=attack, attack_from=attack_from,
                note="" if cert is not None else why_unverified(model, norm, budget, protocol),
            )
        )  # fmt: skip
    return rows
