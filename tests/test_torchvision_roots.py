"""A torchvision dataset root as a user dataset (issue 21): a tiny CIFAR-10-format folder written by the
test (pickled batches, as the real archive holds them) is registered, read with download=False and
resized to a model's input; a missing, corrupt or code-running root gives one clear message and registers
nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.data import datasets
from core.errors import IntriguingError
from core.evaluation.protocol import Protocol

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 4


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "data": rng.integers(0, 256, (PER_BATCH, 3 * 32 * 32), dtype=np.uint8),
        "labels": rng.integers(0, 10, PER_BATCH).tolist(),
        "batch_label": f"batch {seed}",
    }


def _cifar(parent):
    """parent/cifar-10-batches-py with the real file names, a few images per batch; returns the test batch."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES, "num_vis": 3072}))
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(i)))
    test = _batch(0)
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    return test


def test_a_cifar10_root_is_read_as_its_test_split_and_resized(tmp_path):
    test = _cifar(tmp_path / "c10")
    new = datasets.add("tiny-cifar", tmp_path / "c10")
    assert (new.kind, new.classes, new.n, new.size) == ("cifar10", tuple(NAMES), PER_BATCH, (32, 32))
    split = datasets.load_split("tiny-cifar", "test", (3, 32, 32))
    expected = torch.from_numpy(test["data"]).view(PER_BATCH, 3, 32, 32).float() / 255  # CIFAR's CHW rows
    torch.testing.assert_close(split.images, expected, atol=1e-6, rtol=0)
    assert split.labels.tolist() == test["labels"]
    grey = datasets.load_split("tiny-cifar", "test", (1, 16, 16))
    assert grey.images.shape == (PER_BATCH, 1, 16, 16) and 0 <= grey.images.min() <= grey.images.max() <= 1
    luma = (expected * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(grey.images.mean((1, 2, 3)), luma.mean((1, 2)), atol=2e-3, rtol=0)
    again = datasets.add("tiny-cifar-2", tmp_path / "c10" / "cifar-10-batches-py")  # the folder itself
    assert again.fingerprint == new.fingerprint and again.root == new.root


def test_a_cifar10_root_gives_its_train_split_too(tmp_path):
    """The five training batches in order, as torchvision's train=True reads them; a protocol may name the
    split and keeps the root's fingerprint; a class-folder dataset still has its one pool only."""
    _cifar(tmp_path / "c10")
    datasets.add("tiny-train", tmp_path / "c10")
    assert datasets.splits("tiny-train") == ("train", "test")
    train = datasets.load_split("tiny-train", "train", (3, 32, 32))
    batches = [_batch(i) for i in range(1, 6)]
    expected = torch.cat([torch.from_numpy(b["data"]).view(PER_BATCH, 3, 32, 32) for b in batches]) / 255
    torch.testing.assert_close(train.images, expected.float(), atol=1e-6, rtol=0)
    assert train.labels.tolist() == sum((b["labels"] for b in batches), [])
    assert train.name == "train" and datasets.load_split("tiny-train", "test").name == "test"
    on_train, on_test = Protocol(split="train", dataset="tiny-train"), Protocol(dataset="tiny-train")
    assert on_train.fingerprint != on_test.fingerprint and "tiny-train train images" in on_train.describe()
    folder = tmp_path / "folder"
    for c, value in (("a", 0), ("b", 255)):
        (folder / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (value,) * 3).save(folder / c / "0.png")
    datasets.add("two-folders", folder)
    assert datasets.splits("two-folders") == ("test",)
    with pytest.raises(IntriguingError, match="split"):
        datasets.load_split("two-folders", "train")
    with pytest.raises(IntriguingError, match="split"):
        Protocol(split="train", dataset="two-folders")


def test_a_training_batch_swapped_for_code_is_refused_when_the_train_split_is_read(tmp_path):
    """Same size, so the listing passes: the restricted unpickler refuses it before torchvision opens it."""
    _cifar(tmp_path / "c10")
    datasets.add("swapped", tmp_path / "c10")
    batch = tmp_path / "c10" / "cifar-10-batches-py" / "data_batch_2"
    _Evil.marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil())
    batch.write_bytes(evil + b"\0" * (batch.stat().st_size - len(evil)))  # bytes after STOP are never read
    with pytest.raises(IntriguingError, match="data_batch_2 refused"):
        datasets.load_split("swapped", "train", (3, 32, 32))
    assert not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


def _broken(tmp_path, what: str):
    parent = tmp_path / what
    _cifar(parent)
    folder = parent / "cifar-10-batches-py"
    if what == "missing":
        (folder / "data_batch_3").unlink()
    elif what == "truncated":
        (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:500])
    elif what == "wrong shape":
        (folder / "test_batch").write_bytes(
            pickle.dumps({"data": np.zeros((2, 7), np.uint8), "labels": [0, 1]})
        )
    elif what == "code":
        _Evil.marker = tmp_path / "pwned"
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES, "x": _Evil()}))
    return parent


@pytest.mark.parametrize(
    "what, message",
    [
        ("missing", "no file data_batch_3"),
        ("truncated", "truncated or corrupt"),
        ("wrong shape", "not a readable CIFAR10 root"),
        ("code", "refused"),
    ],
)
def test_a_bad_cifar_root_gives_one_line_exit_2_and_registers_nothing(tmp_path, capsys, what, message):
    parent = _broken(tmp_path, what)
    capsys.readouterr()
    assert main(["datasets", "add", "broken", str(parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert datasets.entry("broken") is None
    assert not (tmp_path / "pwned").exists()


def test_a_cifar_root_that_changed_after_it_was_added_is_refused(tmp_path):
    _cifar(tmp_path / "c10")
    datasets.add("changing", tmp_path / "c10")
    test_batch = tmp_path / "c10" / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(pickle.dumps({**_batch(9), "data": np.zeros((PER_BATCH + 1, 3072), np.uint8)}))
    with pytest.raises(IntriguingError, match="changed since it was added"):
        datasets.load_split("changing", "test", (3, 32, 32))


def test_an_upload_is_never_read_as_a_torchvision_root(tmp_path):
    """Batches are pickles: a folder that arrived as an upload is read as class folders only."""
    _cifar(tmp_path / "up")
    with pytest.raises(IntriguingError, match="holds no images in class folders"):
        datasets.add("uploaded", tmp_path / "up", shown="up.zip", upload=True)
    assert datasets.entry("uploaded") is None
