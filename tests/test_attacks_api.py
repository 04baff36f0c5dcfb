"""The attack engine's contract: parameter checks, streaming, early stop, results, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.attacks import ATTACKS, Attack, AttackResult, gaussian_noise_baseline, make_attack
from core.errors import InvalidParameterError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small settings so every attack finishes in a fraction of a second on a few MNIST images (each attack's own).
QUICK = {name: cls.quick for name, cls in ATTACKS.items()}


@pytest.fixture(scope="module")
def batch(mnist_test):
    return mnist_test.images[:6], mnist_test.labels[:6]


def test_registry_covers_every_attack():
    assert (
        set(ATTACKS)
        == {"lbfgs", "fgsm", "pgd", "cw", "deepfool", "apgd", "fab", "square", "autoattack"}
        == set(QUICK)
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fgsm", {"eps": float("nan")}),
        ("fgsm", {"eps": -0.1}),
        ("fgsm", {"eps": float("inf")}),
        ("fgsm", {"eps": "0.1"}),
        ("pgd", {"steps": 0}),
        ("pgd", {"norm": "l1"}),
        ("pgd", {"step_size": -1.0}),
        ("lbfgs", {"c_init": 0.0}),
        ("lbfgs", {"rounds": 1000}),
        ("lbfgs", {"method": "newton"}),
        ("cw", {"lr": -0.01}),
        ("cw", {"steps": 2.5}),
        ("apgd", {"rho": 2.0}),
        ("deepfool", {"candidates": 1}),
        ("square", {"p_init": 0.0}),
        ("square", {"queries": 0}),
        ("nope", {}),
        ("fgsm", {"steps": 3}),
    ],
)
def test_bad_parameters_raise_a_clear_error(fc100, name, params):
    with pytest.raises(InvalidParameterError):
        make_attack(name, fc100, **params)


def test_bad_inputs_raise_a_clear_error(fc100, batch):
    x, y = batch
    attack = make_attack("fgsm", fc100)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        attack.run(x * 2, y)
    for bad in (float("nan"), float("inf"), -float("inf")):
        poisoned = x.clone()
        poisoned[2, 0, 5, 5] = bad
        with pytest.raises(InvalidParameterError, match="finite"):
            attack.run(poisoned, y)
    with pytest.raises(InvalidParameterError, match="labels"):
        attack.run(x, y[:2])
    with pytest.raises(InvalidParameterError, match="true label"):
        attack.run(x, y, target=y)
    with pytest.raises(InvalidParameterError, match="0..9"):
        attack.run(x, y, target=(y + 1) % 10 + 10)
    with pytest.raises(InvalidParameterError, match="targeted"):
        make_attack("deepfool", fc100).run(x, y, target=(y + 1) % 10)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_events_arrive_every_iteration_and_describe_the_batch(fc100, batch, name):
    x, y = batch
    run = make_attack(name, fc100, **QUICK[name]).start(x, y)
    events = list(run)
    result = run.result()
    assert len(events) == result.iterations > 0
    assert [e.iteration for e in events] == list(range(len(events)))
    for e in events[:3]:
        assert e.attack == name
        assert e.x_adv.shape == x.shape and e.logits.shape == (len(x), 10) and e.loss.shape == (len(x),)
        assert torch.allclose(e.probs.sum(1), torch.ones(len(x)), atol=1e-5)
        assert torch.equal(e.pred, e.logits.argmax(1))
        assert torch.allclose(e.rms, (e.x_adv - x).flatten(1).pow(2).mean(1).sqrt(), atol=1e-6)
        if name in ("lbfgs", "cw"):
            assert e.c.shape == (len(x),) and (e.c > 0).all() and e.search_round.shape == (len(x),)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_events_kept_after_the_run_still_show_their_own_iteration(fc100, batch, name):
    """Attacks update in place where they can (speed); never in a tensor an event already handed out."""
    x, y = batch
    run = make_attack(name, fc100, **QUICK[name]).start(x, y)
    kept, copies = [], []
    for event in run:
        kept.append(event)
        copies.append((event.x_adv.clone(), event.logits.clone(), event.loss.clone()))
    for event, (x_adv, logits, loss) in zip(kept, copies, strict=True):
        assert torch.equal(event.x_adv, x_adv) and torch.equal(event.logits, logits)
        assert torch.equal(event.loss, loss)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_perturb_returns_the_images_run_returns(fc100, batch, name):
    x, y = batch
    attack = make_attack(name, fc100, **QUICK[name])
    images = attack.perturb(x, y)
    assert images.shape == x.shape and ((images >= 0) & (images <= 1)).all()
    assert torch.equal(images.cpu(), attack.run(x, y).x_adv)


@pytest.mark.parametrize("name", ["lbfgs", "pgd", "cw", "apgd"])
def test_stopping_early_still_gives_a_valid_verified_result(fc100, batch, name):
    x, y = batch
    run = make_attack(name, fc100, **QUICK[name]).start(x, y)
    for event in run:
        if event.iteration == 3:
            break
    result = run.result()
    assert result.iterations == 4
    assert ((result.x_adv >= 0) & (result.x_adv <= 1)).all()
    fresh = fc100(result.x_adv).argmax(1)
    assert torch.equal(result.pred_after, fresh)
    assert torch.equal(result.success, fresh != y)
    assert run.result().x_adv.equal(result.x_adv)  # asking again changes nothing


@pytest.mark.parametrize("name", ["lbfgs", "pgd", "cw", "apgd", "deepfool"])
def test_listening_changes_nothing(fc100, batch, name):
    x, y = batch
    attack = make_attack(name, fc100, **QUICK[name])
    quiet = attack.run(x, y)

    def read_everything(event) -> None:
        _ = (event.probs, event.pred, event.l2, event.linf, event.rms)

    loud = attack.run(x, y, callback=read_everything)
    assert torch.equal(quiet.x_adv, loud.x_adv)
    assert quiet.model_calls == loud.model_calls


def test_callback_returning_true_stops_the_attack(fc100, batch):
    x, y = batch
    result = make_attack("pgd", fc100, steps=50).run(x, y, callback=lambda e: e.iteration == 9)
    assert result.iterations == 10


def test_result_fields_and_summary(fc100, batch):
    x, y = batch
    target = (y + 1) % 10
    result = make_attack("pgd", fc100, eps=0.2, steps=10).run(x, y, target=target)
    assert torch.equal(result.target, target)
    assert torch.equal(result.pred_before, fc100(x).argmax(1))
    assert torch.allclose(result.perturbation, result.x_adv - x)
    assert torch.allclose(result.l2, (result.x_adv - x).flatten(1).norm(dim=1))
    assert torch.allclose(result.rms, result.l2 / 28)  # sqrt(sum r^2 / 784)
    summary = json.loads(json.dumps(result.summary()))
    for key in ("success_rate", "mean_rms_distortion", "median_rms_distortion", "mean_l2", "time_s", "n"):
        assert key in summary
    assert summary["raw_box_violations"] == 0 and summary["n"] == len(x)
    assert summary["params"]["eps"] == 0.2 and summary["params"]["random_start"] is True
    both = AttackResult.concat([result, result])
    assert len(both) == 2 * len(x) and both.summary()["success_rate"] == summary["success_rate"]


class _StepsOutOfTheBox(Attack):
    """A deliberately broken attack: its raw output leaves the box by 0.5 on every pixel."""

    name = "out_of_box"

    def _steps(self, run):
        run.best = run.x + 0.5
        yield self._event(run, run.x, run.clean_logits, torch.zeros(len(run.x)))


def test_raw_box_violations_count_the_unclipped_output(fc100, batch):
    x, y = batch
    result = _StepsOutOfTheBox(fc100).run(x, y)
    assert result.summary()["raw_box_violations"] == int((x + 0.5 > 1).sum()) > 0
    assert result.x_adv.max() <= 1  # what is verified and reported is the clipped image


def test_success_rate_never_counts_an_image_the_model_already_got_wrong(fc100, batch):
    x, y = batch
    wrong = (y + 1) % 10  # labels the model does not predict: every image counts as 'misclassified'
    result = make_attack("fgsm", fc100, eps=0.0).run(x, wrong)
    assert result.success.all()  # eps 0: the prediction differs from the wrong label, trivially
    summary = result.summary()
    assert summary["n_correct"] == 0 and summary["success_rate"] == 0.0
    assert summary["mean_rms_distortion"] is None


def test_attack_parameters_are_checked_against_the_spec(fc100):
    for name, cls in ATTACKS.items():
        attack = make_attack(name, fc100)
        for p in cls.PARAMS:
            assert p.name in attack.params  # every spec'd parameter is recorded
            if p.kind in (int, float) and p.high is not None:
                with pytest.raises(InvalidParameterError, match=p.name):
                    make_attack(name, fc100, **{p.name: p.high * 2 + 1})
    with pytest.raises(InvalidParameterError, match="its parameters are"):
        make_attack("pgd", fc100, rounds=3)


def test_gaussian_noise_baseline_has_the_requested_rms_and_is_seeded(fc100):
    x = torch.full((4, 1, 28, 28), 0.5)
    labels = fc100(x).argmax(1)
    result = gaussian_noise_baseline(fc100, x, labels, rms=0.05, seed=3)
    assert torch.allclose(result.rms, torch.full((4,), 0.05), rtol=0.1)
    again = gaussian_noise_baseline(fc100, x, labels, rms=0.05, seed=3)
    assert torch.equal(result.x_adv, again.x_adv)
    per_image = gaussian_noise_baseline(fc100, x, labels, rms=torch.tensor([0.0, 0.01, 0.05, 0.1]), seed=3)
    assert per_image.rms[0] == 0 and per_image.rms[1] < per_image.rms[2] < per_image.rms[3]
    with pytest.raises(InvalidParameterError):
        gaussian_noise_baseline(fc100, x, labels, rms=-1.0)


def test_noise_baseline_matches_the_rms_after_clipping_on_mnist(fc100, mnist_test):
    x, labels = mnist_test.images[:16], mnist_test.labels[:16]
    target = torch.linspace(0.01, 0.2, 16)
    exact = gaussian_noise_baseline(fc100, x, labels, rms=target, seed=1)
    assert torch.allclose(exact.rms, target, rtol=1e-3)
    assert exact.x_adv.min() >= 0 and exact.x_adv.max() <= 1
    plain = gaussian_noise_baseline(fc100, x, labels, rms=target, seed=1, exact=False)
    assert (plain.rms < 0.8 * target).all()  # clipping at 0 removes a large share of the noise on MNIST


def test_cli_attack_prints_json_and_writes_npz(tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "adv.npz"
    code = main(
        ["attack", "--model", "fc100-100-10", "--attack", "fgsm", "--n", "12", "--eps", "0.15"]
        + ["--json", "--quiet", "--out", str(out)]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 12 and summary["raw_box_violations"] == 0 and summary["params"] == {"eps": 0.15}
    assert summary["protocol"]["n"] == 12 and summary["protocol"]["skipped_misclassified"] >= 0
    for key in (
        "success_rate",
        "mean_rms_distortion",
        "median_rms_distortion",
        "mean_l2",
        "time_s",
        "versions",
    ):
        assert key in summary
    data = np.load(out)
    assert data["x"].shape == data["x_adv"].shape == (12, 1, 28, 28)
    assert (data["pred_before"] == data["labels"]).all()  # only correctly classified images are attacked
    assert json.loads(str(data["summary"]))["params"] == {"eps": 0.15}


@pytest.mark.parametrize(
    "flags", [["--eps", "nan"], ["--eps", "0.1", "--attack", "lbfgs"], ["--target", "12"]]
)
def test_cli_rejects_bad_parameters_with_exit_2(capsys, flags):
    from core.cli import main

    args = ["attack", "--model", "fc100-100-10", "--attack", "fgsm", "--n", "3", "--quiet", *flags]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_attacks_run_on_an_imagenet_photo():
    """3 channels at 224 px, 1000 classes: the engine is not MNIST-shaped."""
    from core.data.photos import sample_photo
    from core.errors import WeightsMissingError
    from core.models import load
    from core.models.imagenet import preprocess

    try:
        model = load("mobilenet_v2", "cpu")
    except WeightsMissingError as exc:
        pytest.skip(str(exc))
    x = preprocess(sample_photo("chelsea"), "mobilenet_v2")
    label = model(x).argmax(1)
    pgd = make_attack("pgd", model, eps=2 / 255, steps=5).run(x, label)
    assert pgd.success.all() and pgd.linf.max() <= 2 / 255 + 1e-6
    target = (label + 1) % 1000
    lbfgs = make_attack("lbfgs", model, rounds=2, max_iter=30, c_init=0.01).run(x, label, target=target)
    assert torch.equal(lbfgs.success, model(lbfgs.x_adv).argmax(1) == target)
    assert lbfgs.summary()["raw_box_violations"] == 0


def test_square_is_seeded_and_keeps_its_query_budget(fc100, batch):
    x, y = batch
    attack = make_attack("square", fc100, eps=0.05, queries=40, restarts=2, seed=1)
    first, again = attack.run(x, y), attack.run(x, y)
    assert torch.equal(first.x_adv, again.x_adv)
    other = make_attack("square", fc100, eps=0.05, queries=40, restarts=2, seed=2).run(x, y)
    assert not torch.equal(first.x_adv, other.x_adv)
    # one clean pass, then per restart a start point and at most `queries` proposals
    assert first.model_calls <= 1 + 2 * (1 + 40)
    assert first.iterations == first.model_calls - 1
