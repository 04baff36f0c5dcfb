"""Bad input through the command line: one clear message on stderr, exit code 2, never a traceback."""

import io
import subprocess
import sys

import pytest
from PIL import Image

from core.cli import main
from core.data import images


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noisy(fmt: str) -> bytes:
    return _encode(Image.new("RGB", (64, 64), (200, 10, 10)).effect_spread(3), fmt)


BAD_IMAGES = {
    "empty.png": (lambda: b"", "empty"),
    "text.png": (lambda: b"just some text, not pixels", "not an image"),
    "document.jpg": (lambda: b"%PDF-1.4 not an image", "not an image"),
    "cut.png": (lambda: _noisy("PNG")[: len(_noisy("PNG")) // 2], "truncated or corrupt"),
    "cut.jpg": (lambda: _noisy("JPEG")[: len(_noisy("JPEG")) // 2], "truncated or corrupt"),
    "bomb.png": (lambda: _encode(Image.new("1", (9000, 9000)), "PNG"), "megapixel limit"),
    "dot.png": (lambda: _encode(Image.new("RGB", (1, 1)), "PNG"), "1x1"),
    "huge.png": (lambda: b"\x89PNG" + b"0" * (images.MAX_BYTES + 1), "larger than"),
}


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_files_give_exit_2_and_one_message(name, tmp_path, capsys):
    make, message = BAD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(make())
    code, out, err = _run(["report", "--image", str(path)], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_missing_image_file(tmp_path, capsys):
    code, _, err = _run(["report", "--image", str(tmp_path / "nowhere.png")], capsys)
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--mnist-index", "-1"], "MNIST index"),
        (["report", "--mnist-index", "10000"], "MNIST index"),
        (["report", "--mnist-index", "0", "--seed", "-5"], "seed"),
        (["report", "--mnist-index", "0", "--reference-n", "0"], "reference size"),
        (["report", "--mnist-index", "0", "--model", "no-such-net"], "Unknown model"),
        (["report", "--mnist-index", "0", "--html", "/no/such/folder/r.html"], "does not exist"),
        (["defences", "--eps", "nan"], "finite"),
        (["defences", "--eps", "inf"], "finite"),
        (["defences", "--eps", "-0.1"], "eps"),
        (["defences", "--eps", "5"], "eps"),
        (["defences", "-n", "0"], "-n"),
        (["defences", "--steps", "0"], "steps"),
        (["defences", "--defence", "bits:0"], "bits"),
        (["defences", "--defence", "jpeg:nan"], "quality"),
        (["defences", "--defence", "blur:3"], "unknown defence"),
        (["leaderboard", "--budget", "linf:nan"], "finite"),
        (["leaderboard", "--budget", "l7:0.1"], "budget norm"),
        (["leaderboard", "--fill", "pgd", "-n", "-4"], "n must be"),
        (["leaderboard", "--fill", "teleport"], "unknown attack"),
        (["evaluate", "fc10-1", "--device", "gpu"], "not a torch device"),
        (["evaluate", "fc10-1", "--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_parameters_give_exit_2_and_one_message(argv, message, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err.splitlines()[-1]
    assert "Traceback" not in err + out


@pytest.mark.slow
def test_a_real_process_prints_no_traceback(tmp_path):
    """The installed entry point, end to end: stderr holds the message and nothing else."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "report", "--image", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: photo.jpg is empty (0 bytes)."
    assert proc.stdout == ""


@pytest.mark.slow
def test_a_convertible_image_runs_the_report(tmp_path, capsys, mnist_test):
    """A palette PNG saved under a .jpg name (wrong extension, exotic mode) is converted, not refused."""
    digit = Image.fromarray(((1 - mnist_test.images[0, 0].numpy()) * 255).astype("uint8")).resize((112, 112))
    path = tmp_path / "digit.jpg"
    path.write_bytes(_encode(digit.convert("P"), "PNG"))
    code, out, err = _run(
        ["report", "--image", str(path), "--reference-n", "3", "--json", "--no-record"], capsys
    )
    assert code == 0, err
    assert '"label": 7' in out
