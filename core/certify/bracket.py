"""The bracket for each image of a protocol: the certified radius (proved from below), the exact minimum
where a solver proves it, and the best attack found (from above): what `intriguing certify` prints.

The attack column is PGD's minimal-budget search over a geometric grid of budgets (every image attacked at
every budget, batched): per image the distortion of the adversarial example found at the smallest budget
that worked, measured in the certificate's norm, so that certified <= exact <= attack must hold."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from core.attacks import AttackResult, make_attack
from core.certify.bounds import (
    MAX_RADIUS,
    METHODS,
    NORMS,
    Ball,
    Network,
    budget_radius,
    certified_radius,
    crown_entries,
    verified,
)
from core.certify.exact import Exact, decide_relu_linf, exact_linear, exact_relu_linf
from core.checks import check_choice, check_float
from core.errors import InvalidParameterError

ALL_METHODS = (*METHODS, "exact")
GRID = {"linf": (0.002, 0.5), "l2": (0.05, 10.0)}  # the attack's budget grid: first and last budget
GRID_POINTS = 24
MAX_TIME_LIMIT = 3600.0
# The coefficient entries (crown_entries) CROWN may move for one image after a page's one-image run: about
# 2 s at 1 thread on cnn-robust (benchmarks/certify.py's page rows); a net whose search of FULL_SEARCH
# bounds with every unit unstable fits gets CROWN's full search, the CLI's (the MLPs: a few ms).
PAGE_BUDGET = 70e6
FULL_SEARCH = 8


def check_request(net: Network, norm: str, method: str, eps: float | None, time_limit: float) -> None:
    """One clear message for each request certify cannot serve."""
    check_choice("norm", norm, NORMS)
    check_choice("method", method, ALL_METHODS)
    if eps is not None:
        check_float("eps", eps, low=0, high=MAX_RADIUS[norm], strict_low=True)
    check_float("time limit", time_limit, low=0, high=MAX_TIME_LIMIT, strict_low=True)
    if method != "exact":
        return
    if "sigmoid" in net.activations:
        raise InvalidParameterError(
            "sigmoid networks have no exact solver: use --method crown (the bracket: certified radius and best attack)."
        )
    if net.activations and norm != "linf":
        raise InvalidParameterError("the exact L2 minimum is solved for linear models only; use --norm linf.")


def attack_distortions(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """PGD's smallest successful budget per image over GRID (inf where none succeeds), as the actual
    distortion of the adversarial example it found."""
    first, last = GRID[norm]
    best = torch.full((len(x),), math.inf)
    for k in range(GRID_POINTS):
        eps = first * (last / first) ** (k / (GRID_POINTS - 1))
        todo = torch.isinf(best).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        result = make_attack("pgd", model, norm=norm, eps=eps, steps=40, seed=0).run(x[todo], labels[todo])
        dist = (result.linf if norm == "linf" else result.l2).cpu()
        best[todo] = torch.where(result.success.cpu(), dist, best[todo])
    return best


def _exact(
    net: Network, x: torch.Tensor, label: int, norm: str, attack: float, time_limit: float, lower: float
):
    if not net.activations:
        return exact_linear(net, x, label, norm)
    upper = attack if math.isfinite(attack) else MAX_RADIUS[norm]
    return exact_relu_linf(net, x, label, upper=upper, time_limit=time_limit, lower=lower)


def certify_images(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    ids: torch.Tensor,
    *,
    norm: str,
    method: str,
    eps: float | None = None,
    time_limit: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
    settle: float | None = None,
) -> dict:
    """Per image: index, label, certified, exact (None unless proved), attack, status, time_s; with `eps`,
    verified and attack robust accuracy at that budget (shares of the images), the MILP at eps settling
    the images both leave open for method 'exact' (its time limit) or with `settle` (seconds per image)."""
    net = Network.from_module(model)
    check_request(net, norm, method, eps, time_limit)
    start = time.perf_counter()
    bound_method = "crown" if method == "exact" else method
    certified = certified_radius(net, x, labels, norm, bound_method).cpu()
    bound_time = (time.perf_counter() - start) / max(len(x), 1)
    attack = attack_distortions(model, x, labels, norm)
    images = []
    for i in range(len(x)):
        exact: Exact | None = None
        if method == "exact":
            exact = _exact(net, x[i], int(labels[i]), norm, float(attack[i]), time_limit, float(certified[i]))
        images.append({
            "index": int(ids[i]), "label": int(labels[i]), "certified": float(certified[i]),
            "exact": None if exact is None else exact.value,
            "exact_bracket": None if exact is None else [exact.lower, exact.upper],
            "attack": float(attack[i]) if math.isfinite(attack[i]) else None,
            "status": "bracket" if exact is None else exact.status,
            "time_s": round(bound_time + (exact.time_s if exact else 0.0), 4),
        })  # fmt: skip
        if progress:
            progress(i + 1, len(x))
    out = {
        "norm": norm,
        "method": method,
        "n": len(x),
        "images": images,
    }
    if eps is not None:
        settle = time_limit if method == "exact" and net.activations else settle
        out.update(robust_accuracy(net, x, labels, images, norm, bound_method, eps, settle))
    return out | {"time_s": time.perf_counter() - start}


def robust_accuracy(
    net: Network,
    x,
    labels,
    images: list[dict],
    norm: str,
    method: str,
    eps: float,
    settle: float | None = None,
) -> dict:
    """Verified robust accuracy (proved at eps by the bound, or an exact bracket above eps) beside attack
    robust accuracy (no adversarial example found within eps): the true value lies between them. With
    `settle` (a time limit per image, ReLU nets, Linf), the MILP at eps settles every image both left open:
    then `exact_robust_accuracy` is the true value, where no MILP timed out."""
    proved = verified(net, Ball(x, eps, norm), labels, method).cpu()
    brackets = [im["exact_bracket"] or [im["exact"], im["exact"]] for im in images]
    exact_above = torch.tensor([b[0] is not None and b[0] > eps for b in brackets])
    exact_below = torch.tensor([b[1] is not None and b[1] <= eps for b in brackets])
    attacked = torch.tensor([im["attack"] is not None and im["attack"] <= eps for im in images])
    robust = proved | exact_above
    out = {"eps": eps, "attack_robust_accuracy": 1 - float(attacked.float().mean())}
    if settle is not None:
        verified_share = float(robust.float().mean())  # before the MILP: the bound and exact brackets
        open_ = (~robust & ~attacked & ~exact_below).nonzero().squeeze(1).tolist()
        decisions = {i: decide_relu_linf(net, x[i], int(labels[i]), eps, settle) for i in open_}
        robust[[i for i, d in decisions.items() if d.status == "robust"]] = True  # a flip decides it broken
        undecided = sum(d.status == "timeout" for d in decisions.values())
        out |= {
            "bound_robust_accuracy": verified_share,
            "milp_decided": len(decisions) - undecided,
            "milp_flips": sum(d.status == "flip" for d in decisions.values()),
            "milp_undecided": undecided,
            "milp_time_s": sum(d.time_s for d in decisions.values()),
            "exact_robust_accuracy": None if undecided else float(robust.float().mean()),
        }
    return out | {"verified": int(robust.sum()), "verified_robust_accuracy": float(robust.float().mean())}


def page_radius(net: Network, x: torch.Tensor, label: int, norm: str, high: float | None = None):
    """(radius, the bound that proved it) for a page after a one-image run, within PAGE_BUDGET: CROWN's
    full search where it fits, else IBP's full search and CROWN's within the budget, bracketed by `high`
    (the attack's flip), named by whichever proved the larger (CROWN's budgeted search stops short of the
    radius CROWN's full search would prove: a few percent on cnn-robust)."""
    y = torch.tensor([label], device=x.device)
    if crown_entries(net) * FULL_SEARCH <= PAGE_BUDGET:
        return float(certified_radius(net, x, y, norm, "crown")[0]), "CROWN"
    high = min(high, MAX_RADIUS[norm]) if high is not None and high > 0 else None
    radius, by_crown = budget_radius(net, x, y, norm, PAGE_BUDGET, high)
    return float(radius[0]), "CROWN, a search cut to its cost budget" if bool(by_crown[0]) else "IBP"


def image_bracket(model: nn.Module, x: torch.Tensor, label: int, found: dict[str, float | None]) -> dict:
    """One image's Linf bracket for the Validate page: page_radius's certified radius of the prediction `label`,
    the exact minimum where it is instant (a linear model's LP), each attack's flip (`found`: Linf per
    attack, None where it failed), and the verdict worded from them. x: (1, *shape) as the page holds it."""
    net = Network.from_module(model, tuple(x.shape[1:]))
    device = next(model.parameters()).device
    xb = x.to(device)
    flips = {name: float(v) for name, v in found.items() if v is not None and math.isfinite(v)}
    best = min(flips.items(), key=lambda item: item[1], default=None)
    certified, method = page_radius(net, xb, label, "linf", best[1] if best else None)
    exact = None if net.activations else exact_linear(net, xb[0], label, "linf").value
    words = [f"no Linf change below {certified:.4f} can flip this, proved ({method})"]
    if exact is not None:
        words.append(f"the exact minimum is {exact:.4f} (LP)")
    words.append(f"the smallest flip found is {best[1]:.4f} ({best[0]})" if best else "no attack flipped it")
    verdict = "; ".join(words)
    return {
        "certified": certified,
        "method": method,
        "exact": exact,
        "attacks": flips,
        "verdict": verdict[0].upper() + verdict[1:] + ".",
    }


def attack_norm(params: dict) -> str:
    """The norm an attack's distortion is judged in: its own `norm` where it has one, Linf for a budgeted
    attack without one (FGSM), L2 for the minimal-distortion attacks (L-BFGS, C&W, DeepFool minimise an L2
    distance; L-BFGS records its squared one)."""
    if params.get("norm") in NORMS:
        return params["norm"]
    return "linf" if "eps" in params else "l2"


def attack_certificate(model: nn.Module, result: AttackResult) -> dict:
    """The Attack Lab's line for a one-image run: page_radius's certified radius of the attacked class in
    the attack's norm beside the distortion the attack found (None where it failed), worded."""
    norm = attack_norm(result.params)
    net = Network.from_module(model, tuple(result.x.shape[1:]))
    device = next(model.parameters()).device
    found = float((result.linf if norm == "linf" else result.l2)[0]) if bool(result.success[0]) else None
    certified, method = page_radius(net, result.x.to(device), int(result.labels[0]), norm, found)
    name = {"linf": "Linf", "l2": "L2"}[norm]
    line = (
        f"Proved safe below {name} {certified:.4f} ({method}: no change that small can flip this prediction)"
    )
    if found is not None:
        line += f"; the attack found a flip at {found:.4f}."
    elif result.params.get("eps") is not None and result.params["eps"] <= certified:
        line += f"; the attack's budget {result.params['eps']:g} lies inside, so no attack can succeed there."
    else:
        line += "; the attack found no flip."
    # Any flip has RMS >= radius / sqrt(d) in either norm (RMS = L2 / sqrt(d) >= Linf / sqrt(d)): the floor the
    # Attack Lab draws on its RMS chart.
    certified_rms = certified / math.sqrt(result.x[0].numel())
    return {
        "norm": norm,
        "certified": certified,
        "method": method,
        "certified_rms": certified_rms,
        "found": found,
        "line": line,
    }
