"""Slide-ready figures (core/visual/figures.py, `intriguing figure`): each exported file is opened and checked: PNG
size and 300 dpi, every picture of a panel pixel for pixel against the run's own arrays (enlarged by
repetition, never blurred), PDF pages and text, SVG as XML with its labels and a 300 dpi embedded image."""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from core import units
from core.attacks import make_attack
from core.cli import main
from core.errors import InvalidParameterError
from core.evaluation.protocol import Protocol
from core.models import class_names
from core.visual import figures
from core.visual.pictures import to_uint8

SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------------------ reading the files


def png_pixels(data: bytes) -> tuple[np.ndarray, tuple[float, float]]:
    image = Image.open(io.BytesIO(data))
    return np.asarray(image.convert("RGB")), image.info["dpi"]


def _unescape(literal: bytes) -> bytes:
    """A PDF literal string's bytes (backslash escapes resolved)."""
    out, i = bytearray(), 0
    while i < len(literal):
        c = literal[i]
        if c == 0x5C:  # backslash
            nxt = literal[i + 1 : i + 2]
            octal = re.match(rb"[0-7]{1,3}", literal[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
            out += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}.get(nxt, nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


def pdf_pages_and_text(data: bytes) -> tuple[int, list[str]]:
    """Page count and the strings shown (Tj/TJ, kerning dropped) of a matplotlib PDF: its content streams
    are Flate-compressed; Type 42 text is two bytes per character."""
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", data))
    texts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            continue  # an image or font program, not a content stream
        for block in re.findall(rb"BT(.*?)ET", content, re.S):
            pieces = [_unescape(s[1:-1]) for s in re.findall(rb"\((?:\\.|[^\\)])*\)", block, re.S)]
            raw = b"".join(pieces)
            texts.append(raw.decode("utf-16-be") if raw[:1] == b"\x00" else raw.decode("latin-1"))
    return pages, texts


def svg_tree(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def crop(pixels: np.ndarray, extent: tuple[float, ...]) -> np.ndarray:
    left, right, bottom, top = (int(v) for v in extent)
    assert [left, right, bottom, top] == list(extent), "pictures sit on whole output pixels"
    return pixels[top:bottom, left:right]


def enlarged(picture: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement (each pixel a scale x scale block), RGB."""
    rgb = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


# ------------------------------------------------------------------------------ Figure 5 panel


@pytest.fixture(scope="module")
def fgsm_run(fc100, one_torch_thread):
    chosen = Protocol(n=3).select(fc100, "cpu")
    result = make_attack("fgsm", fc100, eps=0.15).run(chosen.images, chosen.labels)
    return result, figures.examples(fc100, result, class_names("fc100-100-10"))


def test_panel_png_holds_each_runs_picture_pixel_for_pixel_at_300_dpi(fgsm_run):
    result, rows = fgsm_run
    fig = figures.adversarial_figure(rows, title="FGSM")
    pixels, dpi = png_pixels(figures.export(fig, "png"))
    assert [round(d) for d in dpi] == [300, 300]
    width, height = fig.get_size_inches() * 300
    assert pixels.shape[:2] == (round(height), round(width))

    images = fig.axes[0].images
    assert len(images) == 3 * len(result)
    for k, image in enumerate(images):
        i, j = divmod(k, 3)
        x, x_adv = result.x[i].numpy(), result.x_adv[i].numpy()
        left, right = image.get_extent()[:2]
        scale = round(right - left) // 28
        assert scale * 28 == right - left and scale >= 10  # whole blocks, about an inch per picture
        r = x_adv - x
        # The perturbation picture, built here from r: white where unchanged, full colour at its peak.
        signed = r[0] / np.abs(r[0]).max()
        colours = (colormaps["RdBu_r"](0.5 + 0.5 * signed)[..., :3] * 255 + 0.5).astype(np.uint8)
        expected = [to_uint8(x), colours, to_uint8(x_adv)][j]
        np.testing.assert_array_equal(crop(pixels, image.get_extent()), enlarged(expected, scale))


def test_panel_captions_say_class_confidence_and_amplification(fgsm_run, fc100):
    result, rows = fgsm_run
    fig = figures.adversarial_figure(rows, title="FGSM panel")
    pages, texts = pdf_pages_and_text(figures.export(fig, "pdf"))
    assert pages == 1
    probs = torch.softmax(fc100(result.x), dim=1)
    for i in range(len(result)):
        clean = int(probs[i].argmax())
        assert f"{clean} ({float(probs[i, clean]):.1%})" in texts
        adv = int(result.pred_after[i])
        assert f"{adv} ({float(result.probs_after[i, adv]):.1%})" in texts
        peak = float((result.x_adv[i] - result.x[i]).abs().max())
        assert f"amplified ×{1 / peak:.3g}" in texts
    assert "FGSM panel" in texts and texts.count("original") == len(result)

    root = svg_tree(figures.export(fig, "svg"))
    labels = svg_texts(root)
    assert "FGSM panel" in labels and labels.count("original") == len(result)


def test_vector_exports_embed_pictures_at_300_dpi_not_at_28_pixels(fgsm_run):
    """A PDF or SVG viewer may smooth an embedded image it enlarges: the pictures go in at 300 dpi."""
    fig = figures.adversarial_figure(fgsm_run[1][:1])
    root = svg_tree(figures.export(fig, "svg"))
    embedded = list(root.iter(f"{SVG}image"))
    assert embedded
    for node in embedded:
        href = node.get("{http://www.w3.org/1999/xlink}href")
        picture = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
        assert picture.width / float(node.get("width")) * 72 == pytest.approx(300, rel=0.01)
    pdf = figures.export(fig, "pdf")
    widths = [int(w) for w in re.findall(rb"/Subtype\s*/Image.*?/Width (\d+)", pdf, re.S)]
    assert widths and min(widths) >= 300


def test_one_column_up_to_four_examples_then_two(fgsm_run):
    rows = fgsm_run[1]
    narrow = figures.adversarial_figure(rows[:1])
    wide = figures.adversarial_figure(rows[:1] * 5)
    assert wide.get_size_inches()[0] > 1.8 * narrow.get_size_inches()[0]
    with pytest.raises(InvalidParameterError):
        figures.adversarial_figure([])


# ------------------------------------------------------------------------------ Unit Explorer grid


@pytest.fixture(scope="module")
def hidden2():
    images = units.held_out_images("fc100-100-10")
    return images, units.layer_activations("fc100-100-10", "hidden2", images)


def test_unit_grid_rows_are_the_top_k_images_of_each_direction(hidden2):
    images, acts = hidden2
    k, shown, seed = 4, [5, 6], 3
    natural, random = figures.unit_rows(acts, shown, seed, k)
    fig = figures.units_figure(images, natural, random, title="grid")
    pixels, dpi = png_pixels(figures.export(fig, "png"))
    assert [round(d) for d in dpi] == [300, 300]

    # The expected rows, ranked here: largest activation of the unit, or of the seeded random direction.
    directions = np.random.default_rng(seed).standard_normal((len(shown), acts.shape[1]))
    expected = [np.argsort(-acts[:, u], kind="stable")[:k] for u in shown]
    expected += [np.argsort(-(acts @ v), kind="stable")[:k] for v in directions]
    drawn = fig.axes[0].images
    assert len(drawn) == len(expected)
    gap = np.full((28, figures.THUMBNAIL_GAP), 255, dtype=np.uint8)
    for image, indices in zip(drawn, expected, strict=True):
        thumbs = [to_uint8(images.images[int(i)]) for i in indices]
        mosaic = np.concatenate([p for t in thumbs for p in (t, gap)][:-1], axis=1)
        left, right = image.get_extent()[:2]
        scale = round(right - left) // mosaic.shape[1]
        assert scale * mosaic.shape[1] == right - left and scale > 1
        np.testing.assert_array_equal(crop(pixels, image.get_extent()), enlarged(mosaic, scale))

    labels = svg_texts(svg_tree(figures.export(fig, "svg")))
    assert {"unit 5", "unit 6", f"random direction 0 (seed {seed})", "Natural units e_i"} <= set(labels)
    captions = [str(images.labels[int(i)]) for i in expected[0]]
    assert all(labels.count(c) >= captions.count(c) for c in captions)


# ------------------------------------------------------------------------------ transfer heatmaps


def small_card() -> dict:
    return {
        "experiment": "table2",
        "title": "Tiny transfer table",
        "n": 7,
        "seed": 1,
        "date": "2026-01-02T00:00:00+00:00",
        "attack": {"params": {"n_targets": 3, "rounds": 5, "max_iter": 30}},
        "columns": ["A", "B"],
        "row_labels": ["made for A", "noise"],
        "matrix": [[1.0, 0.37], [0.05, None]],
        "paper_matrix": [[1.0, 0.4], None],
    }


def test_transfer_heatmap_cells_colours_and_labels():
    card = small_card()
    fig = figures.transfer_figure(card)
    pixels, dpi = png_pixels(figures.export(fig, "png"))
    assert [round(d) for d in dpi] == [300, 300]
    ax = fig.axes[0]
    box = ax.get_window_extent()  # display pixels from the bottom left, at the figure's 300 dpi
    height = pixels.shape[0]
    for i, row in enumerate(card["matrix"]):
        for j, value in enumerate(row):
            if value is None:
                continue
            # a point a quarter cell in from the cell's corner, away from the centred text
            x = box.x0 + (j + 0.2) * box.width / 2
            y = height - (box.y1 - (i + 0.2) * box.height / 2)
            colour = colormaps["viridis"](value, bytes=True)[:3]
            np.testing.assert_array_equal(pixels[int(y), int(x)], colour)

    labels = svg_texts(svg_tree(figures.export(fig, "svg")))
    joined = "\n".join(labels)
    for text in ("100", "(100)", "37", "(40)", "5", "-", "made for A", "noise", "n = 7 test images, seed 1"):
        assert text in joined, text
    pages, texts = pdf_pages_and_text(figures.export(fig, "pdf"))
    assert pages == 1 and any(t.startswith("Tiny transfer table") for t in texts)


def test_the_stored_table_cards_render_with_every_row():
    from core.experiments import read_card

    for name in ("table2", "table4"):
        card = read_card(name)
        labels = svg_texts(svg_tree(figures.export(figures.transfer_figure(card), "svg")))
        assert set(card["row_labels"]) | set(card["columns"]) <= set(labels)


# ------------------------------------------------------------------------------ export and the CLI


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.PNG.txt", "fig.eps"])
def test_unknown_suffix_is_refused_with_exit_2(name, tmp_path, capsys):
    code = main(["figure", "transfer", "--out", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and ".png, .pdf, .svg" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_missing_folder_and_folder_as_file_are_refused(tmp_path, capsys):
    assert main(["figure", "transfer", "--out", str(tmp_path / "no" / "t.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "dir.svg").mkdir()
    assert main(["figure", "transfer", "--out", str(tmp_path / "dir.svg")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_transfer_without_a_stored_card_says_how_to_make_one(tmp_path, capsys):
    out = str(tmp_path / "t.png")
    code = main(["figure", "transfer", "--table", "table4", "--results", str(tmp_path), "--out", out])
    assert code == 2 and "intriguing reproduce table4" in capsys.readouterr().err


def test_cli_adversarial_writes_the_figure_and_its_card(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "fig5.png"
    argv = ["figure", "adversarial", "--model", "fc100-100-10", "--attack", "deepfool", "--n", "2"]
    assert main([*argv, "--overshoot", "0.05", "--seed", "4", "--out", str(out), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    card = json.loads((tmp_path / "fig5.json").read_text())
    assert printed == card
    assert card["model"] == "fc100-100-10" and card["attack"] == "deepfool" and card["seed"] == 4
    assert card["protocol"]["n"] == 2 and card["protocol"]["protocol"]["correct_only"]
    assert card["params"]["overshoot"] == 0.05 and card["summary"]["n"] == 2
    assert {"torch", "numpy", "intriguing_lab"} <= set(card["versions"])
    pixels, dpi = png_pixels(out.read_bytes())
    assert [round(d) for d in dpi] == [300, 300] and pixels.shape[0] > 500


def test_cli_units_and_transfer_write_pdf_and_svg(tmp_path, capsys):
    pdf = tmp_path / "units.pdf"
    argv = ["figure", "units", "--model", "fc100-100-10", "--layer", "hidden2", "--rows", "2", "--k", "3"]
    assert main([*argv, "--out", str(pdf)]) == 0
    pages, texts = pdf_pages_and_text(pdf.read_bytes())
    assert pages == 1 and {"unit 0", "unit 1", "random direction 1 (seed 0)"} <= set(texts)
    card = json.loads(pdf.with_suffix(".json").read_text())
    assert card["units"] == [0, 1] and card["layer"] == "hidden2" and card["k"] == 3

    svg = tmp_path / "t2.svg"
    assert main(["figure", "transfer", "--table", "table2", "--out", str(svg)]) == 0
    assert "Gaussian noise, stddev 0.1" in svg_texts(svg_tree(svg.read_bytes()))
    assert json.loads(svg.with_suffix(".json").read_text())["source"]["n"] == 10000
    capsys.readouterr()
    assert main(["figure", "units", "--model", "fc100-100-10", "--unit", "100", "--out", str(svg)]) == 2
    assert "--unit must be between 0 and 99" in capsys.readouterr().err


# ------------------------------------------------------------------------------ dashboard buttons


def test_figure_downloads_build_the_figure_only_when_a_button_is_pressed(monkeypatch):
    from dashboard import figure_buttons

    offered: dict[str, tuple] = {}

    def download_button(label, data, file_name, mime, **kw):
        offered[file_name] = (label, data, mime)

    monkeypatch.setattr(
        figure_buttons.st, "container", lambda **kw: SimpleNamespace(download_button=download_button)
    )
    built = []

    def build():
        built.append(1)
        return figures.transfer_figure(small_card())

    figure_buttons.figure_downloads(build, "t2", "key", "Heatmap")
    assert set(offered) == {"t2.png", "t2.pdf", "t2.svg"} and not built
    label, data, mime = offered["t2.png"]
    assert label == "Heatmap (PNG, 300 dpi)" and mime == "image/png"
    assert [round(d) for d in png_pixels(data())[1]] == [300, 300] and built == [1]
    assert pdf_pages_and_text(offered["t2.pdf"][1]())[0] == 1
    assert "made for A" in svg_texts(svg_tree(offered["t2.svg"][1]()))


def test_transferability_page_offers_both_heatmaps_for_download():
    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "transferability.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"Heatmap ({f})" for f in ("PNG, 300 dpi", "PDF", "SVG")] * 2
