"""Direction Lab engine: feature visualisation, learned directions, the rotation sweep, what an attack moves
inside, and safe photo uploads."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from archive_support import zip_bytes
from PIL import Image

from core.cli import main
from core.errors import ImageInputError, InvalidParameterError
from core.units import MnistImages, dead_units, layer_activations, unit_vector
from core.units import learned as learned_module
from core.units.activations import units_at
from core.units.arms import resolve_direction, study_arms
from core.units.coherence import study, summarize, verdict_withheld
from core.units.featvis import default_settings, start
from core.units.inside import AttackRecord, energy_shares, load_run, span_share, what_changed
from core.units.rotation import FractionalRotation, random_rotation, sweep
from core.units.uploads import save_uploads


@pytest.fixture(scope="module")
def mnist_images():
    return MnistImages()


@pytest.fixture(scope="module")
def cnn_fc1(mnist_images):
    return layer_activations("cnn", "fc1", mnist_images, device="cpu")


# ---- feature visualisation -----------------------------------------------------------------------------


def _featvis(unit: int, steps: int = 96, seed: int = 0):
    run = start("cnn", "fc1", unit_vector(128, unit), default_settings("mnist", steps=steps, seed=seed))
    events = list(run)
    return run, events


def test_featvis_beats_the_best_held_out_image_stays_in_the_box_and_is_seeded(cnn_fc1):
    torch.set_num_threads(1)
    unit = int(np.setdiff1d(np.arange(128), dead_units(cnn_fc1))[0])
    run, events = _featvis(unit)
    result = run.result()
    assert result.activation > float(cnn_fc1[:, unit].max())
    assert 0.0 <= float(result.x.min()) and float(result.x.max()) <= 1.0
    assert result.activation == max(e.activation for e in events) == events[-1].best_activation
    # the reported activation is the returned image's own, measured afresh by the model
    with torch.no_grad():
        fresh = float(units_at(run.model, run.module, result.x)[0, unit])
    assert fresh == pytest.approx(result.activation, rel=1e-5)
    again, _ = _featvis(unit)
    assert torch.equal(again.result().x, result.x)
    other, _ = _featvis(unit, seed=1)
    assert not torch.equal(other.result().x, result.x)


def test_stopping_keeps_the_best_image_so_far(cnn_fc1):
    unit = int(np.setdiff1d(np.arange(128), dead_units(cnn_fc1))[1])
    run = start("cnn", "fc1", unit_vector(128, unit), default_settings("mnist", steps=200))
    for event in run:
        if event.iteration == 9:
            run.stop()
    assert run.iterations == 10 and run.finished
    result = run.result()
    assert result.activation == max(result.curve) and len(result.curve) == 10
    list(run)  # a stopped run does not step again
    assert run.iterations == 10


# ---- learned directions --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", learned_module.METHODS)
def test_learned_directions_are_unit_length_and_reproducible(method, tmp_path, monkeypatch):
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    acts = np.random.default_rng(0).gamma(1.0, size=(300, 12)).astype(np.float32)
    first = learned_module.fit_directions(method, acts, 6, seed=3)
    learned_module._memory.clear()
    for path in (tmp_path / "units" / "learned").iterdir():
        path.unlink()  # refit from scratch, not from the cache
    second = learned_module.fit_directions(method, acts, 6, seed=3)
    assert first.shape == (6, 12)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(first, second)


def test_nmf_refuses_negative_activations():
    acts = np.random.default_rng(0).standard_normal((100, 5)).astype(np.float32)
    with pytest.raises(InvalidParameterError, match="non-negative"):
        learned_module.fit_directions("nmf", acts, 3)


def test_arms_are_fitted_on_one_half_and_scored_on_the_other():
    fit, score = learned_module.halves(101, seed=0)
    assert len(np.intersect1d(fit, score)) == 0 and len(fit) + len(score) == 101


@pytest.mark.parametrize("text", ["unit:999", "nmf:x", "banana:1", "mix:", "random:"])
def test_bad_direction_names_get_a_clear_message(text, cnn_fc1):
    with pytest.raises(InvalidParameterError):
        resolve_direction(text, cnn_fc1)


# ---- rotation sweep ------------------------------------------------------------------------------------


def test_fractional_rotation_powers_compose():
    rotation = random_rotation(9, seed=4)
    power = FractionalRotation(rotation)
    assert np.array_equal(power.power(0.0), np.eye(9))
    np.testing.assert_allclose(power.power(1.0), rotation, atol=1e-10)
    np.testing.assert_allclose(power.power(0.3) @ power.power(0.7), rotation, atol=1e-10)
    np.testing.assert_allclose(power.power(0.5) @ power.power(0.5).T, np.eye(9), atol=1e-10)


def test_alpha_zero_reproduces_the_unit_scores_exactly(mnist_images):
    result = sweep(
        "fc100-100-10", "hidden1", k=9, seed=0, alphas=(0.0, 1.0), images=mnist_images, judge="pixels"
    )
    units = study("fc100-100-10", "hidden1", k=9, images=mnist_images, judge="pixels").natural
    for score in ("purity", "entropy", "cosine"):
        assert result["points"][0][score] == summarize(units[score])
    assert result["points"][1]["purity"] != result["points"][0]["purity"]


# ---- what an attack moves inside -----------------------------------------------------------------------


def test_energy_on_an_orthonormal_basis_sums_to_the_squared_norm():
    delta = np.random.default_rng(1).standard_normal((4, 30))
    for basis in (np.eye(30), random_rotation(30, seed=2)):
        np.testing.assert_allclose(
            energy_shares(delta, basis).sum(axis=1), (delta**2).sum(axis=1), rtol=1e-10
        )
    np.testing.assert_allclose(span_share(delta, random_rotation(30, 5)[:30]), 1.0)
    assert (span_share(delta, random_rotation(30, 5)[:3]) < 1).all()


def test_inside_of_a_saved_attack_run(tmp_path, capsys, mnist_images):
    x = mnist_images.images[:3]
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    summary = json.dumps({"model": "fc100-100-10"})
    labels = mnist_images.labels[:3]
    np.savez(
        tmp_path / "run.npz",
        x=x.numpy(),
        x_adv=x_adv.numpy(),
        labels=labels,
        pred_after=labels,
        summary=summary,
    )
    record = load_run(tmp_path / "run.npz")
    assert record.model == "fc100-100-10" and record.x.shape == (3, 1, 28, 28)
    assert main(["inside", "--run", str(tmp_path / "run.npz"), "--layer", "hidden2", "--json"]) == 0
    layer = json.loads(capsys.readouterr().out)["layers"][0]
    assert layer["arms"]["units"]["energy_sum"] == pytest.approx(layer["delta_norm2"], rel=1e-9)
    assert layer["arms"]["random"]["energy_sum"] == pytest.approx(layer["delta_norm2"], rel=1e-9)
    assert set(layer["arms"]) == {"units", "random", "nmf", "kmeans", "dictionary"}
    assert 0 <= layer["neighbours"]["adv_share_of_adv_class"] <= 1


def test_a_broken_run_file_gets_a_clear_message(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidParameterError, match="not a readable"):
        load_run(tmp_path / "bad.npz")
    with pytest.raises(InvalidParameterError, match="no such run file"):
        load_run(tmp_path / "missing.npz")
    wrong = AttackRecord("cnn", torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), np.zeros(1), np.zeros(1))
    with pytest.raises(InvalidParameterError, match="inputs"):
        what_changed(wrong, MnistImages())


# ---- verdicts and uploads ------------------------------------------------------------------------------


def test_too_few_images_for_the_k_withhold_the_verdict():
    assert verdict_withheld(80, 4) is None
    assert "No verdict" in verdict_withheld(79, 4)


def _png(colour: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (colour, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_zip_of_class_folders_is_saved_and_its_junk_skipped(tmp_path):
    data = zip_bytes(
        {
            "photos/cat/a.png": _png(10),
            "photos/cat/b.png": _png(20),
            "photos/dog/c.png": _png(30),
            "photos/__pycache__/x.pyc": b"\0",
            "photos/notes.txt": b"hello",
        }
    )
    upload = save_uploads([("set.zip", data), ("loose.png", _png(40))], root=tmp_path)
    assert upload.saved == 3
    assert sorted(p.name for p in upload.folder.iterdir()) == ["cat", "dog"]
    assert any("x.pyc" in s for s in upload.skipped) and any("notes.txt" in s for s in upload.skipped)
    assert any("loose.png" in s for s in upload.skipped)  # beside the class folders


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("a.txt", b"text")], "no readable images"),
        ([("b.png", b"not really a png")], "no readable images"),
        ([("c.zip", zip_bytes({"readme.md": b"# none"}))], "no readable images"),
        ([("d.zip", b"PK broken")], "not a readable zip"),
        ([("e.zip", zip_bytes({"../../etc/evil.png": _png()}))], "outside the archive"),
        ([("f.zip", zip_bytes({"/abs/evil.png": _png()}))], "outside the archive"),
    ],
)
def test_bad_uploads_get_a_clear_message(tmp_path, files, message):
    with pytest.raises(ImageInputError, match=message):
        save_uploads(files, root=tmp_path)


def test_a_zip_bomb_is_refused(tmp_path, monkeypatch):
    from core.units import uploads

    bomb = zip_bytes({"big.png": b"\0" * (3 * 2**20)})  # 3 MB of zeros compress to a few kB
    assert len(bomb) < 2**16
    monkeypatch.setattr(uploads, "MAX_TOTAL_BYTES", 2**20)  # the same check, at a size a test can afford
    with pytest.raises(ImageInputError, match="more than"):
        save_uploads([("bomb.zip", bomb)], root=tmp_path)


# ---- the CLI -------------------------------------------------------------------------------------------


def test_featvis_cli_reports_the_activation_and_the_held_out_best(tmp_path, capsys):
    out = tmp_path / "fv.png"
    argv = ["featvis", "--model", "fc100-100-10", "--layer", "hidden1", "--direction", "random:3"]
    assert main([*argv, "--steps", "32", "--out", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iterations"] == 32 and result["held_out_max"] > 0
    assert Image.open(out).size == (28, 28)


def test_units_cli_with_arms_shows_each_arm(capsys, mnist_images):
    argv = ["units", "--model", "fc100-100-10", "--layer", "hidden1", "--arms", "random,kmeans", "--json"]
    assert main([*argv, "--judge", "pixels"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["arms"]) == ["units", "random", "kmeans"]
    assert result["n_fit"] + result["n_score"] == len(mnist_images)
    assert set(result["p_value"]) == {"random", "kmeans"}
    direct = study_arms("fc100-100-10", "hidden1", ("units", "kmeans"), images=mnist_images, judge="pixels")
    assert direct.summary()["arms"]["kmeans"] == result["arms"]["kmeans"]
