"""The one-image robustness report: every number re-verified by the model, the pieces checked by invariants."""

import base64
import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.attacks import make_attack
from core.attacks.base import rms
from core.defences.transforms import DefendedModel, parse_transform
from core.errors import InvalidParameterError
from core.evaluation import indicators, leaderboard
from core.evaluation.validate import (
    local_lipschitz,
    minimal_eps,
    mnist_image,
    reference_distribution,
    reference_path,
    robustness_report,
)
from core.models import load


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """fc100-100-10 on MNIST test image 0, a small reference, transfer to one other model. Runs before the
    function-scoped private-cache fixture, so it points the cache at the same private folder itself."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTRIGUING_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        x, y = mnist_image(0)
        yield robustness_report(
            "fc100-100-10", x, true_label=y, image_source="test #0", others=["fc10-1"], reference_n=6
        )


@pytest.mark.slow
def test_every_finding_is_a_real_flip_with_the_distortion_it_claims(report):
    model = load("fc100-100-10", "cpu")
    x, _ = mnist_image(0)
    assert report.label == 7 and report.true_label == 7
    assert all(f.success for f in report.findings)
    for f in report.findings:
        assert f.x_adv.min() >= 0 and f.x_adv.max() <= 1
        with torch.no_grad():
            assert model(f.x_adv).argmax(1).item() == f.pred_after != report.label  # fresh forward pass
        assert f.rms == pytest.approx(float(rms(f.x_adv - x)[0]), rel=1e-5)
        assert f.l2 == pytest.approx(float((f.x_adv - x).norm()), rel=1e-5)
        if f.eps is not None:
            assert f.linf <= f.eps + 1e-6
    smallest = min(report.findings, key=lambda f: f.rms)
    assert report.easiest == smallest.attack
    # a minimal-distortion attack needs no more than the one-step FGSM at its smallest eps
    assert min(report.finding(a).rms for a in ("lbfgs", "cw", "deepfool")) <= report.finding("fgsm").rms


@pytest.mark.slow
def test_noise_transfer_lipschitz_and_reference_are_consistent(report):
    for f in report.findings:
        assert 0.0 <= f.noise_flip_rate <= 1.0
        assert [row["model"] for row in f.transfer] == ["fc10-1"]
    lip = report.lipschitz
    assert lip.max_grad_norm >= lip.grad_norm_at_x > 0
    assert lip.margin > 0 and lip.boundary_distance_l2 == pytest.approx(lip.margin / lip.max_grad_norm)
    assert 0 < len(report.reference.rms) <= 6
    fraction = report.fraction_needing_more()
    assert fraction == pytest.approx(
        sum(r > report.finding("lbfgs").rms for r in report.reference.rms) / len(report.reference.rms)
    )
    assert f"{report.finding(report.easiest).rms:.4f}" in report.verdict
    assert "test images" in report.verdict


@pytest.mark.slow
def test_report_exports_json_and_one_self_contained_html(report):
    data = json.loads(json.dumps(report.to_dict()))
    assert data["model"] == "fc100-100-10" and len(data["findings"]) == 5
    page = report.to_html()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    uris = page.split("src='data:image/png;base64,")[1:]
    assert len(uris) == 1 + len(report.findings)  # the image, and one picture per flipping attack
    for uri in uris:
        Image.open(io.BytesIO(base64.b64decode(uri.split("'")[0]))).verify()


@pytest.mark.slow
def test_a_photo_report_shows_the_other_imagenet_network_in_json_and_html():
    from core.data.photos import sample_photo
    from core.models.imagenet import preprocess

    x = preprocess(sample_photo("coffee"), "mobilenet_v2")
    report = robustness_report("mobilenet_v2", x, image_source="coffee", reference_n=1, record=False)
    data = json.loads(json.dumps(report.to_dict()))
    other = load("efficientnet_lite0", "cpu")
    for finding, f in zip(data["findings"], report.findings, strict=True):
        if not finding["success"]:
            continue
        (row,) = finding["transfer"]
        assert row["model"] == "efficientnet_lite0"
        with torch.no_grad():
            assert row["clean_pred"] == other(x).argmax(1).item()
            assert row["adv_pred"] == other(f.x_adv).argmax(1).item()
    assert "efficientnet_lite0 says" in report.to_html()


@pytest.mark.slow
def test_report_runs_are_recorded_in_the_leaderboard(report):
    recorded = {r.attack: r for r in leaderboard.runs(model="fc100-100-10", source="report")}
    assert {"lbfgs", "cw", "deepfool", "fgsm (minimal eps)", "pgd (minimal eps)"} <= set(recorded)
    assert recorded["cw"].median_rms == pytest.approx(report.finding("cw").rms)


@pytest.mark.slow
def test_reference_is_cached_on_disk_and_invalidated_by_a_new_checkpoint(report):
    model = load("fc100-100-10", "cpu")
    path = reference_path("fc100-100-10", 6)
    cached = json.loads(path.read_text())
    assert cached["rms"] == report.reference.rms
    path.write_text(json.dumps({**cached, "rms": [0.5]}))  # a marker only the cache can supply
    assert reference_distribution("fc100-100-10", model, n=6).rms == [0.5]
    path.write_text(json.dumps({**cached, "rms": [0.5], "checkpoint": "an-older-checkpoint"}))
    assert reference_distribution("fc100-100-10", model, n=6, record=False).rms == report.reference.rms


def test_minimal_eps_search_finds_a_verified_small_budget(mnist_test):
    model = load("fc100-100-10", "cpu")
    x, label = mnist_test.images[:1], mnist_test.labels[:1]
    result, eps = minimal_eps("pgd", model, x, label, params={"steps": 10})
    assert result.success.item() and 0 < eps < 0.5
    assert result.linf.item() <= eps + 1e-6
    below = make_attack("pgd", model, eps=eps * 0.8, steps=10).run(x, label)
    assert not below.success.item()  # PGD is near monotone in eps: 20% less budget no longer flips it


def test_lipschitz_estimate_of_a_linear_model_is_its_weight_difference(mnist_test):
    """Softmax regression: the margin's gradient is w_label - w_runner_up everywhere the runner-up is fixed."""
    model = load("fc10-1", "cpu")
    x = mnist_test.images[:1]
    logits = model(x)
    label, runner_up = logits.topk(2).indices[0].tolist()
    weight = next(p for p in model.parameters() if p.dim() == 2)
    exact = float((weight[label] - weight[runner_up]).norm())
    est = local_lipschitz(model, x, label, radius_l2=1e-3, samples=8)
    assert est.grad_norm_at_x == pytest.approx(exact, rel=1e-4)
    assert est.max_grad_norm == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"reference_n": 0}, "reference size"),
        ({"true_label": 12}, "true label"),
    ],
)
def test_bad_report_parameters_are_refused(kwargs, message):
    x, _ = mnist_image(0)
    with pytest.raises(InvalidParameterError, match=message):
        robustness_report("fc100-100-10", x, **kwargs)


@pytest.mark.parametrize(
    "x",
    [torch.full((1, 1, 28, 28), math.nan), torch.full((1, 1, 28, 28), 2.0), torch.zeros(1, 3, 28, 28)],
    ids=["nan", "out-of-range", "wrong-shape"],
)
def test_bad_images_are_refused(x):
    with pytest.raises(InvalidParameterError):
        robustness_report("fc100-100-10", x)


def test_local_lipschitz_refuses_bad_radius():
    x, _ = mnist_image(0)
    with pytest.raises(InvalidParameterError, match="radius"):
        local_lipschitz(load("fc10-1", "cpu"), x, 7, radius_l2=float("inf"))


@pytest.mark.slow  # uses the module's full report
def test_report_indicators_are_silent_on_a_plain_model(report):
    assert report.indicators and indicators.fired(report.indicators) == []
    assert "Do not read this as robust" not in report.verdict
    assert [i["name"] for i in report.to_dict()["indicators"]] == [c.name for c in report.indicators]


@pytest.fixture(scope="module")
def rounded_report():
    """A report on fc100-100-10 behind 2-bit rounding: every gradient attack sees a zero gradient."""
    rounded = DefendedModel(load("fc100-100-10", "cpu"), parse_transform("bits:2"))
    x, y = mnist_image(0)
    return robustness_report(
        # reference_n 3: a cache entry of its own (the reference is cached by model name and size)
        "fc100-100-10", x, true_label=y, others=[], reference_n=3, record=False, load=lambda name: rounded
    )  # fmt: skip


def test_report_refuses_robust_while_an_indicator_fires(rounded_report):
    """The report must not call the prediction robust, and must say why."""
    found = rounded_report
    assert {"masked_gradient", "non_differentiable_input"} <= set(indicators.fired(found.indicators))
    assert "Do not read this as robust" in found.verdict and "zero or non-finite gradient" in found.verdict
    assert "more robust than most." not in found.verdict and "unusually robust" not in found.verdict


# ---------------------------------------------------------------- the Validate page

VALIDATE = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "validate.py")


def test_validate_page_turns_a_bad_upload_into_one_message_and_stays_usable():
    at = AppTest.from_file(VALIDATE, default_timeout=120).run()
    at.radio(key="val_source_mnist").set_value("Upload").run()
    at.file_uploader(key="val_upload").set_value(("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")).run()
    assert not at.exception
    assert [e.value for e in at.error] and "cut.png" in at.error[0].value
    at.radio(key="val_source_mnist").set_value("MNIST test set").run()
    assert not at.exception and not at.error
    assert {m.label for m in at.metric} >= {"True label", "Prediction under test"}


@pytest.mark.slow
def test_validate_page_shows_the_report_of_a_test_image():
    at = AppTest.from_file(VALIDATE, default_timeout=300).run()
    at.number_input(key="val_idx").set_value(3)
    at.number_input(key="val_ref_n").set_value(5)
    at.button(key="val_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Smallest flipping RMS"]) > 0
    assert "fc100-100-10 predicts '0'" in at.info[0].value
    assert leaderboard.runs(source="dashboard", model="fc100-100-10")


def test_validate_page_shows_the_indicator_warnings_and_applies_a_fix(rounded_report):
    """The report on the rounded model shown by the page: a warning per fired indicator, and the one-click
    fix runs and says what it found."""
    at = AppTest.from_file(VALIDATE, default_timeout=180)
    at.session_state["val_report"] = (("fc100-100-10", "MNIST test #0", 0, 100), rounded_report)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(indicators.fired(rounded_report.indicators)) >= 2
    assert any("Zero or non-finite gradient" in w and "--gradient bpda" in w for w in warnings)
    at.button(key="val_fix").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("With the fix" in m.value for m in [*at.error, *at.success])


@pytest.mark.slow
def test_the_html_report_lists_every_indicator_checked(report):
    page = report.to_html()
    assert "Indicators of attack failure" in page
    for check in report.indicators:
        assert check.title in page
    summary = indicators.passed(report.indicators) or f"{len(indicators.fired(report.indicators))} fired"
    assert summary in page
