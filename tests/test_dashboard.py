"""The dashboard through Streamlit's AppTest: every page renders; the Attack Lab runs an attack end to end
and turns every bad upload into its one clear message while staying usable."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
LAB = str(ROOT / "dashboard" / "views" / "attack_lab.py")
PAGES = sorted(p.name for p in (ROOT / "dashboard" / "views").glob("*.py"))


REAL_TIME = "real time (attack at full speed, ~10 frames/s)"


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


OWN_PAGES = ("home.py", "attack_lab.py")  # other pages have their own tests; here they only run in full runs


@pytest.mark.parametrize(
    "page", [p if p in OWN_PAGES else pytest.param(p, marks=pytest.mark.slow) for p in PAGES]
)
def test_every_page_renders(page):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    if page != "home.py":
        at.switch_page(f"views/{page}")
        at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_home_links_into_every_existing_page():
    at = AppTest.from_file(APP, default_timeout=60).run()
    linked = {Path(el.proto.page).stem for el in at.get("page_link")}  # the pages' url paths
    assert linked == {Path(p).stem for p in PAGES if p != "home.py"}


def lab() -> AppTest:
    at = AppTest.from_file(LAB, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def test_attack_lab_runs_an_attack_to_a_verified_result():
    at = lab()
    at.selectbox(key="lab_model").set_value("fc100-100-10")
    at.radio(key="lab_mnist_how").set_value("by index")
    at.run()
    at.number_input(key="lab_idx").set_value(0)
    at.selectbox(key="lab_attack").set_value("pgd")
    at.run()
    at.number_input(key="lab_param_mnist_pgd_eps").set_value(0.25)
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["True label"] == "7"
    assert shown["Success"] == "yes"
    assert shown["Prediction"] != "7"
    assert 0 < float(shown["Linf"]) <= 0.25 + 1e-4
    assert float(shown["RMS distortion"]) > 0 and float(shown["L2"]) > 0
    assert "finished after" in " ".join(c.value for c in at.caption)
    assert len(at.get("download_button")) == 3
    # A later rerun (any click) shows the same result without attacking again.
    at.run()
    assert metrics(at)["RMS distortion"] == shown["RMS distortion"]


def test_attack_lab_lbfgs_on_fc100_100_10():
    at = lab()
    at.selectbox(key="lab_model").set_value("fc100-100-10")
    at.selectbox(key="lab_attack").set_value("lbfgs")
    at.run()
    at.radio(key="lab_live_mode").set_value(REAL_TIME)  # the paper's defaults, frames throttled
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["Success"] == "yes"
    assert float(shown["RMS distortion"]) > 0
    assert int(shown["Iterations"]) > 0 and int(shown["Model calls"]) >= int(shown["Iterations"])
    assert any("**search round**" in m.value for m in at.markdown)  # L-BFGS shows its c and search round


def test_attack_lab_targeted_lbfgs_reaches_the_target():
    at = lab()
    at.radio(key="lab_mnist_how").set_value("by index")
    at.run()
    at.number_input(key="lab_idx").set_value(0)  # a 7
    at.radio(key="lab_goal_lbfgs").set_value("targeted")
    at.run()
    assert 7 not in at.selectbox(key="lab_target").options  # the model's own class is no target
    at.selectbox(key="lab_target").set_value(3)
    at.radio(key="lab_live_mode").set_value(REAL_TIME)
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["Success"] == "yes" and shown["Prediction"] == "3"


# ---------------------------------------------------------------- uploads


def png(array: np.ndarray, **kw) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, **kw).save(buffer, format="PNG")
    return buffer.getvalue()


def cmyk_jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def animated_gif(array: np.ndarray) -> bytes:
    frames = [Image.fromarray(array), Image.fromarray(255 - array)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (decoding it would need gigabytes)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00\x00\x00\x00IEND\xaeB`\x82"


DIGIT = np.zeros((64, 64), dtype=np.uint8)
DIGIT[12:52, 28:36] = 255  # a "1"

BAD_UPLOADS = {
    "empty.png": (b"", "empty"),
    "notes.png": (b"these are not the pixels you are looking for" * 10, "not an image"),
    "cut.png": (png(DIGIT)[:60], "truncated or corrupt"),
    "huge.png": (bomb_png(8_000), "megapixel limit"),
    "bomb.png": (bomb_png(30_000), "decompression bomb"),
    "dot.png": (png(np.zeros((4, 4), dtype=np.uint8)), "at least"),
}


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="lab_source_mnist").set_value("Upload")
    at.run()
    at.file_uploader(key="lab_upload").set_value((name, data, "image/png"))
    return at.run()


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_bad_upload_gives_its_message_and_the_page_stays_usable(name):
    data, message = BAD_UPLOADS[name]
    at = upload(lab(), name, data)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and message in errors[0] and name in errors[0], errors
    at.radio(key="lab_source_mnist").set_value("MNIST test set")
    at.run()
    assert not at.exception and not at.error
    assert "Model's prediction" in metrics(at)


@pytest.mark.parametrize(
    "name, data",
    [
        ("one.png", png(DIGIT)),
        ("one_rgba.png", png(np.dstack([np.full((64, 64, 3), 255, np.uint8), DIGIT]), mode="RGBA")),
        ("one_16bit.png", png(DIGIT.astype(np.uint16) * 257)),
        ("one_cmyk.jpg", cmyk_jpeg(DIGIT)),
        ("one_animated.png", animated_gif(DIGIT)),  # a GIF behind a .png name: the first frame is used
    ],
)
def test_good_upload_is_shown_as_the_model_sees_it(name, data):
    at = upload(lab(), name, data)
    assert not at.exception and not at.error
    assert metrics(at)["Model's prediction"] in "0123456789"
    assert any(img.proto.imgs[0].caption == "what the model sees" for img in at.image)


def test_draw_source_waits_for_a_drawing():
    at = lab()
    at.radio(key="lab_source_mnist").set_value("Draw")
    at.run()
    assert not at.exception and not at.error
    assert any("Choose an image" in i.value for i in at.info)


@pytest.mark.slow
def test_attack_lab_on_an_imagenet_photo():
    at = lab()
    at.selectbox(key="lab_model").set_value("mobilenet_v2")
    at.run()
    assert at.radio(key="lab_source_imagenet").value == "Sample photo"
    at.selectbox(key="lab_photo").set_value("coffee")
    at.selectbox(key="lab_attack").set_value("fgsm")
    at.run()
    assert at.number_input(key="lab_param_imagenet_fgsm_eps").value == pytest.approx(2 / 255)
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["Iterations"] == "1"
    assert float(shown["Linf"]) <= 2 / 255 + 1e-3
    assert_transfer_to(at, "efficientnet_lite0", "mobilenet_v2", "coffee")


def assert_transfer_to(at: AppTest, other: str, attacked: str, photo: str) -> None:
    """The transfer table has one row, the other ImageNet network, whose clean-image class is that network's
    own prediction on the photo as the attacked model sees it."""
    import torch

    from core.data.photos import sample_photo
    from core.models import class_names, load
    from core.models.imagenet import preprocess

    table = next(df.value for df in at.dataframe if "fooled" in df.value.columns)
    assert list(table["model"]) == [other]
    with torch.no_grad():
        clean = load(other, "cpu")(preprocess(sample_photo(photo), attacked)).argmax(1).item()
    assert table["clean image"].iloc[0] == class_names(other)[clean]
    assert "other models are fooled too" in " ".join(c.value for c in at.caption)


@pytest.mark.slow
def test_attack_lab_transfers_from_efficientnet_to_mobilenet():
    at = lab()
    at.selectbox(key="lab_model").set_value("efficientnet_lite0")
    at.run()
    at.selectbox(key="lab_photo").set_value("chelsea")
    at.selectbox(key="lab_attack").set_value("fgsm")
    at.run()
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    assert_transfer_to(at, "mobilenet_v2", "efficientnet_lite0", "chelsea")
