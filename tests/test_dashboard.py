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


REAL_TIME = "real time"
VALIDATE = str(ROOT / "dashboard" / "views" / "validate.py")


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


OWN_PAGES = (
    "home.py",
    "attack_lab.py",
    "tour.py",
)  # other pages have their own tests; here they only run in full runs


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


@pytest.mark.slow
def test_attack_lab_runs_an_attack_to_a_verified_result():
    at = lab()
    at.selectbox(key="lab_model").set_value("fc100-100-10")
    at.number_input(key="lab_idx").set_value(0)
    at.selectbox(key="lab_attack").set_value("pgd")
    at.run()
    at.number_input(key="lab_mnist_pgd_eps").set_value(0.25)
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
    keys = {b.key for b in at.get("download_button")}
    assert keys == {
        "lab_dl_png",
        "lab_dl_npz",
        "lab_dl_json",
        "lab_figure_png",
        "lab_figure_pdf",
        "lab_figure_svg",
    }
    # A later rerun (any click) shows the same result without attacking again.
    at.run()
    assert metrics(at)["RMS distortion"] == shown["RMS distortion"]


def test_attack_lab_lbfgs_on_fc100_100_10():
    at = lab()
    at.selectbox(key="lab_model").set_value("fc100-100-10")
    at.selectbox(key="lab_attack").set_value("lbfgs")
    at.run()
    at.radio(key="lab_live").set_value(REAL_TIME)  # the paper's defaults, frames throttled
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["Success"] == "yes"
    assert float(shown["RMS distortion"]) > 0 and int(shown["Iterations"]) > 0
    # 9 target classes x 10 rounds of the search over c, listed below the result
    assert any(e.label.startswith("Search over c: 90 rounds") for e in at.expander)


def test_attack_lab_targeted_lbfgs_reaches_the_target():
    at = lab()
    at.number_input(key="lab_idx").set_value(0)  # a 7
    at.radio(key="lab_goal").set_value("targeted")
    at.run()
    assert "7 (7)" not in at.selectbox(key="lab_target").options  # the model's own class is no target
    at.selectbox(key="lab_target").set_value("3 (3)")
    at.radio(key="lab_live").set_value(REAL_TIME)
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert shown["Success"] == "yes" and shown["Prediction"] == "3"


# ---------------------------------------------------------------- every view is a link

LINK = {
    "lab_model": "fc100-100-10",
    "lab_idx": "5",
    "lab_attack": "PGD",
    "lab_mnist_pgd_eps": "0.2",
    "lab_mnist_pgd_steps": "15",
    "lab_seed": "7",
    "lab_live": REAL_TIME,
}


def opened(page: str, query: dict[str, str]) -> AppTest:
    """A page opened from a link in a fresh session."""
    at = AppTest.from_file(page, default_timeout=180)
    at.query_params.update(query)
    return at.run()


def replayed(query: dict[str, str]) -> np.ndarray:
    at = opened(LAB, query)
    at.button(key="lab_go").click()
    at.run()
    assert not at.exception and not at.error
    return at.session_state["lab_run"]["outcome"].result.x_adv.numpy()


def test_a_link_restores_the_attack_lab_and_replays_the_same_result():
    at = opened(LAB, LINK)
    assert not at.exception and not at.warning
    assert at.number_input(key="lab_idx").value == 5
    assert at.selectbox(key="lab_attack").value == "pgd"
    assert at.number_input(key="lab_mnist_pgd_eps").value == pytest.approx(0.2)
    assert at.number_input(key="lab_mnist_pgd_steps").value == 15
    assert at.number_input(key="lab_seed").value == 7
    kept = {k: v for k, v in LINK.items() if k != "lab_model"}  # a default value leaves the URL
    assert {k: at.query_params[k] for k in kept} == kept  # (the browser test changes a widget)
    first = replayed(LINK)
    assert np.abs(replayed(LINK) - first).max() <= 1e-6
    assert np.abs(replayed({**LINK, "lab_seed": "8"}) - first).max() > 1e-3  # the seed is what replays


HOSTILE = {
    "lab_model": "../../../etc/passwd",
    "lab_idx": "99999999",
    "lab_attack": "<script>alert(1)</script>",
    "lab_mnist_lbfgs_c_init": "nan",
    "lab_seed": "1e999",
    "lab_photo": "/etc/shadow",
    "[click](http://example.com)": "1",
}


def test_hostile_link_values_give_one_notice_and_the_defaults():
    at = opened(LAB, HOSTILE)
    assert not at.exception and not at.error
    notices = [w.value for w in at.warning]
    assert len(notices) == 1 and "replaced by the defaults" in notices[0]
    assert "example.com" not in notices[0] and "passwd" not in notices[0]
    assert at.selectbox(key="lab_model").value == "fc100-100-10"
    assert at.number_input(key="lab_idx").value == 0
    assert at.selectbox(key="lab_attack").value == "lbfgs"
    assert at.number_input(key="lab_mnist_lbfgs_c_init").value == 1.0
    assert at.number_input(key="lab_seed").value == 0
    assert not set(HOSTILE) & set(at.query_params.keys())


def test_a_link_restores_the_validate_page_and_refuses_bad_values():
    at = opened(VALIDATE, {"val_idx": "12", "val_seed": "3", "val_ref_n": "20"})
    assert not at.exception and not at.warning
    assert at.number_input(key="val_idx").value == 12
    assert at.number_input(key="val_seed").value == 3
    assert at.number_input(key="val_ref_n").value == 20
    at = opened(VALIDATE, {"val_idx": "-1", "val_ref_n": "0", "val_model": "<img src=x>"})
    assert len(at.warning) == 1 and not at.exception
    assert at.number_input(key="val_idx").value == 0 and at.number_input(key="val_ref_n").value == 100


@pytest.mark.slow
def test_a_validate_link_replays_the_same_report():
    """Two fresh sessions opened from the same link: every attack's smallest flipping image agrees."""
    link = {"val_idx": "3", "val_seed": "2", "val_ref_n": "5"}

    def report_from_link():
        at = opened(VALIDATE, link)
        at.button(key="val_go").click()
        at.run()
        assert not at.exception and not at.error
        return at.session_state["val_report"][1]

    first, second = report_from_link(), report_from_link()
    assert [f.attack for f in first.findings] == [f.attack for f in second.findings]
    for a, b in zip(first.findings, second.findings, strict=True):
        assert a.success == b.success
        if a.success:
            assert np.abs(a.x_adv.numpy() - b.x_adv.numpy()).max() <= 1e-6, a.attack


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
    assert any("Draw a digit above" in i.value for i in at.info)


@pytest.mark.slow
def test_attack_lab_on_an_imagenet_photo():
    at = lab()
    at.selectbox(key="lab_model").set_value("mobilenet_v2")
    at.run()
    assert at.radio(key="lab_source_imagenet").value == "Sample photo"
    at.selectbox(key="lab_photo").set_value("coffee")
    at.selectbox(key="lab_attack").set_value("fgsm")
    at.run()
    assert at.number_input(key="lab_imagenet_fgsm_eps").value == pytest.approx(2 / 255)
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


def test_a_long_chart_title_is_split_into_lines_not_cut():
    """On ImageNet the title names a long class ("probability of Egyptian cat ..."); one line is cut."""
    from dashboard.lab_view import TITLE_CHARS, curve_spec

    title = "probability of Egyptian cat (target tiger shark, Galeocerdo cuvieri)"
    lines = curve_spec(title, {})["title"]["text"]
    assert isinstance(lines, list) and len(lines) > 1 and all(len(line) <= TITLE_CHARS for line in lines)
    assert " ".join(lines) == title


def test_the_draw_canvas_is_in_the_main_area_not_below_the_sidebar_fold():
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "attack_lab.py"), default_timeout=120)
    at.query_params["lab_source_mnist"] = "Draw"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith("Draw one digit") for c in at.main.caption)
    assert not any(c.value.startswith("Draw one digit") for c in at.sidebar.caption)
