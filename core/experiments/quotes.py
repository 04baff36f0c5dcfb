"""The numbers the hand-written discussion (discussion.md) quotes, read from the stored result cards.

discussion.md is a template: `{t1_ratio}` stands for a figure computed here from docs/results/<table>/
<table>.json, so a rerun of a table changes the prose with it and no figure is ever typed by hand. A
quote whose card is missing renders as "(not run)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import mean
from typing import Any

from core.evaluation.validate import MINIMAL_ATTACKS, SAMPLES
from core.experiments import paper
from core.experiments.adversarial import FAST_LBFGS, FULL_LBFGS
from core.models import MNIST_MODELS
from core.models import read_card as read_model_card

Card = dict[str, Any]


def pct(value: float, digits: int = 0) -> str:
    return f"{100 * value:.{digits}f}%"


def span(values: Iterable[float], show: Callable[[float], str] = lambda v: f"{v:.2f}") -> str:
    """'a-b' from the smallest to the largest value (one value when they print alike)."""
    values = list(values)
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low}-{high}"


def pct_span(values: Iterable[float], digits: int = 0) -> str:
    return span([100 * v for v in values], lambda v: f"{v:.{digits}f}") + "%"


FC10_MATCHED = ("fc10-1e-4", "fc10-1e-2")  # the softmax models lambda/2 * sum W^2 reproduces
MLPS = ("fc100-100-10", "fc200-200-10", "ae400-10")  # Table 1's multi-layer models


def _rows(card: Card, key: str = "name") -> dict[str, dict]:
    return {row[key]: row for row in card["rows"]}


def _cell(card: Card, source: str, column_model: str) -> dict[str, float]:
    """Ours and the paper's error induced by the examples of `source` (row key) on a column model."""
    rows = _rows(card, "key")
    label = card["columns"][card["models"].index(column_model)]
    return {"ours": rows[source][label], "paper": rows[source][f"paper {label}"]}


def search(params: dict) -> str:
    """An L-BFGS preset in words, e.g. '3 most likely other labels, 5 values of c, 30 L-BFGS iterations
    each (memory 5)'."""
    return (
        f"the {params['n_targets']} most likely other labels, {params['rounds']} values of c, "
        f"{params['max_iter']} L-BFGS iterations each (memory {params['memory']})"
    )


def where(card: Card) -> str:
    """Where a card's run went: 'cpu', or 'cuda, NVIDIA H200' with the GPU the card names."""
    device = card.get("device", "cpu")
    return f"{device}, {card['gpu']}" if card.get("gpu") and device != "cpu" else device


def _table1_on_gpu(card: Card) -> str:
    """'Table 1 (the paper's full search, 10,000 test images) in 27 s; ' for a card made on a GPU, else ''."""
    if card.get("device", "cpu") == "cpu":
        return ""
    search = "the paper's full search" if card["attack"].get("full_search") else "the fast search"
    return f"Table 1 ({search}, {card['n']:,} test images) in {card['time_s']:.0f} s; "


def table1(card: Card) -> dict[str, str]:
    rows = _rows(card)
    deep = [rows[m] for m in ("fc100-100-10", "fc200-200-10", "ae400-10")]
    weak = rows["fc10-1"]
    return {
        "t1_time": f"{card['time_s']:.0f}",
        "t1_search": search(card["attack"]["params"]),
        "t1_where": where(card),
        "t1_on_gpu": _table1_on_gpu(card),
        "t1_n": f"{card['n']:,}",
        "t1_ratio": span((r["ratio_to_paper"] for r in card["rows"]), lambda v: f"{v:.2f}"),
        "t1_deep": span((r["min_distortion"] for r in deep), lambda v: f"{v:.3f}"),
        "t1_deep_paper": span((r["paper_min_distortion"] for r in deep), lambda v: f"{v:.3f}"),
        "t1_fc10_1_train": f"{pct(weak['train_error'], 1)} vs {pct(weak['paper_train_error'], 1)}",
        "t1_fc10_1_test": f"{pct(weak['test_error'], 1)} vs {pct(weak['paper_test_error'], 1)}",
        "t1_fc10_1_error": pct(weak["test_error"]),
        "t1_fc100": f"{rows['fc100-100-10']['min_distortion']:.3f} vs {rows['fc100-100-10']['paper_min_distortion']:.3f}",
        "t1_fc10_1e4_train_gap": f"{100 * (rows['fc10-1e-4']['train_error'] - rows['fc10-1e-4']['paper_train_error']):+.1f}",
        "t1_mlp_train": pct_span((r["train_error"] for r in deep[:2]), 2),
    }


def table2(card: Card) -> dict[str, str]:
    models = card["models"]
    rows = _rows(card, "key")
    labels = card["columns"]
    off = [rows[s][labels[j]] for s in models for j, m in enumerate(models) if m != s]
    noise1 = [rows["gaussian 0.1"][c] for c in labels]
    noise3 = rows["gaussian 0.3"]
    big = [labels[j] for j, v in enumerate(noise1) if v > 0.1]
    cross = _cell(card, "fc200-200-10", "fc100-100-10")
    mlps = [m for m in MLPS if m in models]
    mlp_transfer = [_cell(card, s, t)["ours"] for s in mlps for t in mlps if s != t]
    return {
        "t2_mlp_transfer": pct_span(mlp_transfer),
        "t2_mlp_noise": pct_span(rows["gaussian 0.1"][labels[models.index(m)]] for m in mlps),
        "t2_n": f"{card['n']:,}",
        "t2_time": f"{card['time_s']:.0f}",
        "t2_off_diagonal_mean": pct(mean(off)),
        "t2_noise01": pct_span(noise1),
        "t2_noise01_above10": ", ".join(big) or "none",
        "t2_fc200_to_fc100": f"{pct(cross['ours'])} vs {pct(cross['paper'])}",
        "t2_noise03": pct_span(noise3[c] for c in labels),
        "t2_noise03_paper": pct_span(noise3[f"paper {c}"] for c in labels),
    }


def table3(card: Card) -> dict[str, str]:
    rows = card["rows"]
    own = [r["p1_error"] if r["name"].endswith("p1") else r["p2_error"] for r in rows]
    gaps = []
    for r in rows:
        other = "p2" if r["name"].endswith("p1") else "p1"
        gaps += [r[f"{other}_error"] - r[f"paper_{other}_error"], r["test_error"] - r["paper_test_error"]]
    return {
        "t3_time": f"{card['time_s']:.0f}",
        "t3_own_half": pct_span(own, 2),
        "t3_gap_pp": span((100 * g for g in gaps), lambda v: f"{v:.1f}"),
        "t3_ratio": span((r["ratio_to_paper"] for r in rows), lambda v: f"{v:.2f}"),
    }


def table4(card: Card) -> dict[str, str]:
    models = card["models"]
    rows = _rows(card, "key")
    labels = dict(zip(models, card["columns"], strict=True))
    others = [(s, t) for s in models for t in models if s != t]
    across = [(s, t) for s, t in others if s[-2:] != t[-2:]]  # trained on different halves (-p1 / -p2)

    def cells(prefix: str, pairs: list[tuple[str, str]], who: str = "ours") -> list[float]:
        return [_cell(card, prefix + s, t)[who] for s, t in pairs]

    minimum = [rows[s]["distortion"] for s in models]
    return {
        "t4_time": f"{card['time_s']:.0f}",
        "t4_across": pct_span(cells("", across)),
        "t4_across_paper": pct_span(cells("", across, "paper")),
        "t4_p1_to_p2": pct_span(cells("", [p for p in across if p[0].endswith("p1")])),
        "t4_p2_to_p1": pct_span(cells("", [p for p in across if p[0].endswith("p2")])),
        "t4_same_rms_noise": pct_span(rows["gaussian 0.06"][labels[m]] for m in models),
        "t4_fc123_to_fc100": "{ours} vs the paper's {paper}".format(
            **{k: pct(v) for k, v in _cell(card, "fc123-456-10-p1", "fc100-100-10-p1").items()}
        ),
        "t4_amplify_rms": f"{card['amplify_rms']:g}",
        "t4_amplify_factor": f"{card['amplify_rms'] / mean(minimum):.1f}",
        "t4_amplified": pct_span(cells("amplified ", others)),
        "t4_amplified_across": pct_span(cells("amplified ", across)),
        "t4_amplified_across_paper": pct_span(cells("amplified ", across, "paper")),
        "t4_amplified_diagonal": pct_span(cells("amplified ", [(s, s) for s in models]), 1),
    }


def table5(card: Card) -> dict[str, str]:
    network = {r["model"]: r for r in card["rows"] if r["layer"] == "network"}
    layers = [r for r in card["rows"] if r["layer"] != "network"]
    blocks = [r for r in layers if r["model"] == "mobilenet_v2" and r["layer"].startswith("Block")]
    plain = [r for r in layers if r["model"] in ("cnn", "alexnet") and r["layer"] != "Input"]

    def product(model: str) -> str:
        row = network.get(model)
        return "(not run)" if row is None else f"{row['upper_bound']:.3g} vs {row['empirical']:.3g}"

    return {
        "t5_time": f"{card['time_s']:.0f}",
        "t5_iters": str(card["method"]["iters"]),
        "t5_tol": f"{card['method']['tol']:g}",
        "t5_input": f"{min(r['upper_bound'] for r in layers if r['layer'] == 'Input'):.1f}"
        if any(r["layer"] == "Input" for r in layers)
        else "(not run)",
        "t5_cnn": product("cnn"),
        "t5_efficientnet": product("efficientnet_lite0"),
        "t5_mobilenet": product("mobilenet_v2"),
        "t5_block_max": f"{max((r['upper_bound'] for r in blocks), default=float('nan')):.0f}",
        "t5_plain_looseness": span((r["looseness"] for r in plain), lambda v: f"{v:.1f}"),
        "t5_block_looseness": span((r["looseness"] for r in blocks), lambda v: f"{v:.0f}"),
    }


def advtrain(card: Card) -> dict[str, str]:
    plain, pool, pgd = card["rows"]
    training = card["training"]
    return {
        "adv_time": f"{card['time_s']:.0f}",
        "adv_n": f"{card['n']:,}",
        "adv_pool_size": f"{training['pool']['size']:,}",
        "adv_pool_refresh": f"{training['pool']['refresh']:,}",
        "adv_pool_refresh_every": str(training["pool"]["refresh_every"]),
        "adv_pool_per_batch": str(training["pool"]["per_batch"]),
        "adv_batch": str(training["config"]["batch_size"]),
        "adv_epochs": str(training["epochs"]),
        "adv_pool_rounds": str(training["pool_attack"]["rounds"]),
        "adv_pool_iters": str(training["pool_attack"]["max_iter"]),
        "adv_pool_error": pct(pool["test_error"], 2),
        "adv_plain_error": pct(plain["test_error"], 2),
        "adv_pgd_error": pct(pgd["test_error"], 2),
        "adv_distortion": f"{plain['min_distortion']:.3f} -> {pool['min_distortion']:.3f}",
        "adv_pgd_attack": f"{pct(plain['pgd_error'])} -> {pct(pool['pgd_error'])}",
        "adv_pgd_eps": f"{card['evaluation']['pgd']['eps']:g}",
        "adv_pgd_steps": str(card["evaluation"]["pgd"]["steps"]),
        "adv_pgdtrain_eps": f"{training['pgd']['eps']:g}",
        "adv_pgdtrain_steps": str(training["pgd"]["steps"]),
        "adv_pgdtrain_distortion": f"{pgd['min_distortion']:.3f}",
        "adv_pgdtrain_attack": pct(pgd["pgd_error"]),
    }


def _percent_cell(value: float) -> str:
    return f"{100 * value:.0f} %"


def validate(card: Card) -> dict[str, str]:
    """The defence and twin tables of docs/validate.md, and the example report's verdict and time."""
    short = {
        "Holds": "holds",
        "Unverified": "unverified (an indicator of attack failure fired)",
        "Only seems to hold": "only seems to hold",
        "Does not help": "does not help",
    }
    lines = ["| eps | defence | clean | transfer | plain | BPDA | verdict |", "|---|---|---|---|---|---|---|"]
    for r in card["rows"]:
        verdict = next((v for k, v in short.items() if r["verdict"].startswith(k)), "")
        cells = [f"{r['eps']:g}", r["defence"]]
        cells += [_percent_cell(r[k]) for k in ("clean_accuracy", "robust_transfer", "robust_plain")]
        cells += [_percent_cell(r["robust_adaptive"]), verdict]
        lines.append("| " + " | ".join(cells) + " |")
    twins = card["twins"]["rows"]
    twin_lines = ["| model | clean | robust | twin | twin clean | twin robust |", "|---|---|---|---|---|---|"]
    for t in twins:
        cells = [f"`{t['model']}`", _percent_cell(t["clean_accuracy"]), _percent_cell(t["robust_accuracy"])]
        cells += [f"`{t['twin']}`", _percent_cell(t["twin_clean_accuracy"])]
        cells += [_percent_cell(t["twin_robust_accuracy"])]
        twin_lines.append("| " + " | ".join(cells) + " |")
    pgd = next((t for t in twins if t["model"].endswith("-pgdtrain")), None)
    example = card["example_report"]
    return {
        "val_n": str(card["n"]),
        "val_model": card["model"],
        "val_steps": str(card["attack"]["steps"]),
        "val_seed": str(card["seed"]),
        "val_protocol": card["protocol_description"],
        "val_defences": "\n".join(lines),
        "val_twin_eps": f"{card['twins']['eps']:g}",
        "val_twins": "\n".join(twin_lines) if twins else "No adversarially trained model was in the zoo.",
        "val_pgdtrain": f"keeps {pct(pgd['robust_accuracy'])} accuracy at Linf {card['twins']['eps']:g} where its "
        f"plain twin keeps {pct(pgd['twin_robust_accuracy'])}"
        if pgd
        else "(not run)",
        "val_image": str(example["image"]),
        "val_verdict": example["verdict"],
        "val_report_time": f"{example['time_s']:.0f}",
        "val_report_cached": "cached" if example["reference_was_cached"] else "computed in this run",
        "val_reference_n": str(example["reference_n"]),
        "val_time": f"{card['time_s']:.0f}",
        "val_date": card["date"][:10],
        "val_threads": str(card["threads"]),
    }


# ------------------------------------------------------------------------- the benchmarks' cards

# Each benchmark's card (docs/results/performance/<name>.json) and the command that stores it.
PERFORMANCE = {
    "attacks": "python benchmarks/attacks.py --only pgd,fgsm,cw --update-docs",
    "attacks-lbfgs": "python benchmarks/attacks.py --only lbfgs --card attacks-lbfgs --update-docs",
    "live": "python benchmarks/live.py --update-docs",
    "units": "python benchmarks/units.py --update-docs",
    "figures": "python benchmarks/figures.py --update-docs",
    "dashboard": "python benchmarks/dashboard.py --update-docs",
    "models": "python benchmarks/models.py --update-docs",
    "certify": "python benchmarks/certify.py --update-docs",
    "autoattack": "python benchmarks/autoattack.py --update-docs",
    "smoothing": "python benchmarks/smoothing.py --update-docs",
    "gpu-attacks-pgd": "bash benchmarks/gpu.sh",
    "gpu-attacks-lbfgs": "bash benchmarks/gpu.sh",
    "gpu-smoothing": "bash benchmarks/gpu.sh",
}


def perf_key(card: str) -> str:
    return "perf_" + card.replace("-", "_")


def conditions(card: Card) -> str:
    """When and how a benchmark ran: what a reader needs before trusting its times."""
    m = card["machine"]
    before, after = m["load_average_1_5_15"][0], card["machine_after"]["load_average_1_5_15"][0]
    return (
        f"`{card['command']}`, {m['date']}, commit `{m['commit'] or 'not a git checkout'}`, {where(m)}, "
        f"{m['torch_threads']} torch thread(s); {m['cores']} cores ({m['cpu']}), torch {m['torch']}; "
        f"1-minute load average {before:g} at the start, {after:g} at the end"
    )


def perf_block(name: str, card: Card | None) -> str:
    """A benchmark's section body: its conditions and the tables its command printed, or how to make it."""
    if card is None:
        return f"Not measured yet: `{PERFORMANCE[name]}`."
    return f"{conditions(card)}.\n\n{card['tables'].strip()}"


def _ratios(model: dict) -> str:
    """'ours 1.09x, ours, images only 1.07x, torchattacks 1.40x' (every contender but the limits)."""
    rows = model["contenders"].items()
    return ", ".join(f"{k} {r['ratio']:.2f}x" for k, r in rows if not k.startswith("limit"))


def perf_attacks(card: Card) -> dict[str, str]:
    found = {}
    for kind in ("pgd", "fgsm"):
        for model, entry in card.get(kind, {}).get("models", {}).items():
            found[f"perf_{kind}_{'cnn' if model == 'cnn' else 'mlp'}"] = _ratios(entry)
    for setting in card.get("cw", {}).get("settings", []):
        rounds = "search" if setting["setting"]["binary_search_steps"] > 1 else "one"
        found[f"perf_cw_{rounds}"] = "; ".join(
            f"{k} {r['time_s']:.2f} s, L2 {r['mean_l2_common']:.2f}" for k, r in setting["contenders"].items()
        )
    return found


def perf_lbfgs(card: Card) -> dict[str, str]:
    r = card["lbfgs"]
    shared = r["shared"]
    return {
        "perf_lbfgs_limit": f"{r['batched']['limit_ratio']:.2f}x",
        "perf_lbfgs_speedup": f"{r['speedup_per_image']:.1f}x",
        "perf_lbfgs_n": f"{r['batched']['n']:,}",
        "perf_lbfgs_distortion": f"{100 * shared['mean_relative_difference']:+.2f}% mean, "
        f"{100 * shared['max_abs_relative_difference']:.2f}% largest, on {shared['n_both_succeeded']} images",
    }


def _gpu_name(card: Card) -> str:
    return card["machine"].get("gpu") or "no GPU named"


def on_gpu(figures: Callable[[Card], dict[str, str]]) -> Callable[[Card], dict[str, str]]:
    """A CPU card's figures for the same benchmark's GPU card: perf_x becomes perf_gpu_x, with the GPU's
    name as perf_gpu_name."""

    def gpu_figures(card: Card) -> dict[str, str]:
        found = {k.replace("perf_", "perf_gpu_", 1): v for k, v in figures(card).items()}
        return found | {"perf_gpu_name": _gpu_name(card)}

    return gpu_figures


def perf_smoothing_gpu(card: Card) -> dict[str, str]:
    """CERTIFY's wall time per image at its best batch, per base model, as core.smoothing runs it."""
    ours = [r for r in card["rows"] if r["contender"] == "projected"]
    models = dict.fromkeys(r["model"] for r in ours)
    best = {m: min((r for r in ours if r["model"] == m), key=lambda r: r["s_per_image"]) for m in models}
    text = ", ".join(f"{m} {1e3 * r['s_per_image']:.1f} ms (batch {r['batch']:,})" for m, r in best.items())
    return {"perf_gpu_certify": text, "perf_gpu_name": _gpu_name(card)}


def perf_live(card: Card) -> dict[str, str]:
    every = {k.split(":")[0] + " " + k.split(":")[1]: r for k, r in card["stream"].items() if "every" in k}
    found = {"perf_live_steps": ", ".join(f"{k} {r['steps_per_s']:.3g}" for k, r in every.items())}
    browser = card.get("browser", {})
    first = [r["run_click_to_first_frame_s"] for r in browser.values() if "run_click_to_first_frame_s" in r]
    if first:
        found["perf_first_frame"] = span(first) + " s"
    return found


def perf_units(card: Card) -> dict[str, str]:
    layers = card["layers"].values()
    return {
        "perf_units_cache": span(r["cache_cold_s"] for r in layers) + " s",
        "perf_units_topk": span(r["top_k"]["unit"]["median_ms"] for r in layers) + " ms",
    }


def perf_dashboard(card: Card) -> dict[str, str]:
    if "skipped" in card:
        missing = f"(not measured: {card['skipped']})"
        return {"perf_cold_start": missing, "perf_peak_rss": missing, "perf_peak_verdict": missing}
    peak, goal = card["peak_rss_mb"], card["peak_goal_mb"]
    verdict = "under" if peak < goal else f"{peak - goal:.0f} MB over"
    return {
        "perf_cold_start": f"{card['median_interactive_s']:.2f} s",
        "perf_peak_rss": f"{peak:.0f} MB",
        "perf_peak_goal": f"{goal:.0f} MB",
        "perf_peak_verdict": f"The server's peak, {peak:.0f} MB, is {verdict} the goal of {goal:.0f} MB.",
    }


def performance(read: Callable[[str], Card | None]) -> dict[str, str]:
    """Every benchmark card's section (perf_<card>) and the figures the goals and the README quote."""
    figures = {"attacks": perf_attacks, "attacks-lbfgs": perf_lbfgs, "live": perf_live}
    figures |= {"units": perf_units, "dashboard": perf_dashboard}
    figures |= {"gpu-attacks-pgd": on_gpu(perf_attacks), "gpu-attacks-lbfgs": on_gpu(perf_lbfgs)}
    figures |= {"gpu-smoothing": perf_smoothing_gpu}
    found = {}
    for name in PERFORMANCE:
        card = read(f"performance/{name}")
        found[perf_key(name)] = perf_block(name, card)
        if card is not None:
            loads = card["machine"]["load_average_1_5_15"][0], card["machine_after"]["load_average_1_5_15"][0]
            found[perf_key(name) + "_load"] = span(loads, lambda v: f"{v:.1f}")
        if card is not None and name in figures:
            found.update(figures[name](card))
    return found


def certify(card: Card) -> dict[str, str]:
    """The attack-vs-truth table (rows of docs/results/certify) and what ran."""
    lines = [
        "| model | norm | attack | images with exact | median | p90 | max | within 1% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in card["rows"]:
        cells = [f"`{r['model']}`", r["norm"], r["attack"], str(r["images"])]
        cells += [f"{r[k]:.3f}" if r["images"] else "-" for k in ("median", "p90", "max")]
        cells.append(pct(r["within"]) if r["images"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    rows = {(r["model"], r["norm"], r["attack"]): r for r in card["rows"]}
    lbfgs = rows.get((card["models"][0], "l2", "lbfgs"), {})
    return {
        "cert_table": "\n".join(lines),
        "cert_verified_table": verified_table(card["verified"]),
        **milp_quotes(card["verified"]),
        "cert_n": str(card["n"]),
        "cert_relu_n": str(card["relu_n"]),
        "cert_relu_proven": str(card["relu_proven"]),
        "cert_time_limit": f"{card['time_limit_s']:g}",
        "cert_lbfgs_median": f"{lbfgs['median']:.3f}" if lbfgs.get("images") else "(not run)",
        "cert_time": f"{card['time_s']:.0f}",
        "cert_date": card["date"][:10],
        "cert_threads": str(card["threads"]),
        "cert_protocol": card["protocol_description"],
        **{  # cert_<model>_<norm>_<attack>: each attack's median distance as a multiple of the exact minimum
            f"cert_{r['model']}_{r['norm']}_{r['attack']}".replace("-", "_"): f"{r['median']:.2f}x"
            for r in card["rows"]
            if r["images"]
        },
    }


def milp_quotes(entries: list[dict]) -> dict[str, str]:
    """cert_milp_*: what the MILP at the budget settled on the entry that ran it (what CROWN and the PGD
    grid left open) and the robust accuracy it leaves, exact where nothing timed out."""
    (entry,) = [e for e in entries if "milp" in e]
    milp = entry["milp"]
    open_ = milp["milp_decided"] + milp["milp_undecided"]
    exact = milp["exact_robust_accuracy"]
    return {
        "cert_milp_model": f"`{entry['model']}`",
        "cert_milp_eps": f"{entry['eps']:g}",
        "cert_milp_open": str(open_),
        "cert_milp_robust": str(milp["milp_decided"] - milp["milp_flips"]),
        "cert_milp_flips": str(milp["milp_flips"]),
        "cert_milp_undecided": str(milp["milp_undecided"]),
        "cert_milp_s": f"{milp['milp_time_s'] / max(open_, 1):.1f}",
        "cert_milp_s_all": f"{entry['s_per_image']:.2f}",
        "cert_milp_accuracy": pct(exact) if exact is not None else f"at least {pct(milp['verified'])}",
        "cert_milp_verified": pct(entry["verified"]),
        "cert_milp_attack": pct(entry["attack"]),
    }


def verified_table(entries: list[dict]) -> str:
    """Verified beside attack robust accuracy per (model, budget): the true robust accuracy lies between."""
    lines = [
        "| model | budget | images | verified (CROWN) | attack (PGD grid) | median certified radius | "
        "largest certified radius | median smallest flip | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        flip = "-" if e["median_attack"] is None else f"{e['median_attack']:.3f}"
        cells = [f"`{e['model']}`", f"Linf {e['eps']:g}", str(e["n"]), pct(e["verified"]), pct(e["attack"]),
                 f"{e['median_certified']:.3f}", f"{max(im['certified'] for im in e['images']):.3f}", flip,
                 f"{e['s_per_image']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def autoattack(card: Card) -> dict[str, str]:
    """aa_<model>: robust accuracy under the standard ensemble with its interval and budget (and, at the
    leaderboard's budget, aa_<model>_vs_madry: at or above, or below it); aa_madry: the
    leaderboard's PGD-trained MNIST network at the same Linf budget."""
    found = {
        f"aa_{r['model']}".replace("-", "_"): f"{pct(r['robust_accuracy'], 1)} at Linf {r['eps']:g} "
        f"(95% interval {pct_span(r['robust_interval'], 1)}, {r['n']} test images)"
        for r in card["rows"]
    }
    madry = paper.AUTOATTACK_MNIST["Madry et al. 2018 (PGD training)"]["robust"]
    found |= {
        f"aa_{r['model']}_vs_madry".replace("-", "_"): "at or above"
        if r["robust_accuracy"] >= madry
        else "below"
        for r in card["rows"]
        if r["eps"] == paper.AUTOATTACK_MNIST_LINF
    }
    return {**found, "aa_madry": f"{pct(madry, 1)} at Linf {paper.AUTOATTACK_MNIST_LINF:g}"}


QUOTES: dict[str, Callable[[Card], dict[str, str]]] = {
    "table1": table1,
    "table2": table2,
    "table3": table3,
    "table4": table4,
    "table5": table5,
    "advtrain": advtrain,
    "validate": validate,
    "certify": certify,
    "autoattack": autoattack,
}


def zoo() -> dict[str, str]:
    """Each MNIST model's test error from its checkpoint card (err_<name>) beside the paper's (paper_<name>),
    names with "-" and "." spelled "_"."""
    found = {"paper_pool": f"{100 * paper.ADVTRAIN['pool_test_error_below']:g}%"}
    for name, spec in MNIST_MODELS.items():
        key = name.replace("-", "_").replace(".", "_")
        card = read_model_card(name)
        if card is not None:
            found[f"err_{key}"] = pct(card["test_error"], 2)
        if "test_error" in spec.paper:
            found[f"paper_{key}"] = f"{100 * spec.paper['test_error']:.3g}%"
    gaps = [abs(read_model_card(n)["test_error"] - MNIST_MODELS[n].paper["test_error"]) for n in FC10_MATCHED]
    found["fc10_gap"] = f"{100 * max(gaps):.2f}"
    return found


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "not measured yet" if key.startswith("perf_") else "(not run)"  # a benchmark's card is absent


def quotes(read: Callable[[str], Card | None]) -> dict[str, str]:
    """Every quotable figure of the stored cards (`read(name)` returns a card or None)."""
    lbfgs = MINIMAL_ATTACKS["lbfgs"]
    found: dict[str, str] = _Missing(
        full_search=search(FULL_LBFGS),
        fast_search=search(FAST_LBFGS),
        report_lbfgs=f"{lbfgs['rounds']} rounds of the search over c towards the {lbfgs['n_targets']} most "
        "likely other classes",
        report_noise_mnist=str(SAMPLES["mnist"]["noise_draws"]),
        report_noise_imagenet=str(SAMPLES["imagenet"]["noise_draws"]),
        report_lipschitz=str(SAMPLES["mnist"]["lipschitz_samples"]),
        **zoo(),
    )
    for name, compute in QUOTES.items():
        card = read(name)
        if card is not None:
            found.update(compute(card))
    found.update(performance(read))
    return found


def render(template: Path, read: Callable[[str], Card | None]) -> str:
    """The template with every {quote} filled from the cards."""
    return template.read_text().format_map(quotes(read))
