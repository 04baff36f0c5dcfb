"""The unit analysis engine: rankings, directions, scores, the activation cache and the folder reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.photos import sample_photo
from core.errors import ImageInputError, InvalidParameterError
from core.models import load, nets
from core.units import (
    FolderImages,
    MnistImages,
    combination,
    dead_units,
    interpolate,
    layer_activations,
    parse_combination,
    project,
    random_directions,
    top_k,
    top_k_sets,
    unit_vector,
)
from core.units import activations as act_module
from core.units.coherence import (
    label_entropy,
    label_purity,
    mean_pairwise_cosine,
    score_sets,
    study,
    two_sample_test,
)
from core.units.directions import SORT_COLUMNS


@pytest.fixture(scope="module")
def mnist_images():
    return MnistImages()


@pytest.fixture(scope="module")
def fc_hidden1(mnist_images):
    return layer_activations("fc100-100-10", "hidden1", mnist_images, device="cpu")


# ---- rankings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 9, 50])
def test_top_k_matches_a_brute_force_argsort(k):
    rng = np.random.default_rng(k)
    acts = rng.standard_normal((500, 20)).astype(np.float32)
    v = rng.standard_normal(20).astype(np.float32)
    brute = [float(np.dot(a, v)) for a in acts]  # one dot product per image, no matrix product
    order = np.argsort(brute)
    top, bottom = top_k(acts, v, k), top_k(acts, v, k, largest=False)
    assert top.indices.tolist() == order[::-1][:k].tolist()
    assert bottom.indices.tolist() == order[:k].tolist()
    np.testing.assert_allclose(top.values, np.array(brute)[order[::-1][:k]], rtol=1e-5)


def test_ties_go_to_the_lower_image_index():
    acts = np.array([[1.0], [3.0], [3.0], [2.0], [3.0], [0.0]], dtype=np.float32)
    assert top_k(acts, np.ones(1, dtype=np.float32), 2).indices.tolist() == [1, 2]
    assert top_k(acts, np.ones(1, dtype=np.float32), 4).indices.tolist() == [1, 2, 4, 3]
    assert top_k(acts, np.ones(1, dtype=np.float32), 2, largest=False).indices.tolist() == [5, 0]
    assert top_k_sets(acts, np.ones((1, 1), dtype=np.float32), 4).tolist() == [[1, 2, 4, 3]]


def test_many_directions_at_once_agree_with_one_at_a_time(fc_hidden1):
    directions = random_directions(fc_hidden1.shape[1], 7, seed=3)
    sets = top_k_sets(fc_hidden1, directions, 9)
    for v, row in zip(directions, sets, strict=True):
        assert row.tolist() == top_k(fc_hidden1, v, 9).indices.tolist()


def test_top_k_sets_across_blocks_of_directions_match_a_sort_of_each_direction():
    # Small integers: every product is exact in float32, so the brute force sees the very same scores, and
    # ties are many (each must go to the lower image index, in every block of directions).
    rng = np.random.default_rng(7)
    acts = rng.integers(-2, 3, size=(300, 6)).astype(np.float32)
    directions = rng.integers(-1, 2, size=(2 * SORT_COLUMNS + 5, 6)).astype(np.float32)
    sets = top_k_sets(acts, directions, 9)
    for v, row in zip(directions, sets, strict=True):
        scores = [sum(int(a) * int(b) for a, b in zip(x, v, strict=True)) for x in acts]
        assert row.tolist() == sorted(range(len(acts)), key=lambda i: (-scores[i], i))[:9]


def test_top_k_rejects_bad_k_and_mismatched_directions():
    acts = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(InvalidParameterError):
        top_k(acts, np.ones(3, dtype=np.float32), 11)
    with pytest.raises(InvalidParameterError):
        top_k(acts, np.ones(4, dtype=np.float32), 2)


# ---- directions -------------------------------------------------------------------------------------------


def test_unit_direction_reproduces_the_raw_unit_activations(mnist_images, fc_hidden1):
    model = load("fc100-100-10", "cpu")
    linear = model.hidden[0][0]
    x = mnist_images.images.flatten(1)
    raw = torch.sigmoid(x @ linear.weight.T + linear.bias).numpy()  # the layer by hand, no hook
    np.testing.assert_allclose(fc_hidden1, raw, atol=1e-5)
    for unit in (0, 42, 99):
        np.testing.assert_allclose(project(fc_hidden1, unit_vector(100, unit)), raw[:, unit], atol=1e-5)
        ranking = top_k(fc_hidden1, unit_vector(100, unit), 9)
        np.testing.assert_allclose(ranking.values, np.sort(raw[:, unit])[::-1][:9], atol=1e-5)


def test_conv_units_are_spatially_averaged_channels():
    torch.manual_seed(0)
    model = nets.SmallCNN().eval()
    x = torch.rand(12, 1, 28, 28)

    class Tiny(MnistImages):
        def __post_init__(self):
            self.images = x

    layers = {"conv1": model.conv1, "conv2": model.conv2, "fc1": model.fc1}
    acts = act_module.compute(model, layers, Tiny(), torch.device("cpu"), batch_size=5)  # 5 + 5 + 2
    with torch.no_grad():
        conv1 = model.conv1(x)
        conv2 = model.conv2(conv1)
        fc1 = model.fc1(conv2)
    assert {k: v.shape for k, v in acts.items()} == {"conv1": (12, 32), "conv2": (12, 64), "fc1": (12, 128)}
    np.testing.assert_allclose(acts["conv1"], conv1.mean(dim=(2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(acts["conv2"], conv2.mean(dim=(2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(acts["fc1"], fc1.numpy(), atol=1e-5)


def test_seeds_reproduce_random_directions():
    a, b = random_directions(100, 10, seed=7), random_directions(100, 10, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(random_directions(100, 3, seed=7), a[:3])  # independent of the count
    assert not np.allclose(a, random_directions(100, 10, seed=8))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert abs(float(a.mean())) < 0.05  # Gaussian: centred, not uniform on [0, 1)


def test_interpolation_goes_from_the_unit_to_the_random_direction():
    e, v = unit_vector(5, 2), random_directions(5, 1, seed=0)[0]
    np.testing.assert_allclose(interpolate(e, v, 0.0), e, atol=1e-7)
    np.testing.assert_allclose(interpolate(e, v, np.pi / 2), v, atol=1e-7)
    np.testing.assert_allclose(interpolate(e, v, np.pi / 4), (e + v) / np.sqrt(2), atol=1e-6)


def test_combinations_of_units():
    assert parse_combination("3:1, 7:-0.5") == {3: 1.0, 7: -0.5}
    assert parse_combination("4") == {4: 1.0}
    np.testing.assert_allclose(combination(10, {3: 3.0, 7: -4.0})[[3, 7]], [0.6, -0.8], atol=1e-6)
    for bad in ("x:1", ""):
        with pytest.raises(InvalidParameterError):
            parse_combination(bad)
    with pytest.raises(InvalidParameterError):
        combination(10, {12: 1.0})
    with pytest.raises(InvalidParameterError):
        combination(10, {1: 0.0})


# ---- scores -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "purity", "entropy"),
    [
        ([5, 5, 5, 5], 1.0, 0.0),
        ([0, 1, 2, 3], 0.25, 2.0),
        ([0, 0, 1, 1], 0.5, 1.0),
        ([3, 3, 3, 1], 0.75, 0.8113),
    ],
)
def test_purity_and_entropy_on_constructed_label_sets(labels, purity, entropy):
    assert label_purity(np.array(labels)) == pytest.approx(purity)
    assert label_entropy(np.array(labels)) == pytest.approx(entropy, abs=1e-4)


def test_set_cosines_centre_each_set_on_the_mean_of_every_held_out_image():
    rng = np.random.default_rng(3)
    judge = (rng.standard_normal((200, 12)) + 5.0).astype(np.float32)  # far from centred
    sets = np.stack([rng.choice(200, size=6, replace=False) for _ in range(20)])
    cosines = score_sets(sets, None, judge)["cosine"]
    centred = judge.astype(np.float64) - judge.astype(np.float64).mean(axis=0)
    for s, got in zip(sets, cosines, strict=True):
        rows = centred[s]
        pairs = [
            rows[a] @ rows[b] / np.linalg.norm(rows[a]) / np.linalg.norm(rows[b])
            for a in range(6)
            for b in range(a + 1, 6)
        ]
        assert got == pytest.approx(np.mean(pairs), abs=1e-5)


def test_mean_pairwise_cosine_on_constructed_features():
    assert mean_pairwise_cosine(np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    # three pairs: (a, b) parallel, (a, c) and (b, c) orthogonal -> 1/3
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])) == pytest.approx(1 / 3)


def test_two_sample_test_separates_shifted_scores_only():
    rng = np.random.default_rng(0)
    same = two_sample_test(rng.normal(0, 1, 200), rng.normal(0, 1, 200))
    shifted = two_sample_test(rng.normal(0, 1, 200), rng.normal(1, 1, 200))
    assert same > 0.01 and shifted < 1e-6
    assert two_sample_test(np.ones(5), np.ones(5)) == 1.0


def test_study_scores_agree_with_single_direction_rankings(mnist_images):
    result = study("fc100-100-10", "hidden1", k=9, n_random=120, seed=1, images=mnist_images, judge="pixels")
    acts = layer_activations("fc100-100-10", "hidden1", mnist_images, device="cpu")
    labels = mnist_images.labels
    assert len(result.natural["purity"]) == 100 and len(result.random["purity"]) == 120
    for unit in (0, 57):
        idx = top_k(acts, unit_vector(100, unit), 9).indices
        assert result.natural["purity"][unit] == pytest.approx(label_purity(labels[idx]))
        assert result.natural["entropy"][unit] == pytest.approx(label_entropy(labels[idx]))
    v = random_directions(100, 120, seed=1)[119]
    assert result.random["purity"][119] == pytest.approx(label_purity(labels[top_k(acts, v, 9).indices]))
    summary = result.summary()
    for side in ("natural", "random"):
        lo, hi = summary[side]["purity_ci"]
        assert 1 / 9 <= lo <= summary[side]["purity_mean"] <= hi <= 1.0 + 1e-9
    assert all(0.0 <= p <= 1.0 for p in summary["p_value"].values())


def test_dead_units_are_reported_and_left_out_of_the_scores(tmp_path, monkeypatch, mnist_images):
    from core import config

    state = torch.load(config.model_dir() / "fc100-100-10.pt", weights_only=True)
    state["hidden.1.0.weight"][[5, 70]] = 0.0  # sigmoid(bias): the same value on every image
    (tmp_path / "models").mkdir()
    torch.save(state, tmp_path / "models" / "fc100-100-10.pt")
    monkeypatch.setenv("INTRIGUING_MODEL_DIR", str(tmp_path / "models"))
    acts = layer_activations("fc100-100-10", "hidden2", mnist_images, device="cpu")
    assert dead_units(acts).tolist() == [5, 70]
    result = study("fc100-100-10", "hidden2", k=5, n_random=10, images=mnist_images, judge="pixels")
    assert result.dead_units.tolist() == [5, 70] and 5 not in result.units and len(result.units) == 98
    assert len(result.natural["purity"]) == 98 and len(result.random["purity"]) == 98
    assert result.summary()["n_units"] == 100


# ---- the cache --------------------------------------------------------------------------------------------


def test_cache_invalidates_when_the_checkpoint_or_the_layer_changes(tmp_path, monkeypatch, mnist_images):
    from core import config

    source = config.model_dir() / "fc100-100-10.pt"
    monkeypatch.setenv("INTRIGUING_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "models").mkdir()
    checkpoint = tmp_path / "models" / "fc100-100-10.pt"
    checkpoint.write_bytes(source.read_bytes())

    act_module.clear_memory()
    before = layer_activations("fc100-100-10", "hidden1", mnist_images, device="cpu")
    # One pass cached every readable layer: hidden1, hidden2 and the logits.
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3

    # From disk alone: with an empty memory cache and no way to compute, the same values come back,
    # for the layer asked for and for the layers captured beside it.
    act_module.clear_memory()
    with monkeypatch.context() as patch:
        patch.setattr(act_module, "compute", lambda *a, **k: pytest.fail("cache miss"))
        np.testing.assert_array_equal(layer_activations("fc100-100-10", "hidden1", mnist_images), before)
        other_layer = layer_activations("fc100-100-10", "hidden2", mnist_images, device="cpu")
    model = load("fc100-100-10")
    with torch.no_grad():
        expected_hidden2 = model.hidden[1](model.hidden[0](mnist_images.images.flatten(1)))
    np.testing.assert_allclose(other_layer, expected_hidden2.numpy(), atol=1e-5)

    state = torch.load(checkpoint, weights_only=True)
    state["hidden.0.0.bias"] += 1.0  # "retrain" the model
    torch.save(state, checkpoint)
    after = layer_activations("fc100-100-10", "hidden1", mnist_images, device="cpu")
    linear_w, linear_b = state["hidden.0.0.weight"], state["hidden.0.0.bias"]
    expected = torch.sigmoid(mnist_images.images.flatten(1) @ linear_w.T + linear_b).numpy()
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert not np.allclose(after, before)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 6


def test_a_pass_keeps_only_the_layer_asked_for_in_memory(tmp_path, monkeypatch, mnist_images):
    monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path))
    act_module.clear_memory()
    layer_activations("fc100-100-10", "hidden2", mnist_images, device="cpu")
    assert len(list(tmp_path.rglob("*.npy"))) == 3  # every layer of the pass went to disk
    assert [key[1] for key in act_module._memory] == ["hidden2"]
    act_module.clear_memory()


@pytest.mark.slow  # two studies of 10,000 images from cold caches
def test_the_held_out_batch_size_leaves_what_the_study_shows_unchanged(tmp_path, monkeypatch):
    """The batch size was lowered from 50 for memory (issue 25): a linear layer's float32 sums may differ in
    the last bit between batch sizes, but no top-k set, score, interval or p-value of the default study does."""
    results = []
    for batch in (50, MnistImages.batch_size):
        monkeypatch.setenv("INTRIGUING_CACHE_DIR", str(tmp_path / str(batch)))
        act_module.clear_memory()
        images = MnistImages()
        images.batch_size = batch
        results.append(study("fc100-100-10", "hidden2", k=8, images=images, judge="cnn:fc1"))
    act_module.clear_memory()
    old, new = results
    assert MnistImages.batch_size != 50
    for arm in ("natural", "random"):
        for score in ("purity", "entropy", "cosine"):
            np.testing.assert_array_equal(getattr(new, arm)[score], getattr(old, arm)[score])
    assert new.summary() == old.summary()


def test_unknown_layer_is_a_clear_error(mnist_images):
    with pytest.raises(InvalidParameterError, match="hidden1, hidden2, logits"):
        layer_activations("fc100-100-10", "conv9", mnist_images)


# ---- the folder reader ------------------------------------------------------------------------------------


def _photo_folder(root, classes=("chelsea", "coffee"), per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        photo = sample_photo(name).resize((96, 72))
        for i in range(per_class):
            photo.rotate(15 * i).save(root / name / f"{name}{i}.png")
    (root / "README.txt").write_text("not an image")
    (root / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_folder_reader_labels_subfolders_and_skips_non_images(tmp_path):
    images = FolderImages(_photo_folder(tmp_path / "photos"))
    assert len(images) == 6
    assert images.label_names == ("chelsea", "coffee")
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(images.skipped) == ["README.txt", "chelsea/broken.jpg"]
    batch = next(images.batches(4))
    assert batch.shape == (4, 3, 224, 224) and 0.0 <= batch.min() and batch.max() <= 1.0
    assert images.thumbnail(5).shape == (64, 64, 3)
    assert images.describe(4) == "coffee"


def test_flat_folder_has_no_labels_and_an_empty_folder_is_refused(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(flat / "red.png")
    (flat / "notes.md").write_text("# no")
    images = FolderImages(flat)
    assert len(images) == 1 and images.labels is None and images.skipped == ["notes.md"]
    assert images.describe(0) == "red.png"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.csv").write_text("a,b")
    with pytest.raises(ImageInputError, match="no readable images"):
        FolderImages(empty)
    with pytest.raises(ImageInputError, match="does not exist"):
        FolderImages(tmp_path / "missing")


def test_a_capture_hook_ignores_forward_passes_of_other_threads():
    """The dashboard shares one model between sessions: while one session reads a layer, another session's
    attack runs forward passes with gradients through the same modules. Neither may see the other's hook."""
    import threading

    from torch import nn

    from core.units.activations import units_at

    release, inside = threading.Event(), threading.Event()

    class Gate(nn.Module):
        def forward(self, x):
            if threading.current_thread().name == "reader":
                inside.set()
                assert release.wait(10)
            return x

    torch.manual_seed(0)
    model = nn.Sequential(Gate(), nn.Linear(4, 3), nn.Linear(3, 2))
    captured = {}
    reader = threading.Thread(
        target=lambda: captured.update(units=units_at(model, model[1], torch.ones(1, 4))), name="reader"
    )
    reader.start()
    assert inside.wait(10)  # the reader's hook is registered and its pass is held before the hooked layer
    x = torch.ones(2, 4, requires_grad=True)
    out = model(x)  # another session's pass: runs to the end, with gradients
    release.set()
    reader.join(10)
    assert out.shape == (2, 2) and out.requires_grad
    assert captured["units"].shape == (1, 3) and torch.allclose(captured["units"], model[1](torch.ones(1, 4)))
