"""The paper's numbers (Szegedy et al., ICLR 2014), the targets every reproduction is shown beside, and the
published numbers other results are put next to (AutoAttack's MNIST leaderboard). Errors, accuracies and
transfer rates are fractions; distortions are RMS, sqrt(sum (x' - x)^2 / n), pixels in [0, 1]."""

from __future__ import annotations

TABLE1_MODELS = ("fc10-1e-4", "fc10-1e-2", "fc10-1", "fc100-100-10", "fc200-200-10", "ae400-10")
TABLE3_MODELS = ("fc100-100-10-p1", "fc123-456-10-p1", "fc100-100-10-p2")

LABELS = {
    "fc10-1e-4": "FC10(1e-4)",
    "fc10-1e-2": "FC10(1e-2)",
    "fc10-1": "FC10(1)",
    "fc100-100-10": "FC100-100-10",
    "fc200-200-10": "FC200-200-10",
    "ae400-10": "AE400-10",
    "fc100-100-10-p1": "FC100-100-10 (P1)",
    "fc123-456-10-p1": "FC123-456-10 (P1)",
    "fc100-100-10-p2": "FC100-100-10' (P2)",
}

# Table 1: train error, test error, average minimum distortion.
TABLE1 = {
    "fc10-1e-4": {"train_error": 0.067, "test_error": 0.074, "min_distortion": 0.062},
    "fc10-1e-2": {"train_error": 0.10, "test_error": 0.094, "min_distortion": 0.1},
    "fc10-1": {"train_error": 0.212, "test_error": 0.20, "min_distortion": 0.14},
    "fc100-100-10": {"train_error": 0.0, "test_error": 0.0164, "min_distortion": 0.058},
    "fc200-200-10": {"train_error": 0.0, "test_error": 0.0154, "min_distortion": 0.065},
    "ae400-10": {"train_error": 0.0057, "test_error": 0.019, "min_distortion": 0.086},
}

# Table 2: error induced on each column model by the examples made for each row model (or noise).
TABLE2 = {
    "fc10-1e-4": [1.0, 0.117, 0.227, 0.02, 0.039, 0.027],
    "fc10-1e-2": [0.871, 1.0, 0.352, 0.359, 0.273, 0.098],
    "fc10-1": [0.719, 0.762, 1.0, 0.481, 0.47, 0.344],
    "fc100-100-10": [0.289, 0.137, 0.211, 1.0, 0.066, 0.02],
    "fc200-200-10": [0.382, 0.14, 0.238, 0.203, 1.0, 0.027],
    "ae400-10": [0.234, 0.16, 0.248, 0.094, 0.066, 1.0],
    "gaussian 0.1": [0.05, 0.101, 0.183, 0.0, 0.0, 0.008],
    "gaussian 0.3": [0.156, 0.113, 0.227, 0.05, 0.043, 0.031],
}
TABLE2_DISTORTION = {k: v["min_distortion"] for k, v in TABLE1.items()} | {
    "gaussian 0.1": 0.1,
    "gaussian 0.3": 0.3,
}

# Table 3: errors on P1, P2 and test, and the minimum average distortion.
TABLE3 = {
    "fc100-100-10-p1": {"p1_error": 0.0, "p2_error": 0.024, "test_error": 0.02, "min_distortion": 0.062},
    "fc123-456-10-p1": {"p1_error": 0.0, "p2_error": 0.025, "test_error": 0.021, "min_distortion": 0.059},
    "fc100-100-10-p2": {"p1_error": 0.023, "p2_error": 0.0, "test_error": 0.021, "min_distortion": 0.058},
}

# Table 4: cross-model error induced; the "amplified" rows rescale each perturbation to RMS 0.1.
TABLE4 = {
    "fc100-100-10-p1": [1.0, 0.262, 0.059],
    "fc123-456-10-p1": [0.0625, 1.0, 0.051],
    "fc100-100-10-p2": [0.082, 0.082, 1.0],
    "gaussian 0.06": [0.022, 0.026, 0.024],
    "amplified fc100-100-10-p1": [1.0, 0.98, 0.43],
    "amplified fc123-456-10-p1": [0.96, 1.0, 0.22],
    "amplified fc100-100-10-p2": [0.27, 0.50, 1.0],
    "gaussian 0.1": [0.026, 0.028, 0.027],
}

# Table 5: upper Lipschitz bounds per layer of the paper's AlexNet-like ImageNet network.
TABLE5_ALEXNET = {
    "Conv1": 2.75,
    "Conv2": 10.0,
    "Conv3": 7.0,
    "Conv4": 7.5,
    "Conv5": 11.0,
    "FC1": 3.12,
    "FC2": 4.0,
    "FC3": 4.0,
}

# Adversarial training (Section 4.2): 100-100-10 with weight decay and a pool of adversarial examples.
ADVTRAIN = {"weight_decay_only_test_error": 0.016, "pool_test_error_below": 0.012}

# The AutoAttack leaderboard on MNIST at Linf 0.3 (Croce & Hein 2020, robustbench.github.io): clean and
# AutoAttack (standard) robust accuracy on the full test set, the first 10000 points, errors counted as broken.
AUTOATTACK_MNIST_LINF = 0.3
AUTOATTACK_MNIST = {
    "Madry et al. 2018 (PGD training)": {"clean": 0.9853, "robust": 0.8850},
    "Zhang et al. 2019 (TRADES)": {"clean": 0.9948, "robust": 0.9281},
    "Gowal et al. 2020": {"clean": 0.9926, "robust": 0.9634},
}

# Randomized smoothing on MNIST, Cohen et al. (2019)'s Gaussian-augmentation training (n = 100,000,
# alpha = 0.001): certified accuracy at each L2 radius of core.smoothing.DEFAULT_RADII (0, 0.5, ..., 2.5, in
# [0, 1] pixels) and the average certified radius, per noise level sigma.
SMOOTHING_MNIST = {
    0.25: {"certified": (0.992, 0.968, 0.0, 0.0, 0.0, 0.0), "acr": 0.91},
    0.5: {"certified": (0.992, 0.969, 0.898, 0.678, 0.0, 0.0), "acr": 1.56},
    1.0: {"certified": (0.963, 0.914, 0.799, 0.595, 0.324, 0.109), "acr": 1.62},
}
