"""Units versus random directions (Szegedy et al., Section 3): activations, directions, top-k, coherence."""

from core.units.activations import PIXELS, default_layer, fingerprint, layer_activations, to_units
from core.units.coherence import (
    SCORES,
    UnitStudy,
    dead_units,
    default_judge,
    judge_choices,
    label_entropy,
    label_purity,
    mean_pairwise_cosine,
    study,
    verdict,
)
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
    "SCORES",
    "FolderImages",
    "ImageSet",
    "MnistImages",
    "Ranking",
    "UnitStudy",
    "combination",
    "dead_units",
    "default_judge",
    "default_layer",
    "fingerprint",
    "held_out_images",
    "judge_choices",
    "interpolate",
    "label_entropy",
    "label_purity",
    "layer_activations",
    "mean_pairwise_cosine",
    "parse_combination",
    "project",
    "random_directions",
    "study",
    "to_units",
    "top_k",
    "top_k_sets",
    "unit_vector",
    "verdict",
    "write_sample_folder",
]
