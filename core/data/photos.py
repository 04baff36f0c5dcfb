"""Demo photos for the ImageNet models, as shipped by scikit-image (no download needed)."""

from __future__ import annotations

from PIL import Image

from core.errors import InvalidParameterError

SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def sample_photo(name: str) -> Image.Image:
    """One of scikit-image's sample photos as an RGB PIL image."""
    import skimage.data

    if name not in SAMPLE_PHOTOS:
        raise InvalidParameterError(
            f"Unknown sample photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)}."
        )
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
