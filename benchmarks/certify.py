"""Certification cost: seconds per image of the certified Linf radius by IBP, CROWN and alpha-CROWN on the
fc nets (and CROWN's radius search beside a plain 14-step bisection on the same bounds), the exact MILP
on the certifiably trained MLP (share proven within the time limit, median time per image), and the
pages' one-image certificate on the CNNs (the Attack Lab's after PGD in Linf and DeepFool in L2, the
Validate page's after PGD) beside CROWN's full search on the same image.

    python benchmarks/certify.py [--quick] [--json] [--save PATH] [--threads 1] [--n 1000] [--milp-images 5]
                                 [--page-images 3]
"""

from __future__ import annotations

import statistics
import time

import harness  # first: puts the project root on sys.path  # isort: skip
import torch

from core.attacks import make_attack
from core.certify.bounds import Ball, Network, certified_radius, verified
from core.certify.bracket import attack_certificate, attack_distortions, image_bracket
from core.certify.exact import exact_relu_linf
from core.evaluation.protocol import Protocol

MODELS = ("fc100-100-10", "fc100-100-10-relu", "fc100-100-10-ibp")
SMALL = 100  # images for alpha-CROWN and the bisection baseline (slower per image)
MILP_MODEL = "fc100-100-10-ibp"
PAGE_MODELS = ("cnn-robust", "cnn")
PAGE_ATTACKS = {"linf": ("pgd", {"norm": "linf", "eps": 0.3, "steps": 40}), "l2": ("deepfool", {})}


def selected(model: torch.nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images the model classifies correctly, and their labels, on the benchmark's device."""
    sel = Protocol(n=n).select(model)
    return sel.images.to(harness.DEVICE), sel.labels.to(harness.DEVICE)


def bisection(net: Network, x, labels, steps: int = 14) -> torch.Tensor:
    """The radius search certified_radius replaced: plain bisection on [0, 1], every image every step."""
    lo, hi = torch.zeros(len(x), device=x.device), torch.ones(len(x), device=x.device)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = verified(net, Ball(x, mid, "linf"), labels)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return lo


def radius_rows(name: str, n: int, small: int) -> list[dict]:
    model, status = harness.load_model(name)
    x, y = selected(model, n)
    net = Network.from_module(model)
    runs = [("ibp", n, lambda k: certified_radius(net, x[:k], y[:k], "linf", "ibp")),
            ("crown", n, lambda k: certified_radius(net, x[:k], y[:k], "linf", "crown")),
            ("alpha-crown", small, lambda k: certified_radius(net, x[:k], y[:k], "linf", "alpha-crown")),
            ("crown, 14-step bisection", small, lambda k: bisection(net, x[:k], y[:k]))]  # fmt: skip
    rows = []
    for method, k, fn in runs:
        start = time.perf_counter()
        radius = fn(min(k, len(x)))
        harness.sync()
        seconds = time.perf_counter() - start
        rows.append({"model": name, "status": status, "method": method, "images": len(radius),
                     "s_total": seconds, "ms_per_image": 1e3 * seconds / len(radius),
                     "mean_radius": float(radius.mean())})  # fmt: skip
    return rows


def milp_row(images: int, time_limit: float) -> dict:
    model, status = harness.load_model(MILP_MODEL)
    x, y = selected(model, images)
    net = Network.from_module(model)
    cert = certified_radius(net, x, y, "linf")
    attack = attack_distortions(model, x, y, "linf")
    results = [
        exact_relu_linf(net, x[i], int(y[i]), float(attack[i]), time_limit, float(cert[i]))
        for i in range(len(x))
    ]
    times = [r.time_s for r in results]
    return {"model": MILP_MODEL, "status": status, "images": len(results), "time_limit_s": time_limit,
            "proven": sum(r.status == "proven" for r in results), "median_s": statistics.median(times),
            "max_s": max(times)}  # fmt: skip


def page_rows(name: str, images: int) -> list[dict]:
    """Seconds per image of each page's certificate after a one-image attack, and CROWN's full search
    (the CLI's, what the pages ran before) on the same image: radius and seconds."""
    model, status = harness.load_model(name)
    xs, ys = selected(model, images)
    net = Network.from_module(model)
    rows = []
    for norm, (attack, params) in PAGE_ATTACKS.items():
        for page in ("attack lab", "validate") if norm == "linf" else ("attack lab",):
            page_s, full_s, page_r, full_r, methods = [], [], [], [], set()
            for i in range(len(xs)):
                x, y = xs[i : i + 1], ys[i : i + 1]
                result = make_attack(attack, model, seed=0, **params).run(x, y)
                start = time.perf_counter()
                if page == "attack lab":
                    cert = attack_certificate(model, result)
                else:
                    found = float(result.linf[0]) if bool(result.success[0]) else None
                    cert = image_bracket(model, x, int(y[0]), {attack: found})
                page_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                full_r.append(float(certified_radius(net, x, y, norm, "crown")[0]))
                full_s.append(time.perf_counter() - start)
                page_r.append(cert["certified"])
                methods.add(cert["method"])
            rows.append({"model": name, "status": status, "page": page, "norm": norm, "images": len(xs),
                         "page_s": statistics.mean(page_s), "page_max_s": max(page_s),
                         "full_crown_s": statistics.mean(full_s), "page_radius": statistics.mean(page_r),
                         "full_crown_radius": statistics.mean(full_r), "methods": sorted(methods)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = harness.parser(__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--milp-images", type=int, default=5)
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--page-images", type=int, default=3)
    args = p.parse_args(argv)
    harness.set_threads(args.threads)
    harness.use_device(args.device)
    n, small = (10, 4) if args.quick else (args.n, min(SMALL, args.n))
    rows = [row for name in MODELS for row in radius_rows(name, n, small)]
    milp = milp_row(1 if args.quick else args.milp_images, 2.0 if args.quick else args.time_limit)
    pages = [row for name in PAGE_MODELS for row in page_rows(name, 1 if args.quick else args.page_images)]
    result = {"benchmark": "certify", "threads": args.threads, "rows": rows, "milp": milp, "pages": pages,
              "machine": harness.machine()}  # fmt: skip
    text = harness.table(
        ["model", "method", "images", "ms / image", "mean radius"],
        [[r["model"], r["method"], r["images"], r["ms_per_image"], r["mean_radius"]] for r in rows],
    )
    text += (
        f"\n\nMILP on {milp['model']}: {milp['proven']}/{milp['images']} proven within {milp['time_limit_s']:g} s,"
        f" median {milp['median_s']:.1f} s, max {milp['max_s']:.1f} s per image"
    )
    text += "\n\n" + harness.table(
        ["model", "page", "norm", "images", "s / image", "max s", "radius", "method", "full CROWN s", "radius"],
        [[r["model"], r["page"], r["norm"], r["images"], r["page_s"], r["page_max_s"], r["page_radius"],
          ", ".join(r["methods"]), r["full_crown_s"], r["full_crown_radius"]] for r in pages],
    )  # fmt: skip
    harness.emit(result, args.json, text, args.save, "certify", args.update_docs)
    return result


if __name__ == "__main__":
    main()
