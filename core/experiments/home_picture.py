"""Make the Home page's picture with our engine: the paper's L-BFGS (default parameters, untargeted) on one
MNIST test digit against fc100-100-10. Writes assets/home_triple.png and its run card assets/home_triple.json.

    python -m core.experiments.home_picture [--index 0] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from core.config import ASSETS_DIR, DEFAULT_MODEL
from core.data import load_mnist
from core.lab import LiveRun, make_lab_attack, predict, run_card
from core.models import class_names, load
from core.visual.pictures import triple_picture

MODEL = DEFAULT_MODEL
PICTURE = ASSETS_DIR / "home_triple.png"
CARD = ASSETS_DIR / "home_triple.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="MNIST test image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load(MODEL, torch.device("cpu"))
    mnist = load_mnist("test")
    x = mnist.images[args.index : args.index + 1]
    clean = predict(model, x)
    label = int(clean.argmax())
    live = LiveRun(make_lab_attack("lbfgs", model, args.seed), x, label, seed=args.seed)
    for _ in live.frames(min_interval=1.0):
        pass
    result = live.result()
    picture, amplification = triple_picture(result.x[0], result.x_adv[0], scale=6)
    Image.fromarray(picture).save(PICTURE)
    card = run_card(live, MODEL, f"mnist test #{args.index}", int(mnist.labels[args.index]))
    names = class_names(MODEL)
    card.summary["caption"] = (
        f"{names[label]} ({clean[label]:.0%}) + perturbation "
        f"(shown x{amplification:.0f}) = {names[int(result.pred_after[0])]} "
        f"({float(result.probs_after[0].max()):.0%}); RMS distortion {float(result.rms[0]):.3f}"
    )
    CARD.write_text(card.to_json() + "\n")
    print(f"wrote {PICTURE} and {CARD}: {card.summary['caption']}")


if __name__ == "__main__":
    main()
