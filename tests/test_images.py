"""Every way an upload can go wrong gets a sensible conversion or one clear ImageInputError."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import images
from core.data.images import mnist_input, open_image
from core.errors import ImageInputError
from core.models import load
from core.models.inputs import model_input


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _digit_image(mnist_test, i: int, size: int = 140) -> Image.Image:
    """An MNIST test digit as a person would photograph it: dark ink on white paper, larger."""
    ink = (1 - mnist_test.images[i, 0].numpy()) * 255
    return Image.fromarray(ink.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"just some text, not pixels", "not an image"),
        (b"%PDF-1.4 not an image", "not an image"),
    ],
)
def test_non_images_are_rejected_clearly(data, message):
    with pytest.raises(ImageInputError, match=message):
        open_image(data, "upload.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_rejected_clearly(fmt):
    full = _encode(Image.new("RGB", (64, 64), (200, 10, 10)).effect_spread(3), fmt)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        open_image(full[: len(full) // 2], f"cut.{fmt.lower()}")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _encode(Image.new("1", (9000, 9000)), "PNG")  # tiny file, 81 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(ImageInputError, match="megapixel limit"):
        open_image(bomb, "bomb.png")


def test_too_small_image_is_rejected():
    with pytest.raises(ImageInputError, match="1x1"):
        open_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def test_large_image_is_shrunk():
    img = open_image(_encode(Image.new("RGB", (3000, 2000), (1, 2, 3)), "JPEG"))
    assert max(img.size) <= images.WORK_SIDE and img.mode == "RGB"


def test_oversized_upload_bytes_are_refused():
    with pytest.raises(ImageInputError, match="larger than"):
        open_image(b"\x89PNG" + b"0" * (images.MAX_BYTES + 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)),  # red in CMYK
        lambda: Image.new("RGBA", (40, 30), (255, 0, 0, 255)),
        lambda: Image.new("RGB", (40, 30), (255, 0, 0)).convert("P"),
    ],
    ids=["cmyk", "rgba", "palette"],
)
def test_exotic_modes_become_the_same_rgb(make):
    fmt = "JPEG" if make().mode == "CMYK" else "PNG"
    img = open_image(_encode(make(), fmt))
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert img.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16_bit_grayscale_keeps_its_range():
    arr = np.tile(np.linspace(0, 65535, 40, dtype=np.uint16), (30, 1))
    img = open_image(_encode(Image.fromarray(arr), "PNG"))
    row = np.asarray(img)[0, :, 0]
    assert row[0] < 10 and row[-1] > 245 and np.all(np.diff(row.astype(int)) >= 0)


def test_transparent_background_reads_as_paper():
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (15, 5, 25, 35))
    rgb = np.asarray(open_image(_encode(img, "PNG")))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[20, 20].tolist() == [0, 0, 0]


def test_animated_image_uses_its_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    r, _, b = np.asarray(open_image(buf.getvalue())).reshape(-1, 3).mean(0)
    assert r > 200 and b < 60


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    out = open_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


def test_wrong_extension_is_irrelevant(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(_encode(Image.new("RGB", (30, 30), (0, 255, 0)), "PNG"))
    assert open_image(path).size == (30, 30)


def test_photographed_digits_are_recognised_after_conversion(mnist_test):
    model = load("fc100-100-10", "cpu")
    idx = list(range(20))
    x = torch.cat([mnist_input(open_image(_encode(_digit_image(mnist_test, i), "PNG"))) for i in idx])
    assert x.shape == (20, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert (pred == mnist_test.labels[idx]).float().mean() >= 0.85


def test_blank_image_gives_an_empty_digit():
    assert mnist_input(Image.new("RGB", (50, 50), (255, 255, 255))).abs().sum() == 0


def test_imagenet_input_uses_the_model_transforms():
    x = model_input(Image.new("RGB", (640, 480), (10, 20, 30)), "mobilenet_v2")
    assert x.shape == (1, 3, 224, 224) and torch.allclose(
        x[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255, atol=1e-2
    )
