"""core.lab: the live driver behind the Attack Lab, its transfer check and its exports."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from core import models as zoo
from core.errors import InvalidParameterError
from core.lab import LiveRun, conclude, make_lab_attack, transfer
from core.models import same_domain_models, usable_models
from core.visual.pictures import perturbation_picture, png_bytes, to_uint8, triple_picture

MODEL = "fc100-100-10"


@pytest.fixture(scope="module")
def model():
    return zoo.load(MODEL, torch.device("cpu"))


@pytest.fixture(scope="module")
def digit(mnist_test, model):
    """A correctly classified test digit and its label."""
    with torch.no_grad():
        pred = model(mnist_test.images[:20]).argmax(1)
    i = int(torch.nonzero(pred == mnist_test.labels[:20])[0])
    return mnist_test.images[i : i + 1], int(mnist_test.labels[i])


def pgd(model, steps=12, eps=0.15):
    return make_lab_attack("pgd", model, seed=3, eps=eps, steps=steps)


def test_every_step_lands_in_the_series_and_in_a_frame(model, digit):
    x, label = digit
    live = LiveRun(pgd(model), x, label)
    frames = list(live.frames())
    result = live.result()
    assert live.finished and not live.stopped
    assert [f.iteration for f in frames] == live.series["iteration"] == list(range(result.iterations))
    assert all(len(values) == result.iterations for values in live.series.values())
    for frame in frames:
        assert 0.0 <= frame.x_adv.min() and frame.x_adv.max() <= 1.0
        np.testing.assert_allclose(frame.perturbation, frame.x_adv - x[0].numpy(), atol=1e-6)
        assert frame.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert frame.linf <= 0.15 + 1e-5
    assert live.first_frame_s is not None


def test_throttled_frames_still_record_every_step(model, digit):
    x, label = digit
    live = LiveRun(pgd(model), x, label)
    frames = list(live.frames(min_interval=3600.0))  # only the first and the last iteration are drawn
    assert [f.iteration for f in frames] == [0, 11]
    assert len(live.series["loss"]) == 12
    assert sum(f.steps_since_last_frame for f in frames) == 12


def test_best_so_far_is_labelled_by_the_model_and_is_what_stop_keeps(model, digit):
    x, label = digit
    live = LiveRun(make_lab_attack("lbfgs", model, rounds=3, n_targets=2, max_iter=15), x, label)
    frames = []
    for frame in live.frames():
        frames.append(frame)
        if frame.iteration == 25:
            live.stop()
    shown = frames[-1]
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(shown.best_x_adv)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(shown.best_probs, probs, atol=1e-5)
    assert shown.best_pred == int(probs.argmax())
    result = live.result()
    np.testing.assert_allclose(result.x_adv[0].numpy(), shown.best_x_adv, atol=1e-7)
    assert live.final_frame().best_pred == int(result.pred_after[0])
    assert live.series["best_rms"][-1] == pytest.approx(float(result.rms[0]), abs=1e-6)


def test_lbfgs_rounds_follow_the_search_over_c(model, digit):
    """Every (target, round) is listed once; c grows after a round that reached its target and shrinks
    after one that did not (the search rule), and the result is the smallest reaching round."""
    x, label = digit
    live = LiveRun(make_lab_attack("lbfgs", model, rounds=4, n_targets=2, max_iter=20, c_init=1.0), x, label)
    list(live.frames(min_interval=3600.0))
    rounds = live.rounds
    targets = {r.target for r in rounds}
    assert len(targets) == 2 and label not in targets
    assert sorted((r.target, r.round) for r in rounds) == [(t, n) for t in sorted(targets) for n in range(4)]
    for t in targets:
        mine = sorted((r for r in rounds if r.target == t), key=lambda r: r.round)
        assert mine[0].c == pytest.approx(1.0)
        for before, after in zip(mine, mine[1:], strict=False):
            assert (after.c > before.c) == before.reached
    reached = [r.rms for r in rounds if r.reached]
    assert reached, "the attack should reach a target on this digit"
    assert float(live.result().rms[0]) == pytest.approx(min(reached), abs=1e-5)


def test_cw_rounds_follow_its_binary_search(model, digit):
    x, label = digit
    attack = make_lab_attack("cw", model, binary_search_steps=3, steps=15, initial_const=0.01)
    live = LiveRun(attack, x, label)
    list(live.frames(min_interval=3600.0))
    rounds = sorted(live.rounds, key=lambda r: r.round)
    assert [r.round for r in rounds] == [0, 1, 2]
    assert rounds[0].c == pytest.approx(0.01)
    for before, after in zip(rounds, rounds[1:], strict=False):
        assert (after.c < before.c) == before.reached  # found: bisect down; not found: c x 10
    for r in rounds:
        assert (r.rms is not None) == r.reached


def test_stop_keeps_the_best_so_far_verified_afresh(model, digit):
    x, label = digit
    live = LiveRun(pgd(model, steps=200), x, label)
    for frame in live.frames():
        if frame.iteration == 4:
            live.stop()
    result = live.result()
    assert live.finished and live.stopped and not live.run.finished
    assert result.iterations == 5
    with torch.no_grad():
        fresh = model(result.x_adv).argmax(1)
    assert torch.equal(fresh, result.pred_after)
    assert bool(result.success[0]) == (int(fresh[0]) != label)


def test_an_interrupted_run_resumes_where_it_stopped(model, digit):
    """A Streamlit rerun abandons the frames() generator mid-run; iterating again carries on."""
    x, label = digit
    live = LiveRun(pgd(model), x, label)
    first = live.frames()
    seen = [next(first).iteration for _ in range(4)]
    del first
    seen += [f.iteration for f in live.frames()]
    assert seen == list(range(12))
    assert live.result().iterations == 12


def test_the_thread_limit_holds_only_while_the_attack_runs(model, digit):
    x, label = digit
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        live = LiveRun(pgd(model, steps=3), x, label, threads=1)
        inside = [torch.get_num_threads() for _ in live.frames()]
        assert inside == [1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_one_image_at_a_time(model, mnist_test):
    with pytest.raises(InvalidParameterError):
        LiveRun(pgd(model), mnist_test.images[:2], 0)


def test_transfer_matches_each_model_on_its_own(model, digit):
    x, label = digit
    live = LiveRun(pgd(model, steps=20, eps=0.2), x, label)
    list(live.frames())
    result = live.result()
    others = ["fc10-1e-4", "fc10-1"]
    rows = transfer(result.x, result.x_adv, label, others, lambda n: zoo.load(n, "cpu"))
    assert [r.model for r in rows] == others
    for row in rows:
        other = zoo.load(row.model, "cpu")
        with torch.no_grad():
            assert row.clean_pred == int(other(result.x).argmax())
            assert row.adv_pred == int(other(result.x_adv).argmax())
        assert row.fooled == (row.clean_pred == label and row.adv_pred != label)


def test_same_domain_models_and_usable_models():
    names = zoo.list_models(include_unavailable=False)
    usable = usable_models(names)
    assert MODEL in usable
    for name in usable:
        if zoo.get_spec(name).dataset == "mnist":
            assert zoo.model_status(name) in ("committed", "trained")
    others = same_domain_models(MODEL, usable)
    assert MODEL not in others
    assert all(zoo.get_spec(n).dataset == "mnist" for n in others)


def test_conclude_baseline_card_and_exports(model, digit):
    x, label = digit
    live = LiveRun(pgd(model, steps=20, eps=0.2), x, label, seed=3)
    list(live.frames())
    outcome = conclude(live, model, MODEL, "mnist test", true_label=label)
    result = outcome.result
    # The noise control has the attack's RMS distortion (clipping to [0, 1] can only lower it).
    assert float(outcome.baseline.rms[0]) <= float(result.rms[0]) + 1e-6
    assert float(outcome.baseline.rms[0]) > 0.5 * float(result.rms[0])

    card = json.loads(outcome.card.to_json())
    assert card["model"] == MODEL and card["attack"] == "pgd" and card["seed"] == 3
    assert card["params"]["eps"] == 0.2 and card["params"]["seed"] == 3
    assert card["summary"]["success"] == bool(result.success[0])
    assert {"torch", "numpy"} <= set(card["versions"])

    saved = np.load(io.BytesIO(outcome.npz))
    np.testing.assert_allclose(saved["r"], saved["x_adv"] - saved["x"], atol=1e-6)
    np.testing.assert_array_equal(saved["x"], x[0].numpy())
    assert json.loads(str(saved["card"]))["model"] == MODEL

    png = np.asarray(Image.open(io.BytesIO(outcome.png)))
    assert png.shape == (28, 28)
    np.testing.assert_array_equal(png, to_uint8(result.x_adv[0]))


def test_pictures():
    r = np.zeros((1, 4, 4), dtype=np.float32)
    r[0, 0, 0], r[0, 0, 1] = 0.02, -0.01
    picture, amplification = perturbation_picture(r, scale=2)
    assert picture.shape == (8, 8, 3) and amplification == pytest.approx(50.0)
    red, blue, white = picture[0, 0].astype(int), picture[0, 2].astype(int), picture[4, 4].astype(int)
    assert red[0] > red[2] and blue[2] > blue[0]
    assert white.min() > 230  # no change reads as white
    assert to_uint8(torch.rand(3, 5, 6)).shape == (5, 6, 3)
    x = torch.rand(1, 28, 28)
    triple, _ = triple_picture(x, (x + 0.1).clamp(0, 1), scale=2, gap=4)
    assert triple.shape == (56, 3 * 56 + 2 * 4, 3)
    assert np.asarray(Image.open(io.BytesIO(png_bytes(x)))).shape == (28, 28)


def test_a_failed_attack_gets_a_computed_hint_and_no_transfer(model, digit):
    """Issue 25 item 5 (the page's part): PGD at a budget too small fails; the lab says which eps flips this
    image (checked here by running PGD at it, and at the failed budget, afresh) and transfers nothing."""
    x, label = digit
    live = LiveRun(pgd(model, eps=0.01), x, label)
    for _ in live.frames(min_interval=3600.0):
        pass
    assert not bool(live.result().success[0])
    outcome = conclude(
        live, model, "fc100-100-10", "test #0", label, ["fc10-1"], lambda n: zoo.load(n, "cpu")
    )
    assert outcome.transfer == [] and outcome.card.transfer == []
    found = re.search(r"raise eps to ([0-9.]+)", outcome.hint)
    assert found, outcome.hint
    eps = float(found.group(1))
    assert 0.01 < eps <= 1.0
    succeeded = LiveRun(pgd(model, eps=eps), x, label)  # the same attack and seed, afresh
    for _ in succeeded.frames(min_interval=3600.0):
        pass
    assert bool(succeeded.result().success[0])
    assert conclude(succeeded, model, "fc100-100-10", "test #0", label).hint is None
