"""Every page beside the Attack Lab and Validate, opened on a registered model of a user dataset's domain
(issue 21): no exception, and either a working result or one clear message saying what the page cannot do
for that model. The dataset and the model are those of tests/test_user_data_app.py, registered through
core (the upload path is that file's test)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.data import datasets
from core.evaluation import leaderboard
from core.models.zoo import add_uploaded_model
from tests.test_user_data_app import CLASSES, ROOT, _onnx_model, _picture

VIEWS = ROOT / "dashboard" / "views"
DATASET, MODEL = "pageshapes", "mine-pageshapes"
PER_CLASS = 4  # 12 images: the Defences page's smallest n is 10
FILES = {f"shapes/{c}/{i}.png": _picture(k, i) for k, c in enumerate(CLASSES) for i in range(PER_CLASS)}
CARD = f'input = [1, 28, 28]\nclasses = {list(CLASSES)!r}\ndomain = "{DATASET}"\n'.replace("'", '"')


@pytest.fixture
def user_model(tmp_path):
    """The dataset as class folders and a model of its domain, registered once per test session."""
    if datasets.entry(DATASET) is None:
        for member, data in FILES.items():
            path = tmp_path / member
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        datasets.add(DATASET, tmp_path / "shapes")
        add_uploaded_model(MODEL, "m.onnx", _onnx_model(), CARD.encode())
    return MODEL


def _opened(page: str, query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(VIEWS / page), default_timeout=180)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> list[str]:
    return [m.value for kind in (at.error, at.warning, at.info) for m in kind]


def test_the_direction_lab_studies_the_model_on_its_own_dataset(user_model):
    """No photo chooser (that is ImageNet's): the held-out set is the dataset's images, and the one message
    says why no verdict is given on so few of them; the unit rows are still shown."""
    at = _opened("unit_explorer.py", {"model": user_model})
    assert at.selectbox(key="model").value == user_model
    assert not [r for r in at.radio if r.key == "dl_photo_source"]
    texts = _texts(at)
    assert len(texts) == 1 and f"{len(FILES)} held-out images are fewer than" in texts[0], texts
    assert "Natural units e_i" in [h.value for h in at.subheader]


def test_defences_judge_the_model_on_its_datasets_images(user_model):
    """Every image of the dataset, under a real evaluation; the twins' panel says they are MNIST's."""
    at = _opened(
        "defences.py", {"def_model": user_model, "def_attack": "fgsm", "def_eps": "0.1", "def_n": "10"}
    )
    assert at.selectbox(key="def_model").value == user_model and not at.warning
    at.button(key="def_go").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error] + [c.value for c in at.code]
    caption = [c.value for c in at.caption if c.value.startswith(f"Undefended {user_model}")]
    assert len(caption) == 1 and caption[0].endswith(f", 10 {DATASET} test images."), caption
    assert any("twins are MNIST networks" in i.value for i in at.info)


def test_the_leaderboard_offers_the_datasets_domain(user_model):
    at = _opened("leaderboard.py", {"lb_dataset": DATASET})
    assert at.radio(key="lb_dataset").value == DATASET and not at.warning
    assert user_model in at.multiselect(key="lb_models").options
    assert not at.error
    empty = [i.value for i in at.info if i.value.startswith(f"No {DATASET} runs recorded yet")]
    assert len(empty) == 1 and f"intriguing sweep --dataset {DATASET}" in empty[0]


def test_the_leaderboard_fills_cells_on_the_datasets_own_images(user_model, tmp_path, monkeypatch):
    """In an empty database the button fills the model's cells on its dataset's test images (every one of
    the 12, fewer than the default 100, all classified right), one protocol that the page then shows."""
    monkeypatch.setenv(leaderboard.DB_ENV, str(tmp_path / "fresh.sqlite"))
    at = _opened("leaderboard.py", {"lb_dataset": DATASET})
    at.multiselect(key="lb_models").set_value([user_model]).run()
    at.multiselect(key="lb_min_attacks").set_value(["deepfool"]).run()
    at.multiselect(key="lb_budget_attacks").set_value(["fgsm"]).run()
    at.button(key="lb_fill").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    filled = leaderboard.runs(dataset=DATASET, source="dashboard")
    assert sorted((r.attack, r.model, r.n) for r in filled) == [
        ("deepfool", user_model, len(FILES)),
        ("fgsm", user_model, len(FILES)),
    ]
    assert "Every shown cell has a run." in [c.value for c in at.caption]
    shown = at.selectbox(key="lb_protocol")
    assert shown.value == filled[0].protocol_id == filled[1].protocol_id
    assert shown.options == [f"all correctly classified {DATASET} test images [{shown.value}]"]


@pytest.mark.parametrize("page", ["transferability.py", "robustness.py"])
def test_stored_result_pages_open_with_the_model_registered(user_model, page):
    """Pages of the zoo's stored tables (from `intriguing reproduce`) work as before and say, once, that the
    user's model is not in them."""
    at = _opened(page, {})
    assert not at.error, [e.value for e in at.error]
    notes = [t for t in _texts(at) if user_model in t]
    assert len(notes) == 1 and "are not in these tables" in notes[0], _texts(at)
