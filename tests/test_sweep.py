"""Sweeps on Ray: task identity, agreement with one process, the worst case per example, and the faults the
issue names (a killed driver, a failing task, two sweeps on one database, bad input). One local Ray with
2 CPUs serves the whole module; the command-line drivers join it by address."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.attacks import make_attack
from core.cli import main
from core.evaluation import leaderboard, sweep
from core.evaluation.protocol import Protocol
from core.models import load

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["fc10-1e-2", "fc100-100-10"]
BROKEN = "fc100-100-10-p1"
PROTOCOL = Protocol(n=40)
EPS = 0.1
COMPARED = ("image_id", "label", "clean_pred", "success", "adv_pred", "l2", "linf", "rms", "model_calls")


@pytest.fixture(scope="module")
def model_dir():
    """The committed models, with a corrupt checkpoint for BROKEN (a model that fails to load); the
    workers see it because Ray starts them with this process's environment."""
    folder = Path(tempfile.mkdtemp(prefix="sweep-models-"))
    for checkpoint in (ROOT / "assets" / "models").glob("*.pt"):
        shutil.copy(checkpoint, folder)
    (folder / f"{BROKEN}.pt").write_bytes(b"not a checkpoint")
    old = os.environ.get("INTRIGUING_MODEL_DIR")
    os.environ["INTRIGUING_MODEL_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("INTRIGUING_MODEL_DIR", None)
    else:
        os.environ["INTRIGUING_MODEL_DIR"] = old
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(model_dir):
    """One quiet local Ray for the module (its start-up is paid once); yields its address."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
        _temp_dir=temp, configure_logging=False,
    )  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def grid(models=MODELS, attacks=("fgsm", "deepfool"), shard=20, protocol=PROTOCOL) -> list[sweep.Task]:
    return sweep.plan(list(models), list(attacks), protocol=protocol, shard_size=shard, eps=[EPS])


def compared_rows(tasks, db) -> dict[str, list[tuple]]:
    return {
        t.task_id: [tuple(r[c] for c in COMPARED) for r in leaderboard.task_examples(t.task_id, path=db)]
        for t in tasks
    }


def cli(*args: str, db: Path) -> list[str]:
    return ["sweep", *args, "--eps", str(EPS), "--n", "40", "--db", str(db), "--quiet", "--json"]


# ------------------------------------------------------------------------------ without Ray


def test_task_identity_hashes_inputs_and_weights_not_how_they_were_spelled(model_dir):
    (a,) = sweep.plan(["fc10-1e-2"], ["pgd"], protocol=Protocol(n=20), shard_size=20, eps=[0.1])
    (same,) = sweep.plan(
        ["fc10-1e-2"], ["pgd"], protocol=Protocol(n=20), shard_size=20, eps=[0.1], params={"steps": 40}
    )  # 40 is pgd's default: the same task
    assert same.task_id == a.task_id
    others = [
        replace(a, weights="0" * 64),
        replace(a, params={**a.params, "steps": 41}),
        replace(a, protocol=Protocol(n=20, order="random")),
        replace(a, start=1),
        replace(a, params={**a.params, "seed": 1}),
    ]
    assert len({a.task_id, *(t.task_id for t in others)}) == 1 + len(others)
    assert len({t.cell_id for t in grid(models=["fc10-1e-2"], attacks=["fgsm"])}) == 1  # shards of one cell


@pytest.mark.slow
def test_sweep_and_core_import_no_ray():
    code = "import core, core.evaluation.sweep, core.evaluation.leaderboard, core.cli; import sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args",
    [
        ["--models", "fc10-1e-2,nope", "--attacks", "fgsm"],
        ["--models", "fc10-1e-2", "--attacks", "fgsm,zap"],
        ["--models", " , ", "--attacks", "fgsm"],
        ["--models", "fc10-1e-2", "--attacks", "fgsm", "--eps", ","],
        ["--models", "fc10-1e-2", "--attacks", "fgsm", "--eps", "nan"],
        ["--models", "fc10-1e-2", "--attacks", "fgsm", "--steps", "3"],  # no attack of the grid takes it
        ["--models", "fc10-1e-2", "--attacks", "fgsm", "--shard-size", "0"],
        ["--models", "mobilenet_v2", "--attacks", "fgsm"],
        ["--models", "fc10-1e-2", "--attacks", "fgsm", "--address", "127.0.0.1:{port}"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_the_database_alone(args, tmp_path, capsys, model_dir):
    db = tmp_path / "lb.sqlite"
    leaderboard.record_run(
        model="fc10-1", attack="fgsm", params={}, n=1, success_rate=0.0, source="test", path=db
    )
    before = leaderboard.runs(path=db), db.stat().st_mtime_ns
    args = [a.replace("{port}", str(_free_port())) for a in args]
    code = main(["sweep", *args, "--n", "40", "--db", str(db), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert (leaderboard.runs(path=db), db.stat().st_mtime_ns) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0] == 0


def test_dry_run_lists_the_tasks_and_creates_no_database(tmp_path, capsys, model_dir):
    db = tmp_path / "none.sqlite"
    assert (
        main(
            cli(
                "--models",
                ",".join(MODELS),
                "--attacks",
                "fgsm,deepfool",
                "--shard-size",
                "20",
                "--dry-run",
                db=db,
            )
        )
        == 0
    )
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["task_id"] for r in listed["tasks"]) == sorted(t.task_id for t in grid())
    assert not db.exists()


# ------------------------------------------------------------------------------ on the module's Ray


@pytest.mark.slow  # starts a Ray cluster (the only quick test that did) and attacks every cell twice
def test_sweep_rows_equal_one_process_and_the_cell_rows_match_record_result(ray_cluster, tmp_path):
    db = tmp_path / "lb.sqlite"
    tasks = grid(models=["fc10-1e-2"])
    summary = sweep.execute(tasks, path=db, progress=False)
    assert (summary.computed, summary.reused, summary.failed) == (len(tasks), 0, {})
    rows = compared_rows(tasks, db)
    for task in tasks:  # the same task run here, without Ray
        local = [tuple(e[c] for c in COMPARED) for e in sweep.run_task(task)["examples"]]
        assert rows[task.task_id] == local
    # the aggregate row of each cell equals what the CLI's one-process attack records for all 40 images
    net = load("fc10-1e-2", "cpu")
    chosen = PROTOCOL.select(net)
    for attack, params in (("fgsm", {"eps": EPS}), ("deepfool", {})):
        result = make_attack(attack, net, **params).run(chosen.images, chosen.labels)
        whole = leaderboard.record_result(result, "fc10-1e-2", source="test", selection=chosen, path=db)
        (swept,) = [r for r in leaderboard.runs(path=db, attack=attack, source="sweep")]
        (single,) = [r for r in leaderboard.runs(path=db, attack=attack) if r.id == whole]
        assert (swept.n, swept.protocol_id, swept.budget) == (single.n, single.protocol_id, single.budget)
        assert swept.success_rate == single.success_rate
        assert swept.median_rms == pytest.approx(single.median_rms, rel=1e-5)
    again = sweep.execute(tasks, path=db, progress=False)
    assert (again.computed, again.reused) == (0, len(tasks))


@pytest.mark.slow
def test_device_goes_to_every_task_and_cuda_needs_a_gpu_in_the_cluster(ray_cluster, tmp_path):
    """--device reaches the workers: cpu computes the rows one process computes; cuda on a cluster
    without a GPU is one clear error before anything is registered (not tasks waiting forever)."""
    tasks = grid(models=["fc10-1e-2"], attacks=("fgsm",))
    db = tmp_path / "lb.sqlite"
    summary = sweep.execute(tasks, path=db, progress=False, device="cpu")
    assert (summary.computed, summary.failed) == (len(tasks), {})
    rows = compared_rows(tasks, db)
    for task in tasks:
        local = [tuple(e[c] for c in COMPARED) for e in sweep.run_task(task, "cpu")["examples"]]
        assert rows[task.task_id] == local
    if int(pytest.importorskip("ray").cluster_resources().get("GPU", 0)) == 0:
        other = tmp_path / "none.sqlite"
        with pytest.raises(sweep.SweepError, match="no GPU"):
            sweep.execute(tasks, path=other, progress=False, device="cuda")
        assert not other.exists()


@pytest.mark.slow
def test_robust_accuracy_is_the_worst_case_per_example(ray_cluster, tmp_path):
    db = tmp_path / "lb.sqlite"
    sweep.execute(grid(models=["fc100-100-10"]), path=db, progress=False)
    (worst,) = leaderboard.robust_accuracy(path=db)
    # independently: attack the 40 images here and take the union of the fooled ones
    net = load("fc100-100-10", "cpu")
    chosen = PROTOCOL.select(net)
    fgsm = make_attack("fgsm", net, eps=EPS).run(chosen.images, chosen.labels)
    deepfool = make_attack("deepfool", net).run(chosen.images, chosen.labels)
    deepfool_within = deepfool.fooled & (deepfool.linf <= EPS + 1e-9)
    survivors = ~(fgsm.fooled | deepfool_within) & (fgsm.pred_before == fgsm.labels)
    assert worst.n == 40
    assert worst.robust_accuracy == pytest.approx(float(survivors.float().mean()))
    assert worst.attacks["fgsm"] == pytest.approx(float(fgsm.fooled.float().mean()))
    assert worst.attacks["deepfool"] == pytest.approx(float(deepfool_within.float().mean()))
    assert worst.robust_accuracy <= 1 - max(worst.attacks.values()) + 1e-9  # never kinder than one attack
    (progress,) = leaderboard.sweep_progress(path=db)
    assert (progress.tasks, progress.done, progress.failed) == (4, 4, 0)


def test_a_failing_task_is_recorded_and_the_rest_finish(ray_cluster, tmp_path, capsys):
    db = tmp_path / "lb.sqlite"
    args = cli("--models", f"fc10-1e-2,{BROKEN}", "--attacks", "fgsm", "--shard-size", "20", db=db)
    assert main(args) == 1  # BROKEN's checkpoint is corrupt: its tasks fail, the exit code says so
    out = json.loads(capsys.readouterr().out)
    assert out["computed"] == 2 and len(out["failed"]) == 2
    assert all("CheckpointError" in message and f"{BROKEN}," in message for message in out["failed"].values())
    with sqlite3.connect(db) as conn:
        status = dict(conn.execute("SELECT model, GROUP_CONCAT(status) FROM sweep_tasks GROUP BY model"))
    assert status == {"fc10-1e-2": "done,done", BROKEN: "failed,failed"}
    # a task whose attack refuses its parameters fails alone too
    (task,) = grid(models=["fc10-1e-2"], attacks=["fgsm"], shard=40)
    broken = replace(task, params={"eps": 5.0})
    summary = sweep.execute([broken, task], path=tmp_path / "other.sqlite", progress=False)
    assert summary.computed == 1 and "InvalidParameterError" in summary.failed[broken.task_id]


def _run_driver(args: list[str], address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args, "--address", address],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done_count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM sweep_tasks WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
def test_killed_driver_rerun_records_every_task_once_with_the_same_rows(ray_cluster, tmp_path):
    db = tmp_path / "lb.sqlite"
    args = cli("--models", ",".join(MODELS), "--attacks", "fgsm,deepfool", "--shard-size", "4", db=db)
    tasks = grid(shard=4)
    driver = _run_driver(args, ray_cluster)
    deadline = time.monotonic() + 240
    while _done_count(db) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed_at = _done_count(db)
    assert 0 < killed_at < len(tasks), "the driver must die mid-sweep"
    rerun = subprocess.run(
        [sys.executable, "-m", "core.cli", *args, "--address", ray_cluster],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["reused"] >= killed_at and summary["reused"] + summary["computed"] == len(tasks)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sweep_tasks").fetchone()[0] == len(tasks)
        assert conn.execute("SELECT COUNT(*) FROM sweep_examples").fetchone()[0] == 40 * 4
        assert (
            conn.execute("SELECT COUNT(*) FROM runs WHERE source = 'sweep'").fetchone()[0] == 4
        )  # one per cell
    reference = tmp_path / "uninterrupted.sqlite"
    sweep.execute(tasks, path=reference, progress=False)
    assert compared_rows(tasks, db) == compared_rows(tasks, reference)


@pytest.mark.slow
def test_two_sweeps_on_one_database_lose_and_duplicate_nothing(ray_cluster, tmp_path):
    db = tmp_path / "lb.sqlite"
    first = cli("--models", ",".join(MODELS), "--attacks", "fgsm", "--shard-size", "10", db=db)
    second = cli("--models", MODELS[1], "--attacks", "fgsm,deepfool", "--shard-size", "10", db=db)
    drivers = [_run_driver(first, ray_cluster), _run_driver(second, ray_cluster)]
    outputs = [d.communicate(timeout=600) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [err[-2000:] for _, err in outputs]
    union = {t.task_id for t in grid(attacks=["fgsm"], shard=10)} | {
        t.task_id for t in grid(models=[MODELS[1]], shard=10)
    }
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT task_id FROM sweep_tasks WHERE status = 'done'")]
        examples = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id || ':' || image_id) FROM sweep_examples"
        ).fetchone()
        sweep_runs = conn.execute("SELECT COUNT(*) FROM runs WHERE source = 'sweep'").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(ids) == sorted(union)
    assert tuple(examples) == (10 * len(union), 10 * len(union))
    assert sweep_runs == 3  # fgsm on two models, deepfool on one: one aggregate row per cell
    summaries = [json.loads(out) for out, _ in outputs]
    assert sum(s["computed"] for s in summaries) == len(union)  # every shared task computed once in total


@pytest.mark.slow
def test_reproduce_table1_on_ray_gives_the_same_table_and_resumes(ray_cluster, tmp_path):
    """Table 1's examples as a sweep: the same distortions as in this process, and a second run on the same
    database computes nothing (a killed run continues from the shards already done)."""
    from core.experiments import table1

    here = table1.run(n=12, seed=0, progress=False)
    cluster = sweep.Cluster(path=tmp_path / "lb.sqlite")
    first = table1.run(n=12, seed=0, progress=False, on_ray=cluster)
    assert [r["min_distortion"] for r in first.rows] == pytest.approx(
        [r["min_distortion"] for r in here.rows], rel=1e-5
    )
    assert [r["attacked"] for r in first.rows] == [r["attacked"] for r in here.rows]
    query = "SELECT task_id, status, created_at, time_s FROM sweep_tasks ORDER BY task_id"
    with sqlite3.connect(cluster.path) as conn:
        done = conn.execute(query).fetchall()
    assert len(done) == 6 and {row[1] for row in done} == {"done"}  # one shard per model
    again = table1.run(n=12, seed=0, progress=False, on_ray=cluster)
    with sqlite3.connect(cluster.path) as conn:
        assert conn.execute(query).fetchall() == done  # a recomputed task would have a new time and date
    assert [r["min_distortion"] for r in again.rows] == [r["min_distortion"] for r in first.rows]


@pytest.mark.slow
def test_reproduce_table2_on_ray_gives_the_same_table(ray_cluster, tmp_path):
    from core.experiments import table2

    here = table2.run(n=12, seed=0, progress=False)
    on_ray = table2.run(n=12, seed=0, progress=False, on_ray=sweep.Cluster(path=tmp_path / "lb.sqlite"))
    np.testing.assert_allclose(np.array(on_ray.card["matrix"]), np.array(here.card["matrix"]), rtol=1e-6)
    assert [r["examples"] for r in on_ray.rows] == [r["examples"] for r in here.rows]
    assert [r["distortion"] for r in on_ray.rows] == pytest.approx(
        [r["distortion"] for r in here.rows], rel=1e-5
    )
