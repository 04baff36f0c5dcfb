"""The attack spec is the only home of attack policy: what the defences, the leaderboard and the report use
by default is read from each attack's PARAMS, and the per-model presets do the job they exist for."""

from __future__ import annotations

import inspect

import pytest

from core.attacks import ATTACKS, PGD, attack_presets, is_budgeted, make_attack
from core.attacks.spec import MODEL_PRESET_REASONS, eps_param, norm_param, overrides, param
from core.evaluation import defences, leaderboard
from core.evaluation import validate as report
from core.models import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defences_defaults_are_pgds():
    steps = param(PGD.PARAMS, "steps")
    settings = {p.name: p for p in defences.SETTINGS}
    assert settings["steps"].default == steps.light_default() != steps.default
    for fn in (defences.evaluate_transforms, defences.compare_twins):
        defaults = inspect.signature(fn).parameters
        assert defaults["eps"].default == param(PGD.PARAMS, "eps").default
        assert defaults["steps"].default == steps.default
    eps = param(PGD.PARAMS, "eps")
    assert eps.low <= settings["eps"].low and settings["eps"].high <= eps.high  # narrowed, never widened


def test_defences_accept_what_pgd_accepts_for_l2():
    assert (
        defences.check_attack_params("pgd", 150.0, 10, "l2")["eps"] == 150.0
    )  # PGD's L2 radius may pass 100


def test_leaderboard_budget_is_the_specs():
    assert leaderboard.DEFAULT_BUDGET == (norm_param().default, eps_param().default)
    assert leaderboard.check_budget("l2", 3.0) == ("l2", 3.0)


def test_report_presets_are_the_specs():
    for name in ("fgsm", "pgd", "cw", "deepfool", "lbfgs"):
        spec = ATTACKS[name].PARAMS
        expected = {k: v for k, v in overrides(spec, "imagenet").items() if not param(spec, k).budget}
        assert report.attack_settings(name, "imagenet") == expected
        assert all(spec_value is not None for spec_value in expected.values())
    assert report.attack_settings("pgd", "mnist")["steps"] == param(PGD.PARAMS, "steps").light_default()


def test_every_model_preset_says_why():
    for cls in ATTACKS.values():
        for p in cls.PARAMS:
            for model, value in p.models:
                assert model in MODEL_PRESET_REASONS
                assert p.check(value) == value


def test_cnn_preset_flips_the_default_test_image(mnist_test):
    """The reason for cnn's preset: at the common radius no budgeted attack flips its first test image,
    at the preset every one does (so the pages and the CLI open on a budget that shows an attack)."""
    model = load("cnn", "cpu")
    x, y = mnist_test.images[:1], mnist_test.labels[:1]
    for name in (n for n in ATTACKS if is_budgeted(n)):
        preset = attack_presets(name, "mnist", "cnn")
        default = attack_presets(name, "mnist")
        assert preset["eps"] > default["eps"]
        assert bool(make_attack(name, model, **preset).run(x, y).success[0]), name
    assert not bool(make_attack("pgd", model, **attack_presets("pgd", "mnist")).run(x, y).success[0])


def test_seed_reaches_only_the_seeded_attacks(fc100):
    assert make_attack("pgd", fc100, seed=7).params["seed"] == 7
    assert "seed" not in make_attack("fgsm", fc100, seed=7).params
