"""How close each attack comes to the truth: per test image the exact minimal distortion (proved by a
solver), every attack's minimal distortion, and their ratio (attack / exact >= 1; 1 means the attack found
the smallest flip there is). `intriguing reproduce certify --update-docs` stores the card docs/certify.md
quotes.

- fc10-1 (the paper's linear softmax model): exact minimal Linf by LP and L2 by the convex QP (always
  solved); L2 attacks L-BFGS, C&W, DeepFool (the Validate report's presets); Linf the minimal-budget
  searches of PGD and FGSM (doubling, then bisection: the Validate report's) and the PGD budget grid of
  `intriguing certify`'s attack column.
- fc100-100-10-ibp (ReLU, certifiably trained): exact minimal Linf by MILP within a per-image time limit,
  searched between CROWN's certified radius and PGD's flip; ratios on the images it proves (the count says
  how many), the rest keep their bracket in the card.
- Verified beside attack robust accuracy at Linf 0.1 (`intriguing certify --eps`'s two columns): CROWN's
  proof from below, the PGD budget grid from above, on cnn-robust (PGD-trained, the AutoAttack model) and
  fc100-100-10-ibp, with each model's certified radii against the smallest flips found.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.attacks import make_attack
from core.attacks.budget_search import minimal_eps
from core.certify.bounds import Network, certified_radius
from core.certify.bracket import attack_distortions, certify_images
from core.certify.exact import exact_linear, exact_relu_linf
from core.evaluation.protocol import Protocol
from core.evaluation.validate import EPS_SEARCH_ATTACKS, MINIMAL_ATTACKS
from core.evaluation.verified import Bracket
from core.experiments.adversarial import notify
from core.experiments.writer import Column, Report, bars, base_card, read_card
from core.models import load

LINEAR_MODEL = "fc10-1"
RELU_MODEL = "fc100-100-10-ibp"
L2_ATTACKS = ("lbfgs", "cw", "deepfool")
WITHIN = 0.01  # "within 1%" of the exact minimum
# (model, Linf budget, whether the MILP at that budget settles what CROWN and the attacks leave open: for the
# dense ReLU net, where Tjeng et al.'s verification takes seconds): verified beside attack robust accuracy
VERIFIED = (("cnn-robust", 0.1, False), (RELU_MODEL, 0.1, True))
COLUMNS = [
    Column("model", "model", "text"),
    Column("norm", "norm", "text"),
    Column("attack", "attack", "text"),
    Column("images", "images with exact", "text"),
    Column("median", "median ratio", "num"),
    Column("p90", "p90 ratio", "num"),
    Column("max", "max ratio", "num"),
    Column("within", "within 1%", "pct"),
]


def summary(model: str, norm: str, attack: str, ratios: list[float]) -> dict:
    """One row: the distribution of attack / exact over the images where both exist."""
    if not ratios:
        return {"model": model, "norm": norm, "attack": attack, "images": 0}
    ordered = sorted(ratios)
    return {"model": model, "norm": norm, "attack": attack, "images": len(ratios),
            "median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max": ordered[-1], "within": sum(r <= 1 + WITHIN for r in ordered) / len(ordered)}  # fmt: skip


def budget_min(attack: str, model, x: torch.Tensor, labels: torch.Tensor, device) -> list[float]:
    """A budgeted attack's smallest flipping Linf budget per image (the Validate report's search and
    settings), as the distortion of the example found (inf: none)."""
    out = []
    for i in range(len(x)):
        result, eps = minimal_eps(attack, model, x[i : i + 1], labels[i : i + 1],
                                  params=EPS_SEARCH_ATTACKS[attack], device=device)  # fmt: skip
        out.append(float(result.linf[0]) if eps is not None else math.inf)
    return out


def linf_attacks(model, x: torch.Tensor, labels: torch.Tensor, device) -> dict[str, list[float]]:
    """PGD's and FGSM's minimal-budget searches, and the bracket's PGD budget grid (what certify reports)."""
    found = {name: budget_min(name, model, x, labels, device) for name in EPS_SEARCH_ATTACKS}
    return {**found, "pgd-grid": attack_distortions(model, x, labels, "linf").tolist()}


def _linear_images(model, sel, device) -> list[dict]:
    net = Network.from_module(model)
    x, y = sel.images, sel.labels
    found = {name: make_attack(name, model, device, **MINIMAL_ATTACKS[name]).run(x, y) for name in L2_ATTACKS}
    linf = linf_attacks(model, x, y, device)
    images = []
    for i in range(len(x)):
        lp, qp = (exact_linear(net, x[i], int(y[i]), norm) for norm in ("linf", "l2"))
        l2 = {name: float(r.l2[i]) if bool(r.success[i]) else math.inf for name, r in found.items()}
        images.append({"index": int(sel.ids[i]), "label": int(y[i]), "exact_linf": lp.value, "exact_l2": qp.upper,
                       "l2": l2, "linf": {name: values[i] for name, values in linf.items()}})  # fmt: skip
    return images


def _relu_images(model, sel, device, time_limit: float) -> list[dict]:
    net = Network.from_module(model)
    x, y = sel.images, sel.labels
    cert = certified_radius(net, x, y, "linf")
    linf = linf_attacks(model, x, y, device)
    images = []
    for i in range(len(x)):
        upper = min(values[i] for values in linf.values())  # the smallest flip found bounds the search
        exact = exact_relu_linf(net, x[i], int(y[i]), upper, time_limit, float(cert[i]))
        images.append({"index": int(sel.ids[i]), "label": int(y[i]), "certified": float(cert[i]),
                       "exact_linf": exact.value, "bracket": [exact.lower, exact.upper], "status": exact.status,
                       "time_s": exact.time_s, "linf": {name: values[i] for name, values in linf.items()}})  # fmt: skip
    return images


def verified_at(model_name: str, eps: float, protocol: Protocol, device, settle: float | None = None) -> dict:
    """One model's verified (CROWN) and attack (the PGD budget grid) robust accuracy at Linf eps, as
    `intriguing certify --eps` reports them, with the medians of its certified radii and smallest flips;
    with `settle` (seconds per image), the MILP at eps on every image both left open (`milp`)."""
    model = load(model_name, device)
    sel = protocol.select(model, device)
    out = certify_images(model, sel.images, sel.labels, sel.ids, norm="linf", method="crown", eps=eps,
                         settle=settle)  # fmt: skip
    flips = [im["attack"] for im in out["images"] if im["attack"] is not None]
    found = {"model": model_name, "norm": "linf", "eps": eps, "n": out["n"], "method": "crown",
             "verified": out.get("bound_robust_accuracy", out["verified_robust_accuracy"]),  # CROWN's alone
             "attack": out["attack_robust_accuracy"],
             "median_certified": statistics.median([im["certified"] for im in out["images"]]),
             "median_attack": statistics.median(flips) if flips else None, "images": out["images"],
             "s_per_image": out["time_s"] / out["n"]}  # fmt: skip
    if settle is not None:  # what the MILP made of the rest
        milp = {k: v for k, v in out.items() if k.startswith(("milp_", "exact_"))}
        found["milp"] = milp | {"verified": out["verified_robust_accuracy"]}
    return found


def stored_brackets(results: str | Path | None = None) -> tuple[list[Bracket], str]:
    """The stored card's verified beside attack rows (what verified_at measured: CROWN from below, the PGD
    budget grid from above; where the MILP settled the open images, its proofs below and, with nothing left
    undecided, the exact value on both sides) and their protocol, for a fresh install's Leaderboard; none
    without the card."""
    card = read_card("certify", results)
    if card is None:
        return [], ""
    return [_stored_bracket(e) for e in card.get("verified", [])], card["protocol_description"]


def _stored_bracket(entry: dict) -> Bracket:
    milp, n = entry.get("milp"), entry["n"]
    exact = milp["exact_robust_accuracy"] if milp else None
    return Bracket(
        entry["model"], entry["norm"], entry["eps"],
        verified=milp["verified"] if milp else entry["verified"],
        verified_by=f"{entry['method']} + MILP at the budget (n={n})" if milp else f"{entry['method']} (n={n})",
        attack=exact if exact is not None else entry["attack"],
        attack_from=f"PGD budget grid + the MILP's flips (n={n})" if exact is not None else f"PGD budget grid (n={n})",
        note="",
    )  # fmt: skip


def _rows(model: str, images: list[dict]) -> list[dict]:
    rows = []
    for norm in ("l2", "linf"):
        attacks = images[0].get(norm, {}) if images else {}
        for attack in attacks:
            ratios = [im[norm][attack] / im[f"exact_{norm}"] for im in images
                      if im.get(f"exact_{norm}") and math.isfinite(im[norm][attack])]  # fmt: skip
            rows.append(summary(model, norm, attack, ratios))
    return rows


def _draw(path, rows: list[dict]) -> None:
    shown = [r for r in rows if r["images"]]
    labels = [f"{r['model']} {r['norm']} {r['attack']}" for r in shown]
    series = {"median": [r["median"] for r in shown], "p90": [r["p90"] for r in shown]}
    bars(path, labels, series, "Attack distortion / exact minimal distortion (1 = exact)", "ratio")


def run(
    n: int = 100,
    seed: int = 0,
    device=None,
    progress: bool | Callable[[float, str], None] = True,
    relu_n: int = 10,
    time_limit: float = 30.0,
) -> Report:
    """The linear model on the first n correctly classified test images, the ReLU net on the first relu_n."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    notify(progress, 0.0, f"{LINEAR_MODEL}: exact LP/QP and attacks")
    linear_protocol, relu_protocol = Protocol(n=n), Protocol(n=relu_n)
    model = load(LINEAR_MODEL, device)
    linear = _linear_images(model, linear_protocol.select(model, device), device)
    notify(progress, 0.5, f"{RELU_MODEL}: MILP ({time_limit:g} s per image) and attacks")
    model = load(RELU_MODEL, device)
    relu = _relu_images(model, relu_protocol.select(model, device), device, time_limit)
    rows = _rows(LINEAR_MODEL, linear) + _rows(RELU_MODEL, relu)
    verified = []
    for i, (name, eps, settle) in enumerate(VERIFIED):
        notify(
            progress,
            0.7 + 0.3 * i / len(VERIFIED),
            f"{name}: verified and attack robust accuracy at Linf {eps:g}",
        )
        verified.append(verified_at(name, eps, linear_protocol, device, time_limit if settle else None))
    notify(progress, 1.0, "done")
    card = base_card(
        "certify", n, seed, relu_n=relu_n, time_limit_s=time_limit, models=[LINEAR_MODEL, RELU_MODEL],
        protocol=linear_protocol.to_dict(), protocol_description=linear_protocol.describe(),
        attacks={name: MINIMAL_ATTACKS[name] for name in L2_ATTACKS}, relu_proven=sum(im["status"] == "proven" for im in relu),
        images={LINEAR_MODEL: linear, RELU_MODEL: relu}, verified=verified, time_s=time.perf_counter() - start,
    )  # fmt: skip
    notes = [
        f"{linear_protocol.describe()}; ratio = the attack's distortion / the exact minimum of the same image "
        f"and norm. {RELU_MODEL}: {card['relu_proven']} of {len(relu)} images proven by the MILP within "
        f"{time_limit:g} s; the ratios there use those images only."
    ]
    title = "How close each attack comes to the exact minimal distortion"
    return Report("certify", title, COLUMNS, rows, card, lambda path: _draw(path, rows), notes)
