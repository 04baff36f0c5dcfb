"""Adversarial training (the paper's Section 4.2) on a 100-100-10 sigmoid network, beside PGD adversarial
training (Madry et al., 2018) and the plain weight-decay model of the zoo.

Pool scheme (ours, following the paper's one-sentence description): train with weight decay as the zoo's
fc100-100-10; after a clean warm-up epoch keep a pool of adversarial examples of training images, made
against the current network by a FAST L-BFGS (the most likely other label only, 3 values of c, 15
iterations each); every `refresh_every` batches the oldest `refresh` examples of the pool are replaced by
fresh ones; every batch of 128 clean images is trained together with 32 pool examples (true labels).
PGD training: every batch is replaced half by PGD examples (Linf eps 0.1, 5 steps, random start).
Both write a checkpoint and a card like `intriguing train` does (`--install` puts them in the zoo).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core import config
from core.attacks import make_attack
from core.data import load_mnist, split_fingerprint
from core.evaluation.protocol import Protocol
from core.experiments import paper
from core.experiments.adversarial import (
    candidate_images,
    experiment_protocol,
    lbfgs_params,
    minimum_distortion_examples,
    protocol_record,
)
from core.experiments.writer import Column, Report, base_card, figure
from core.models import load
from core.models.nets import SigmoidMLP
from core.models.spec import TrainConfig
from core.models.train import WEIGHT_DECAY_FORM, error_rate, weight_decay_loss
from core.provenance import versions
from core.runtime import bar_disabled

POOL_LBFGS = {"n_targets": 1, "rounds": 5, "max_iter": 20, "memory": 5}
PGD_TRAIN = {"norm": "linf", "eps": 0.1, "steps": 5, "random_start": True}
PGD_EVAL = {"norm": "linf", "eps": 0.1, "steps": 40, "random_start": True}
CONFIG = TrainConfig(epochs=20, lr=2e-3, weight_decay=1e-4)
POOL = {"size": 6000, "refresh": 1000, "refresh_every": 150, "per_batch": 32}
NAMES = {"pool": "fc100-100-10-advpool", "pgd": "fc100-100-10-pgdtrain"}


def _adversarial(attack_name: str, params: dict, model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Successful adversarial examples of (x, y) against the current model, with their true labels."""
    model.eval().requires_grad_(False)
    result = make_attack(attack_name, model, **params).run(x, y)
    model.train().requires_grad_(True)
    ok = result.success
    return result.x_adv[ok], result.labels[ok]


def train_adversarially(
    scheme: str, epochs: int, seed: int, progress: bool = True
) -> tuple[nn.Module, list[dict], float]:
    """Train a 100-100-10 sigmoid net with the pool scheme ('pool') or PGD ('pgd'); return the model, its
    per-epoch curve (test error, pool size or adversarial share) and the training time."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, test = load_mnist("train"), load_mnist("test")
    x, y = train.images, train.labels
    model = SigmoidMLP((100, 100))
    opt = torch.optim.Adam(model.parameters(), lr=CONFIG.lr)
    steps_per_epoch = math.ceil(len(y) / CONFIG.batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1)))
    )
    pool_x, pool_y = torch.empty(0, *x.shape[1:]), torch.empty(0, dtype=torch.long)
    curve, start, step = [], time.perf_counter(), 0
    for epoch in tqdm(range(epochs), desc=f"adversarial training ({scheme})", disable=bar_disabled(progress)):
        model.train()
        fresh = 0
        for idx in torch.randperm(len(y), generator=gen).split(CONFIG.batch_size):
            xb, yb = x[idx], y[idx]
            if scheme == "pool" and epoch > 0:
                if step % POOL["refresh_every"] == 0 or len(pool_y) == 0:
                    src = torch.randint(len(y), (POOL["refresh"],), generator=gen)
                    adv_x, adv_y = _adversarial("lbfgs", POOL_LBFGS, model, x[src], y[src])
                    pool_x = torch.cat([pool_x, adv_x])[-POOL["size"] :]
                    pool_y = torch.cat([pool_y, adv_y])[-POOL["size"] :]
                    fresh += len(adv_y)
                if len(pool_y):
                    pick = torch.randint(len(pool_y), (POOL["per_batch"],), generator=gen)
                    xb, yb = torch.cat([xb, pool_x[pick]]), torch.cat([yb, pool_y[pick]])
            elif scheme == "pgd":
                half = len(yb) // 2
                params = {**PGD_TRAIN, "seed": seed + step}
                model.eval().requires_grad_(False)
                adv = make_attack("pgd", model, **params).perturb(xb[:half], yb[:half])
                model.train().requires_grad_(True)
                xb = torch.cat([adv, xb[half:]])
            loss = F.cross_entropy(model(xb), yb) + weight_decay_loss(model, CONFIG.weight_decay)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        model.eval()
        point = {"epoch": epoch + 1, "test_error": error_rate(model, test.images, test.labels)}
        if scheme == "pool":
            point |= {"pool_size": len(pool_y), "fresh_examples": fresh}
        curve.append(point)
    model.eval().requires_grad_(False)
    return model, curve, time.perf_counter() - start


def save_checkpoint(
    model: nn.Module, name: str, scheme: dict, seed: int, train_time: float, folder: Path
) -> dict:
    """Checkpoint + card in the format of `core.models.train` (the zoo reads both)."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / f"{name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt)
    errors = {
        f"{s}_error": round(error_rate(model, d.images, d.labels), 6)
        for s in ("train", "test", "p1", "p2")
        for d in [load_mnist(s)]
    }
    card = {
        "name": name,
        "architecture": "sigmoid MLP 784-100-100-10",
        "dataset": "mnist",
        "subset": "train",
        "subset_fingerprint": split_fingerprint(load_mnist("train").indices),
        "n_train": 60000,
        "hyperparameters": dataclasses.asdict(CONFIG),
        "adversarial_training": scheme,
        "weight_decay_form": WEIGHT_DECAY_FORM,
        "seed": seed,
        **errors,
        "paper": {},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_time_s": round(train_time, 1),
        "device": "cpu",
        "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "versions": versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def evaluate(name: str, model: nn.Module, protocol: Protocol, seed: int, progress: bool) -> dict:
    """Test error, average minimum L-BFGS distortion (Table 1 settings, on the protocol's correctly
    classified images) and PGD error at eps 0.1 (on all its candidate images)."""
    test = load_mnist("test")
    examples = minimum_distortion_examples(name, model, protocol, lbfgs_params(False), progress)
    x, y = candidate_images(protocol)
    pgd = make_attack("pgd", model, **PGD_EVAL, seed=seed).run(x, y)
    return {
        "test_error": error_rate(model, test.images, test.labels),
        "min_distortion": examples.mean_rms,
        "pgd_error": float(pgd.success.float().mean()),
    }


def run(
    n: int = 500,
    seed: int = 0,
    epochs: int = CONFIG.epochs,
    install: bool = False,
    device=None,
    progress: bool = True,
) -> Report:
    """Train both schemes, evaluate them beside the zoo's plain fc100-100-10 on n test images; with
    `install` the checkpoints go to the zoo (assets/models), else to the cache."""
    start = time.perf_counter()
    folder = config.model_dir() if install else config.cache_dir() / "advtrain"
    protocol = experiment_protocol(n, seed)
    plain = load("fc100-100-10", "cpu")
    rows = [
        {"model": "fc100-100-10 (weight decay only)", **evaluate("plain", plain, protocol, seed, progress)}
    ]
    curves, cards = {}, {}
    for scheme in ("pool", "pgd"):
        model, curves[scheme], train_time = train_adversarially(scheme, epochs, seed, progress)
        details = {
            "scheme": scheme,
            "epochs": epochs,
            **({"pool": POOL, "pool_attack": {"name": "lbfgs", **POOL_LBFGS}} if scheme == "pool" else {}),
            **({"attack": {"name": "pgd", **PGD_TRAIN}, "adversarial_share": 0.5} if scheme == "pgd" else {}),
        }
        cards[scheme] = save_checkpoint(model, NAMES[scheme], details, seed, train_time, folder)
        rows.append(
            {
                "model": NAMES[scheme],
                "train_time_s": round(train_time, 1),
                **evaluate(scheme, model, protocol, seed, progress),
            }
        )
    rows[0]["paper_test_error"] = paper.ADVTRAIN["weight_decay_only_test_error"]
    rows[1]["paper_test_error"] = paper.ADVTRAIN["pool_test_error_below"]
    columns = [
        Column("model", "model", "text"),
        Column("test_error", "test error", "pct"),
        Column("paper_test_error", "paper", "pct"),
        Column("min_distortion", "av. min. L-BFGS distortion", "dist"),
        Column("pgd_error", f"error under PGD (Linf {PGD_EVAL['eps']})", "pct"),
        Column("train_time_s", "training time (s)", "text"),
    ]

    def draw(path):
        plt, fig, ax = figure(7, 4)
        for scheme, curve in curves.items():
            ax.plot(
                [p["epoch"] for p in curve],
                [100 * p["test_error"] for p in curve],
                marker="o",
                label=NAMES[scheme],
            )
        ax.axhline(
            100 * rows[0]["test_error"], color="gray", ls="--", label="fc100-100-10 (weight decay only)"
        )
        ax.axhline(
            100 * paper.ADVTRAIN["pool_test_error_below"], color="k", ls=":", label="paper: pool < 1.2%"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.set_title("Adversarial training: test error per epoch", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    card = base_card(
        "advtrain",
        n,
        seed,
        models=["fc100-100-10", *NAMES.values()],
        training={
            "config": dataclasses.asdict(CONFIG),
            "epochs": epochs,
            "pool": POOL,
            "pool_attack": POOL_LBFGS,
            "pgd": PGD_TRAIN,
        },
        evaluation={"lbfgs": lbfgs_params(False), "pgd": PGD_EVAL},
        curves=curves,
        checkpoints={
            k: f"{'<model_dir>' if install else '<cache_dir>/advtrain'}/{v}.pt" for k, v in NAMES.items()
        },
        **protocol_record(protocol),
        time_s=time.perf_counter() - start,
    )
    notes = [
        f"Pool: {POOL['size']} examples, {POOL['refresh']} replaced every {POOL['refresh_every']} batches by fast "
        f"L-BFGS examples ({POOL_LBFGS}); {POOL['per_batch']} pool examples mixed into every batch of {CONFIG.batch_size}.",
        f"PGD training: half of every batch replaced by PGD examples ({PGD_TRAIN}).",
        f"Evaluation on {n} test images: L-BFGS as in Table 1; PGD error = share of the images misclassified "
        f"after PGD ({PGD_EVAL}). Test error over all 10,000 test images.",
    ]
    return Report(
        "advtrain",
        "Adversarial training: pool scheme vs PGD vs weight decay alone",
        columns,
        rows,
        card,
        draw,
        notes,
    )
