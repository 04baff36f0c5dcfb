"""What Tables 1 to 4 share: a seeded test subset, the minimum-distortion L-BFGS examples of a model,
the cross-model error matrix, Gaussian-noise controls and the RMS-amplified perturbations.

Protocol (the paper gives few details; these are ours, recorded in every card): the `n` images are a
seeded random subset of the 10,000 test images; each model attacks the images it classifies correctly
with the untargeted box-constrained L-BFGS of `core.attacks` (minimum over target labels, search over c);
an example counts when the attack succeeds (re-verified by a fresh forward pass). The "average minimum
distortion" is the mean RMS distortion of those examples; the error a set of examples induces on a model
is the share of them that model misclassifies (so it is 100% on the model they were made for).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from core.attacks import AttackResult, Param, gaussian_noise_baseline, make_attack
from core.attacks.spec import seed_param
from core.data import load_mnist, split_fingerprint
from core.errors import InvalidParameterError
from core.evaluation import leaderboard, sweep
from core.evaluation.protocol import Protocol, Selection
from core.experiments import paper
from core.experiments.writer import Column, Report, bars, base_card, heatmap
from core.models import load
from core.models.train import error_rate
from core.runtime import bar_disabled

# Fast search (default): the 3 most likely other labels, 5 values of c, 30 L-BFGS iterations each.
FAST_LBFGS = {"n_targets": 3, "rounds": 5, "max_iter": 30, "memory": 5}
# Full search (--full-search): the engine's defaults, all 9 other labels, 10 values of c, 100 iterations.
FULL_LBFGS = {"n_targets": 9, "rounds": 10, "max_iter": 100, "memory": 10}
BATCH = 250  # images per L-BFGS batch on the CPU: the optimiser's state stays cache-sized
# On a GPU every step costs its kernel launches more than its arithmetic, so a batch holds as many (image,
# target) problems x pixels as this: about 14 GB of optimiser state at memory 10, all of MNIST's test set.
GPU_PROBLEM_PIXELS = 2**27


def lbfgs_batch(device: torch.device, n_targets: int, pixels: int) -> int:
    """Images per batched L-BFGS run on `device`, for images of `pixels` values each."""
    if device.type == "cpu":
        return BATCH
    return max(1, GPU_PROBLEM_PIXELS // (n_targets * pixels))


def lbfgs_params(full: bool) -> dict:
    return dict(FULL_LBFGS if full else FAST_LBFGS)


def experiment_protocol(n: int, seed: int) -> Protocol:
    """The tables' images: every correctly classified image among a seeded random n of the test images,
    in index order (every correctly classified test image when n >= 10,000)."""
    if n < 1:
        raise InvalidParameterError("--n must be at least 1.")
    size = len(load_mnist("test"))
    if n >= size:
        return Protocol(split="test", n=None)
    idx = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Protocol(split="test", n=None, seed=seed, indices=tuple(idx.tolist()))


def candidate_images(protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor]:
    """All the protocol's candidate images, whatever the model predicts (the noise controls use them)."""
    test = load_mnist(protocol.split)
    idx = protocol.candidates(len(test))
    return test.images[idx], test.labels[idx]


@dataclass
class Examples:
    """A model's successful minimum-distortion examples on the subset (clean, adversarial, true label)."""

    model: str
    x: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    n_attacked: int  # subset images the model classified correctly
    time_s: float

    @property
    def rms(self) -> torch.Tensor:
        return (self.x_adv - self.x).flatten(1).pow(2).mean(1).sqrt()

    @property
    def mean_rms(self) -> float:
        return float(self.rms.mean()) if len(self.x) else float("nan")

    @property
    def success_rate(self) -> float:
        return len(self.x) / max(self.n_attacked, 1)


def minimum_distortion_examples(
    name: str, model: nn.Module, protocol: Protocol, params: dict, progress: bool = True
) -> Examples:
    """Untargeted L-BFGS on the MNIST images the protocol selects, keeping the successes."""
    selection = protocol.select(model)
    return lbfgs_examples(
        name, model, selection.images, selection.labels, params, progress, "mnist", selection
    )


def lbfgs_examples(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    params: dict,
    progress: bool = True,
    dataset: str = "mnist",
    selection: Selection | None = None,
) -> Examples:
    """Untargeted L-BFGS on given images, in batches, keeping the successes; recorded in the leaderboard
    with the protocol's selection when there is one."""
    start = time.perf_counter()
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    attack = make_attack("lbfgs", model, **params)
    size = lbfgs_batch(attack.device, attack.n_targets, x[0].numel())
    results = []
    batches = range(0, len(x), size)
    for i in tqdm(batches, desc=f"L-BFGS {name}", unit="batch", disable=bar_disabled(progress), leave=False):
        result = attack.run(x[i : i + size], labels[i : i + size])
        results.append(result)
        ok = result.success
        kept.append((result.x[ok], result.x_adv[ok], result.labels[ok]))
    xs, advs, ys = (torch.cat(parts) if parts else torch.empty(0) for parts in zip(*kept, strict=True))
    if results:
        leaderboard.record_result(
            AttackResult.concat(results), name, source="reproduce", dataset=dataset, selection=selection
        )
    return Examples(name, xs, advs, ys, len(x), time.perf_counter() - start)


def _attack_all_on_ray(
    names: tuple[str, ...],
    protocol: Protocol,
    candidates: int,
    params: dict,
    cluster: sweep.Cluster,
    progress,
) -> dict[str, Examples]:
    """The same L-BFGS examples as `_attack_all`, computed as a sweep (shards of BATCH images on Ray,
    resumable, per-example rows and adversarial images kept in the leaderboard). The sweep attacks every
    candidate; the images a model misclassified are dropped here, as `protocol` would drop them."""
    every = replace(protocol, n=candidates, correct_only=False)
    tasks = sweep.plan(
        list(names), ["lbfgs"], protocol=every, shard_size=BATCH, params=params, keep_images=True
    )
    summary = sweep.execute(
        tasks, path=cluster.path, address=cluster.address, workers=cluster.workers,
        label=f"L-BFGS examples of {len(names)} models on {candidates} test images", progress=progress is True,
    )  # fmt: skip
    if summary.failed:
        raise sweep.SweepError(
            f"{len(summary.failed)} tasks failed, first: {next(iter(summary.failed.values()))}"
        )
    test = load_mnist(protocol.split)
    examples = {}
    for name in names:
        rows = [
            r
            for t in tasks
            if t.model == name
            for r in leaderboard.task_examples(t.task_id, path=cluster.path)
        ]
        correct = [r for r in rows if r["clean_pred"] == r["label"]]
        kept = [r for r in correct if r["success"]]
        ids = torch.tensor([r["image_id"] for r in kept], dtype=torch.long)
        x = test.images[ids]
        x_adv = [torch.frombuffer(bytearray(r["x_adv"]), dtype=torch.float32) for r in kept]
        x_adv = torch.stack(x_adv).reshape(x.shape) if kept else x
        time_s = sum(r["time_s"] for r in rows)
        examples[name] = Examples(name, x, x_adv, test.labels[ids], len(correct), time_s)
    return examples


def amplify(x: torch.Tensor, x_adv: torch.Tensor, target_rms: float) -> torch.Tensor:
    """The paper's Table 4 rescaling: x + (x' - x) * target / rms(x' - x), clipped to [0, 1]."""
    r = x_adv - x
    scale = target_rms / r.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return (x + r * scale.view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def noise_error(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, std: float, seed: int) -> float:
    """Error of a model on the images with Gaussian noise of standard deviation `std`, clipped (the same
    noise for every model: the draw depends on the seed only)."""
    return float(
        gaussian_noise_baseline(model, x, labels, rms=std, seed=seed, exact=False).success.float().mean()
    )


def _load_all(names: tuple[str, ...], device) -> dict[str, nn.Module]:
    return {name: load(name, device) for name in names}


def notify(progress, fraction: float, text: str) -> None:
    """Report progress to a callback (the dashboard's st.progress); `True` means tqdm bars instead."""
    if callable(progress):
        progress(fraction, text)


def attack_examples(
    models: dict[str, nn.Module], protocol: Protocol, params: dict, progress, on_ray: sweep.Cluster | None
) -> dict[str, Examples]:
    """Every model's L-BFGS examples: in this process, or with `on_ray` as a resumable sweep on Ray (a
    killed run continues where it stopped: the finished shards are in the sweep's database)."""
    if on_ray is None:
        return _attack_all(models, protocol, params, progress)
    candidates = len(candidate_images(protocol)[0])
    return _attack_all_on_ray(tuple(models), protocol, candidates, params, on_ray, progress)


def _attack_all(models, protocol: Protocol, params, progress) -> dict[str, Examples]:
    examples = {}
    for i, (name, model) in enumerate(models.items()):
        notify(progress, i / len(models), f"L-BFGS on {name}")
        examples[name] = minimum_distortion_examples(name, model, protocol, params, progress is True)
    notify(progress, 1.0, "cross-feeding")
    return examples


# ------------------------------------------------------------------------------ Tables 1 and 3


def error_distortion_report(
    name: str,
    title: str,
    names: tuple[str, ...],
    splits: tuple[str, ...],
    targets: dict[str, dict[str, float]],
    n: int,
    seed: int,
    full_search: bool = False,
    device=None,
    progress: bool | Callable[[float, str], None] = True,
    on_ray: sweep.Cluster | None = None,
) -> Report:
    """Errors on whole splits and the average minimum L-BFGS distortion on n test images, per model; with
    `on_ray` the examples are computed as a sweep on that Ray cluster."""
    start = time.perf_counter()
    params = lbfgs_params(full_search)
    protocol = experiment_protocol(n, seed)
    models = _load_all(names, device)
    data = {split: load_mnist(split) for split in splits}
    examples = attack_examples(models, protocol, params, progress, on_ray)
    rows = []
    for model_name, model in models.items():
        row: dict = {"model": paper.LABELS.get(model_name, model_name), "name": model_name}
        for split, d in data.items():
            row[f"{split}_error"] = error_rate(model, d.images, d.labels)
            row[f"paper_{split}_error"] = targets[model_name].get(f"{split}_error")
        ex = examples[model_name]
        row |= {
            "min_distortion": ex.mean_rms,
            "paper_min_distortion": targets[model_name]["min_distortion"],
            "ratio_to_paper": ex.mean_rms / targets[model_name]["min_distortion"],
            "attacked": ex.n_attacked,
            "success_rate": ex.success_rate,
            "attack_time_s": round(ex.time_s, 1),
        }
        rows.append(row)
    columns = [Column("model", "model", "text")]
    for split in splits:
        columns += [
            Column(f"{split}_error", f"{split} error", "pct"),
            Column(f"paper_{split}_error", "paper", "pct"),
        ]
    columns += [
        Column("min_distortion", "av. min. distortion", "dist"),
        Column("paper_min_distortion", "paper", "dist"),
        Column("ratio_to_paper", "ours / paper", "num"),
        Column("attacked", "images attacked", "text"),
        Column("success_rate", "L-BFGS success", "pct"),
    ]
    labels = [r["model"] for r in rows]

    def draw(path):
        bars(
            path,
            labels,
            {"ours": [r["min_distortion"] for r in rows], "paper": [r["paper_min_distortion"] for r in rows]},
            f"{title}: average minimum distortion (RMS)",
            "RMS distortion",
        )

    card = base_card(
        name,
        n,
        seed,
        models=list(names),
        **protocol_record(protocol),
        attack={"name": "lbfgs", "untargeted": True, "params": params, "full_search": full_search},
        time_s=time.perf_counter() - start,
        device=str(next(next(iter(models.values())).parameters()).device),
    )
    notes = [
        f"L-BFGS: {_describe_search(params)}; distortion = mean RMS over the successful examples of the "
        "correctly classified images; errors are over the whole splits.",
    ]
    return Report(name, title, columns, rows, card, draw, notes)


def _describe_search(params: dict) -> str:
    return (
        f"untargeted as the minimum over the {params['n_targets']} most likely other labels, "
        f"{params['rounds']} values of c per label (x10 / /10 until bracketed, then geometric bisection), "
        f"{params['max_iter']} L-BFGS iterations each (memory {params['memory']})"
    )


def protocol_record(protocol: Protocol) -> dict:
    """What a card keeps about the images: the protocol (indices left out: the seed and n rebuild them),
    its fingerprint and the fingerprint of the candidate indices."""
    record = protocol.to_dict()
    if protocol.indices is not None:
        record["indices"] = f"{len(protocol.indices)} seeded random test indices"
    candidates = protocol.candidates(len(load_mnist(protocol.split)))
    return {
        "protocol": record,
        "protocol_id": protocol.fingerprint,
        "protocol_description": protocol.describe(),
        "test_indices_fingerprint": split_fingerprint(candidates.sort().values),
    }


# ------------------------------------------------------------------------------ Tables 2 and 4

# A recompute on a subset (the dashboard's): at most 500 images, so that it stays within minutes on a CPU.
SUBSET: tuple[Param, ...] = (
    Param("n", int, 30, "test images", "The subset of MNIST test images each model is attacked on.",
          low=5, high=500, step=5),
    seed_param("subset of test images"),
)  # fmt: skip


def transfer_report(
    name: str,
    title: str,
    names: tuple[str, ...],
    noise_stds: tuple[float, ...],
    targets: dict[str, list[float]],
    target_distortion: dict[str, float] | None,
    n: int,
    seed: int,
    amplify_rms: float | None = None,
    full_search: bool = False,
    device=None,
    progress: bool | Callable[[float, str], None] = True,
    on_ray: sweep.Cluster | None = None,
) -> Report:
    """Examples made for each model fed to every model (error induced), Gaussian-noise rows, and with
    `amplify_rms` the same examples with their perturbation rescaled to that RMS. With `on_ray` the
    examples are computed as a sweep on that Ray cluster."""
    start = time.perf_counter()
    params = lbfgs_params(full_search)
    protocol = experiment_protocol(n, seed)
    x, y = candidate_images(protocol)
    models = _load_all(names, device)
    examples = attack_examples(models, protocol, params, progress, on_ray)
    cols = [paper.LABELS.get(m, m) for m in names]
    rows: list[dict] = []

    def add_row(key: str, label: str, errors: list[float], distortion: float, count: int) -> None:
        row = {"source": label, "key": key, "distortion": distortion, "examples": count}
        row |= {c: e for c, e in zip(cols, errors, strict=True)}
        ref = targets.get(key)
        row |= {f"paper {c}": (ref[j] if ref else None) for j, c in enumerate(cols)}
        row["paper distortion"] = (target_distortion or {}).get(key)
        rows.append(row)

    def errors_on(images: torch.Tensor, labels: torch.Tensor) -> list[float]:
        if not len(images):
            return [float("nan")] * len(models)
        return [error_rate(m, images, labels) for m in models.values()]

    for src, ex in examples.items():
        add_row(src, paper.LABELS.get(src, src), errors_on(ex.x_adv, ex.labels), ex.mean_rms, len(ex.x))
    for std in noise_stds:
        errs = [noise_error(m, x, y, std, seed) for m in models.values()]
        add_row(f"gaussian {std:g}", f"Gaussian noise, stddev {std:g}", errs, std, len(x))
    if amplify_rms is not None:
        for src, ex in examples.items():
            amplified = amplify(ex.x, ex.x_adv, amplify_rms)
            label = f"{paper.LABELS.get(src, src)}, amplified to RMS {amplify_rms:g}"
            add_row(f"amplified {src}", label, errors_on(amplified, ex.labels), amplify_rms, len(ex.x))
        # keep the noise row of the amplified magnitude last, as in the paper
        rows.sort(key=lambda r: r["key"].startswith("gaussian") and float(r["key"].split()[1]) >= amplify_rms)

    columns = [Column("source", "examples made for", "text")]
    for c in cols:
        columns.append(Column(c, c, "pct", paper_key=f"paper {c}"))
    columns += [Column("distortion", "av. distortion", "dist"), Column("examples", "examples", "text")]
    matrix = [[r[c] for c in cols] for r in rows]
    ref = [[r[f"paper {c}"] for c in cols] if r[f"paper {cols[0]}"] is not None else None for r in rows]

    def draw(path):
        heatmap(path, matrix, [r["source"] for r in rows], cols, title, paper=ref)

    card = base_card(
        name,
        n,
        seed,
        models=list(names),
        **protocol_record(protocol),
        attack={"name": "lbfgs", "untargeted": True, "params": params, "full_search": full_search},
        noise_stds=list(noise_stds),
        amplify_rms=amplify_rms,
        columns=cols,
        matrix=matrix,
        paper_matrix=ref,
        row_labels=[r["source"] for r in rows],
        time_s=time.perf_counter() - start,
    )
    notes = [
        f"L-BFGS: {_describe_search(params)}. Each cell: share of the row's examples the column model "
        "misclassifies (true label); noise rows: the same n test images with N(0, stddev^2) noise, clipped.",
        "Cells: ours (the paper's in brackets).",
    ]
    return Report(name, title, columns, rows, card, draw, notes)
