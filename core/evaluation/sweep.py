"""Sweeps: attack x model x budget grids run as idempotent tasks on Ray, merged into the leaderboard.

A task is one attack with fixed parameters on one shard of an evaluation protocol's images, on one model.
Its identity hashes every input (model name and weights checksum, attack, validated parameters with the
defaults filled in, protocol, shard bounds and size), so a task already in the database is never run again
and an interrupted sweep resumes where it stopped. Workers only compute: each returns the shard's
per-example rows (image id, clean and adversarial prediction, success, L2/Linf/RMS, model calls, time).
The driver is the database's one writer; it records each task as it arrives, in one transaction
(`leaderboard.record_task`), so a crash loses at most the tasks in flight.

Ray is imported by `connect_ray` only: importing `core` (every other command, the dashboard) never pays
Ray's start-up. Without an address a local Ray is started with the machine's cores; `auto`, `host:port`
or `ray://host:port` join a running cluster, whose workers need this package installed and the same
weights (a task checks the checksum it was planned with before attacking).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from core.attacks import attack_class, is_budgeted, make_attack, with_seed
from core.attacks.spec import check_params
from core.checks import check_int
from core.errors import CheckpointError, IntriguingError, InvalidParameterError
from core.evaluation import leaderboard
from core.evaluation.protocol import Protocol
from core.models import get_spec, load
from core.models.sources import checksum
from core.models.zoo import checkpoint_path

MAX_SHARD = 10_000
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # results are per-example rows: a few hundred bytes per image
CONNECT_TIMEOUT_S = 5.0


class SweepError(IntriguingError):
    """The sweep cannot start (no Ray at the address given, ...): one line for the user."""


def weights_checksum(model: str) -> str:
    """sha256 of a model's checkpoint file: part of every task's identity, checked again by the worker."""
    path = checkpoint_path(model)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} is missing. Make it with `{get_spec(model).make_command}`.")
    return checksum(path.read_bytes())


@dataclass(frozen=True)
class Task:
    """One attack on images [start, stop) of the protocol's selection on one model."""

    model: str
    weights: str
    attack: str
    params: dict[str, Any] = field(hash=False)
    protocol: Protocol
    start: int
    stop: int
    shard_size: int
    cell_tasks: int
    keep_images: bool = False

    def _identity(self, shard: bool) -> str:
        fields = {
            "model": self.model, "weights": self.weights, "attack": self.attack, "params": self.params,
            "protocol": self.protocol.fingerprint, "shard_size": self.shard_size, "keep_images": self.keep_images,
        }  # fmt: skip
        if shard:
            fields |= {"start": self.start, "stop": self.stop}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]

    @cached_property
    def task_id(self) -> str:
        return self._identity(shard=True)

    @cached_property
    def cell_id(self) -> str:
        """The task without its shard: every shard of one (model, attack, parameters, protocol) cell."""
        return self._identity(shard=False)

    @property
    def budget(self) -> tuple[str | None, float | None]:
        """(norm, eps) of a budgeted attack, (None, None) for a minimal-distortion attack."""
        if not is_budgeted(self.attack):
            return None, None
        norm = {**attack_class(self.attack).RECORDED, **self.params}.get("norm", "linf")
        return norm, float(self.params["eps"])

    def describe(self) -> str:
        norm, eps = self.budget
        budget = f" {norm} eps {eps:g}" if norm else ""
        return f"{self.attack}{budget} on {self.model}, images {self.start}-{self.stop - 1}"

    def columns(self) -> dict[str, Any]:
        """The task's columns in the leaderboard's sweep_tasks table (the outcome adds the rest)."""
        norm, eps = self.budget
        return {
            "task_id": self.task_id, "cell_id": self.cell_id, "cell_tasks": self.cell_tasks,
            "model": self.model, "weights": self.weights, "attack": self.attack,
            "params": json.dumps(self.params, sort_keys=True), "norm": norm, "budget": eps,
            "seed": self.params.get("seed"), "protocol": json.dumps(self.protocol.to_dict(), sort_keys=True),
            "protocol_id": self.protocol.fingerprint, "shard_start": self.start, "shard_stop": self.stop,
        }  # fmt: skip


def _size(protocol: Protocol) -> int:
    """How many images the protocol selects, known before any model runs."""
    if protocol.n is not None:
        return protocol.n
    if protocol.indices is not None and not protocol.correct_only:
        return len(protocol.indices)
    raise InvalidParameterError("a sweep needs a protocol with a fixed number of images (give n).")


def _attack_params(attack: str, eps: float | None, extra: dict[str, Any], seed: int) -> dict[str, Any]:
    cls = attack_class(attack)
    accepted = {p.name: p for p in cls.PARAMS}
    given = {k: v for k, v in extra.items() if k in accepted}
    if eps is not None:
        given["eps"] = eps
    return check_params(attack, cls.PARAMS, with_seed(attack, given, seed))


def plan(
    models: list[str],
    attacks: list[str],
    *,
    protocol: Protocol,
    shard_size: int,
    eps: list[float] | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    keep_images: bool = False,
) -> list[Task]:
    """Every task of the grid, validated before anything runs: budgeted attacks once per eps (default:
    their own default eps), minimal-distortion attacks once. `params` are further attack parameters, each
    given to the attacks that take it. InvalidParameterError (and friends) on any bad input."""
    if not models or not attacks:
        raise InvalidParameterError("the grid is empty: give at least one model and one attack.")
    if eps is not None and not eps:
        raise InvalidParameterError("--eps lists no budget.")
    params = dict(params or {})
    unused = set(params) - {p.name for a in attacks for p in attack_class(a).PARAMS}
    if unused:
        raise InvalidParameterError(f"no attack of the sweep takes {', '.join(sorted(unused))}.")
    check_int("shard size", shard_size, low=1, high=MAX_SHARD)
    size = _size(protocol)
    weights = {}
    for model in models:
        if get_spec(model).dataset != protocol.dataset:
            raise InvalidParameterError(
                f"{model} belongs to {get_spec(model).dataset}, not to the sweep's dataset {protocol.dataset}."
            )
        weights[model] = weights_checksum(model)
    settings = [
        (attack, _attack_params(attack, e, params, seed))
        for attack in attacks
        for e in ((eps or [None]) if is_budgeted(attack) else [None])
    ]
    shards = [(a, min(a + shard_size, size)) for a in range(0, size, shard_size)]
    tasks = [
        Task(model, weights[model], attack, p, protocol, a, b, shard_size, len(shards), keep_images)
        for model in models
        for attack, p in settings
        for a, b in shards
    ]
    return list({t.task_id: t for t in tasks}.values())  # the same budget given twice is one task


# ------------------------------------------------------------------------------ the worker's side


def run_task(task: Task, device: str | None = None) -> dict[str, Any]:
    """Attack one shard; the outcome holds the per-example rows. Never touches the database."""
    start = time.perf_counter()
    if weights_checksum(task.model) != task.weights:
        raise CheckpointError(f"the weights of {task.model} on this worker differ from the planned ones.")
    net = load(task.model, device)  # the worker's default device: a GPU when Ray gave the task one
    chosen = replace(task.protocol, n=task.stop).select(net)  # the first `stop` images: the same rule
    x, labels = chosen.images[task.start : task.stop], chosen.labels[task.start : task.stop]
    ids = chosen.ids[task.start : task.stop]
    result = make_attack(task.attack, net, **task.params).run(x, labels)
    per_example = result.time_s / len(result)
    examples = [
        {
            "image_id": int(ids[i]),
            "label": int(result.labels[i]),
            "clean_pred": int(result.pred_before[i]),
            "success": int(result.success[i]),
            "adv_pred": int(result.pred_after[i]),
            "l2": float(result.l2[i]),
            "linf": float(result.linf[i]),
            "rms": float(result.rms[i]),
            "model_calls": result.model_calls,
            "time_s": per_example,
            "x_adv": result.x_adv[i].numpy().astype(np.float32).tobytes() if task.keep_images else None,
        }  # fmt: skip
        for i in range(len(result))
    ]
    return {
        "scanned": chosen.scanned,
        "model_calls": result.model_calls,
        "time_s": time.perf_counter() - start,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "examples": examples,
    }


def attempt(task: Task, device: str | None = None) -> dict[str, Any]:
    """The remote body: a task that raises comes back as its one-line message (recorded as failed).
    `device` is a kind (cpu, cuda, mps): a worker's GPU is the one Ray gave it, always its `cuda`."""
    torch.set_num_threads(1)  # one task per core: a second thread per task only adds waiting
    try:
        return run_task(task, device)
    except Exception as exc:  # noqa: BLE001 - any failure of one task is recorded, the sweep goes on
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


# ------------------------------------------------------------------------------ the driver's side


def _reachable(address: str) -> None:
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot reach a Ray cluster at {address!r} ({exc}).") from None


def connect_ray(address: str | None = None, workers: int | None = None) -> Any:
    """The `ray` module, initialised: joined to the cluster at `address`, or a quiet local Ray with
    `workers` CPUs (default: the machine's). A Ray already initialised in this process is reused."""
    import logging

    import ray

    if address is not None:
        _reachable(address)
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray's usage report would leave the machine
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            ray.init(
                num_cpus=workers or os.cpu_count(), include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet,
            )  # fmt: skip
        else:
            ray.init(address=address, **quiet)
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        raise SweepError(f"cannot start Ray ({'local' if address is None else address}): {exc}") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """Where a sweep runs and writes: the Ray `address` (None: a local Ray with `workers` CPUs) and the
    leaderboard `path` (None: its default)."""

    address: str | None = None
    workers: int | None = None
    path: str | os.PathLike | None = None


@dataclass
class Summary:
    """What a sweep did: tasks computed now, reused from the database, failed (id -> message)."""

    sweep_id: str
    tasks: int
    computed: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        rate = self.examples / self.time_s if self.time_s > 0 else None
        return {**self.__dict__, "examples_per_s": rate}

    def describe(self) -> str:
        rate = f" ({self.examples / self.time_s:.0f} examples/s)" if self.time_s > 0 and self.examples else ""
        failed = f", {len(self.failed)} FAILED" if self.failed else ""
        return (
            f"sweep {self.sweep_id}: {self.tasks} tasks, {self.computed} computed now, {self.reused} reused"
            f"{failed}; {self.examples} examples in {self.time_s:.1f} s{rate}"
        )


def sweep_id(tasks: list[Task]) -> str:
    """The same grid gets the same id, so a rerun continues the registered sweep."""
    return hashlib.sha256("\n".join(sorted(t.task_id for t in tasks)).encode()).hexdigest()[:12]


def database(path: str | os.PathLike | None) -> Path:
    """The leaderboard file a sweep writes: `path`, else the leaderboard's default."""
    return Path(path) if path is not None else leaderboard.default_path()


def recorded(tasks: list[Task], path: str | os.PathLike | None = None) -> set[str]:
    """Ids of the tasks already recorded; a database that does not exist yet is not created here."""
    db = database(path)
    return leaderboard.done_tasks([t.task_id for t in tasks], path=db) if db.exists() else set()


def _failure(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the worker's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def execute(
    tasks: list[Task],
    *,
    path: str | os.PathLike | None = None,
    address: str | None = None,
    workers: int | None = None,
    label: str = "",
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Summary:
    """Run the tasks not yet in the database on Ray and record each as it arrives (a progress bar with
    tasks done / total, examples/s and ETA). Ray is started only when something is left to compute.
    `device` (--device): where every task runs; cuda asks Ray for one GPU per task."""
    kind = None if device is None else torch.device(device).type
    db = database(path)
    began = time.perf_counter()
    summary = Summary(sweep_id(tasks), len(tasks))
    done = recorded(tasks, db)
    todo = deque(t for t in tasks if t.task_id not in done)
    summary.reused = len(tasks) - len(todo)
    ray = connect_ray(address, workers) if todo else None
    if ray is not None:
        unit = "GPU" if kind == "cuda" else "CPU"
        units = int(ray.cluster_resources().get(unit, 0))
        if not units:  # tasks would wait forever for a GPU nobody has
            raise SweepError(f"--device {device}: the Ray cluster has no {unit}.")
        remote = ray.remote(num_cpus=1, num_gpus=1 if unit == "GPU" else 0)(attempt)
        window = 2 * units
    leaderboard.register_sweep(summary.sweep_id, label, [t.task_id for t in tasks], path=db)
    bar = tqdm(total=len(tasks), initial=summary.reused, unit="task", disable=not progress, desc="sweep")
    pending: dict[Any, Task] = {}
    while todo or pending:
        while todo and len(pending) < window:
            task = todo.popleft()
            if leaderboard.done_tasks([task.task_id], path=db):  # a concurrent sweep recorded it meanwhile
                summary.reused += 1
                bar.update(1)
                continue
            pending[remote.remote(task, kind)] = task
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready[0])
        try:
            outcome = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - a worker that died: the task failed, the sweep goes on
            outcome = {"error": _failure(exc)}
        _merge(task, outcome, summary, db)
        bar.update(1)
        summary.time_s = time.perf_counter() - began
        bar.set_postfix_str(f"{summary.examples / max(summary.time_s, 1e-9):.0f} examples/s")
    bar.close()
    summary.time_s = time.perf_counter() - began
    return summary


def _merge(task: Task, outcome: dict[str, Any], summary: Summary, db: Path) -> None:
    """Record one task's outcome (the driver is the only writer) and count it."""
    error = outcome.get("error")
    columns = task.columns() | {k: outcome.get(k) for k in ("scanned", "model_calls", "time_s", "worker")}
    written = leaderboard.record_task(columns, outcome.get("examples"), error=error, path=db)
    if not written:
        summary.reused += 1  # a concurrent sweep recorded the same task first
    elif error:
        summary.failed[task.task_id] = f"{task.describe()}: {error}"
    else:
        summary.computed += 1
        summary.examples += len(outcome["examples"])


def estimate(tasks: list[Task], path: str | os.PathLike | None = None) -> list[float | None]:
    """Estimated seconds per task from measured per-example costs of the same attack on the same model
    (None where nothing was measured yet); reads the database only if it exists."""
    db = database(path)
    if not db.exists():
        return [None] * len(tasks)
    cost = {}
    for t in tasks:
        if (t.model, t.attack) not in cost:
            cost[t.model, t.attack] = leaderboard.seconds_per_example(t.model, t.attack, path=db)
    return [
        None if cost[t.model, t.attack] is None else cost[t.model, t.attack] * (t.stop - t.start)
        for t in tasks
    ]
