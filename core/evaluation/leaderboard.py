"""The leaderboard: every attack run (CLI, dashboard, reproduction, report) recorded in one embedded SQLite file.

Writers are many short-lived processes and Streamlit threads, so the database runs in WAL mode with a busy
timeout and each write is one `BEGIN IMMEDIATE` transaction. The schema is versioned by `PRAGMA user_version`
and upgraded by the ordered `MIGRATIONS` list, one transaction per step, whenever a connection is opened.

Two matrices answer "which attack works best on which net":
- minimal distortion: for attacks that search the smallest flipping perturbation (L-BFGS, C&W, DeepFool, the
  minimal-eps searches), the median RMS distortion of the successful images;
- success at a fixed budget: for budgeted attacks (FGSM, PGD), the success rate at one (norm, eps).
Numbers are only compared within one evaluation protocol (`core.evaluation.protocol`): every row stores the protocol it
chose its images by and its fingerprint, a matrix is drawn for one protocol, and a cell shows the newest run
of its (attack, model) under it, with its n. Success rates count only images the model classified correctly
before the attack.

Sweeps (`core.evaluation.sweep`) add per-example rows, one task (a shard of a protocol) at a time, each task in one
transaction; from them comes the headline per (model, budget): robust accuracy, the share of images that
survive every attack tried (the worst case per image), next to each attack's own success rate.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from core import config
from core.attacks import ATTACKS, AttackResult, format_eps
from core.attacks.spec import Param, eps_param, norm_param
from core.errors import InvalidParameterError
from core.evaluation.protocol import Protocol, Selection
from core.models import get_spec
from core.provenance import versions as library_versions

DB_ENV = "INTRIGUING_LEADERBOARD"
SOURCES = ("cli", "dashboard", "reproduce", "report", "sweep", "test")
BUSY_TIMEOUT_MS = 30_000

# Each entry upgrades the schema by one version; never edit a released step, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: one row per attack run
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            model TEXT NOT NULL,
            attack TEXT NOT NULL,
            params TEXT NOT NULL,
            n INTEGER NOT NULL,
            success_rate REAL NOT NULL,
            mean_rms REAL,
            median_rms REAL,
            mean_l2 REAL,
            mean_linf REAL,
            time_s REAL,
            versions TEXT NOT NULL,
            source TEXT NOT NULL
        )""",
        "CREATE INDEX runs_cell ON runs (attack, model)",
    ),
    # 2: the budget a run was held to (None: a minimal-distortion attack), its dataset and seed
    (
        "ALTER TABLE runs ADD COLUMN norm TEXT",
        "ALTER TABLE runs ADD COLUMN budget REAL",
        "ALTER TABLE runs ADD COLUMN dataset TEXT",
        "ALTER TABLE runs ADD COLUMN seed INTEGER",
        "ALTER TABLE runs ADD COLUMN median_l2 REAL",
        "CREATE INDEX runs_budget ON runs (norm, budget)",
    ),
    # 3: the evaluation protocol the images were chosen by (core.evaluation.protocol), and how many candidates it
    # skipped as already misclassified; rows recorded before protocols existed keep NULL ("unknown").
    (
        "ALTER TABLE runs ADD COLUMN protocol TEXT",
        "ALTER TABLE runs ADD COLUMN protocol_id TEXT",
        "ALTER TABLE runs ADD COLUMN skipped_misclassified INTEGER",
        "CREATE INDEX runs_protocol ON runs (protocol_id)",
    ),
    # 4: indicators of attack failure that fired on the run (JSON list of names; NULL: not checked)
    ("ALTER TABLE runs ADD COLUMN indicators TEXT",),
    # 5: sweeps (core.evaluation.sweep): one row per idempotent task (its identity hashes every input and the model's
    # weights), the per-example rows it produced, which sweep asked for which task (progress), and the
    # aggregate `runs` row recorded when the last shard of a cell landed (NULL: no image was classified
    # correctly, nothing to measure).
    (
        """CREATE TABLE sweep_tasks (
            task_id TEXT PRIMARY KEY,
            cell_id TEXT NOT NULL,
            cell_tasks INTEGER NOT NULL,
            model TEXT NOT NULL,
            weights TEXT NOT NULL,
            attack TEXT NOT NULL,
            params TEXT NOT NULL,
            norm TEXT,
            budget REAL,
            seed INTEGER,
            protocol TEXT NOT NULL,
            protocol_id TEXT NOT NULL,
            shard_start INTEGER NOT NULL,
            shard_stop INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
            error TEXT,
            scanned INTEGER,
            model_calls INTEGER,
            time_s REAL,
            worker TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX sweep_tasks_cell ON sweep_tasks (cell_id, status)",
        "CREATE INDEX sweep_tasks_model ON sweep_tasks (model, protocol_id, status)",
        """CREATE TABLE sweep_examples (
            task_id TEXT NOT NULL REFERENCES sweep_tasks (task_id),
            image_id INTEGER NOT NULL,
            label INTEGER NOT NULL,
            clean_pred INTEGER NOT NULL,
            success INTEGER NOT NULL,
            adv_pred INTEGER NOT NULL,
            l2 REAL NOT NULL,
            linf REAL NOT NULL,
            rms REAL NOT NULL,
            model_calls INTEGER NOT NULL,
            time_s REAL NOT NULL,
            x_adv BLOB,
            PRIMARY KEY (task_id, image_id)
        )""",
        """CREATE TABLE sweeps (
            sweep_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            label TEXT NOT NULL,
            tasks INTEGER NOT NULL
        )""",
        """CREATE TABLE sweep_members (
            sweep_id TEXT NOT NULL REFERENCES sweeps (sweep_id),
            task_id TEXT NOT NULL,
            PRIMARY KEY (sweep_id, task_id)
        )""",
        "CREATE TABLE sweep_cells (cell_id TEXT PRIMARY KEY, run_id INTEGER REFERENCES runs (id))",
    ),
    # 6: certificates (core.certify's bounds and exact solvers, core.smoothing's CERTIFY): of the n images a
    # protocol chose, how many a method proves robust at one (norm, radius); with the attacks' robust
    # accuracy at the same budget it brackets the true robust accuracy. `params` holds the method's own
    # settings (the bound method; sigma, samples and alpha for smoothing).
    (
        """CREATE TABLE certificates (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            model TEXT NOT NULL,
            method TEXT NOT NULL,
            norm TEXT NOT NULL CHECK (norm IN ('linf', 'l2')),
            budget REAL NOT NULL,
            params TEXT NOT NULL,
            protocol TEXT NOT NULL,
            protocol_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            certified INTEGER NOT NULL,
            time_s REAL,
            versions TEXT NOT NULL,
            source TEXT NOT NULL
        )""",
        "CREATE INDEX certificates_cell ON certificates (model, protocol_id, norm, budget)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# The budget a success matrix is read at when none is asked for, and the budgets one may ask: the spec's.
DEFAULT_BUDGET: tuple[str, float] = (norm_param().default, eps_param().default)
# How many MNIST test images a filled cell is measured on (the CLI's -n and the page's input read it).
CELL_N = Param(
    "n",
    int,
    100,
    "Test images per cell",
    "The first correctly classified MNIST test images.",
    low=1,
    high=10_000,
)


def check_budget(norm: str, eps: float) -> tuple[str, float]:
    """A (norm, eps) budget checked against the budgeted attacks' spec; a zero budget is refused."""
    norm = norm_param().check(norm)
    return norm, replace(eps_param(), name="budget eps", strict_low=True, high=None, high_l2=None).check(
        eps, norm
    )


def default_path() -> Path:
    """$INTRIGUING_LEADERBOARD, else <cache_dir>/leaderboard.sqlite."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else config.cache_dir() / "leaderboard.sqlite"


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target`, one transaction per step (safe when several processes open a new
    database at once: the version is re-read under the write lock). Returns the version reached."""
    if not 0 <= target <= SCHEMA_VERSION:
        raise InvalidParameterError(f"schema version must lie in 0..{SCHEMA_VERSION}, got {target}.")
    if conn.execute("PRAGMA user_version").fetchone()[0] >= target:  # the usual case: no write lock needed
        return conn.execute("PRAGMA user_version").fetchone()[0]
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= target:
                conn.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


_open_connections = threading.local()


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, retrying: SQLite answers SQLITE_BUSY at once, without calling the busy handler, when
    several processes open a fresh database together and one is mid-switch (1 of 8 writers failed in CI)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _open(path: Path, schema: int) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    migrate(conn, schema)
    return conn


@contextmanager
def connect(
    path: str | os.PathLike | None = None, *, schema: int = SCHEMA_VERSION
) -> Iterator[sqlite3.Connection]:
    """An open, migrated connection in WAL mode (autocommit; writers use BEGIN IMMEDIATE).

    Each thread keeps one connection per file open and reuses it: closing a WAL database's last
    connection checkpoints it, a disk sync that would otherwise cost every recorded run ~20 ms."""
    path = (Path(path) if path is not None else default_path()).expanduser().resolve()
    cache = _open_connections.__dict__.setdefault("by_key", {})
    key = (os.getpid(), str(path), schema)
    conn = cache.get(key)
    if conn is None or not path.exists():
        conn = cache[key] = _open(path, schema)
    yield conn


@contextmanager
def _write(path: str | os.PathLike | None) -> Iterator[sqlite3.Connection]:
    """One BEGIN IMMEDIATE transaction: committed when the block ends, rolled back if it raises."""
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def optional_float(name: str, value: Any) -> float | None:
    """A stored number: finite and non-negative, or None."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InvalidParameterError(f"{name} must be a finite, non-negative number or None, got {value}.")
    return value


@dataclass(frozen=True)
class Run:
    """One recorded row, as the query functions return it."""

    id: int
    created_at: str
    model: str
    attack: str
    params: dict[str, Any]
    n: int
    success_rate: float
    mean_rms: float | None
    median_rms: float | None
    mean_l2: float | None
    median_l2: float | None
    mean_linf: float | None
    time_s: float | None
    norm: str | None
    budget: float | None
    dataset: str | None
    seed: int | None
    versions: dict[str, str]
    source: str
    protocol: dict[str, Any] | None = None
    protocol_id: str | None = None
    skipped_misclassified: int | None = None
    indicators: list[str] | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        data = dict(row)
        data["params"] = json.loads(data["params"])
        data["versions"] = json.loads(data["versions"])
        data["protocol"] = json.loads(data["protocol"]) if data.get("protocol") else None
        data["indicators"] = json.loads(data["indicators"]) if data.get("indicators") else None
        return cls(**data)


def record_run(
    *,
    model: str,
    attack: str,
    params: Mapping[str, Any],
    n: int,
    success_rate: float,
    mean_rms: float | None = None,
    median_rms: float | None = None,
    mean_l2: float | None = None,
    median_l2: float | None = None,
    mean_linf: float | None = None,
    time_s: float | None = None,
    norm: str | None = None,
    budget: float | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    versions: Mapping[str, str] | None = None,
    source: str = "cli",
    protocol: Protocol | None = None,
    skipped_misclassified: int | None = None,
    indicators: list[str] | None = None,
    path: str | os.PathLike | None = None,
) -> int:
    """Store one attack run; returns its row id. `budget`/`norm` are the Linf/L2 radius a budgeted attack
    was held to (None for minimal-distortion attacks). `protocol` is how the images were chosen (None:
    unknown, e.g. a user's upload). `indicators` names the indicators of attack failure that fired (None:
    not checked). Distortion statistics cover successful images only."""
    row = _run_row(
        model=model, attack=attack, params=params, n=n, success_rate=success_rate, mean_rms=mean_rms,
        median_rms=median_rms, mean_l2=mean_l2, median_l2=median_l2, mean_linf=mean_linf, time_s=time_s,
        norm=norm, budget=budget, dataset=dataset, seed=seed, versions=versions, source=source,
        protocol=protocol, skipped_misclassified=skipped_misclassified, indicators=indicators,
    )  # fmt: skip
    with _write(path) as conn:
        return _insert_run(conn, row)


def _run_row(
    *,
    model: str,
    attack: str,
    params: Mapping[str, Any],
    n: int,
    success_rate: float,
    mean_rms: float | None,
    median_rms: float | None,
    mean_l2: float | None,
    median_l2: float | None,
    mean_linf: float | None,
    time_s: float | None,
    norm: str | None,
    budget: float | None,
    dataset: str | None,
    seed: int | None,
    versions: Mapping[str, str] | None,
    source: str,
    protocol: Protocol | None,
    skipped_misclassified: int | None,
    indicators: list[str] | None,
) -> dict[str, Any]:
    """A validated `runs` row (record_run's checks), for an insert inside a caller's transaction."""
    if source not in SOURCES:
        raise InvalidParameterError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")
    if not isinstance(n, int) or n < 1:
        raise InvalidParameterError(f"n must be a positive integer, got {n!r}.")
    rate = optional_float("success_rate", success_rate)
    if rate is None or rate > 1:
        raise InvalidParameterError(f"success_rate must lie in [0, 1], got {success_rate}.")
    if (norm is None) != (budget is None):
        raise InvalidParameterError("norm and budget go together: give both or neither.")
    if norm is not None and norm not in ("linf", "l2"):
        raise InvalidParameterError(f"norm must be 'linf' or 'l2', got {norm!r}.")
    if versions is None:
        versions = library_versions()
    row = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "model": str(model),
        "attack": str(attack),
        "params": json.dumps(dict(params), sort_keys=True, default=str),
        "n": n,
        "success_rate": rate,
        "mean_rms": optional_float("mean_rms", mean_rms),
        "median_rms": optional_float("median_rms", median_rms),
        "mean_l2": optional_float("mean_l2", mean_l2),
        "median_l2": optional_float("median_l2", median_l2),
        "mean_linf": optional_float("mean_linf", mean_linf),
        "time_s": optional_float("time_s", time_s),
        "norm": norm,
        "budget": optional_float("budget", budget),
        "dataset": dataset,
        "seed": seed,
        "versions": json.dumps(dict(versions), sort_keys=True),
        "source": source,
        "protocol": None if protocol is None else json.dumps(protocol.to_dict(), sort_keys=True),
        "protocol_id": None if protocol is None else protocol.fingerprint,
        "skipped_misclassified": skipped_misclassified,
        "indicators": None if indicators is None else json.dumps(sorted(indicators)),
    }
    return row


def _insert_run(conn: sqlite3.Connection, row: Mapping[str, Any]) -> int:
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    return int(conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", dict(row)).lastrowid)


def record_result(
    result: AttackResult,
    model: str,
    *,
    source: str,
    dataset: str | None = None,
    selection: Selection | None = None,
    indicators: list[str] | None = None,
    path: str | os.PathLike | None = None,
) -> int | None:
    """Store an `AttackResult`: budgeted attacks are filed under their (norm, eps) budget, the others as
    minimal-distortion runs; targeted runs as '<attack> (targeted)'. `selection` is the protocol's choice
    of images the result was computed on (None: images from elsewhere, protocol unknown); `indicators`, the
    indicators of attack failure that fired on it (None: not checked). Returns the row
    id, or None when no image was classified correctly to begin with (there is nothing to measure)."""
    summary = result.summary()
    if summary["n_correct"] == 0:
        return None
    params = dict(summary["params"])
    attack = summary["attack"] + (" (targeted)" if summary["targeted"] else "")  # a different question
    budget = params.get("eps")
    norm = params.get("norm", "linf") if budget is not None else None
    if dataset is None:
        try:
            dataset = get_spec(model).dataset
        except InvalidParameterError:
            dataset = None
    return record_run(
        model=model,
        attack=attack,
        params=params,
        n=summary["n_correct"],
        success_rate=summary["success_rate"],
        mean_rms=summary["mean_rms_distortion"],
        median_rms=summary["median_rms_distortion"],
        mean_l2=summary["mean_l2"],
        median_l2=summary["median_l2"],
        mean_linf=summary["mean_linf"],
        time_s=summary["time_s"],
        norm=norm,
        budget=None if budget is None else float(budget),
        dataset=dataset,
        seed=params.get("seed"),
        source=source,
        protocol=None if selection is None else selection.protocol,
        skipped_misclassified=(len(result) - summary["n_correct"])
        + (0 if selection is None else selection.skipped),
        indicators=indicators,
        path=path,
    )


def runs(
    *,
    model: str | None = None,
    attack: str | None = None,
    source: str | None = None,
    dataset: str | None = None,
    limit: int | None = None,
    path: str | os.PathLike | None = None,
) -> list[Run]:
    """Recorded runs, newest first, optionally filtered."""
    where, args = _filters(model=model, attack=attack, source=source, dataset=dataset)
    sql = f"SELECT * FROM runs {where} ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connect(path) as conn:
        return [Run.from_row(r) for r in conn.execute(sql, args)]


def _filters(**equal: str | None) -> tuple[str, list[Any]]:
    clauses = [f"{column} = ?" for column, value in equal.items() if value is not None]
    args = [value for value in equal.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass(frozen=True)
class Matrix:
    """attack x model: `values[attack][model]` (None where no run exists) and the run behind each cell."""

    title: str
    metric: str
    attacks: list[str]
    models: list[str]
    values: dict[str, dict[str, float | None]]
    cells: dict[str, dict[str, Run]]

    def missing(
        self, attacks: list[str] | None = None, models: list[str] | None = None
    ) -> list[tuple[str, str]]:
        """(attack, model) pairs without a value among the given (default: the matrix's own) rows and
        columns that `fill_cell` can fill: rows that name no registered attack (a targeted run, a report's
        minimal-eps search) are never offered."""
        return [
            (a, m)
            for a in attacks or self.attacks
            if a in ATTACKS
            for m in models or self.models
            if self.values.get(a, {}).get(m) is None
        ]

    def select(self, attacks: list[str] | None = None, models: list[str] | None = None) -> Matrix:
        """The matrix restricted to (or widened to) these rows and columns; cells without a run are None."""
        attacks, models = list(attacks or self.attacks), list(models or self.models)
        values = {a: {m: self.values.get(a, {}).get(m) for m in models} for a in attacks}
        cells = {a: {m: r for m, r in self.cells.get(a, {}).items() if m in models} for a in attacks}
        return Matrix(self.title, self.metric, attacks, models, values, cells)

    @property
    def flagged(self) -> dict[str, dict[str, list[str]]]:
        """Per cell whose run was checked and fired indicators of attack failure, their names (cells not
        checked, or checked and silent, are absent): a page marks these cells as untrustworthy."""
        return {
            a: flags
            for a, row in self.cells.items()
            if (flags := {m: run.indicators for m, run in row.items() if run.indicators})
        }

    def as_dict(self) -> dict[str, Any]:
        """Values with the number of images behind each (a cell is never shown without its n) and the
        indicators of attack failure that fired on the cells that have them."""
        n = {a: {m: run.n for m, run in row.items()} for a, row in self.cells.items()}
        return {
            "title": self.title,
            "metric": self.metric,
            "values": self.values,
            "n": n,
            "indicators": self.flagged,
        }


@dataclass(frozen=True)
class ProtocolRuns:
    """A protocol with runs in the database (runs on images no protocol chose are `hand_chosen_runs`)."""

    protocol_id: str
    protocol: Protocol
    runs: int

    def describe(self) -> str:
        return self.protocol.describe()


def protocols(*, dataset: str | None = None, path: str | os.PathLike | None = None) -> list[ProtocolRuns]:
    """Every protocol with runs, most runs first."""
    where, args = _filters(dataset=dataset)
    where = _protocol_clause(where, "", known=True)
    sql = f"SELECT protocol_id, MAX(protocol) AS protocol, COUNT(*) AS runs FROM runs {where} GROUP BY protocol_id"
    with connect(path) as conn:
        rows = conn.execute(sql + " ORDER BY runs DESC, protocol_id", args).fetchall()
    return [
        ProtocolRuns(row["protocol_id"], Protocol.from_dict(json.loads(row["protocol"])), int(row["runs"]))
        for row in rows
    ]


def hand_chosen_runs(
    *,
    dataset: str | None = None,
    source: str | None = None,
    limit: int | None = 100,
    path: str | os.PathLike | None = None,
) -> list[Run]:
    """Runs on images no protocol chose (the Attack Lab's and the reports' one-image runs, uploads, rows
    older than protocols), newest first: listed apart and never pooled into a matrix, since no two of them
    need have measured the same image."""
    where, args = _filters(dataset=dataset, source=source)
    sql = f"SELECT * FROM runs {_protocol_clause(where, None)} ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connect(path) as conn:
        return [Run.from_row(r) for r in conn.execute(sql, args)]


def count_runs(path: str | os.PathLike | None = None) -> int:
    """How many runs the database holds (a page says which file it shows and how much is in it)."""
    with connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _protocol_clause(where: str, protocol_id: str | None, known: bool = False) -> str:
    """`where` narrowed to one protocol (`known`: to every run some protocol chose; None: to none)."""
    joiner = " AND " if where else "WHERE "
    if known:
        return where + joiner + "protocol_id IS NOT NULL"
    return where + joiner + ("protocol_id IS NULL" if protocol_id is None else "protocol_id = ?")


def _newest_cells(where: str, args: list[Any], path) -> dict[str, dict[str, Run]]:
    """Per (attack, model), the newest run matching a WHERE clause that fixes one protocol: runs of one
    protocol measured the same images, so the newest one stands for them."""
    cells: dict[str, dict[str, Run]] = {}
    with connect(path) as conn:
        for row in conn.execute(f"SELECT * FROM runs {where} ORDER BY id DESC", args):
            cells.setdefault(row["attack"], {}).setdefault(row["model"], Run.from_row(row))
    return cells


def _matrix(title: str, metric: str, cells: dict[str, dict[str, Run]], value) -> Matrix:
    attacks = sorted(cells)
    models = sorted({m for row in cells.values() for m in row})
    values = {a: {m: (value(cells[a][m]) if m in cells[a] else None) for m in models} for a in attacks}
    return Matrix(title, metric, attacks, models, values, cells)


def default_protocol(dataset: str | None = None, path: str | os.PathLike | None = None) -> str:
    """The protocol a matrix shows unless asked: the one with the most runs, or, with no run on `dataset`,
    `Protocol.for_dataset` (its first correctly classified test images), never hand-chosen images."""
    found = protocols(dataset=dataset, path=path)
    return found[0].protocol_id if found else Protocol.for_dataset(dataset).fingerprint


def _one_protocol(protocol_id: Any, dataset: str | None, path) -> str:
    if protocol_id is _DEFAULT:
        return default_protocol(dataset, path)
    if protocol_id is None:
        raise InvalidParameterError(
            "runs on hand-chosen images are never pooled into a matrix; see hand_chosen_runs()."
        )
    return protocol_id


_DEFAULT = object()  # "the protocol with the most runs"


def distortion_matrix(
    *,
    dataset: str | None = None,
    source: str | None = None,
    protocol_id: Any = _DEFAULT,
    path: str | os.PathLike | None = None,
) -> Matrix:
    """Median minimal RMS distortion of the fooled images, per (minimal-distortion attack, model), under
    one protocol (default: `default_protocol`)."""
    protocol_id = _one_protocol(protocol_id, dataset, path)
    where, args = _filters(dataset=dataset, source=source)
    where = _protocol_clause(where, protocol_id) + " AND budget IS NULL AND median_rms IS NOT NULL"
    cells = _newest_cells(where, [*args, protocol_id], path)
    return _matrix(
        "Median minimal RMS distortion (lower: easier to fool)", "median_rms", cells, lambda r: r.median_rms
    )


def success_matrix(
    norm: str,
    budget: float,
    *,
    dataset: str | None = None,
    source: str | None = None,
    protocol_id: Any = _DEFAULT,
    path: str | os.PathLike | None = None,
) -> Matrix:
    """Success rate per (budgeted attack, model) at one (norm, eps) budget, under one protocol (as above)."""
    budget = optional_float("budget", budget)
    protocol_id = _one_protocol(protocol_id, dataset, path)
    where, args = _filters(dataset=dataset, source=source, norm=norm)
    where = _protocol_clause(where, protocol_id) + " AND ABS(budget - ?) < 1e-9"
    args = [*args, protocol_id, budget]
    cells = _newest_cells(where, args, path)
    title = f"Success rate at {norm} eps {format_eps(budget, norm)}"
    return _matrix(title, "success_rate", cells, lambda r: r.success_rate)


def budgets(*, protocol_id: Any = _DEFAULT, path: str | os.PathLike | None = None) -> list[tuple[str, float]]:
    """The (norm, eps) budgets that have at least one run (under one protocol, default: all), for the
    success matrix's selector."""
    where = "WHERE budget IS NOT NULL"
    args: list[Any] = []
    if protocol_id is not _DEFAULT:
        where = _protocol_clause(where, protocol_id)
        args = [] if protocol_id is None else [protocol_id]
    with connect(path) as conn:
        rows = conn.execute(f"SELECT DISTINCT norm, budget FROM runs {where} ORDER BY norm, budget", args)
        return [(r["norm"], r["budget"]) for r in rows]


def integrity_ok(path: str | os.PathLike | None = None) -> bool:
    with connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------- sweeps (core.evaluation.sweep writes, pages read)

TASK_COLUMNS = (
    "task_id", "cell_id", "cell_tasks", "model", "weights", "attack", "params", "norm", "budget", "seed",
    "protocol", "protocol_id", "shard_start", "shard_stop", "scanned", "model_calls", "time_s", "worker",
)  # fmt: skip
EXAMPLE_COLUMNS = (
    "image_id", "label", "clean_pred", "success", "adv_pred", "l2", "linf", "rms", "model_calls", "time_s", "x_adv",
)  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def register_sweep(
    sweep_id: str, label: str, task_ids: list[str], *, path: str | os.PathLike | None = None
) -> None:
    """Note which tasks a sweep asked for (its progress is read from them); running the same sweep again
    finds it registered already."""
    with _write(path) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO sweeps (sweep_id, created_at, label, tasks) VALUES (?, ?, ?, ?)",
            (sweep_id, _now(), label, len(task_ids)),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO sweep_members (sweep_id, task_id) VALUES (?, ?)",
            [(sweep_id, t) for t in task_ids],
        )


def done_tasks(task_ids: list[str] | None = None, *, path: str | os.PathLike | None = None) -> set[str]:
    """The ids (among `task_ids`, default all) of tasks whose rows are in the database."""
    with connect(path) as conn:
        done = {r[0] for r in conn.execute("SELECT task_id FROM sweep_tasks WHERE status = 'done'")}
    return done if task_ids is None else done & set(task_ids)


def record_task(
    task: Mapping[str, Any],
    examples: list[Mapping[str, Any]] | None = None,
    *,
    error: str | None = None,
    path: str | os.PathLike | None = None,
) -> bool:
    """Store one finished task (`TASK_COLUMNS`) with its per-example rows (`EXAMPLE_COLUMNS`), or its
    failure `error`, in one transaction: a crash leaves the task wholly recorded or absent. When it
    completes its cell (every shard done), the cell's aggregate `runs` row is written in the same
    transaction. Returns False, writing nothing, when the task was already done (an earlier or a
    concurrent sweep recorded it); a failed task is replaced when it later succeeds."""
    row = {column: task.get(column) for column in TASK_COLUMNS}
    row |= {"status": "failed" if error else "done", "error": error, "created_at": _now()}
    with _write(path) as conn:
        before = conn.execute(
            "SELECT status FROM sweep_tasks WHERE task_id = ?", (row["task_id"],)
        ).fetchone()
        if before is not None and before["status"] == "done":
            return False
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        conn.execute(f"INSERT OR REPLACE INTO sweep_tasks ({columns}) VALUES ({marks})", row)
        if error:
            return True
        conn.executemany(
            f"INSERT INTO sweep_examples (task_id, {', '.join(EXAMPLE_COLUMNS)}) "
            f"VALUES (:task_id, {', '.join(f':{c}' for c in EXAMPLE_COLUMNS)})",
            [{"task_id": row["task_id"], "x_adv": None, **e} for e in examples or []],
        )
        done = conn.execute(
            "SELECT COUNT(*) FROM sweep_tasks WHERE cell_id = ? AND status = 'done'", (row["cell_id"],)
        ).fetchone()[0]
        if done == row["cell_tasks"]:
            aggregate = _cell_run_row(conn, row["cell_id"])
            run_id = None if aggregate is None else _insert_run(conn, aggregate)
            conn.execute(
                "INSERT OR IGNORE INTO sweep_cells (cell_id, run_id) VALUES (?, ?)", (row["cell_id"], run_id)
            )
    return True


def _cell_run_row(conn: sqlite3.Connection, cell_id: str) -> dict[str, Any] | None:
    """The `runs` row of a completed cell, from its per-example rows, with the statistics `record_result`
    computes (success over the correctly classified images, distortions over the fooled ones)."""
    task = conn.execute("SELECT * FROM sweep_tasks WHERE cell_id = ? LIMIT 1", (cell_id,)).fetchone()
    stats = conn.execute(
        "SELECT COUNT(*) AS n, MAX(t.scanned) AS scanned, SUM(t.time_s) AS time_s FROM sweep_tasks t "
        "WHERE t.cell_id = ? AND t.status = 'done'",
        (cell_id,),
    ).fetchone()
    examples = conn.execute(
        "SELECT e.label, e.clean_pred, e.success, e.l2, e.linf, e.rms FROM sweep_examples e "
        "JOIN sweep_tasks t USING (task_id) WHERE t.cell_id = ? ORDER BY e.image_id",
        (cell_id,),
    ).fetchall()
    correct = [e for e in examples if e["clean_pred"] == e["label"]]
    if not correct:
        return None
    fooled = [e for e in correct if e["success"]]

    def stat(column: str, how: str) -> float | None:
        values = torch.tensor([float(e[column]) for e in fooled], dtype=torch.float64)
        return None if not len(values) else float(values.mean() if how == "mean" else values.median())

    protocol = Protocol.from_dict(json.loads(task["protocol"]))
    return _run_row(
        model=task["model"], attack=task["attack"], params=json.loads(task["params"]), n=len(correct),
        success_rate=len(fooled) / len(correct), mean_rms=stat("rms", "mean"), median_rms=stat("rms", "median"),
        mean_l2=stat("l2", "mean"), median_l2=stat("l2", "median"), mean_linf=stat("linf", "mean"),
        time_s=stats["time_s"], norm=task["norm"], budget=task["budget"], dataset=protocol.dataset,
        seed=task["seed"], versions=None, source="sweep", protocol=protocol,
        skipped_misclassified=(len(examples) - len(correct)) + (stats["scanned"] or len(examples)) - len(examples),
        indicators=None,
    )  # fmt: skip


def task_examples(task_id: str, *, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A task's per-example rows, by image id."""
    with connect(path) as conn:
        rows = conn.execute("SELECT * FROM sweep_examples WHERE task_id = ? ORDER BY image_id", (task_id,))
        return [dict(r) for r in rows]


def seconds_per_example(model: str, attack: str, *, path: str | os.PathLike | None = None) -> float | None:
    """The measured cost of one example of `attack` on `model` (sweep tasks first, else recorded runs),
    for a sweep's cost estimate; None when nothing was measured yet."""
    with connect(path) as conn:
        swept = conn.execute(
            "SELECT SUM(t.time_s) / SUM(t.shard_stop - t.shard_start) FROM sweep_tasks t "
            "WHERE t.model = ? AND t.attack = ? AND t.status = 'done'",
            (model, attack),
        ).fetchone()[0]
        if swept is not None:
            return float(swept)
        ran = conn.execute(
            "SELECT SUM(time_s) / SUM(n) FROM runs WHERE model = ? AND attack = ? AND time_s IS NOT NULL",
            (model, attack),
        ).fetchone()[0]
    return None if ran is None else float(ran)


@dataclass(frozen=True)
class SweepProgress:
    """How far a sweep got: tasks done and failed of all it asked for."""

    sweep_id: str
    label: str
    created_at: str
    tasks: int
    done: int
    failed: int


def sweep_progress(*, limit: int = 5, path: str | os.PathLike | None = None) -> list[SweepProgress]:
    """The most recent sweeps with their progress, newest first."""
    sql = (
        "SELECT s.sweep_id, s.label, s.created_at, s.tasks, "
        "COALESCE(SUM(t.status = 'done'), 0) AS done, COALESCE(SUM(t.status = 'failed'), 0) AS failed "
        "FROM sweeps s LEFT JOIN sweep_members m USING (sweep_id) LEFT JOIN sweep_tasks t USING (task_id) "
        "GROUP BY s.sweep_id ORDER BY s.created_at DESC LIMIT ?"
    )
    with connect(path) as conn:
        return [SweepProgress(**dict(r)) for r in conn.execute(sql, (int(limit),))]


@dataclass(frozen=True)
class RobustAccuracy:
    """The per-example worst case at one budget, as AutoAttack reports it: of the `n` images every attack
    tried covered, the share that no attack fooled within the budget (`robust_accuracy`), next to each
    attack's own success rate on the correctly classified ones among them. Minimal-distortion attacks
    count an image as fooled when their perturbation fits the budget in its norm."""

    model: str
    norm: str
    budget: float
    protocol_id: str
    n: int
    robust_accuracy: float
    attacks: dict[str, float]


def robust_accuracy(
    *, protocol_id: str | None = None, dataset: str | None = None, path: str | os.PathLike | None = None
) -> list[RobustAccuracy]:
    """The worst case per (model, budget) for every budget a budgeted sweep task was held to, under one
    protocol (default: every protocol with sweep tasks), from the per-example rows."""
    where = "WHERE t.status = 'done'" + ("" if protocol_id is None else " AND t.protocol_id = ?")
    args = [] if protocol_id is None else [protocol_id]
    with connect(path) as conn:
        groups = conn.execute(
            f"SELECT DISTINCT t.model, t.protocol_id, t.norm, t.budget FROM sweep_tasks t {where} "
            "AND t.budget IS NOT NULL ORDER BY t.model, t.norm, t.budget",
            args,
        ).fetchall()
        result = [_worst_case(conn, *g) for g in groups]
    return [r for r in result if r is not None and (dataset is None or _dataset_of(r.model) == dataset)]


def _dataset_of(model: str) -> str | None:
    try:
        return get_spec(model).dataset
    except InvalidParameterError:
        return None


def _worst_case(conn: sqlite3.Connection, model: str, protocol_id: str, norm: str, budget: float):
    rows = conn.execute(
        "SELECT t.attack, t.budget, e.image_id, e.label, e.clean_pred, e.success, e.l2, e.linf "
        "FROM sweep_examples e JOIN sweep_tasks t USING (task_id) WHERE t.status = 'done' AND t.model = ? "
        "AND t.protocol_id = ? AND (t.budget IS NULL OR (t.norm = ? AND ABS(t.budget - ?) < 1e-9))",
        (model, protocol_id, norm, budget),
    ).fetchall()
    covered: dict[str, set[int]] = {}
    fooled: dict[str, set[int]] = {}
    correct: dict[int, bool] = {}
    for r in rows:
        within = r["budget"] is not None or (r["linf"] if norm == "linf" else r["l2"]) <= budget + 1e-9
        covered.setdefault(r["attack"], set()).add(r["image_id"])
        correct[r["image_id"]] = r["clean_pred"] == r["label"]
        if r["success"] and correct[r["image_id"]] and within:
            fooled.setdefault(r["attack"], set()).add(r["image_id"])
    images = set.intersection(*covered.values()) if covered else set()
    if not images:
        return None
    right = {i for i in images if correct[i]}
    broken = set().union(*(fooled.get(a, set()) & images for a in covered))
    rates = {a: len(fooled.get(a, set()) & right) / len(right) if right else 0.0 for a in sorted(covered)}
    return RobustAccuracy(
        model, norm, budget, protocol_id, len(images), len(right - broken) / len(images), rates
    )


@dataclass(frozen=True)
class Certificate:
    """One recorded certificate: `certified` of the `n` images are proven robust (and correctly classified)
    within `budget` in `norm` by `method`; `verified_accuracy` is their share."""

    id: int
    created_at: str
    model: str
    method: str
    norm: str
    budget: float
    params: dict[str, Any]
    protocol: dict[str, Any]
    protocol_id: str
    n: int
    certified: int
    time_s: float | None
    versions: dict[str, str]
    source: str

    @property
    def verified_accuracy(self) -> float:
        return self.certified / self.n

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Certificate:
        data = dict(row)
        for key in ("params", "protocol", "versions"):
            data[key] = json.loads(data[key])
        return cls(**data)


def record_certificate(
    *,
    model: str,
    method: str,
    norm: str,
    budget: float,
    n: int,
    certified: int,
    protocol: Protocol,
    params: Mapping[str, Any] | None = None,
    time_s: float | None = None,
    source: str = "cli",
    path: str | os.PathLike | None = None,
) -> int:
    """Store how many of a protocol's `n` images `method` certified at one (norm, budget); returns the row id."""
    if norm not in ("linf", "l2"):
        raise InvalidParameterError(f"norm must be linf or l2, got {norm!r}.")
    if source not in SOURCES:
        raise InvalidParameterError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")
    budget = optional_float("budget", budget)
    if budget is None or not 0 <= int(certified) <= int(n) or int(n) < 1:
        raise InvalidParameterError(f"need a budget, n >= 1 and 0 <= certified <= n, got {certified}/{n}.")
    row = (
        _now(), model, method, norm, budget, json.dumps(dict(params or {}), sort_keys=True),
        json.dumps(protocol.to_dict(), sort_keys=True), protocol.fingerprint, int(n), int(certified),
        optional_float("time_s", time_s), json.dumps(library_versions(), sort_keys=True), source,
    )  # fmt: skip
    with _write(path) as conn:
        cursor = conn.execute(
            "INSERT INTO certificates (created_at, model, method, norm, budget, params, protocol, protocol_id, "
            "n, certified, time_s, versions, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        return int(cursor.lastrowid)


def certificates(
    *, model: str | None = None, protocol_id: str | None = None, path: str | os.PathLike | None = None
) -> list[Certificate]:
    """The newest certificate per (model, method, norm, budget, protocol), optionally for one model or
    protocol, ordered by model, norm, budget and method."""
    where, args = _filters(model=model, protocol_id=protocol_id)
    with connect(path) as conn:
        rows = conn.execute(
            f"SELECT * FROM certificates WHERE id IN (SELECT MAX(id) FROM certificates {where} "
            "GROUP BY model, method, norm, budget, protocol_id) ORDER BY model, norm, budget, method",
            args,
        ).fetchall()
    return [Certificate.from_row(r) for r in rows]
