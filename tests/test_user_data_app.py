"""Your own data in the dashboard (issue 21), through Streamlit's AppTest: a zip of class folders uploaded
in the sidebar's "Add a dataset" becomes a dataset, a model of that domain added in "Add a model" offers
its images as the Attack Lab's and Validate's image source, and every bad upload gives one message and
leaves the app usable with nothing registered."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_support import zip_bytes
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.config import cache_dir
from core.data import datasets
from core.units.uploads import MAX_TOTAL_BYTES

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
CLASSES = ("circle", "square", "stripes")
PER_CLASS = 3


def _picture(cls: int, i: int) -> bytes:
    """A 32x32 colour picture whose mean brightness encodes (class, index): an oracle for which file the
    page shows."""
    a = np.full((32, 32, 3), 20 + 60 * cls + 10 * i, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = {f"shapes/{c}/{i}.png": _picture(k, i) for k, c in enumerate(CLASSES) for i in range(PER_CLASS)}


def _onnx_model() -> bytes:
    """A 3-class linear model on 1x28x28 inputs that classifies `_picture`s right (nearest class brightness:
    logit_k = a c_k mean(x) - a c_k^2 / 2), exported to ONNX."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, len(CLASSES)))
    centres = torch.tensor([30 + 60 * k for k in range(len(CLASSES))]) / 255
    with torch.no_grad():
        net[1].weight.copy_((50 * centres / 784).unsqueeze(1).expand(-1, 784))
        net[1].bias.copy_(-50 * centres**2 / 2)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), buffer, dynamo=False)
    return buffer.getvalue()


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _add_dataset(at: AppTest, name: str, archive: bytes, file_name: str = "data.zip") -> AppTest:
    at.text_input(key="add_data_name").input(name)
    at.file_uploader(key="add_data_zip").set_value((file_name, archive, "application/zip"))
    at.run()
    at.button(key="add_data_go").click()
    return at.run()


def _add_model(at: AppTest, name: str, card: str) -> AppTest:
    at.text_input(key="add_model_name").input(name)
    at.file_uploader(key="add_model_file").set_value(("m.onnx", _onnx_model(), "application/octet-stream"))
    at.file_uploader(key="add_model_card").set_value(("m.toml", card.encode(), "application/toml"))
    at.run()
    at.button(key="add_model_go").click()
    return at.run()


@pytest.mark.slow
def test_an_uploaded_dataset_is_an_image_source_of_its_models_pages():
    at = _add_dataset(_app(), "shapes", zip_bytes(GOOD))
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == [f"Added shapes: {len(GOOD)} images of {len(CLASSES)} classes."]
    assert datasets.entry("shapes").classes == CLASSES
    card = f'input = [1, 28, 28]\nclasses = {list(CLASSES)!r}\ndomain = "shapes"\n'.replace("'", '"')
    at = _add_model(at, "mine-shapes", card)
    assert not at.exception and not at.error, [e.value for e in at.error]

    for page, prefix, true in (("attack_lab", "lab", "True label"), ("validate", "val", "True label")):
        at.switch_page(f"views/{page}.py")
        at.run()
        at.selectbox(key=f"{prefix}_model").set_value("mine-shapes")
        at.run()
        source = at.radio(key=f"{prefix}_source_shapes")
        assert source.options == ["Dataset", "Upload"] and source.value == "Dataset"
        index = PER_CLASS + 2  # classes sorted, files sorted: the third picture of the second class
        at.number_input(key=f"{prefix}_idx_shapes").set_value(index)
        at.run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        assert {m.label: m.value for m in at.metric}[true] == CLASSES[1]
        shown = [i for i in at.image if i.proto.imgs[0].caption == "what the model sees"]
        assert len(shown) == 1, page
        _run(at, prefix)
        assert not at.exception and not at.error, (
            page,
            [e.value for e in at.error],
            [c.value for c in at.code],
        )


def _run(at: AppTest, prefix: str) -> None:
    """Run the page on the chosen image: FGSM at 0.3 in the Attack Lab (a 28x28 model: MNIST's presets),
    the report in Validate; each names the dataset's image it ran on."""
    if prefix == "lab":
        at.selectbox(key="lab_attack").set_value("fgsm")
        at.radio(key="lab_live").set_value("real time")
        at.run()
        at.number_input(key="lab_mnist_fgsm_eps").set_value(0.3)
        at.button(key="lab_go").click()
        at.run()
        assert 0 < float({m.label: m.value for m in at.metric}["Linf"]) <= 0.3 + 1e-4
        assert any("**mine-shapes**, shapes test #5" in c.value for c in at.caption)
    else:
        at.number_input(key="val_ref_n").set_value(PER_CLASS * len(CLASSES))  # every image of the dataset
        at.run()
        at.button(key="val_go").click()
        at.run()
        assert any(h.value == "Smallest flipping perturbation per attack" for h in at.subheader), (
            [e.value for e in at.error],
            [i.value for i in at.info],
            [h.value for h in at.subheader],
        )
        report = at.session_state["val_report"][1]
        assert (report.model, report.image_source, report.true_label) == ("mine-shapes", "shapes test #5", 1)


TRAVERSAL = zip_bytes({"shapes/a/1.png": _picture(0, 0), "../b/2.png": _picture(1, 0)})
BAD = {
    "not an image": (
        zip_bytes({"a/notes.png": b"no pixels here" * 20, "b/x.txt": b"text"}),
        "no readable images",
    ),
    "not a zip": (b"this is not a zip archive" * 10, "not a readable zip"),
    "traversal": (TRAVERSAL, "outside the archive"),
    "one class": (zip_bytes({"d/only/1.png": _picture(0, 0), "d/only/2.png": _picture(0, 1)}), "one class"),
    "no folders": (
        zip_bytes({"1.png": _picture(0, 0), "2.png": _picture(1, 0)}),
        "data.zip holds no images in",
    ),
}


def test_bad_dataset_uploads_give_one_message_each_and_the_app_stays_usable():
    """One session through every bad upload in turn, then a good one: each refusal is one message and
    registers nothing, and the session still works after them all."""
    huge = zip_bytes(
        {"a/1.png": bytes(MAX_TOTAL_BYTES + 1)}
    )  # zeros compress well: small, unpacks past the limit
    at = _app()
    for what, (archive, message) in {**BAD, "huge": (huge, "unpacks to more than")}.items():
        at = _add_dataset(at, "bad", archive)
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and message in errors[0], (what, errors)
        assert datasets.entry("bad") is None, what
        roots = {Path(e.root) for e in datasets.entries().values()}
        assert all(f.resolve() in roots for f in (cache_dir() / "datasets").glob("*")), what  # none left over
    at = _add_dataset(at, "good", zip_bytes(GOOD))
    assert not at.exception and not at.error and datasets.entry("good") is not None
