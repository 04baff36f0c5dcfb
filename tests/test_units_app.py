"""The `intriguing units` command and the Unit Explorer page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.units import write_sample_folder
from core.units.activations import clear_memory

PAGE = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "unit_explorer.py"


def _run_json(capsys, *argv: str) -> dict:
    assert main(["units", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_json_has_both_sides_and_p_values(capsys):
    result = _run_json(
        capsys, "--model", "cnn", "--layer", "conv1", "--k", "9", "--random", "150", "--seed", "3"
    )
    assert {"model", "layer", "k", "natural", "random", "p_value", "judge", "versions"} <= result.keys()
    assert (result["model"], result["layer"], result["k"], result["seed"]) == ("cnn", "conv1", 9, 3)
    assert result["judge"] == "fc100-100-10:hidden2"  # a different model judges the cosine score
    assert result["n_units"] == 32 and result["natural"]["n"] + len(result["dead_units"]) == 32
    assert result["random"]["n"] == 150
    for side in ("natural", "random"):
        for score in ("purity", "entropy", "cosine"):
            lo, hi = result[side][f"{score}_ci"]
            assert lo <= result[side][f"{score}_mean"] <= hi
        assert 1 / 9 <= result[side]["purity_mean"] <= 1
        assert 0 <= result[side]["entropy_mean"] <= math.log2(9)
    assert set(result["p_value"]) == {"purity", "entropy", "cosine"}
    assert all(0 <= p <= 1 for p in result["p_value"].values())


@pytest.mark.slow
def test_cli_default_layer_and_judge_for_the_mlp(capsys):
    result = _run_json(capsys, "--model", "fc100-100-10")
    assert (result["layer"], result["judge"]) == ("hidden2", "cnn:fc1")
    assert result["natural"]["n"] == 100 and result["random"]["n"] == 100


def test_cli_random_directions_are_at_least_as_many_as_units(capsys):
    result = _run_json(
        capsys, "--model", "fc100-100-10", "--layer", "hidden1", "--random", "10", "--judge", "pixels"
    )
    assert result["natural"]["n"] == 100 and result["random"]["n"] == 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "fc100-100-10", "--layer", "conv7"], "no readable layer"),
        (["--model", "fc100-100-10", "--k", "1"], "k must be at least 2"),
        (["--model", "mobilenet_v2"], "--image-folder"),
        (["--model", "fc100-100-10", "--judge", "nonsense"], "MODEL:LAYER"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(["units", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_on_an_image_folder_with_mobilenet(tmp_path, capsys):
    write_sample_folder(tmp_path, crops_per_photo=3)
    (tmp_path / "list.txt").write_text("not an image")
    result = _run_json(
        capsys, "--model", "mobilenet_v2", "--image-folder", str(tmp_path), "--k", "3", "--layer", "block13"
    )
    assert result["n_images"] == 12 and result["judge"] == "efficientnet_lite0:pool"  # the other network
    assert result["natural"]["n"] == 96 and result["random"]["n"] == 100
    assert result["skipped_files"] == ["list.txt"]
    assert 1 / 3 <= result["natural"]["purity_mean"] <= 1


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_page_renders_and_follows_the_unit_slider_and_the_seed_button(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))  # cold caches: the progress bar really runs
    clear_memory()
    at = AppTest.from_file(str(PAGE), default_timeout=180)
    at.session_state["judge"] = "pixels"  # the default judge (cnn:fc1) is exercised by the slow CLI test
    at.run()
    assert not at.exception and not at.error
    before = _captions(at)
    assert before[0].startswith("unit 0 ·") and any(
        c.startswith("random direction 0 (seed 0)") for c in before
    )
    assert any("Mann-Whitney" in m.value for m in at.markdown)
    assert sum("p = " in m.value for m in at.markdown) == 3  # one verdict per score

    at.slider(key="unit").set_value(6).run()
    after = _captions(at)
    assert not at.exception
    assert after[0].startswith("unit 6 ·") and after[0] != before[0]
    natural_rows = [c for c in after if c.startswith("unit ")]
    assert natural_rows != [c for c in before if c.startswith("unit ")]

    def shared() -> str:
        return next(c for c in _captions(at) if c.startswith("Shares "))

    assert shared().startswith("Shares 8/8 images with unit 6's top-8")  # a = 0: the unit itself
    at.slider(key="unit_angle").set_value(90).run()
    assert shared().endswith("8/8 with v's.")  # a = 90 degrees: the random direction itself

    at.button[0].click().run()
    assert at.session_state.seed == 1
    assert any(c.startswith("random direction 0 (seed 1)") for c in _captions(at))


@pytest.mark.slow  # optimises a direction live, then scores every arm of the study
def test_direction_lab_follows_a_link_optimises_live_and_scores_the_arms():
    at = AppTest.from_file(str(PAGE), default_timeout=240)
    at.query_params.update({"model": "fc100-100-10", "layer": "hidden1", "direction": "random:3"})
    at.session_state["judge"] = "pixels"
    at.session_state["steps"] = 16
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox[1].value == "hidden1" and at.text_input(key="direction").value == "random:3"
    at.button(key="fv_go").click().run()
    assert not at.exception
    assert any(c.value.startswith("finished after 16 steps") for c in at.caption)
    at.toggle(key="dl_arms").set_value(True).run()
    assert not at.exception and not at.error
    assert any("kmeans" in m.value and "p = " in m.value for m in at.markdown)
    at.toggle(key="dl_sweep").set_value(True).run()
    assert not at.exception and any("R^alpha" in c.value for c in at.caption)


@pytest.mark.slow
def test_direction_lab_shows_mobilenet_on_the_generated_sample_photos():
    at = AppTest.from_file(str(PAGE), default_timeout=300)
    at.query_params.update({"model": "mobilenet_v2", "layer": "block13"})
    at.session_state["steps"] = 8
    at.run()
    assert not at.exception and not at.error
    assert any("p = " in m.value for m in at.markdown)  # 80 sample photos: enough for a verdict at k = 4


def test_the_attack_lab_result_says_what_changed_inside_with_links_into_the_direction_lab():
    at = AppTest.from_file(str(PAGE.with_name("attack_lab.py")), default_timeout=240)
    at.run()
    at.selectbox(key="lab_model").set_value("fc100-100-10")
    at.selectbox(key="lab_attack").set_value("fgsm")
    at.run()
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    assert any(h.value == "What changed inside" for h in at.subheader)
    table = next(m.value for m in at.markdown if m.value.startswith("| directions"))
    assert "(unit_explorer?model=fc100-100-10&layer=hidden2&direction=unit%3A" in table
    assert "kmeans" in table and "%" in table
