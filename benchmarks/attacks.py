"""Attack speed, ours beside torchattacks, Foolbox 3 and ART, as a ratio to the forward+backward limit.

    python benchmarks/attacks.py [--quick] [--json] [--only pgd,fgsm,cw,lbfgs] [--threads 1]

The limit of a gradient attack with k iterations is k forward+backward passes of the model on the batch
(cross-entropy, gradient with respect to the input): no attack can be faster. Every contender, the limit
included, runs in this one process, one after another in an order that rotates each round; the table
reports medians. Peers come from the venv that benchmarks/setup_peers.sh makes: if they do not import here
and that venv exists, the script re-runs itself with the venv's python (it sees the project through the
system site-packages, so ours runs on the same torch); `--no-peers` measures ours and the limit only.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import harness  # first: puts the project root on sys.path  # isort: skip
import peers
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core import models
from core.attacks import ATTACKS, make_attack
from core.data import load_mnist

SECTIONS = ("pgd", "fgsm", "cw", "lbfgs")
PERTURB = "ours, images only"  # Attack.perturb: no verification pass, what torchattacks and ART return
# The same passes at PGD's final iterate instead of the clean batch. On a conv net a pass there measured 8-10%
# slower (max pooling and ReLU on noisy rather than mostly-zero images), a cost every PGD pays after step 1.
LIMIT_AT_ADV = "limit at x_adv"
REEXEC_ENV = "INTRIGUING_BENCH_REEXEC"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__)
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    p.add_argument("--models", default="fc100-100-10,cnn", help="models for PGD and FGSM")
    p.add_argument("--batch", type=int, default=1000, help="PGD/FGSM batch on fully connected models")
    p.add_argument("--conv-batch", type=int, default=250, help="PGD/FGSM batch on convolutional models")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every contender")
    p.add_argument("--card", default="attacks", help="the result card's name")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender (median reported)")
    p.add_argument("--no-peers", action="store_true", help="ours and the limit only")
    p.add_argument("--reference-images", type=int, default=None, help="images for the one-at-a-time L-BFGS")
    p.add_argument("--lbfgs-images", type=int, default=None, help="images for the batched L-BFGS run")
    return p.parse_args(argv)


def reexec_in_peer_venv(args: argparse.Namespace) -> None:
    """Run this same script under the peers' python when the peers are missing here."""
    if args.no_peers or os.environ.get(REEXEC_ENV):
        return
    if all(peers.usable(peers.available(), p) for p in peers.PEERS):
        return
    python = harness.peer_venv() / "bin" / "python"
    if python.is_file():
        os.environ[REEXEC_ENV] = "1"
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------- helpers


def limit(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, passes: int) -> Callable[[], None]:
    """k forward+backward passes of the model on the batch, gradient with respect to the input."""

    def run() -> None:
        for _ in range(passes):
            z = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(z), labels), z)

    return run


def repeated(fn: Callable[[], torch.Tensor], times: int, keep: dict, key: str) -> Callable[[], None]:
    """Call fn `times` times per timing (short attacks), keeping the last output for the sanity check."""

    def run() -> None:
        for _ in range(times):
            keep[key] = fn()

    return run


def ours(
    name: str, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, images_only: bool = False, **params
) -> Callable[[], torch.Tensor]:
    """Our attack as a user calls it: `run` (a result whose success is re-verified by a forward pass, like
    Foolbox's) or, with images_only, `perturb` (the images alone, like torchattacks and ART)."""
    attack = make_attack(name, model, **params)
    if images_only:
        return lambda: attack.perturb(x, labels)
    return lambda: attack.run(x, labels).x_adv


def peer_status(args: argparse.Namespace) -> dict[str, str]:
    if args.no_peers:
        return {p: "skipped (--no-peers)" for p in (*peers.PEERS, "advertorch")}
    return peers.available()


# ---------------------------------------------------------------- PGD and FGSM: ratio to the limit


def gradient_section(kind: str, args, status, data) -> dict:
    """PGD-40 Linf (eps 0.3, step 0.01, no random start) or FGSM (eps 0.3) on each model."""
    steps = 3 if args.quick else 40
    out = {"setting": {}, "models": {}}
    for model_name in args.models.split(","):
        model, weights = harness.load_model(model_name)
        conv = "conv" in models.get_spec(model_name).architecture
        n = 16 if args.quick else (args.conv_batch if conv else args.batch)
        x, labels = data.images[:n], data.labels[:n]
        # Slow contenders (a conv net on CPU): fewer rounds, no untimed warm-up call (nothing to amortise).
        rounds = args.rounds or (2 if args.quick else 5 if conv else 9)
        inner = 1 if kind == "pgd" or args.quick else 10 if conv else 40
        passes = steps if kind == "pgd" else 1
        if kind == "pgd":
            out["setting"] = {
                "norm": "linf",
                "eps": 0.3,
                "step_size": 0.01,
                "steps": steps,
                "random_start": False,
            }
            build_ours = functools.partial(
                ours, "pgd", model, x, labels, eps=0.3, steps=steps, step_size=0.01, random_start=False
            )
            build_peer = lambda p: peers.pgd(p, model, x, labels, eps=0.3, step=0.01, steps=steps)  # noqa: B023, E731
        else:
            out["setting"] = {"norm": "linf", "eps": 0.3}
            build_ours = functools.partial(ours, "fgsm", model, x, labels, eps=0.3)
            build_peer = lambda p: peers.fgsm(p, model, x, labels, eps=0.3)  # noqa: B023, E731
        outputs: dict[str, torch.Tensor] = {}
        contenders = {"limit": repeated(limit(model, x, labels, passes), inner, {}, "limit")}
        if kind == "pgd":  # a pass can cost more away from the clean images (see LIMIT_AT_ADV)
            x_adv = build_ours(images_only=True)()
            contenders[LIMIT_AT_ADV] = repeated(limit(model, x_adv, labels, passes), inner, {}, LIMIT_AT_ADV)
        contenders["ours"] = repeated(build_ours(), inner, outputs, "ours")
        contenders[PERTURB] = repeated(build_ours(images_only=True), inner, outputs, PERTURB)
        for p in peers.PEERS:
            if peers.usable(status, p):
                contenders[p] = repeated(build_peer(p), inner, outputs, p)
        warm = not conv or kind == "fgsm"
        times = harness.alternate(contenders, rounds, warmup=warm)
        lim = harness.median(times["limit"]) / inner
        rows = {}
        for name, ts in times.items():
            t = harness.median(ts) / inner
            row = {"time_s": t, "ratio": t / lim, "spread": (max(ts) - min(ts)) / inner / lim}
            if name in outputs:
                success, _ = peers.verify(model, x, labels, outputs[name])
                row["success_rate"] = float(success.float().mean())
            rows[name] = row
        best_peer = min((r["ratio"] for k, r in rows.items() if k in peers.PEERS), default=math.nan)
        out["models"][model_name] = {
            "weights": weights,
            "batch": n,
            "passes": passes,
            "rounds": rounds,
            "calls_per_timing": inner,
            "contenders": rows,
            "ours_vs_best_peer": rows["ours"]["ratio"] / best_peer if best_peer == best_peer else None,
            "perturb_vs_best_peer": rows[PERTURB]["ratio"] / best_peer if best_peer == best_peer else None,
        }
    return out


def gradient_table(kind: str, result: dict) -> str:
    rows = []
    for model_name, m in result["models"].items():
        for name, r in m["contenders"].items():
            rows.append(
                [model_name, name, r["time_s"] * 1000, r["ratio"], r["spread"], r.get("success_rate")]
            )
    title = "PGD-40 Linf (eps 0.3, step 0.01, no random start)" if kind == "pgd" else "FGSM Linf (eps 0.3)"
    weights = {k: m["weights"] for k, m in result["models"].items() if m["weights"] != "trained"}
    note = f"\n\nweights: {weights}" if weights else ""
    batches = ", ".join(f"{k} {m['batch']}" for k, m in result["models"].items())
    headers = ["model", "contender", "time ms", "x limit", "spread (x limit)", "success"]
    return f"{title}; batch: {batches}\n\n" + harness.table(headers, rows) + note


# ---------------------------------------------------------------- C&W L2: time and distortion


def cw_section(args, status, data) -> dict:
    """Untargeted C&W-L2 on the first 100 test images, the same settings for every contender, confidence 0:
    one round at c = 1 with lr 0.01 (torchattacks' defaults: it has no search over c), and our defaults,
    9 rounds of binary search from c = 0.01 with lr 0.1 (Foolbox's scheme: ours and Foolbox)."""
    if "cw" not in ATTACKS:
        return {"skipped": "core.attacks has no 'cw' attack yet"}
    n = 16 if args.quick else 100
    steps = 5 if args.quick else 100
    rounds = args.rounds or (1 if args.quick else 3)
    model, weights = harness.load_model("fc100-100-10")
    x, labels = data.images[:n], data.labels[:n]
    settings = [
        {"binary_search_steps": 1, "steps": steps, "lr": 0.01, "initial_const": 1.0, "confidence": 0.0},
        {
            "binary_search_steps": 2 if args.quick else 9,
            "steps": steps,
            "lr": 0.1,
            "initial_const": 0.01,
            "confidence": 0.0,
        },
    ]
    out = {"model": "fc100-100-10", "weights": weights, "n": n, "rounds": rounds, "settings": []}
    for setting in settings:
        outputs: dict[str, torch.Tensor] = {}
        contenders = {"ours": repeated(ours("cw", model, x, labels, **setting), 1, outputs, "ours")}
        for p in ("torchattacks", "foolbox"):
            if peers.usable(status, p) and not (p == "torchattacks" and setting["binary_search_steps"] != 1):
                contenders[p] = repeated(peers.cw_l2(p, model, x, labels, **setting), 1, outputs, p)
        times = harness.alternate(contenders, rounds, warmup=False)
        rows = {}
        for name, ts in times.items():
            success, l2 = peers.verify(model, x, labels, outputs[name])
            rows[name] = {
                "time_s": harness.median(ts),
                "success_rate": float(success.float().mean()),
                "mean_l2": float(l2[success].mean()) if success.any() else None,
                "success": success,
                "l2": l2,
            }
        both = torch.stack([r.pop("success") for r in rows.values()]).all(0)
        for r in rows.values():
            l2 = r.pop("l2")
            r["mean_l2_common"] = float(l2[both].mean()) if both.any() else None
        out["settings"].append({"setting": setting, "common_successes": int(both.sum()), "contenders": rows})
    return out


def cw_table(result: dict) -> str:
    if "skipped" in result:
        return f"C&W-L2: skipped: {result['skipped']}"
    rows = []
    for s in result["settings"]:
        st = s["setting"]
        label = (
            f"{st['binary_search_steps']} x {st['steps']} steps, c0 {st['initial_const']:g}, lr {st['lr']:g}"
        )
        for name, r in s["contenders"].items():
            rows.append(
                [
                    label,
                    name,
                    r["time_s"],
                    r["success_rate"],
                    r["mean_l2"],
                    r["mean_l2_common"],
                    s["common_successes"],
                ]
            )
    headers = ["setting", "contender", "time s", "success", "mean L2", "mean L2 (common)", "common n"]
    return f"C&W-L2 untargeted, confidence 0, {result['n']} images, {result['model']}\n\n" + harness.table(
        headers, rows
    )


# ---------------------------------------------------------------- the paper's L-BFGS


class RowCounter(nn.Module):
    """Counts the image rows the model sees in forward passes with gradient (the L-BFGS limit's unit)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.rows += len(z)
        return self.model(z)


def subnormal_weights(model: nn.Module) -> int:
    """Weights below float32's smallest normal number: some CPUs compute with them 10-50x slower (a trained
    sigmoid net has thousands), which slows the limit and the attack's model passes alike."""
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((p != 0) & (p.abs() < tiny)).sum()) for p in model.parameters())


@contextmanager
def flushed_subnormals() -> Iterator[None]:
    """The CPU flushes subnormal numbers to zero (FTZ/DAZ) inside the block: the speed of a CPU that does not
    penalise them."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def lbfgs_flushed(model, x, labels, params: dict, rows: int, passes: int) -> dict:
    """The batched run and its limit again with subnormals flushed to zero (CPU only): the ratio where the
    model's weights do not slow its passes. Timed once each, after the main measurement."""
    n = len(x)
    with flushed_subnormals():
        start = time.perf_counter()
        make_attack("lbfgs", model, **params).run(x, labels)
        batched_s = time.perf_counter() - start
        lim = harness.alternate({"limit": limit(model, x, labels, passes)}, 3, warmup=False)["limit"]
        limit_s = harness.median(lim) * rows / (passes * n)
    return {
        "subnormal_weights": subnormal_weights(model),
        "time_s": batched_s,
        "limit_s": limit_s,
        "limit_ratio": batched_s / limit_s,
    }


def lbfgs_section(args, status, data) -> dict:
    """Batched L-BFGS (minimum over the 9 targets, full search over c) on n images versus the one-image-
    at-a-time scipy reference on the first few of them: time per image and distortion agreement."""
    if "lbfgs" not in ATTACKS:
        return {"skipped": "core.attacks has no 'lbfgs' attack yet"}
    n = args.lbfgs_images or (16 if args.quick else 1000)
    n_ref = min(n, args.reference_images or (1 if args.quick else 50))
    params = {"rounds": 2, "max_iter": 10} if args.quick else {}
    model, weights = harness.load_model("fc100-100-10")
    x, labels = data.images[:n], data.labels[:n]

    counter = RowCounter(model)
    batched = make_attack("lbfgs", counter, **params)
    start = time.perf_counter()
    result = batched.run(x, labels)
    harness.sync()
    batched_s = time.perf_counter() - start
    rows = counter.rows

    reference = make_attack("lbfgs", model, method="scipy", **params)
    start = time.perf_counter()
    one_at_a_time = tqdm(range(n_ref), desc="scipy reference", leave=False, disable=args.quick)
    ref_results = [reference.run(x[i : i + 1], labels[i : i + 1]) for i in one_at_a_time]
    reference_s = time.perf_counter() - start

    # The batched run again after the reference: two timings around it, median of both.
    start = time.perf_counter()
    make_attack("lbfgs", model, **params).run(x, labels)
    harness.sync()
    batched_s = harness.median([batched_s, time.perf_counter() - start])

    # Limit: the same number of forward+backward image rows, in passes over a batch of n images.
    passes = max(1, round(rows / n))
    lim_s = harness.median(
        harness.alternate({"limit": limit(model, x, labels, passes)}, 3, warmup=False)["limit"]
    )

    ours_rms = result.rms[:n_ref]
    ref_rms = torch.cat([r.rms for r in ref_results])
    both = result.success[:n_ref] & torch.cat([r.success for r in ref_results])
    rel = (ours_rms[both] - ref_rms[both]) / ref_rms[both]
    out = {
        "model": "fc100-100-10",
        "weights": weights,
        "params": batched.params,
        "batched": {
            "n": n,
            "time_s": batched_s,
            "per_image_s": batched_s / n,
            "success_rate": float(result.success.float().mean()),
            "mean_rms": result.summary()["mean_rms_distortion"],
            "forward_backward_rows": rows,
            "limit_s": lim_s * rows / (passes * n),
        },
        "reference": {
            "n": n_ref,
            "time_s": reference_s,
            "per_image_s": reference_s / n_ref,
            "success_rate": float(torch.cat([r.success for r in ref_results]).float().mean()),
        },
        "shared": {
            "n_both_succeeded": int(both.sum()),
            "mean_rms_batched": float(ours_rms[both].mean()) if both.any() else None,
            "mean_rms_reference": float(ref_rms[both].mean()) if both.any() else None,
            "mean_relative_difference": float(rel.mean()) if both.any() else None,
            "max_abs_relative_difference": float(rel.abs().max()) if both.any() else None,
        },
    }
    out["batched"]["limit_ratio"] = batched_s / out["batched"]["limit_s"]
    out["speedup_per_image"] = out["reference"]["per_image_s"] / out["batched"]["per_image_s"]
    if x.device.type == "cpu":
        out["batched"]["flushed"] = lbfgs_flushed(model, x, labels, params, rows, passes)
    if peers.usable(status, "advertorch"):
        out["advertorch"] = advertorch_lbfgs(
            model, x[:n_ref], labels[:n_ref], quick=args.quick, ref_rms=ref_rms
        )
    else:
        out["advertorch"] = {"skipped": status.get("advertorch", "absent")}
    return out


def advertorch_lbfgs(model, x, labels, quick: bool, ref_rms: torch.Tensor) -> dict:
    """advertorch's LBFGSAttack on the reference images (all 9 targets, 9 rounds of c, 100 iterations)."""
    settings = {
        "binary_search_steps": 2 if quick else 9,
        "max_iterations": 10 if quick else 100,
        "initial_const": 1e-2,
    }
    run = peers.advertorch_lbfgs(model, x, labels, **settings)
    start = time.perf_counter()
    x_adv = run()
    seconds = time.perf_counter() - start
    success, l2 = peers.verify(model, x, labels, x_adv)
    rms = l2 / math.sqrt(x[0].numel())
    return {
        "n": len(x),
        "settings": settings,
        "time_s": seconds,
        "per_image_s": seconds / len(x),
        "success_rate": float(success.float().mean()),
        "mean_rms": float(rms[success].mean()) if success.any() else None,
        "mean_rms_reference_same_images": float(ref_rms[success].mean()) if success.any() else None,
    }


def lbfgs_table(r: dict) -> str:
    if "skipped" in r:
        return f"L-BFGS: skipped: {r['skipped']}"
    b, ref, sh = r["batched"], r["reference"], r["shared"]
    rows = [
        ["ours, batched", b["n"], b["time_s"], b["per_image_s"], b["success_rate"], b["mean_rms"]],
        [
            "ours, scipy one at a time",
            ref["n"],
            ref["time_s"],
            ref["per_image_s"],
            ref["success_rate"],
            sh["mean_rms_reference"],
        ],
    ]
    a = r["advertorch"]
    if "skipped" not in a:
        rows.append(
            [
                "advertorch LBFGSAttack x 9 targets",
                a["n"],
                a["time_s"],
                a["per_image_s"],
                a["success_rate"],
                a["mean_rms"],
            ]
        )
    text = harness.table(["contender", "images", "time s", "s / image", "success", "mean RMS"], rows)
    text += (
        f"\n\n- speed-up per image, batched vs scipy: {r['speedup_per_image']:.1f}x"
        f"\n- distortion on the {sh['n_both_succeeded']} shared images where both succeeded: batched {_f(sh['mean_rms_batched'])}"
        f" vs scipy {_f(sh['mean_rms_reference'])}, mean relative difference {_pct(sh['mean_relative_difference'])},"
        f" largest {_pct(sh['max_abs_relative_difference'])}"
        f"\n- limit: {b['forward_backward_rows']} forward+backward image rows = {b['limit_s']:.2f} s;"
        f" batched run = {b['limit_ratio']:.2f}x the limit"
    )
    if "flushed" in b:
        fl = b["flushed"]
        text += (
            f"\n- with subnormals flushed to zero (FTZ/DAZ; {fl['subnormal_weights']} of the model's weights are"
            f" subnormal, slow on some CPUs): batched {fl['time_s']:.2f} s, limit {fl['limit_s']:.2f} s ="
            f" {fl['limit_ratio']:.2f}x"
        )
    if "skipped" in a:
        text += f"\n- advertorch: {a['skipped']}"
    else:
        text += f"\n- advertorch on its successes: {_f(a['mean_rms'])} vs scipy {_f(a['mean_rms_reference_same_images'])}"
    return f"The paper's L-BFGS (minimum over 9 targets, search over c), {r['model']}\n\n{text}"


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:+.2f}%"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    reexec_in_peer_venv(args)
    harness.set_threads(args.threads)
    status = peer_status(args)
    harness.use_device(args.device)
    mnist = load_mnist("test")
    data = SimpleNamespace(images=mnist.images.to(args.device), labels=mnist.labels.to(args.device))
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    interpreter = "peer venv" if os.environ.get(REEXEC_ENV) else "project"  # no machine path in a card
    result = {"machine": harness.machine(), "python": interpreter, "peers": status, "quick": args.quick}
    texts = []
    for section in sections:
        if section in ("pgd", "fgsm"):
            result[section] = gradient_section(section, args, status, data)
            texts.append(gradient_table(section, result[section]))
        elif section == "cw":
            result["cw"] = cw_section(args, status, data)
            texts.append(cw_table(result["cw"]))
        else:
            result["lbfgs"] = lbfgs_section(args, status, data)
            texts.append(lbfgs_table(result["lbfgs"]))
        if not args.json:
            print(texts[-1] + "\n", flush=True)
    if not args.json:  # the tables are out already, each as its section finished
        print(f"{result['machine']}\npeers: {status}")
    tables = "\n\n".join(texts)
    harness.emit(result, args.json, tables, args.save, args.card, args.update_docs, printed=True)
    return result


if __name__ == "__main__":
    main()
