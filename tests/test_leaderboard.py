"""The leaderboard database: migrations, recording, the matrices, and many processes writing at once."""

import json
import multiprocessing
import sqlite3

import pytest
import torch

from core.errors import InvalidParameterError
from core.evaluation import leaderboard
from core.evaluation.protocol import Protocol

VERSIONS = {"torch": "x"}


def _record(path, **kw):
    row = dict(model="fc10-1", attack="lbfgs", params={"c": 1.0}, n=10, success_rate=1.0, versions=VERSIONS)
    row.update({"source": "test", **kw})
    return leaderboard.record_run(path=path, **row)


def test_new_database_gets_the_latest_schema_in_wal_mode(tmp_path):
    path = tmp_path / "lb.sqlite"
    _record(path, median_rms=0.05)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == leaderboard.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert {"norm", "budget", "dataset", "seed", "median_l2", "versions", "source"} <= columns


def test_an_older_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    with leaderboard.connect(path, schema=1) as conn:  # a database written by the first release
        conn.execute(
            "INSERT INTO runs (created_at, model, attack, params, n, success_rate, median_rms, versions, source)"
            " VALUES ('2026-01-01', 'fc10-1', 'lbfgs', '{}', 5, 0.8, 0.07, '{}', 'cli')"
        )
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    (old,) = leaderboard.runs(path=path)  # opening with the current code migrates
    assert (old.model, old.n, old.median_rms, old.budget) == ("fc10-1", 5, 0.07, None)
    with leaderboard.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == leaderboard.SCHEMA_VERSION
    _record(path, attack="pgd", norm="linf", budget=0.1, success_rate=0.5)
    assert len(leaderboard.runs(path=path)) == 2


def test_matrices_show_the_latest_run_per_cell_of_one_protocol(tmp_path):
    path = tmp_path / "lb.sqlite"
    hundred, one = Protocol(n=100), Protocol(n=1)
    _record(path, model="fc10-1", attack="deepfool", median_rms=0.3, n=100, protocol=hundred)
    _record(path, model="fc10-1", attack="deepfool", median_rms=0.9, n=1, protocol=one)  # other protocol
    _record(path, model="fc10-1", attack="lbfgs", median_rms=0.2, protocol=hundred)
    _record(path, model="fc10-1", attack="lbfgs", median_rms=0.1, protocol=hundred)  # newer run replaces it
    _record(path, model="fc100-100-10", attack="cw", median_rms=0.05, protocol=hundred)
    _record(path, model="fc10-1", attack="pgd", norm="linf", budget=0.1, success_rate=0.4, protocol=hundred)
    _record(path, model="fc10-1", attack="pgd", norm="linf", budget=0.2, success_rate=0.9, protocol=hundred)
    assert [p.protocol_id for p in leaderboard.protocols(path=path)] == [hundred.fingerprint, one.fingerprint]
    dist = leaderboard.distortion_matrix(path=path)  # default: the protocol with the most runs
    assert dist.values["deepfool"]["fc10-1"] == 0.3
    assert dist.as_dict()["n"]["deepfool"]["fc10-1"] == 100
    assert dist.attacks == ["cw", "deepfool", "lbfgs"] and dist.models == ["fc10-1", "fc100-100-10"]
    assert dist.values["lbfgs"]["fc10-1"] == 0.1
    assert dist.values["lbfgs"]["fc100-100-10"] is None
    assert dist.missing() == [("cw", "fc10-1"), ("deepfool", "fc100-100-10"), ("lbfgs", "fc100-100-10")]
    assert leaderboard.distortion_matrix(protocol_id=one.fingerprint, path=path).values == {
        "deepfool": {"fc10-1": 0.9}
    }
    wide = dist.select(["lbfgs", "deepfool"], ["fc10-1", "cnn"])
    assert wide.values == {"lbfgs": {"fc10-1": 0.1, "cnn": None}, "deepfool": {"fc10-1": 0.3, "cnn": None}}
    assert wide.missing() == [("lbfgs", "cnn"), ("deepfool", "cnn")]
    succ = leaderboard.success_matrix("linf", 0.1, path=path)
    assert succ.values == {"pgd": {"fc10-1": 0.4}}
    assert leaderboard.budgets(path=path) == [("linf", 0.1), ("linf", 0.2)]


def test_a_weak_model_keeps_its_success_rate_whatever_other_protocols_record(tmp_path):
    """fc10-1 misclassifies 22% of the test set: attacking the first n images whatever their label would
    count those as free successes. Under the default protocol they are never attacked, and runs of other
    protocols (hand-chosen images, all images, other n) never move its cell."""
    path = tmp_path / "lb.sqlite"
    leaderboard.fill_cell("fgsm", "fc10-1", norm="linf", budget=0.05, source="test", path=path)
    before = leaderboard.success_matrix("linf", 0.05, protocol_id=Protocol().fingerprint, path=path)
    rate = before.values["fgsm"]["fc10-1"]
    everything = Protocol(n=100, correct_only=False)
    for protocol in (everything, Protocol(n=30), everything):
        leaderboard.fill_cell("fgsm", "fc10-1", protocol=protocol, norm="linf", budget=0.05, path=path)
    _record(path, attack="fgsm", norm="linf", budget=0.05, success_rate=1.0, n=1)  # a hand-chosen image
    after = leaderboard.success_matrix("linf", 0.05, protocol_id=Protocol().fingerprint, path=path)
    assert after.values["fgsm"]["fc10-1"] == rate and after.cells["fgsm"]["fc10-1"].n == 100
    # attacking all images counts misclassified ones neither as attacked nor as fooled
    (all_images,) = [r for r in leaderboard.runs(path=path) if r.protocol_id == everything.fingerprint][:1]
    assert all_images.n + all_images.skipped_misclassified == 100 and all_images.skipped_misclassified > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"success_rate": float("nan")},
        {"success_rate": 1.5},
        {"median_rms": float("inf")},
        {"median_rms": -0.1},
        {"n": 0},
        {"source": "somewhere"},
        {"norm": "linf"},  # a budget norm without the budget
        {"norm": "l1", "budget": 0.1},
    ],
)
def test_bad_values_are_refused(tmp_path, bad):
    with pytest.raises(InvalidParameterError):
        _record(tmp_path / "lb.sqlite", **bad)


def test_record_result_files_budgeted_and_minimal_attacks(tmp_path):
    from core.attacks.base import AttackResult

    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[:2] += 0.3
    common = dict(
        x=x, x_adv=x_adv, x_adv_raw=x_adv, labels=torch.zeros(4, dtype=torch.long), target=None,
        pred_before=torch.zeros(4, dtype=torch.long), pred_after=torch.tensor([1, 1, 0, 0]),
        probs_after=torch.full((4, 2), 0.5), success=torch.tensor([True, True, False, False]),
        iterations=1, model_calls=1, time_s=0.1,
    )  # fmt: skip
    path = tmp_path / "lb.sqlite"
    leaderboard.record_result(AttackResult(attack="pgd", params={"eps": 0.3, "norm": "linf", "seed": 3}, **common),
                              "fc10-1", source="test", path=path)  # fmt: skip
    leaderboard.record_result(
        AttackResult(attack="lbfgs", params={}, **common), "fc10-1", source="test", path=path
    )
    targeted = AttackResult(
        attack="lbfgs", params={}, **{**common, "target": torch.ones(4, dtype=torch.long)}
    )
    leaderboard.record_result(targeted, "fc10-1", source="test", path=path)
    targeted_run, minimal, budgeted = leaderboard.runs(path=path)
    assert targeted_run.attack == "lbfgs (targeted)"
    assert (budgeted.norm, budgeted.budget, budgeted.seed, budgeted.dataset) == ("linf", 0.3, 3, "mnist")
    assert budgeted.success_rate == 0.5 and budgeted.median_rms == pytest.approx(0.3)
    assert budgeted.median_l2 == pytest.approx(0.6)
    assert minimal.budget is None and minimal.norm is None


ROWS_PER_WRITER = 300


def _writer(path: str, worker: int, go) -> None:
    go.wait(30)  # all processes start writing at the same moment
    for i in range(ROWS_PER_WRITER):
        leaderboard.record_run(
            model=f"m{worker}", attack="pgd", params={"i": i}, n=1, success_rate=i / ROWS_PER_WRITER,
            norm="linf", budget=0.1, versions=VERSIONS, source="test", path=path,
        )  # fmt: skip


def test_parallel_writers_lose_nothing_and_corrupt_nothing(tmp_path):
    """Eight processes open a fresh database at once (racing through the migrations) and write rows."""
    path = str(tmp_path / "parallel.sqlite")
    workers = 8
    ctx = multiprocessing.get_context("fork")  # children only touch sqlite
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(path, w, go)) for w in range(workers)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    assert leaderboard.integrity_ok(path)
    rows = leaderboard.runs(path=path)
    assert len(rows) == workers * ROWS_PER_WRITER
    for w in range(workers):
        mine = sorted(r.params["i"] for r in rows if r.model == f"m{w}")
        assert mine == list(range(ROWS_PER_WRITER))
    with leaderboard.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == leaderboard.SCHEMA_VERSION


def test_fill_cell_records_a_run_that_matches_the_attack(tmp_path, mnist_test):
    from core.attacks import make_attack
    from core.models import load

    path = tmp_path / "lb.sqlite"
    protocol = Protocol(n=20)
    leaderboard.fill_cell(
        "fgsm", "fc10-1", protocol=protocol, norm="linf", budget=0.1, source="test", path=path
    )
    (run,) = leaderboard.runs(path=path)
    model = load("fc10-1", "cpu")
    correct = (model(mnist_test.images).argmax(1) == mnist_test.labels).nonzero().squeeze(1)[:20]
    expected = make_attack("fgsm", model, eps=0.1).run(mnist_test.images[correct], mnist_test.labels[correct])
    assert run.protocol_id == protocol.fingerprint and run.protocol == protocol.to_dict()
    assert (run.attack, run.model, run.n, run.budget, run.dataset) == ("fgsm", "fc10-1", 20, 0.1, "mnist")
    assert run.success_rate == pytest.approx(expected.summary()["success_rate"])
    assert leaderboard.success_matrix("linf", 0.1, path=path).values["fgsm"]["fc10-1"] == run.success_rate
    with pytest.raises(InvalidParameterError, match="takes no budget"):
        leaderboard.fill_cell("deepfool", "fc10-1", norm="linf", budget=0.1, path=path)
    with pytest.raises(InvalidParameterError, match="budgeted"):
        leaderboard.fill_cell("pgd", "fc10-1", path=path)
    with pytest.raises(InvalidParameterError, match="ImageNet"):
        leaderboard.fill_cell("deepfool", "mobilenet_v2", path=path)


def test_leaderboard_page_fills_missing_cells(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "fresh.sqlite"))  # a new user's empty leaderboard
    page = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "leaderboard.py")
    at = AppTest.from_file(page, default_timeout=180).run()
    assert not at.exception
    at.multiselect(key="lb_models").set_value(["fc10-1"]).run()
    at.multiselect(key="lb_min_attacks").set_value(["deepfool"]).run()
    at.multiselect(key="lb_budget_attacks").set_value(["fgsm"]).run()
    at.button(key="lb_fill").click().run()
    assert not at.exception, [e.value for e in at.exception]
    filled = {(r.attack, r.model, r.n) for r in leaderboard.runs(source="dashboard")}
    assert {("deepfool", "fc10-1", 100), ("fgsm", "fc10-1", 100)} <= filled
    assert "Every shown cell has a run." in [c.value for c in at.caption]


def _seed_sweep(path) -> None:
    """A sweep of 3 tasks of which 2 landed: fgsm at linf 0.1 and deepfool on fc10-1, 4 images each."""
    protocol = Protocol(n=4)
    base = {
        "cell_tasks": 1, "model": "fc10-1", "weights": "w", "params": "{}", "seed": None, "shard_start": 0,
        "shard_stop": 4, "protocol": json.dumps(protocol.to_dict()), "protocol_id": protocol.fingerprint,
        "scanned": 4, "model_calls": 1, "time_s": 0.1, "worker": "test",
    }  # fmt: skip

    def rows(success, linf):
        return [
            {"image_id": i, "label": 1, "clean_pred": 1, "success": s, "adv_pred": 2 if s else 1, "l2": d,
             "linf": d, "rms": d / 28, "model_calls": 1, "time_s": 0.01}
            for i, (s, d) in enumerate(zip(success, linf, strict=True))
        ]  # fmt: skip

    fgsm = {**base, "task_id": "t-fgsm", "cell_id": "c-fgsm", "attack": "fgsm", "norm": "linf", "budget": 0.1}
    deepfool = {
        **base,
        "task_id": "t-df",
        "cell_id": "c-df",
        "attack": "deepfool",
        "norm": None,
        "budget": None,
    }
    leaderboard.register_sweep("s1", "fgsm,deepfool x fc10-1", ["t-fgsm", "t-df", "t-missing"], path=path)
    assert leaderboard.record_task(fgsm, rows([1, 0, 0, 0], [0.1] * 4), path=path)
    # deepfool fools all four, but only images 1 and 3 within linf 0.1
    assert leaderboard.record_task(deepfool, rows([1, 1, 1, 1], [0.5, 0.05, 0.5, 0.1]), path=path)
    assert not leaderboard.record_task(fgsm, rows([1, 1, 1, 1], [0.1] * 4), path=path)  # done: untouched


def test_sweep_tasks_give_cell_runs_progress_and_the_worst_case(tmp_path):
    path = tmp_path / "lb.sqlite"
    _seed_sweep(path)
    (worst,) = leaderboard.robust_accuracy(path=path)
    assert (worst.model, worst.norm, worst.budget, worst.n) == ("fc10-1", "linf", 0.1, 4)
    assert worst.robust_accuracy == 0.25  # image 2 survives: fgsm took 0, deepfool 1 and 3 within budget
    assert worst.attacks == {"deepfool": 0.5, "fgsm": 0.25}
    (progress,) = leaderboard.sweep_progress(path=path)
    assert (progress.tasks, progress.done, progress.failed) == (3, 2, 0)
    cells = {r.attack: r for r in leaderboard.runs(source="sweep", path=path)}
    assert cells["fgsm"].success_rate == 0.25
    assert cells["deepfool"].median_rms == pytest.approx(0.1 / 28)  # the lower middle, as torch's median
    assert leaderboard.task_examples("t-fgsm", path=path)[0]["success"] == 1  # the second record was refused


def test_leaderboard_page_empty_state_says_how_to_fill_it(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "fresh.sqlite"))
    page = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "leaderboard.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception
    assert any("No MNIST runs recorded yet" in i.value and "intriguing sweep" in i.value for i in at.info)
    assert not at.get("plotly_chart")  # no blank chart boxes


def test_leaderboard_page_shows_sweep_progress_worst_case_and_n_in_every_cell(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    path = tmp_path / "lb.sqlite"
    _seed_sweep(path)
    monkeypatch.setenv(leaderboard.DB_ENV, str(path))
    page = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "leaderboard.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [p.proto.text for p in at.get("progress")] == ["fgsm,deepfool x fc10-1: 2/3 tasks done"]
    worst = at.dataframe[0].value
    assert list(worst["robust accuracy"]) == [0.25] and list(worst["images (n)"]) == [4]
    for chart in at.get("plotly_chart"):
        cells = [t for row in json.loads(chart.proto.spec)["data"][0]["text"] for t in row if t]
        assert cells and all("n=4" in t for t in cells)
    at.radio(key="lb_dataset").set_value("imagenet").run()
    assert not at.get("progress") and not at.get("plotly_chart")  # MNIST sweeps stay on the MNIST view


def test_certificates_keep_the_newest_per_cell_and_refuse_impossible_counts(tmp_path):
    db = tmp_path / "lb.sqlite"
    protocol = Protocol(n=100)
    common = {"model": "fc100-100-10", "method": "crown", "norm": "linf", "protocol": protocol, "path": db}
    leaderboard.record_certificate(budget=0.05, n=100, certified=40, **common)
    leaderboard.record_certificate(budget=0.05, n=100, certified=42, **common)
    leaderboard.record_certificate(budget=0.1, n=100, certified=7, **common)
    rows = leaderboard.certificates(path=db)
    assert [(r.budget, r.certified) for r in rows] == [(0.05, 42), (0.1, 7)]
    assert rows[0].verified_accuracy == 0.42
    assert rows[0].protocol_id == protocol.fingerprint
    assert Protocol.from_dict(rows[0].protocol) == protocol
    assert leaderboard.certificates(model="cnn", path=db) == []
    for bad in ({"certified": 101}, {"certified": -1}, {"n": 0, "certified": 0}, {"norm": "l1"}):
        args = {**common, "budget": 0.05, "n": 100, "certified": 1, **bad}
        with pytest.raises(InvalidParameterError):
            leaderboard.record_certificate(**args)
    assert len(leaderboard.certificates(path=db)) == 2


def test_one_image_runs_are_listed_apart_and_never_pooled_into_a_matrix(tmp_path):
    """Issue 25: runs on hand-chosen images (the Attack Lab's, a report's) each measured their own image;
    the default protocol is the first correctly classified test images, never 'images chosen by hand'."""
    path = tmp_path / "lb.sqlite"
    assert leaderboard.default_protocol(path=path) == Protocol().fingerprint  # an empty database
    for attack, rms in (("lbfgs", 0.05), ("deepfool", 0.2), ("fgsm (minimal eps)", 0.1)):
        _record(path, attack=attack, median_rms=rms, n=1)  # no protocol: one image chosen by hand
    _record(path, attack="pgd", norm="linf", budget=0.1, success_rate=1.0, n=1)
    assert leaderboard.protocols(path=path) == []
    assert leaderboard.default_protocol(path=path) == Protocol().fingerprint
    assert leaderboard.distortion_matrix(path=path).attacks == []
    assert leaderboard.success_matrix("linf", 0.1, path=path).attacks == []
    with pytest.raises(InvalidParameterError):
        leaderboard.distortion_matrix(protocol_id=None, path=path)
    apart = leaderboard.hand_chosen_runs(path=path)
    assert [r.attack for r in apart] == ["pgd", "fgsm (minimal eps)", "deepfool", "lbfgs"]
    _record(path, attack="deepfool", median_rms=0.3, n=100, protocol=Protocol())
    assert len(leaderboard.hand_chosen_runs(path=path)) == 4 and leaderboard.count_runs(path=path) == 5


def test_only_registered_attacks_are_offered_to_fill(tmp_path):
    """A report's minimal-eps search and a targeted run are rows, not attacks: filling them would crash."""
    path = tmp_path / "lb.sqlite"
    for attack in ("deepfool", "fgsm (minimal eps)", "lbfgs (targeted)"):
        _record(path, model="fc10-1", attack=attack, median_rms=0.1, protocol=Protocol())
    matrix = leaderboard.distortion_matrix(path=path).select(models=["fc10-1", "cnn"])
    assert set(matrix.attacks) == {"deepfool", "fgsm (minimal eps)", "lbfgs (targeted)"}
    assert matrix.missing() == [("deepfool", "cnn")]
