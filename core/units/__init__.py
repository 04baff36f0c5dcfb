"""Units versus random directions (Szegedy et al., Section 3): activations, directions, top-k; the scores and
their statistics live in `core.units.coherence`, imported by what scores."""

from core.units.activations import PIXELS, dead_units, default_layer, fingerprint, layer_activations, to_units
from core.units.directions import (
    Ranking,
    combination,
    interpolate,
    parse_combination,
    project,
    random_directions,
    top_k,
    top_k_sets,
    unit_vector,
)
from core.units.images import FolderImages, ImageSet, MnistImages, held_out_images, write_sample_folder

__all__ = [
    "PIXELS",
    "FolderImages",
    "ImageSet",
    "MnistImages",
    "Ranking",
    "combination",
    "dead_units",
    "default_layer",
    "fingerprint",
    "held_out_images",
    "interpolate",
    "layer_activations",
    "parse_combination",
    "project",
    "random_directions",
    "to_units",
    "top_k",
    "top_k_sets",
    "unit_vector",
    "write_sample_folder",
]
