"""Randomized smoothing on off-the-shelf ImageNet networks, as a demonstration: mobilenet_v2 and
efficientnet_lite0, never trained under noise, smoothed at sigma 0.12 and 0.25 on the sample photos with a
vote count small enough for this CPU. It shows what Gaussian noise does to such a network (does the smoothed
prediction keep the plain one, how often it abstains, what radius survives), not a certified accuracy:
the photos carry no labels and n is far below Cohen et al.'s 100,000."""

from __future__ import annotations

import time

import torch

from core.data.photos import SAMPLE_PHOTOS
from core.experiments.table2_imagenet import DEMONSTRATION, MODELS, photos
from core.experiments.writer import Column, Report, bars, base_card
from core.models import imagenet, load
from core.smoothing import SmoothingParams, certify
from core.smoothing.certify import make_generator

NAME = "smoothing-imagenet"
SIGMAS = (0.12, 0.25)  # Cohen et al.'s smallest ImageNet noise levels, in [0, 1] pixels
N0, SAMPLES, BATCH = 20, 100, 20  # selection and estimation votes per photo: minutes, not hours, on a CPU


def photo_row(model_name: str, model, name: str, x: torch.Tensor, params: SmoothingParams, generator) -> dict:
    """One photo on one smoothed network: the plain prediction beside the smoothed one and its radius."""
    labels = imagenet.categories(model_name)
    with torch.inference_mode():
        plain = int(model(x.unsqueeze(0).to(generator.device)).argmax(1))
    res = certify(model, x, params, generator)
    return {
        "model": model_name,
        "sigma": params.sigma,
        "photo": name,
        "plain": labels[plain],
        "smoothed": "abstains" if res.prediction is None else labels[res.prediction],
        "kept": res.prediction == plain,
        "count": res.count,
        "samples": res.samples,
        "radius": res.radius,
    }


def run(n: int = len(SAMPLE_PHOTOS), seed: int = 0, device=None, progress: bool = True) -> Report:
    """Every photo through both networks at both noise levels (one generator per network and sigma)."""
    start = time.perf_counter()
    names, x = photos(n)
    rows = []
    for model_name in MODELS:
        model = load(model_name, device)
        for sigma in SIGMAS:
            params = SmoothingParams(sigma=sigma, n0=N0, n=SAMPLES, batch=BATCH)
            generator = make_generator(model, seed)
            rows += [
                photo_row(model_name, model, p, xi, params, generator) for p, xi in zip(names, x, strict=True)
            ]
    series = {f"{m}, sigma {s:g}": [r["radius"] for r in rows if r["model"] == m and r["sigma"] == s]
              for m in MODELS for s in SIGMAS}  # fmt: skip
    card = base_card(
        NAME,
        n,
        seed,
        n_unit="photos",
        models=list(MODELS),
        photos=list(names),
        sigmas=list(SIGMAS),
        params=SmoothingParams(sigma=SIGMAS[0], n0=N0, n=SAMPLES, batch=BATCH).to_dict(),
        preprocessing=f"{imagenet.DEFAULT_MODEL}'s resize and centre crop, 224 px; noise in [0, 1] pixels",
        time_s=time.perf_counter() - start,
    )
    columns = [
        Column("model", "network", "text"),
        Column("sigma", "sigma", "text"),
        Column("photo", "photo", "text"),
        Column("plain", "plain prediction", "text"),
        Column("smoothed", "smoothed prediction", "text"),
        Column("count", "votes", "text"),
        Column("radius", "certified L2 radius", "dist"),
    ]
    notes = [
        f"{DEMONSTRATION}: {n} unlabelled photos, n0 = {N0}, n = {SAMPLES} noise samples, alpha = "
        f"{card['params']['alpha']}; with n = {SAMPLES} even a unanimous vote certifies at most "
        "sigma * Phi^-1(alpha^(1/n)).",
        "Neither network was trained under noise; the smoothed prediction abstains when its lower bound on the "
        "top class's probability is not above 1/2.",
    ]
    title = "Randomized smoothing on off-the-shelf ImageNet networks (a demonstration)"

    def draw(path):
        bars(path, list(names), series, title, "certified L2 radius")

    return Report(NAME, title, columns, rows, card, draw, notes)
