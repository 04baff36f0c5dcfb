import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from core import config
from core.data import MNIST_FILES, load_mnist, paper_split, split_fingerprint
from core.data.mnist import read_idx
from core.errors import DatasetMissingError
from core.models import MNIST_MODELS, read_card


def test_test_and_train_sets_have_the_paper_sizes_and_range(mnist_test):
    assert mnist_test.images.shape == (10_000, 1, 28, 28)
    assert mnist_test.images.dtype == torch.float32
    assert 0.0 <= mnist_test.images.min() and mnist_test.images.max() <= 1.0
    assert set(mnist_test.labels.tolist()) == set(range(10))
    assert len(load_mnist("train")) == 60_000


def test_p1_p2_are_disjoint_halves_that_cover_the_training_set():
    p1, p2 = paper_split()
    assert len(p1) == len(p2) == 30_000
    assert np.intersect1d(p1, p2).size == 0
    assert np.array_equal(np.union1d(p1, p2), np.arange(60_000))
    # roughly balanced classes: a hash split should not starve a digit
    labels = load_mnist("p1").labels
    counts = torch.bincount(labels, minlength=10).float()
    assert (counts / counts.sum()).min() > 0.08


def test_split_is_stable_and_matches_the_models_trained_on_it():
    paper_split.cache_clear()
    p1_again, p2_again = paper_split()
    for name, spec in MNIST_MODELS.items():
        card = read_card(name)
        if spec.train.subset in ("p1", "p2") and card:
            idx = p1_again if spec.train.subset == "p1" else p2_again
            assert card["subset_fingerprint"] == split_fingerprint(idx), name


def test_split_images_are_the_indexed_training_images():
    train, p2 = load_mnist("train"), load_mnist("p2")
    assert torch.equal(p2.images[:50], train.images[p2.indices[:50]])
    assert torch.equal(p2.labels, train.labels[p2.indices])


def test_missing_data_folder_raises_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRIGUING_OFFLINE", "1")
    with pytest.raises(DatasetMissingError) as info:
        load_mnist("test", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert all(f in msg for f in MNIST_FILES)


@pytest.mark.slow
def test_cli_reports_missing_data_without_traceback(tmp_path):
    env = {"INTRIGUING_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "--data-dir", str(tmp_path), "evaluate", "fc10-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(__import__("core").config.PROJECT_ROOT),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "MNIST was not found" in proc.stderr and "t10k-images-idx3-ubyte" in proc.stderr


def test_mnist_read_without_torchvision_equals_what_torchvision_reads(mnist_test):
    """The lab's own IDX reader (no torchvision import, issue 25) gives torchvision's tensors, split for split."""
    root = config.data_dir()
    for train, ours in ((False, mnist_test), (True, load_mnist("train"))):
        theirs = torchvision.datasets.MNIST(root=str(root), train=train, download=False)
        assert torch.equal(ours.images, theirs.data.unsqueeze(1).to(torch.float32).div(255.0))
        assert torch.equal(ours.labels, theirs.targets)


def test_mnist_gz_files_alone_are_read_and_damaged_ones_refused(mnist_test, tmp_path):
    source = config.data_dir() / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / f"{name}.gz", raw / f"{name}.gz")
    from_gz = load_mnist("test", data_dir=tmp_path)
    assert torch.equal(from_gz.images, mnist_test.images) and torch.equal(from_gz.labels, mnist_test.labels)
    truncated = tmp_path / "t10k-labels-idx1-ubyte"
    truncated.write_bytes((source / "t10k-labels-idx1-ubyte").read_bytes()[:-1])
    with pytest.raises(DatasetMissingError, match="damaged or truncated"):
        read_idx(truncated)
