"""`intriguing reproduce`: every table on a few images, checked for structure and the paper's invariants
(diagonal 100%, positive distortions, noise rows, bounds >= empirical) and for the files it writes."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import config
from core.errors import CardError, InvalidParameterError
from core.experiments import RESULTS_DIR, docs, paper, quotes, read_card, run_experiment
from core.experiments.adversarial import BATCH, amplify, experiment_protocol, lbfgs_batch


@pytest.fixture(autouse=True)
def _one_thread():
    """The attacks are many small batched steps: one torch thread is far faster on the shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _files_and_card(paths: dict, name: str, n: int, seed: int) -> dict:
    for ext in ("md", "csv", "png", "json"):
        assert paths[ext].endswith(f"{name}.{ext}")
    with open(paths["png"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    card = json.loads(Path(paths["json"]).read_text())
    assert card["experiment"] == name and card["n"] == n and card["seed"] == seed
    assert {"torch", "torchvision", "numpy", "python"} <= set(card["versions"])
    assert card["date"] and card["rows"]
    with open(paths["csv"]) as handle:
        assert len(list(csv.DictReader(handle))) == len(card["rows"])
    return card


def _assert_transfer_invariants(card: dict, models: tuple[str, ...], noise: tuple[float, ...]) -> dict:
    rows = {r["key"]: r for r in card["rows"]}
    cols = card["columns"]
    for i, name in enumerate(models):
        row = rows[name]
        assert row["examples"] > 0 and row["distortion"] > 0
        assert row[cols[i]] == 1.0  # examples made for a model fool it: success re-verified
        assert all(0.0 <= row[c] <= 1.0 for c in cols)
    for std in noise:
        row = rows[f"gaussian {std:g}"]
        assert row["distortion"] == std and all(0.0 <= row[c] <= 1.0 for c in cols)
    return rows


@pytest.mark.slow
def test_table1_via_the_cli_writes_md_csv_png_and_card(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "reproduce", "table1", "--n", "12", "--seed", "3"]
        + ["--out", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        cwd=config.PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    card = _files_and_card(out["files"], "table1", 12, 3)
    assert card["attack"]["name"] == "lbfgs" and card["attack"]["params"]["n_targets"] >= 1
    assert [r["name"] for r in card["rows"]] == list(paper.TABLE1_MODELS)
    for row in card["rows"]:
        assert row["min_distortion"] > 0 and row["success_rate"] == 1.0
        assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
        assert row["paper_test_error"] == paper.TABLE1[row["name"]]["test_error"]
    md = Path(out["files"]["md"]).read_text()
    assert "FC100-100-10" in md and "0.058" in md  # the paper's number beside ours


def test_table4_cross_training_with_amplified_rows_and_noise(tmp_path):
    report, paths = run_experiment("table4", tmp_path, n=12, seed=1, progress=False)
    card = _files_and_card(paths, "table4", 12, 1)
    rows = _assert_transfer_invariants(card, paper.TABLE3_MODELS, (0.06, 0.1))
    cols = card["columns"]
    for name in paper.TABLE3_MODELS:
        amplified = rows[f"amplified {name}"]
        assert amplified["distortion"] == 0.1 and amplified["examples"] == rows[name]["examples"]
        # the same examples, 2-3 times larger, fool far more than noise of the same RMS
        assert sum(amplified[c] for c in cols) > sum(rows["gaussian 0.1"][c] for c in cols)
    assert [r["key"] for r in card["rows"]][-1] == "gaussian 0.1"  # the paper's row order
    assert len(card["matrix"]) == 8 and len(card["paper_matrix"]) == 8


def test_amplify_rescales_the_perturbation_to_the_requested_rms_before_clipping():
    gen = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(4, 1, 28, 28, generator=gen)
    x_adv = x + 0.01 * torch.randn(x.shape, generator=gen)
    out = amplify(x, x_adv, 0.1)
    assert ((out >= 0) & (out <= 1)).all()
    unclipped = (out > 0) & (out < 1)
    assert unclipped.float().mean() > 0.9
    r = out - x
    direction = (x_adv - x)[unclipped] * (r[unclipped] / (x_adv - x)[unclipped])
    assert torch.allclose(direction, r[unclipped])  # same direction, only rescaled
    wide = amplify(x, x_adv, 0.001)  # no clipping at a small target: exact RMS
    assert torch.allclose((wide - x).flatten(1).pow(2).mean(1).sqrt(), torch.full((4,), 0.001), rtol=1e-4)


@pytest.mark.slow
def test_unknown_experiment_exits_2_and_bad_n_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "reproduce", "table9"],
        capture_output=True,
        text=True,
        cwd=config.PROJECT_ROOT,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    with pytest.raises(InvalidParameterError, match="at least 1"):
        run_experiment("table1", tmp_path, n=0, progress=False)


@pytest.mark.slow
def test_table2_diagonal_is_full_and_adversarial_transfer_beats_noise_on_average(tmp_path):
    report, paths = run_experiment("table2", tmp_path, n=20, seed=0, progress=False)
    card = _files_and_card(paths, "table2", 20, 0)
    rows = _assert_transfer_invariants(card, paper.TABLE1_MODELS, (0.1, 0.3))
    cols = card["columns"]
    off_diagonal = [
        rows[m][c] for i, m in enumerate(paper.TABLE1_MODELS) for j, c in enumerate(cols) if i != j
    ]
    noise = [rows["gaussian 0.1"][c] for c in cols]
    assert sum(off_diagonal) / len(off_diagonal) > sum(noise) / len(noise)


@pytest.mark.slow
def test_table3_errors_on_both_halves_and_distortion(tmp_path):
    report, paths = run_experiment("table3", tmp_path, n=10, seed=0, progress=False)
    card = _files_and_card(paths, "table3", 10, 0)
    for row in card["rows"]:
        assert {"p1_error", "p2_error", "test_error"} <= set(row)
        assert row["min_distortion"] > 0
    p1, p2 = card["rows"][0], card["rows"][2]
    assert p1["p1_error"] < p1["p2_error"] and p2["p2_error"] < p2["p1_error"]  # trained on their own half


@pytest.mark.slow
def test_table5_bounds_are_never_below_the_empirical_estimates(tmp_path):
    report, paths = run_experiment("table5", tmp_path, n=4, seed=0, models=("cnn",), progress=False)
    card = _files_and_card(paths, "table5", 4, 0)
    for row in card["rows"]:
        assert 0 < row["empirical"] <= row["upper_bound"] * 1.001, row
    assert card["rows"][-1]["layer"] == "network"


@pytest.mark.slow
def test_advtrain_trains_both_schemes_and_writes_zoo_style_cards(tmp_path, monkeypatch):
    monkeypatch.setenv(config.CACHE_DIR_ENV, str(tmp_path / "cache"))
    report, paths = run_experiment("advtrain", tmp_path, n=10, seed=0, epochs=2, progress=False)
    card = _files_and_card(paths, "advtrain", 10, 0)
    assert [r["model"] for r in card["rows"]][1:] == ["fc100-100-10-advpool", "fc100-100-10-pgdtrain"]
    for row in card["rows"]:
        assert 0 <= row["test_error"] < 0.2 and row["min_distortion"] > 0 and 0 <= row["pgd_error"] <= 1
    assert card["curves"]["pool"][-1]["pool_size"] > 0  # the pool was filled after the warm-up epoch
    for name in ("fc100-100-10-advpool", "fc100-100-10-pgdtrain"):
        saved = json.loads((tmp_path / "cache" / "advtrain" / f"{name}.json").read_text())
        assert saved["seed"] == 0 and "adversarial_training" in saved and not math.isnan(saved["test_error"])
    assert card["rows"][2]["pgd_error"] <= card["rows"][0]["pgd_error"]  # PGD training resists PGD better


@pytest.mark.slow
def test_validate_measures_defences_twins_and_an_example_report(tmp_path):
    from core.experiments import quotes, validate

    report, paths = run_experiment("validate", tmp_path, n=10, seed=0, progress=False, reference_n=10)
    card = _files_and_card(paths, "validate", 10, 0)
    assert card["protocol"]["n"] == 10 and card["protocol_id"]
    for eps in validate.BUDGETS:
        rows = [r for r in card["rows"] if r["eps"] == eps]
        assert [r["defence"] for r in rows][0] == "none" and len(rows) == 1 + len(validate.DEFENCES)
        assert all(
            0 <= r[k] <= 1 for r in rows for k in ("clean_accuracy", "robust_plain", "robust_adaptive")
        )
    assert card["example_report"]["verdict"].startswith(validate.MODEL)
    assert card["example_report"]["reference_n"] == 10
    rendered = quotes.validate(card)
    assert rendered["val_n"] == "10" and rendered["val_defences"].count("\n") == len(card["rows"]) + 1


@pytest.mark.slow
def test_certify_ratios_never_below_the_exact_minimum(tmp_path):
    """Every attack's distortion over the proved minimum is >= 1 (a ratio below 1 would be a flip smaller
    than the proof allows); DeepFool is exact on the affine fc10; the ReLU bracket never inverts."""
    from core.experiments import certify, quotes

    report, paths = run_experiment("certify", tmp_path, n=3, seed=0, progress=False, relu_n=1, time_limit=2)
    card = _files_and_card(paths, "certify", 3, 0)
    rows = {(r["model"], r["norm"], r["attack"]): r for r in card["rows"]}
    linear, relu = card["models"]
    assert all(rows[(linear, norm, a)]["images"] == 3 for norm, a in (("l2", "lbfgs"), ("linf", "pgd")))
    assert all(r["max"] >= r["median"] >= 1 - 1e-5 for r in card["rows"] if r["images"])
    assert rows[(linear, "l2", "deepfool")]["max"] <= 1.01
    for image in card["images"][relu]:
        lower, upper = image["bracket"]
        assert image["certified"] * (1 - 1e-5) <= lower <= upper <= min(image["linf"].values()) * (1 + 1e-5)
    assert quotes.certify(card)["cert_table"].count("\n") == len(card["rows"]) + 1
    # Verified beside attack robust accuracy: the proof never claims an image an attack broke.
    assert [(e["model"], e["eps"], "milp" in e) for e in card["verified"]] == list(certify.VERIFIED)
    for entry in card["verified"]:
        assert entry["n"] == 3 and 0.0 <= entry["verified"] <= entry["attack"] <= 1.0
        if "milp" in entry:  # the MILP only adds proofs, and never proves an image an attack broke
            assert entry["verified"] <= entry["milp"]["verified"] <= entry["attack"]
        for image in entry["images"]:
            assert image["attack"] is None or image["certified"] <= image["attack"] * (1 + 1e-5)
    assert quotes.certify(card)["cert_verified_table"].count("\n") == len(card["verified"]) + 1


def _tracked_state() -> dict[str, bytes]:
    """Content of every file the documents are made of (docs/, the README)."""
    root = config.PROJECT_ROOT
    files = [root / "README.md", *sorted((root / "docs").rglob("*"))]
    return {str(f): f.read_bytes() for f in files if f.is_file()}


@pytest.mark.slow
def test_reproduce_writes_a_run_folder_and_leaves_the_docs_alone(tmp_path):
    before = _tracked_state()
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "reproduce", "table5", "--n", "2", "--models", "cnn", "--json"],
        capture_output=True,
        text=True,
        cwd=config.PROJECT_ROOT,
        env={**os.environ, config.CACHE_DIR_ENV: str(cache)},
    )
    assert proc.returncode == 0, proc.stderr
    card_path = Path(json.loads(proc.stdout)["files"]["json"])
    assert card_path.is_relative_to(cache / "runs") and card_path.parent.parent.name.startswith("table5-")
    assert json.loads(card_path.read_text())["n"] == 2
    assert _tracked_state() == before  # no committed card, doc or README byte changed


@pytest.mark.slow
def test_update_docs_and_out_together_are_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "reproduce", "table1", "--update-docs", "--out", "x"],
        capture_output=True,
        text=True,
        cwd=config.PROJECT_ROOT,
    )
    assert proc.returncode == 2 and "--update-docs" in proc.stderr


def test_docs_render_every_quote_from_the_stored_cards(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    (root / "docs").mkdir(parents=True)
    blocks = "".join(
        f"{begin}\nold numbers 0.1234\n{end}\n\n" for begin, end in map(docs.markers, docs.README_BLOCKS)
    )
    (root / "README.md").write_text(f"# x\n\n{blocks}after\n")
    written = docs.render_docs(tmp_path / "results", root)
    assert len(written) == 7  # reproduction, validate, autoattack, performance, smoothing, certify, README
    texts = {Path(p).name: Path(p).read_text() for p in written}
    for name, text in texts.items():
        assert "(not run)" not in text and not re.search(r"\{[a-z][a-z0-9_]*\}", text), name
    readme = texts["README.md"]
    assert "old numbers" not in readme and readme.endswith("after\n")
    table1 = read_card("table1", tmp_path / "results")
    fc100 = next(r for r in table1["rows"] if r["name"] == "fc100-100-10")
    assert f"{fc100['min_distortion']:.3f} vs {fc100['paper_min_distortion']:.3f}" in readme
    model_card = json.loads((config.ASSETS_DIR / "models" / "fc10-1.json").read_text())
    assert f"`fc10-1` ({100 * model_card['test_error']:.2f}% vs" in readme


def test_a_changed_card_changes_the_discussion(tmp_path):
    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    path = tmp_path / "results" / "table2" / "table2.json"
    card = json.loads(path.read_text())
    row = next(r for r in card["rows"] if r["key"] == "fc200-200-10")
    row[card["columns"][card["models"].index("fc100-100-10")]] = 0.777
    path.write_text(json.dumps(card))
    assert "FC200-200-10 -> FC100-100-10 78% vs" in docs.reproduction_doc(tmp_path / "results")


def test_a_card_made_on_a_gpu_says_so_in_the_discussion(tmp_path):
    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    path = tmp_path / "results" / "table1" / "table1.json"
    card = json.loads(path.read_text()) | {"device": "cuda:0", "gpu": "Some GPU 9000"}
    path.write_text(json.dumps(card))
    assert "took {:.0f} s (cuda:0, Some GPU 9000)".format(card["time_s"]) in docs.reproduction_doc(
        tmp_path / "results"
    )
    path.write_text(json.dumps(card | {"device": "cpu"}))  # a CPU run on a machine that has a GPU
    assert "Some GPU 9000" not in docs.reproduction_doc(tmp_path / "results")


def test_lbfgs_batches_are_cache_sized_on_the_cpu_and_whole_test_sets_on_a_gpu():
    assert lbfgs_batch(torch.device("cpu"), 9, 784) == BATCH
    assert lbfgs_batch(torch.device("cuda"), 9, 784) >= 10_000  # MNIST's test set in one run, all 9 targets
    imagenet = lbfgs_batch(torch.device("cuda"), 9, 3 * 224 * 224)
    assert 1 <= imagenet < 1000  # ImageNet photos: the same budget of optimiser state, far fewer images


def test_experiment_protocol_keeps_every_correct_image_of_the_seeded_subset():
    full = experiment_protocol(10_000, seed=5)
    assert full.n is None and full.indices is None and full.correct_only  # the committed 10,000-image runs
    part = experiment_protocol(50, seed=5)
    assert len(part.indices) == 50 and list(part.indices) == sorted(part.indices)
    assert part.fingerprint == experiment_protocol(50, seed=5).fingerprint
    assert part.fingerprint != experiment_protocol(50, seed=6).fingerprint


@pytest.mark.parametrize("page", ["transferability.py", "robustness.py"])
def test_pages_render_the_stored_results(page):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(config.PROJECT_ROOT / "dashboard" / "views" / page), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    stored = [name for name in ("table2", "table4", "table5", "advtrain") if read_card(name)]
    if page == "robustness.py" and {"table5", "advtrain"} <= set(stored):
        assert len(at.get("plotly_chart")) == 2 and len(at.metric) == 3
    if page == "transferability.py":
        photos = read_card("table2-imagenet")
        assert len(at.get("plotly_chart")) == len({"table2", "table4"} & set(stored)) + (photos is not None)
        if photos is not None:  # n stated plainly
            assert any(
                f"n = {photos['n']} photos" in w.value and "not a measurement" in w.value for w in at.warning
            )


@pytest.mark.slow
def test_table2_imagenet_on_one_photo(tmp_path):
    from core.experiments import table2_imagenet

    report, paths = run_experiment("table2-imagenet", tmp_path, n=1, seed=0, progress=False)
    card = _files_and_card(paths, "table2-imagenet", 1, 0)
    assert card["photos"] == ["chelsea"] and card["columns"] == ["mobilenet_v2", "efficientnet_lite0"]
    made, noise = card["rows"][:2], card["rows"][2:]
    for row in made:  # the diagonal: every example changes the prediction of the network it was made for
        assert row["examples"] == 1 and row[row["key"]] == 1.0 and row["distortion"] > 0
    largest = max(row["distortion"] for row in made)
    assert [row["distortion"] for row in noise] == pytest.approx(
        [k * largest for k in table2_imagenet.NOISE_MULTIPLES]
    )
    for row in card["rows"]:
        assert all(0.0 <= row[m] <= 1.0 for m in card["columns"])
    assert "not a measurement" in Path(paths["md"]).read_text()
    with pytest.raises(InvalidParameterError, match="1 to 4 photos"):
        run_experiment("table2-imagenet", tmp_path, n=5)


def test_robustness_log_chart_shows_every_bar_above_its_bottom_edge():
    """A log axis draws bars up from its bottom edge; FC2's bound of 1.155 must not look like zero."""
    from streamlit.testing.v1 import AppTest

    if read_card("table5") is None:
        pytest.skip("no stored table5 card")
    page = str(config.PROJECT_ROOT / "dashboard" / "views" / "robustness.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    bottom, top = spec["layout"]["yaxis"]["range"]  # both ends: plotly autoranges a half-open range whole
    heights = [math.log10(v) - bottom for trace in spec["data"] for v in trace["y"] if v]
    assert heights and min(heights) >= 0.5  # at least half a decade tall: visible beside the others
    assert top - bottom > max(heights)  # the tallest bar fits too


def test_table2_noise_gap_note_names_exactly_the_far_cells():
    from core.experiments import table2

    row = {"source": "Gaussian noise, stddev 0.3", "key": "gaussian 0.3", "A": 0.25, "B": 0.05, "C": 0.1}
    row |= {"paper A": 0.05, "paper B": 0.04, "paper C": 0.0}  # A 5x, B close, C has no paper figure
    adversarial = {"source": "A", "key": "a", "A": 1.0, "B": 0.9, "C": 0.9, "paper A": 1, "paper B": 0.1}
    card = {"columns": ["A", "B", "C"], "rows": [adversarial | {"paper C": 0.1}, row]}
    (note,) = table2.noise_gaps(card)
    assert note.startswith("Gaussian noise, stddev 0.3") and "A 25.0% vs 5.0%" in note
    assert "B " not in note and "C " not in note
    assert table2.noise_gaps(card | {"rows": [adversarial | {"paper C": 0.1}]}) == []


def test_transferability_page_notes_the_noise_rows_far_from_the_paper():
    from streamlit.testing.v1 import AppTest

    from core.experiments import table2

    card = read_card("table2")
    if card is None or not table2.noise_gaps(card):
        pytest.skip("no stored table2 card with a noise row far from the paper's")
    page = str(config.PROJECT_ROOT / "dashboard" / "views" / "transferability.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [i.value for i in at.info if i.value.startswith("Gaussian noise")] == table2.noise_gaps(card)


@pytest.mark.parametrize(
    "text, why", [('{"rows": [1, 2', "Expecting"), ("[1, 2]", "a JSON list, not a card")]
)
def test_a_damaged_card_is_one_clear_message_with_the_way_back(tmp_path, text, why):
    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    (tmp_path / "results" / "table4" / "table4.json").write_text(text)
    with pytest.raises(CardError) as caught:
        read_card("table4", tmp_path / "results")
    message = str(caught.value)
    assert "table4.json is damaged" in message and why in message
    assert "git checkout -- " in message and "`intriguing reproduce table4 --update-docs`" in message
    with pytest.raises(CardError):  # the docs that quote it say the same, not a traceback
        docs.reproduction_doc(tmp_path / "results")


def test_a_page_reading_a_damaged_card_says_so_and_the_app_stays_usable(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.experiments import writer

    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    (tmp_path / "results" / "table4" / "table4.json").write_text("{not json")
    monkeypatch.setattr(writer, "RESULTS_DIR", tmp_path / "results")
    at = AppTest.from_file(str(config.PROJECT_ROOT / "dashboard" / "app.py"), default_timeout=120).run()
    at.switch_page("views/tour.py").run()
    assert not at.exception
    assert any("table4.json is damaged" in e.value for e in at.error), [e.value for e in at.error]
    at.switch_page("views/home.py").run()  # another page still works
    assert not at.exception and not at.error


def test_the_readme_quotes_the_gpu_cards_and_their_best_batch(tmp_path):
    shutil.copytree(RESULTS_DIR, tmp_path / "results")
    read = lambda name: read_card(name, tmp_path / "results")  # noqa: E731
    path = tmp_path / "results" / "performance" / "gpu-smoothing.json"
    card = json.loads(path.read_text())
    row = next(r for r in card["rows"] if r["contender"] == "projected" and r["batch"] == 1000)
    row["s_per_image"] = 1e-4  # now the best batch of its model
    path.write_text(json.dumps(card))
    text = quotes.render(docs.TEMPLATES / "results.md", read)
    assert f"{row['model']} 0.1 ms (batch 1,000)" in text and card["machine"]["gpu"] in text
    table1 = tmp_path / "results" / "table1" / "table1.json"
    t1 = json.loads(table1.read_text())
    table1.write_text(json.dumps(t1 | {"device": "cuda:0", "attack": t1["attack"] | {"full_search": True}}))
    assert "Table 1 (the paper's full search, " in quotes.render(docs.TEMPLATES / "results.md", read)
    table1.write_text(json.dumps(t1 | {"device": "cpu"}))  # a CPU run is not quoted as a GPU's
    assert "Table 1 (" not in quotes.render(docs.TEMPLATES / "results.md", read)
